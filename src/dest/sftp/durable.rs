//! How copies over ssh become durable (docs/design.md, "The ssh destination: durable in
//! batches"): each one fsynced on the server before its name is given (fsync@openssh.com, held by
//! the server's disk once per file), or, where the host runs a shell with `sync -f`, none of
//! them: one `sync -f <root>` (syncfs of the destination's filesystem) on a long-lived command
//! channel makes every copy named before it durable, and only its exit status 0 counts.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use crate::dest::remote_exec::{quote, Shell};

/// How long one `sync -f` may take before the channel is taken for lost (a flush not done).
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the first one, which tells whether the host can, may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where Linux tells the boot's id: another one means the host restarted, and whatever was not
/// durable then is gone, whatever a `sync -f` after it says.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// How the copies of one storage become durable.
pub enum Durable {
    /// Each copy fsynced before its name is given; the folders named into before the marker.
    EachFile,
    /// None fsynced alone: `sync -f` of the whole filesystem before a batch counts.
    Batched(Syncer),
}

/// Starts a shell on the host (`Remote::shell`).
pub type StartShell = Box<dyn Fn() -> io::Result<Shell> + Send + Sync>;

/// `sync -f` of the destination's filesystem on the host, over a command channel started again
/// when lost.
pub struct Syncer {
    start: StartShell,
    shell: Mutex<Option<Shell>>,
    /// `sync -f <root> && cat <boot id>`.
    line: Vec<u8>,
    /// The boot the copies were made in.
    boot: String,
}

impl Durable {
    /// Batched where the host runs `sync -f` on `root` (exit 0) and tells its boot's id; else why
    /// not (an sftp-only account, no `sync -f`, not Linux): each file is fsynced.
    pub fn probe(start: StartShell, root: &std::path::Path) -> (Durable, Option<String>) {
        let mut line = b"sync -f ".to_vec();
        line.extend_from_slice(&quote(&super::bytes(root)));
        line.extend_from_slice(format!(" && cat {BOOT_ID}").as_bytes());
        let ran = start().and_then(|mut sh| Ok((sh.run(&line, PROBE_TIMEOUT)?, sh)));
        match ran {
            Ok((r, sh)) if r.status == 0 && r.text().len() == 36 => {
                let boot = r.text();
                (Durable::Batched(Syncer { start, shell: Mutex::new(Some(sh)), line, boot }), None)
            }
            Ok((r, _)) => (Durable::EachFile, Some(format!("`sync -f` on the host said {}: {}", r.status, r.text()))),
            Err(e) => (Durable::EachFile, Some(format!("no shell on the host: {e}"))),
        }
    }

    pub fn batched(&self) -> bool {
        matches!(self, Durable::Batched(_))
    }
}

impl Syncer {
    /// Makes every copy named before this call durable: a `sync -f` started after it, exit 0,
    /// in the boot the copies were made in. A lost channel is started again once (a sync there
    /// flushes what any process wrote); one that fails is no flush.
    pub fn sync(&self) -> io::Result<()> {
        let mut shell = self.shell.lock().unwrap_or_else(|e| e.into_inner());
        let mut ran = Err(io::Error::from(io::ErrorKind::ConnectionAborted));
        for _ in 0..2 {
            let sh = match shell.as_mut() {
                Some(sh) => sh,
                None => shell.insert((self.start)()?),
            };
            ran = sh.run(&self.line, SYNC_TIMEOUT);
            match &ran {
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => *shell = None,
                Err(_) => {
                    *shell = None;
                    break;
                }
                Ok(_) => break,
            }
        }
        let r = ran.map_err(|e| io::Error::new(e.kind(), format!("sync -f on the host: {e}")))?;
        if r.status != 0 {
            return Err(io::Error::other(format!("sync -f on the host exited {}: {}", r.status, r.text())));
        }
        if r.text() != self.boot {
            return Err(io::Error::other("the host restarted since the copies were made: they may be lost"));
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A storage's durability on this machine's `sh`: the first shell a real one, each later
    /// one `later` (`true`: a channel that ends at once, as a host no longer reached).
    fn on_this_machine(later: &'static str) -> (Durable, Arc<AtomicUsize>, tempfile::TempDir) {
        let started = Arc::new(AtomicUsize::new(0));
        let n = started.clone();
        let start: StartShell = Box::new(move || {
            let first = n.fetch_add(1, Ordering::Relaxed) == 0;
            Shell::spawn(Command::new(if first { "sh" } else { later }))
        });
        let root = tempfile::tempdir().unwrap();
        (Durable::probe(start, root.path()).0, started, root)
    }

    fn lose_channel(d: &Durable) {
        let Durable::Batched(s) = d else { panic!("not batched") };
        *s.shell.lock().unwrap() = Some(Shell::spawn(Command::new("true")).unwrap());
    }

    #[test]
    fn a_lost_channel_is_no_flush_unless_a_new_one_syncs() {
        let (d, started, _root) = on_this_machine("true");
        let Durable::Batched(syncer) = &d else { panic!("this machine runs sync -f") };
        syncer.sync().unwrap();
        lose_channel(&d);
        let e = syncer.sync().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        assert_eq!(started.load(Ordering::Relaxed), 2, "started again once, not more");
        let (d, _, _root) = on_this_machine("sh");
        lose_channel(&d);
        let Durable::Batched(syncer) = &d else { panic!("this machine runs sync -f") };
        syncer.sync().unwrap();
    }

    #[test]
    fn a_host_without_sync_f_or_a_shell_gets_each_copy_fsynced() {
        let root = tempfile::tempdir().unwrap();
        let no_shell: StartShell = Box::new(|| Shell::spawn(Command::new("true")));
        let (d, why) = Durable::probe(no_shell, root.path());
        assert!(!d.batched() && why.is_some_and(|w| w.contains("no shell")));
        let missing = root.path().join("missing");
        let sh: StartShell = Box::new(|| Shell::spawn(Command::new("sh")));
        let (d, why) = Durable::probe(sh, &missing);
        assert!(!d.batched() && why.is_some_and(|w| w.contains("`sync -f` on the host said 1")));
    }
}

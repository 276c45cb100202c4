//! Commands run on an ssh destination's host, over one long-lived channel (docs/design.md, "The
//! ssh destination: durable in batches"): `ssh … host sh` started once, then one command line at
//! a time written to its stdin, its output and exit status read back, each within a timeout. It
//! goes through the same `ssh` as the SFTP sessions (`Remote::shell`), so whatever reaches the
//! host for SFTP reaches it here. Used for `sync -f` before a batch of copies counts; reusable by
//! anything else that must run a command on the host.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// A shell on the host, reading command lines.
pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    /// The shell's output, line by line (without the newline); disconnected at its end.
    lines: Receiver<Vec<u8>>,
    /// Killed after a timeout, or ended: no command is run on it again.
    lost: bool,
}

/// What a command did: its exit status and its output (stdout and stderr together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub status: i32,
    pub output: Vec<u8>,
}

impl Ran {
    /// The output as one trimmed line of text, for messages and short answers.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).trim().to_string()
    }
}

/// Tells each command's end mark from every other's.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Shell {
    /// Starts `command` (e.g. `ssh … host sh`), its stdin and stdout the channel; its stderr
    /// (ssh's own messages) is dropped.
    pub fn spawn(mut command: Command) -> io::Result<Shell> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the shell's pipes were not made"));
        };
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::Builder::new().name("softcopy-shell".into()).spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                if line.ok().is_none_or(|l| tx.send(l).is_err()) {
                    break;
                }
            }
        })?;
        Ok(Shell { child, stdin, lines, lost: false })
    }

    /// Runs `line` (a command line of the host's `sh`, its stdin empty) and waits for its end, at
    /// most `timeout`: past it, or when the channel ends, the shell is killed and this and every
    /// later call is an error (ConnectionAborted; TimedOut for the timeout).
    pub fn run(&mut self, line: &[u8], timeout: Duration) -> io::Result<Ran> {
        if self.lost {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the command channel was lost"));
        }
        let mark = format!("softcopy-ran-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        // A subshell (an `exit` in `line` ends it, not the channel), then a line of our own that
        // starts with the mark and tells the status; the newline before it puts it at a line's
        // start whatever the output ended with (taken off again below).
        let mut sent = b"( ".to_vec();
        sent.extend_from_slice(line);
        sent.extend_from_slice(format!("\n) </dev/null 2>&1; printf '\\n{mark} %d\\n' $?\n").as_bytes());
        if let Err(e) = self.stdin.write_all(&sent).and_then(|()| self.stdin.flush()) {
            self.lose();
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, format!("the command channel: {e}")));
        }
        self.read_until(mark.as_bytes(), Instant::now() + timeout)
    }

    fn read_until(&mut self, mark: &[u8], deadline: Instant) -> io::Result<Ran> {
        let mut output = Vec::new();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.starts_with(mark) => {
                    output.pop(); // the newline printed before the mark
                    let status = String::from_utf8_lossy(&l[mark.len()..]).trim().parse().unwrap_or(-1);
                    return Ok(Ran { status, output });
                }
                Ok(l) => {
                    output.extend_from_slice(&l);
                    output.push(b'\n');
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.lose();
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the command did not end in time"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.lose();
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the command channel ended"));
                }
            }
        }
    }

    fn lose(&mut self) {
        self.lost = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if !self.lost {
            self.lose();
        }
    }
}

/// `arg` quoted for `sh`: inside single quotes, each `'` written as `'\''`.
pub fn quote(arg: &[u8]) -> Vec<u8> {
    let mut out = b"'".to_vec();
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn local() -> Shell {
        Shell::spawn(Command::new("sh")).unwrap()
    }

    #[test]
    fn each_command_tells_its_output_and_status_and_an_exit_ends_only_itself() {
        let mut sh = local();
        let t = Duration::from_secs(10);
        assert_eq!(sh.run(b"echo one; echo two >&2", t).unwrap(), Ran { status: 0, output: b"one\ntwo\n".to_vec() });
        assert_eq!(sh.run(b"printf no-newline; exit 3", t).unwrap(), Ran { status: 3, output: b"no-newline".to_vec() });
        let odd = b"it's a \"name\" with $HOME";
        let mut echo = b"printf %s ".to_vec();
        echo.extend_from_slice(&quote(odd));
        assert_eq!(sh.run(&echo, t).unwrap().output, odd);
        assert_eq!(sh.run(b"read x; echo ${x:-empty}", t).unwrap().text(), "empty", "its stdin is empty");
    }

    #[test]
    fn a_command_past_its_timeout_or_a_channel_ended_is_an_error_then_and_after() {
        let mut sh = local();
        let e = sh.run(b"sleep 5", Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(sh.run(b"true", Duration::from_secs(10)).unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        let mut ended = Shell::spawn(Command::new("true")).unwrap();
        let e = ended.run(b"true", Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    }
}

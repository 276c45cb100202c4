//! A background flush of the destination every few seconds while copies land (docs/design.md,
//! "The end of a run"). The flush before the marker must make every copy durable; left to the
//! kernel, copies stay dirty for up to 30 s (`dirty_expire_centisecs`), and a run whose last
//! minutes copied a backlog would spend its end writing it back. Flushed as it goes, the end has
//! only the last few seconds' copies to write. Failures are not reported here: the flush before
//! the marker reports its own, and decides.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::dest::Dest;

/// How often: short enough that the end's flush is brief, long enough that one `syncfs` covers
/// many copies.
pub const EVERY: Duration = Duration::from_secs(2);

/// The flushing thread (none where it would not help: see [`Dest::flushes_in_background`]);
/// stopped (and joined) when dropped.
pub struct Flusher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(dest: Arc<Dest>, every: Duration) -> std::io::Result<Flusher> {
        if !dest.flushes_in_background() {
            return Ok(Flusher { stop: None, thread: None });
        }
        let (tx, rx) = bounded::<()>(0);
        let thread = std::thread::Builder::new().name("softcopy-flush".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                if dest.take_dirty() {
                    let _ = dest.flush_filesystem();
                }
            }
        })?;
        Ok(Flusher { stop: Some(tx), thread: Some(thread) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Disconnecting the channel ends the wait at once; a flush under way is waited for.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

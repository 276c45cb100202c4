//! A small synchronous SFTP version 3 client for the ssh destination (docs/design.md, "The ssh
//! destination: the SFTP client"). It owns the protocol subset a copier needs (open, write, set
//! the mtime, close, OpenSSH's posix-rename / fsync / hardlink / statvfs / limits, mkdir, stat,
//! readdir, read, remove) and the plumbing of one session over a spawned program's pipes — the
//! system `ssh -s host sftp`, so the user's ssh configuration applies, or an `sftp-server`
//! directly. It owns nothing of the engine: no paths of the source, no retries, no policy. A
//! caller keeps many requests in flight by submitting with a tag and a completion channel; several
//! sessions, one per ssh process, go past one sftp-server's sequential loop.

mod error;
mod session;
mod wire;

pub use error::{SftpError, StatusCode};
pub use session::{Done, Options, Session, Ticket};
pub use wire::{Attrs, Handle, Limits, Name, OpenMode, Reply, Request, Statvfs};

#[cfg(all(test, unix))]
mod tests;

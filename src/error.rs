//! The engine's one error type. Every variant that concerns a file carries its path, so a message
//! read in a log a day later still says which file and which side (source or destination).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source does not exist and the caller asked not to wait for it.
    #[error("source {0} does not exist")]
    SourceMissing(PathBuf),
    /// The source exists but is not a directory.
    #[error("source {0} is not a directory")]
    SourceNotDir(PathBuf),
    /// An I/O operation on one path at the source failed: never the destination's trouble.
    #[error("{op} {path}: {source}")]
    SourceIo {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O operation on one path failed (at the destination, or a side not told apart).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The filesystem watcher could not be set up.
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
    /// The kernel's limit on inotify watches is reached: part of the tree has no watch.
    #[error(
        "cannot watch {0}: the inotify watch limit (fs.inotify.max_user_watches) is reached; raise it with \
         `sysctl fs.inotify.max_user_watches=1048576` (until then softcopy rescans the source periodically)"
    )]
    WatchLimit(PathBuf),
    /// The user asked for something that cannot be done (e.g. a destination inside the source).
    #[error("{0}")]
    Config(String),
    /// A worker or the coordinator thread died (a bug): reported instead of hanging.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an `io::Error` of the source with the operation and the path it concerned.
    pub fn source_io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::SourceIo { op, path: path.into(), source }
    }

    /// Wraps an `io::Error` with the operation and the path it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }
}

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

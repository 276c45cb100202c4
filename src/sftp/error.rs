//! What an SFTP request can fail with: a status the server answered (mapped to `io::ErrorKind`),
//! or the connection itself gone, which the caller handles apart (pause, reconnect, resume).

use std::io;

/// An SFTP v3 status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Ok,
    Eof,
    NoSuchFile,
    PermissionDenied,
    /// Everything else the server's errno became. OpenSSH's sftp-server answers EEXIST, ENOSPC,
    /// EDQUOT, ENOTEMPTY and EIO all with this one code: a full disk is told by statvfs, not here.
    Failure,
    BadMessage,
    NoConnection,
    ConnectionLost,
    OpUnsupported,
    Other(u32),
}

impl From<u32> for StatusCode {
    fn from(v: u32) -> Self {
        match v {
            0 => StatusCode::Ok,
            1 => StatusCode::Eof,
            2 => StatusCode::NoSuchFile,
            3 => StatusCode::PermissionDenied,
            4 => StatusCode::Failure,
            5 => StatusCode::BadMessage,
            6 => StatusCode::NoConnection,
            7 => StatusCode::ConnectionLost,
            8 => StatusCode::OpUnsupported,
            n => StatusCode::Other(n),
        }
    }
}

impl StatusCode {
    /// The nearest `io::ErrorKind`.
    pub fn kind(self) -> io::ErrorKind {
        match self {
            StatusCode::Eof => io::ErrorKind::UnexpectedEof,
            StatusCode::NoSuchFile => io::ErrorKind::NotFound,
            StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
            StatusCode::BadMessage => io::ErrorKind::InvalidInput,
            StatusCode::NoConnection | StatusCode::ConnectionLost => io::ErrorKind::ConnectionAborted,
            StatusCode::OpUnsupported => io::ErrorKind::Unsupported,
            StatusCode::Ok | StatusCode::Failure | StatusCode::Other(_) => io::ErrorKind::Other,
        }
    }
}

/// Everything an SFTP session can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SftpError {
    /// The server refused one request; the session goes on.
    #[error("{op}: {message} (SFTP status {code:?})")]
    Status { op: &'static str, code: StatusCode, message: String },
    /// The server did not announce an extension the request needs; the session goes on.
    #[error("the SFTP server does not offer {0}")]
    Unsupported(&'static str),
    /// The connection is gone (the ssh process ended, the pipe broke, the server sent garbage): no
    /// request on this session will be answered any more. Says what ssh last printed, if anything.
    #[error("the SFTP connection is lost: {0}")]
    ConnectionLost(String),
    /// The server broke the protocol; the session is closed as lost right after.
    #[error("SFTP protocol error: {0}")]
    Protocol(String),
    /// The ssh (or sftp-server) program could not be started.
    #[error("cannot start {program}: {message}")]
    Spawn { program: String, message: String },
}

impl SftpError {
    /// The nearest `io::ErrorKind`; a lost connection is `ConnectionAborted`.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            SftpError::Status { code, .. } => code.kind(),
            SftpError::Unsupported(_) => io::ErrorKind::Unsupported,
            SftpError::ConnectionLost(_) | SftpError::Protocol(_) => io::ErrorKind::ConnectionAborted,
            SftpError::Spawn { .. } => io::ErrorKind::NotFound,
        }
    }

    /// Whether the session is over (reconnect), as against one request refused (act on it).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, SftpError::ConnectionLost(_) | SftpError::Protocol(_) | SftpError::Spawn { .. })
    }
}

impl From<SftpError> for io::Error {
    fn from(e: SftpError) -> Self {
        io::Error::new(e.kind(), e)
    }
}

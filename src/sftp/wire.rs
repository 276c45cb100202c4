//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02, plus OpenSSH's extensions): requests
//! encoded into whole packets, replies decoded from them. No I/O here: `session.rs` moves the bytes.

use super::error::{SftpError, StatusCode};

/// Packet types used here (the draft's numbers).
mod kind {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// The largest reply accepted: a READ's data is at most what was asked (the engine asks far less),
/// so anything past this is a broken stream, not a reply to hold in memory.
pub const MAX_PACKET: usize = 4 << 20;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Create a file that must not exist yet (O_CREAT|O_EXCL): a partial name never clobbers.
    CreateNew,
    /// Write into an existing file without truncating it.
    Write,
}

impl OpenMode {
    /// The draft's SSH_FXF_* bits: READ 0x01, WRITE 0x02, CREAT 0x08, EXCL 0x20.
    fn pflags(self) -> u32 {
        match self {
            OpenMode::Read => 0x01,
            OpenMode::CreateNew => 0x2a, // WRITE | CREAT | EXCL
            OpenMode::Write => 0x02,
        }
    }
}

/// A file's attributes as SFTP v3 carries them: times are whole seconds (32 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    /// Mode bits, including the file type bits in replies.
    pub permissions: Option<u32>,
    /// (atime, mtime) in whole seconds since the epoch.
    pub times: Option<(u32, u32)>,
}

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

impl Attrs {
    /// Only the modification (and access) time: what a copy's FSETSTAT sets.
    pub fn mtime(secs: u32) -> Attrs {
        Attrs { times: Some((secs, secs)), ..Attrs::default() }
    }

    /// Whether the mode bits say directory (S_IFDIR).
    pub fn is_dir(&self) -> bool {
        self.permissions.is_some_and(|p| p & 0o170000 == 0o040000)
    }

    /// Whether the mode bits say symbolic link (S_IFLNK).
    pub fn is_symlink(&self) -> bool {
        self.permissions.is_some_and(|p| p & 0o170000 == 0o120000)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        // The bits are distinct, so their sum is their union.
        let flags: u32 = [
            self.size.map_or(0, |_| ATTR_SIZE),
            self.uid_gid.map_or(0, |_| ATTR_UIDGID),
            self.permissions.map_or(0, |_| ATTR_PERMISSIONS),
            self.times.map_or(0, |_| ATTR_ACMODTIME),
        ]
        .iter()
        .sum();
        put_u32(out, flags);
        if let Some(size) = self.size {
            put_u64(out, size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(p) = self.permissions {
            put_u32(out, p);
        }
        if let Some((atime, mtime)) = self.times {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Attrs, SftpError> {
        let flags = r.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(r.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((r.u32()?, r.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(r.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((r.u32()?, r.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..r.u32()? {
                r.bytes()?;
                r.bytes()?;
            }
        }
        Ok(a)
    }
}

/// An open file or directory on the server: opaque bytes the server chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Handle(pub Vec<u8>);

/// One entry of a READDIR or REALPATH reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub filename: Vec<u8>,
    pub attrs: Attrs,
}

/// The server's filesystem figures (statvfs@openssh.com), as statvfs(3) gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statvfs {
    pub block_size: u64,
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub files_available: u64,
    pub fsid: u64,
    pub flags: u64,
    pub name_max: u64,
}

impl Statvfs {
    /// Bytes an unprivileged writer may still use.
    pub fn available_bytes(&self) -> u64 {
        self.blocks_available.saturating_mul(self.fragment_size)
    }
}

/// One request. Paths are the server's bytes (no encoding is assumed).
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Open {
        path: &'a [u8],
        mode: OpenMode,
        attrs: Attrs,
    },
    Close(&'a Handle),
    Read {
        handle: &'a Handle,
        offset: u64,
        len: u32,
    },
    Write {
        handle: &'a Handle,
        offset: u64,
        data: &'a [u8],
    },
    Lstat(&'a [u8]),
    Stat(&'a [u8]),
    Fstat(&'a Handle),
    Setstat {
        path: &'a [u8],
        attrs: Attrs,
    },
    Fsetstat {
        handle: &'a Handle,
        attrs: Attrs,
    },
    Opendir(&'a [u8]),
    Readdir(&'a Handle),
    Remove(&'a [u8]),
    Mkdir {
        path: &'a [u8],
        attrs: Attrs,
    },
    Rmdir(&'a [u8]),
    Realpath(&'a [u8]),
    /// posix-rename@openssh.com: one rename(2), replacing the target atomically.
    PosixRename {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// fsync@openssh.com on an open file.
    Fsync(&'a Handle),
    /// hardlink@openssh.com: link(2), failing if `to` exists.
    Hardlink {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// statvfs@openssh.com.
    Statvfs(&'a [u8]),
    /// limits@openssh.com (asked once at the handshake).
    Limits,
}

/// The OpenSSH extension a request needs, if any: it is refused before sending when the server did
/// not announce it.
impl Request<'_> {
    pub fn extension(&self) -> Option<&'static str> {
        match self {
            Request::PosixRename { .. } => Some("posix-rename@openssh.com"),
            Request::Fsync(_) => Some("fsync@openssh.com"),
            Request::Hardlink { .. } => Some("hardlink@openssh.com"),
            Request::Statvfs(_) => Some("statvfs@openssh.com"),
            Request::Limits => Some("limits@openssh.com"),
            _ => None,
        }
    }

    /// The request's name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Open { .. } => "open",
            Request::Close(_) => "close",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Lstat(_) => "lstat",
            Request::Stat(_) => "stat",
            Request::Fstat(_) => "fstat",
            Request::Setstat { .. } => "setstat",
            Request::Fsetstat { .. } => "fsetstat",
            Request::Opendir(_) => "opendir",
            Request::Readdir(_) => "readdir",
            Request::Remove(_) => "remove",
            Request::Mkdir { .. } => "mkdir",
            Request::Rmdir(_) => "rmdir",
            Request::Realpath(_) => "realpath",
            Request::PosixRename { .. } => "posix-rename",
            Request::Fsync(_) => "fsync",
            Request::Hardlink { .. } => "hardlink",
            Request::Statvfs(_) => "statvfs",
            Request::Limits => "limits",
        }
    }

    /// How the reply to this request is read.
    pub fn expect(&self) -> Expect {
        match self {
            Request::Open { .. } | Request::Opendir(_) => Expect::Handle,
            Request::Read { .. } => Expect::Data,
            Request::Lstat(_) | Request::Stat(_) | Request::Fstat(_) => Expect::Attrs,
            Request::Readdir(_) | Request::Realpath(_) => Expect::Names,
            Request::Statvfs(_) => Expect::Statvfs,
            Request::Limits => Expect::Limits,
            _ => Expect::Status,
        }
    }

    /// The whole packet (length prefix included) for request `id`.
    pub fn encode(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        put_u32(&mut out, 0); // the length, filled in below
        out.push(self.kind());
        put_u32(&mut out, id);
        self.body(&mut out);
        let len = u32::try_from(out.len() - 4).expect("a request is far below 4 GiB");
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    fn kind(&self) -> u8 {
        match self {
            Request::Open { .. } => kind::OPEN,
            Request::Close(_) => kind::CLOSE,
            Request::Read { .. } => kind::READ,
            Request::Write { .. } => kind::WRITE,
            Request::Lstat(_) => kind::LSTAT,
            Request::Stat(_) => kind::STAT,
            Request::Fstat(_) => kind::FSTAT,
            Request::Setstat { .. } => kind::SETSTAT,
            Request::Fsetstat { .. } => kind::FSETSTAT,
            Request::Opendir(_) => kind::OPENDIR,
            Request::Readdir(_) => kind::READDIR,
            Request::Remove(_) => kind::REMOVE,
            Request::Mkdir { .. } => kind::MKDIR,
            Request::Rmdir(_) => kind::RMDIR,
            Request::Realpath(_) => kind::REALPATH,
            _ => kind::EXTENDED,
        }
    }

    fn body(&self, out: &mut Vec<u8>) {
        if let Some(name) = self.extension() {
            put_bytes(out, name.as_bytes());
        }
        match *self {
            Request::Open { path, mode, attrs } => {
                put_bytes(out, path);
                put_u32(out, mode.pflags());
                attrs.encode(out);
            }
            Request::Read { handle, offset, len } => {
                put_bytes(out, &handle.0);
                put_u64(out, offset);
                put_u32(out, len);
            }
            Request::Write { handle, offset, data } => {
                put_bytes(out, &handle.0);
                put_u64(out, offset);
                put_bytes(out, data);
            }
            Request::Setstat { path, attrs } | Request::Mkdir { path, attrs } => {
                put_bytes(out, path);
                attrs.encode(out);
            }
            Request::Fsetstat { handle, attrs } => {
                put_bytes(out, &handle.0);
                attrs.encode(out);
            }
            Request::Close(h) | Request::Fstat(h) | Request::Readdir(h) | Request::Fsync(h) => put_bytes(out, &h.0),
            Request::Lstat(p)
            | Request::Stat(p)
            | Request::Opendir(p)
            | Request::Remove(p)
            | Request::Rmdir(p)
            | Request::Realpath(p)
            | Request::Statvfs(p) => put_bytes(out, p),
            Request::PosixRename { from, to } | Request::Hardlink { from, to } => {
                put_bytes(out, from);
                put_bytes(out, to);
            }
            Request::Limits => {}
        }
    }
}

/// The server's limits (limits@openssh.com); zero means "no limit stated".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_packet: u64,
    pub max_read: u64,
    pub max_write: u64,
    pub max_open_handles: u64,
}

/// What a request's reply is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Status,
    Handle,
    Data,
    Attrs,
    Names,
    Statvfs,
    Limits,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// SSH_FX_OK.
    Done,
    /// SSH_FX_EOF to a READ or READDIR: nothing more.
    Eof,
    Handle(Handle),
    Data(Vec<u8>),
    Attrs(Attrs),
    Names(Vec<Name>),
    Statvfs(Statvfs),
    Limits(Limits),
}

/// The INIT packet asking for version 3.
pub fn init() -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    put_u32(&mut out, 5);
    out.push(kind::INIT);
    put_u32(&mut out, 3);
    out
}

/// The extensions a VERSION packet (its body, after the length) announces: (name, data) pairs.
pub fn version(packet: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SftpError> {
    let mut r = Reader(packet);
    if r.u8()? != kind::VERSION {
        return Err(SftpError::Protocol("the server's first packet is not VERSION".into()));
    }
    let v = r.u32()?;
    if v != 3 {
        return Err(SftpError::Protocol(format!("the server speaks SFTP version {v}, not 3")));
    }
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        out.push((name, r.bytes()?.to_vec()));
    }
    Ok(out)
}

/// A reply packet's request id, read before anything else so it can be routed.
pub fn reply_id(packet: &[u8]) -> Result<u32, SftpError> {
    let mut r = Reader(packet);
    r.u8()?;
    r.u32()
}

/// Decodes a reply packet (its body, after the length) read as `expect`, for a request named `op`.
pub fn decode(packet: &[u8], expect: Expect, op: &'static str) -> Result<Reply, SftpError> {
    let mut r = Reader(packet);
    let t = r.u8()?;
    r.u32()?; // the id, already matched
    match (t, expect) {
        (kind::STATUS, _) => status(&mut r, expect, op),
        (kind::HANDLE, Expect::Handle) => Ok(Reply::Handle(Handle(r.bytes()?.to_vec()))),
        (kind::DATA, Expect::Data) => Ok(Reply::Data(r.bytes()?.to_vec())),
        (kind::ATTRS, Expect::Attrs) => Ok(Reply::Attrs(Attrs::decode(&mut r)?)),
        (kind::NAME, Expect::Names) => names(&mut r),
        (kind::EXTENDED_REPLY, Expect::Statvfs) => {
            let mut f = [0u64; 11];
            for x in &mut f {
                *x = r.u64()?;
            }
            let [block_size, fragment_size, blocks, blocks_free, blocks_available, files, files_free, files_available, fsid, flags, name_max] =
                f;
            Ok(Reply::Statvfs(Statvfs {
                block_size,
                fragment_size,
                blocks,
                blocks_free,
                blocks_available,
                files,
                files_free,
                files_available,
                fsid,
                flags,
                name_max,
            }))
        }
        (kind::EXTENDED_REPLY, Expect::Limits) => Ok(Reply::Limits(Limits {
            max_packet: r.u64()?,
            max_read: r.u64()?,
            max_write: r.u64()?,
            max_open_handles: r.u64()?,
        })),
        _ => Err(SftpError::Protocol(format!("{op}: unexpected reply type {t}"))),
    }
}

fn status(r: &mut Reader<'_>, expect: Expect, op: &'static str) -> Result<Reply, SftpError> {
    let code = StatusCode::from(r.u32()?);
    // The message is optional in practice (some servers end the packet after the code).
    let message = r.bytes().map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
    match (code, expect) {
        (StatusCode::Ok, Expect::Status) => Ok(Reply::Done),
        (StatusCode::Eof, Expect::Data | Expect::Names) => Ok(Reply::Eof),
        (StatusCode::Ok, _) => Err(SftpError::Protocol(format!("{op}: status OK where data was due"))),
        _ => Err(SftpError::Status { op, code, message }),
    }
}

fn names(r: &mut Reader<'_>) -> Result<Reply, SftpError> {
    let count = r.u32()?;
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let filename = r.bytes()?.to_vec();
        r.bytes()?; // the long name, ls -l style: not used
        out.push(Name { filename, attrs: Attrs::decode(r)? });
    }
    Ok(Reply::Names(out))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, u32::try_from(b.len()).expect("an SFTP string is far below 4 GiB"));
    out.extend_from_slice(b);
}

/// A cursor over a packet; running short is a protocol error, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SftpError> {
        if self.0.len() < n {
            return Err(SftpError::Protocol("a reply ends early".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SftpError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SftpError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, SftpError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SftpError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_request_is_framed_with_its_length_id_and_data() {
        let h = Handle(b"7".to_vec());
        let p = Request::Write { handle: &h, offset: 9, data: b"abc" }.encode(42);
        let body = &p[4..];
        assert_eq!(u32::from_be_bytes(p[..4].try_into().unwrap()) as usize, body.len());
        assert_eq!(body[0], kind::WRITE);
        assert_eq!(reply_id(body).unwrap(), 42);
        assert_eq!(&body[5..], &[0, 0, 0, 1, b'7', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn attributes_read_back_as_written_whichever_are_present() {
        let all = Attrs { size: Some(5), uid_gid: Some((1, 2)), permissions: Some(0o100644), times: Some((3, 4)) };
        let cases = [
            all,
            Attrs { permissions: Some(0o040755), ..Attrs::default() },
            Attrs::mtime(7),
            Attrs { size: Some(9), uid_gid: Some((0, 0)), ..Attrs::default() },
            Attrs::default(),
        ];
        for a in cases {
            let mut out = Vec::new();
            a.encode(&mut out);
            out.extend_from_slice(b"tail");
            let mut r = Reader(&out);
            assert_eq!(Attrs::decode(&mut r).unwrap(), a);
            assert_eq!(r.0, b"tail", "{a:?} read exactly its own bytes");
        }
        assert!(!all.is_dir() && !all.is_symlink());
        assert!(cases[1].is_dir() && !Attrs::default().is_dir());
        assert!(Attrs { permissions: Some(0o120777), ..all }.is_symlink());
    }

    #[test]
    fn free_space_is_the_available_blocks_in_fragments() {
        let v = Statvfs {
            block_size: 4096,
            fragment_size: 1024,
            blocks: 100,
            blocks_free: 50,
            blocks_available: 40,
            files: 0,
            files_free: 0,
            files_available: 0,
            fsid: 0,
            flags: 0,
            name_max: 255,
        };
        assert_eq!(v.available_bytes(), 40 * 1024);
    }

    #[test]
    fn ok_where_data_was_due_is_a_protocol_error() {
        let ok = [kind::STATUS, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(decode(&ok, Expect::Handle, "open"), Err(SftpError::Protocol(_))));
        assert_eq!(decode(&ok, Expect::Status, "close").unwrap(), Reply::Done);
    }

    #[test]
    fn a_short_reply_is_a_protocol_error_not_a_panic() {
        let e = decode(&[kind::HANDLE, 0, 0, 0, 1, 0, 0, 0, 9, b'x'], Expect::Handle, "open").unwrap_err();
        assert!(matches!(e, SftpError::Protocol(_)), "{e:?}");
    }

    #[test]
    fn eof_ends_a_listing_but_is_an_error_to_a_plain_request() {
        let eof = [kind::STATUS, 0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(decode(&eof, Expect::Names, "readdir").unwrap(), Reply::Eof);
        assert!(matches!(decode(&eof, Expect::Status, "close"), Err(SftpError::Status { code: StatusCode::Eof, .. })));
    }
}

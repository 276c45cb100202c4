//! A destination across ssh (docs/design.md, "The ssh destination: the SFTP client"): the
//! storage below a remote root, through OpenSSH's SFTP server, on our own client (`crate::sftp`).
//! Every call is one or a few requests pipelined on one session; many workers' calls are in
//! flight at once, each waiting only for its own answers.
//!
//! How each promise holds without a local filesystem:
//! - no link followed below the root: a folder is every component looked at (LSTAT, all in one
//!   burst) the first time the run uses it, or made by the run (its MKDIRs in one burst), then
//!   remembered (`Known`); racy against a link planted after that look, for the whole run
//!   (SFTP has no `openat`);
//! - never a partial under a final name: a copy is written under its partial name (OPEN with
//!   CREAT|EXCL), and renamed (posix-rename@openssh.com) only after every WRITE, the FSETSTAT of
//!   its mtime, its fsync@openssh.com and its CLOSE were answered OK ([`Backend::complete`]);
//! - durable before it counts: where the host runs `sync -f`, one of the whole filesystem before a
//!   batch counts ([`Durable`]); elsewhere each copy is fsynced on the server before its name is given; a
//!   folder is fsynced by opening it as a file and asking fsync@openssh.com of that handle
//!   (OpenSSH's server opens a folder read-only as it opens a file, and fsync(2) of a folder's
//!   descriptor makes its entries durable), so the renames made since are durable when the
//!   marker is published ([`Backend::flush_all`] flushes every folder named into since the last);
//! - one softcopy per destination without flock: a claim is a lock file made exclusively, naming
//!   host and process, refreshed while the run lives; taken over only when it was seen unchanged
//!   for [`STALE`] (measured on this side: no clock is compared across machines). Each refresh
//!   reads the file back: a run that finds another's name there has lost the destination, and one
//!   that could not confirm lately writes nothing until it does (`claim::Holding`).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::backend::{Backend, Fill, Kind, Located, Look};
use crate::sftp::{Attrs, Done, Handle, OpenMode, Reply, Request, Session, SftpError};
use crate::sys::{Learned, Pacing, Space};
use crate::vocab::{Hash, Identity};
pub use durable::{Durable, StartShell};

use super::claim::{Holding, Standing, Timing, LOCK};
pub use super::claim::{REFRESH, STALE};

/// The storage below a remote root.
pub struct Sftp {
    /// The session, and how to start another when it is lost.
    link: Arc<Link>,
    /// The root as the server resolved it (absolute, `/`-separated).
    root: Vec<u8>,
    /// Folders resolved ([`Backend::folder`], each with the folders above it), or a name was made,
    /// renamed or removed in, since the last [`Backend::flush_all`]: every name the copy relies
    /// on is in one of them, also copies an earlier run named and this one only found.
    touched: Arc<Mutex<HashSet<Vec<u8>>>>,
    /// How long a claim's file must be seen unchanged to be stale ([`STALE`]), and how often a
    /// claim made here is touched ([`REFRESH`]).
    timing: Timing,
    /// Whether this run's claim was lately confirmed ours (by its refresher).
    holding: Arc<Holding>,
    /// Files being written and not yet complete: never renamed (a copy is named only once every
    /// request of it was answered OK, [`Backend::complete`]).
    writing: Arc<Mutex<HashSet<Vec<u8>>>>,
    /// Folders looked at or made by this run, never looked at again ([`Known`]).
    known: Arc<Known>,
    /// Each copy fsynced, or all of them at once ([`Durable`]).
    durable: Arc<Durable>,
}

/// The folders below the root this run looked at (every component a folder, no link) or made
/// itself: a copy into one sends no LSTAT (docs/design.md, "The ssh destination: the SFTP
/// client"). What that gives up: a folder swapped for a link by someone on the server after its
/// look is not seen, where the portable local path looks again before each use (both are racy;
/// this one for the whole run).
#[derive(Default)]
struct Known(Mutex<HashSet<Vec<u8>>>);

impl Known {
    fn knows(&self, path: &[u8]) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(path)
    }

    fn learn(&self, paths: &[Vec<u8>]) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(paths.iter().cloned());
    }

    /// Forgets `path` and every folder below it (removed, or found missing: looked at again).
    fn forget(&self, path: &[u8]) {
        let below = join(path, b"");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != path && !p.starts_with(&below));
    }
}

/// How to start a session to the destination again.
pub type Connect = Arc<dyn Fn() -> Result<Session, String> + Send + Sync>;

/// The sessions of a storage, and how to start another.
struct Link {
    /// Each session, and when the last attempt to replace it was made.
    slots: Vec<Mutex<(Arc<Session>, Option<Instant>)>>,
    /// The next session to hand out: calls take turns over them.
    next: std::sync::atomic::AtomicUsize,
    connect: Option<Connect>,
}

/// Folders fsynced in one burst at most: 3 requests each in flight.
const FLUSH_BURST: usize = 4096;

/// Attempts to start a lost session again, at most this often (each one may take a handshake).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

impl Link {
    fn new(sessions: Vec<Arc<Session>>, connect: Option<Connect>) -> Link {
        let slots = sessions.into_iter().map(|s| Mutex::new((s, None))).collect();
        Link { slots, next: Default::default(), connect }
    }

    /// A session, taking turns: OpenSSH's server runs one session's requests one at a time, so
    /// several sessions overlap their waits (an fsync above all). A request on a handle goes to
    /// the session that opened it (`Opened`); a call that waits for its answer is done on the
    /// server before the next, whatever session that one takes.
    fn session(&self) -> Arc<Session> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.slots.len();
        let mut cur = self.slots[i].lock().unwrap_or_else(|e| e.into_inner());
        let due = cur.1.is_none_or(|t| t.elapsed() >= RECONNECT_EVERY);
        if let (Some(connect), true, true) = (&self.connect, cur.0.lost().is_some(), due) {
            cur.1 = Some(Instant::now());
            if let Ok(s) = connect() {
                cur.0 = Arc::new(s);
            }
        }
        cur.0.clone()
    }
}

/// A remote folder below the root, its components looked at.
pub struct Folder {
    path: Vec<u8>,
}

impl Folder {
    /// Its path on the server, for messages and tests.
    pub fn shown(&self) -> PathBuf {
        path_of(&self.path)
    }

    fn join(&self, name: &Path) -> Vec<u8> {
        join(&self.path, &bytes(name))
    }
}

/// A remote file being written: its requests' answers are gathered on its own channel, and all
/// of them must have come back OK before it may be named ([`Backend::complete`]).
pub struct Writer {
    session: Arc<Session>,
    handle: Handle,
    /// Its path, while in the storage's files being written.
    path: Vec<u8>,
    writing: Arc<Mutex<HashSet<Vec<u8>>>>,
    state: Mutex<Writing>,
    answers: (Sender<Done>, Receiver<Done>),
}

struct Writing {
    /// Where the next byte goes.
    offset: u64,
    /// Requests sent whose answers were not yet read.
    unanswered: usize,
    /// The first request refused, or the connection lost: the copy is not whole.
    failed: Option<SftpError>,
    closed: bool,
}

impl Writer {
    fn send(&self, request: &Request<'_>) {
        self.session.submit_to(request, 0, &self.answers.0);
        self.lock().unanswered += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writing> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every answer owed; the first failure, if any.
    fn settle(&self) -> io::Result<()> {
        let mut st = self.lock();
        while st.unanswered > 0 {
            let done = self.answers.1.recv().map_err(|_| lost("the session ended"))?;
            st.unanswered -= 1;
            if let Err(e) = done.result {
                st.failed.get_or_insert(e);
            }
        }
        st.failed.clone().map_or(Ok(()), |e| Err(e.into()))
    }
}

impl Drop for Writer {
    /// A writer dropped unsealed (an error, a copy thrown away) closes its handle without waiting.
    fn drop(&mut self) {
        self.writing.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.path);
        if !self.lock().closed {
            self.session.submit_to(&Request::Close(&self.handle), 0, &self.answers.0);
        }
    }
}

/// A remote file being read, from its offset. Read straight through (a copy read back to prove
/// it), it keeps `READ_AHEAD` READs in flight, so reading a file costs about one round trip,
/// not one per 255 KiB; a first read, or one after a seek (a shard's index), asks for only what
/// it reads.
pub struct Reader {
    session: Arc<Session>,
    handle: Handle,
    offset: u64,
    /// Bytes received, of which those from `taken` on (at `offset`) are not yet read.
    pending: Vec<u8>,
    taken: usize,
    /// READs in flight past `pending`, in order: where each starts, and its answer.
    ahead: std::collections::VecDeque<(u64, crate::sftp::Ticket)>,
    /// Read through since the last seek: the next reads are sent ahead.
    streaming: bool,
}

/// READs in flight ahead of a reader read straight through (4 MiB).
const READ_AHEAD: usize = 16;
/// What one READ asks for: what one reply may carry (the server's limit is 256 KiB).
const READ_LEN: u32 = 255 * 1024;

impl Reader {
    fn new(opened: Opened) -> Reader {
        let ahead = std::collections::VecDeque::new();
        Reader {
            session: opened.session,
            handle: opened.handle,
            offset: 0,
            pending: Vec::new(),
            taken: 0,
            ahead,
            streaming: false,
        }
    }

    /// The bytes at `offset` into `pending` (none at the end of the file): the next READ in flight
    /// when it starts there, else one asked for now; the READs ahead topped up when streaming.
    fn fetch(&mut self, want: usize) -> io::Result<()> {
        if self.ahead.front().is_some_and(|(at, _)| *at != self.offset) {
            self.ahead.clear();
        }
        if self.streaming {
            let mut next = self.ahead.back().map_or(self.offset, |(at, _)| at + u64::from(READ_LEN));
            while self.ahead.len() < READ_AHEAD {
                let read = Request::Read { handle: &self.handle, offset: next, len: READ_LEN };
                self.ahead.push_back((next, self.session.submit(&read)));
                next += u64::from(READ_LEN);
            }
        }
        let (asked, reply) = match self.ahead.pop_front() {
            Some((_, ticket)) => (READ_LEN as usize, ticket.wait()?),
            None => {
                let len = want.min(READ_LEN as usize) as u32;
                (len as usize, self.session.call(&Request::Read { handle: &self.handle, offset: self.offset, len })?)
            }
        };
        self.streaming = true;
        match reply {
            Reply::Data(d) => {
                // A short answer before the end: the READs ahead start past a gap.
                if d.len() < asked {
                    self.ahead.clear();
                }
                (self.pending, self.taken) = (d, 0);
                Ok(())
            }
            Reply::Eof => {
                self.ahead.clear();
                Ok(())
            }
            other => Err(unexpected("read", &other)),
        }
    }
}

/// A file opened on the server: its handle and the session it belongs to.
struct Opened {
    session: Arc<Session>,
    handle: Handle,
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.taken == self.pending.len() {
            (self.pending, self.taken) = (Vec::new(), 0);
            self.fetch(buf.len())?;
        }
        let n = (self.pending.len() - self.taken).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.taken..self.taken + n]);
        self.taken += n;
        self.offset += n as u64;
        Ok(n)
    }
}

impl io::Seek for Reader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let base = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => self.offset.checked_add_signed(d),
            io::SeekFrom::End(d) => match self.session.call(&Request::Fstat(&self.handle))? {
                Reply::Attrs(a) => a.size.unwrap_or(0).checked_add_signed(d),
                other => return Err(unexpected("fstat", &other)),
            },
        };
        self.offset = base.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        (self.pending, self.taken, self.streaming) = (Vec::new(), 0, false);
        self.ahead.clear();
        Ok(self.offset)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let (tx, _) = crossbeam_channel::bounded(1);
        self.session.submit_to(&Request::Close(&self.handle), 0, &tx);
    }
}

/// A claim on a remote root: its lock file, touched every [`REFRESH`] until dropped, then removed.
pub struct Claim {
    stop: Option<Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
    storage: Sftp,
    path: Vec<u8>,
    /// What the file says: removed at the end only while it still says so (a run that was away
    /// past the stale time may have lost it to another).
    who: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        self.storage.holding.released();
        if self.storage.holder(&self.path).ok().flatten().as_deref() == Some(self.who.trim()) {
            let _ = self.storage.session().call(&Request::Remove(&self.path));
        }
    }
}

impl Sftp {
    /// The storage at `root` (absolute on the server) over `session`: the root resolved by the
    /// server, and found to be a folder.
    pub fn open(session: Session, root: &Path) -> io::Result<Sftp> {
        Sftp::open_making(session, root, false)
    }

    /// [`Sftp::open`], the root made first when missing and `make` (never its parents: a parent
    /// missing is NotFound, as the local destination's, docs/design.md "One destination, one
    /// acquisition").
    pub fn open_making(session: Session, root: &Path, make: bool) -> io::Result<Sftp> {
        let session = Arc::new(session);
        let given = bytes(root);
        if make {
            match session.call(&Request::Lstat(&given)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Err(e) = session.call(&Request::Mkdir { path: &given, attrs: Attrs::default() }) {
                        // Made meanwhile by someone else is no error: looked at below.
                        if session.call(&Request::Lstat(&given)).is_err() {
                            return Err(e.into());
                        }
                    }
                }
                _ => {}
            }
        }
        let root = realpath(&session, &given)?;
        match session.call(&Request::Lstat(&root))? {
            Reply::Attrs(a) if a.is_dir() => {}
            Reply::Attrs(_) => return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder")),
            other => return Err(unexpected("lstat", &other)),
        }
        let link = Arc::new(Link::new(vec![session], None));
        let (touched, holding, writing, known) = Default::default();
        let durable = Arc::new(Durable::EachFile);
        Ok(Sftp { link, root, touched, timing: Timing::for_ssh(), holding, writing, known, durable })
    }

    /// `connections` sessions in all, the others started with `connect`, which also starts a
    /// session again when one is lost (a network blip, sshd restarted): at the next call after the
    /// loss, at most once a second. Copies in flight on a lost session fail (never named) and are
    /// copied again.
    pub fn reconnecting(self, connect: Connect, connections: usize) -> Result<Sftp, String> {
        let first = self.link.slots[0].lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        // Started all at once: each is an ssh handshake of its own, and the run waits for all.
        let others: Vec<Result<Session, String>> = std::thread::scope(|scope| {
            let starting: Vec<_> = (1..connections.max(1)).map(|_| scope.spawn(|| connect())).collect();
            starting
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err("a connection's start panicked".into())))
                .collect()
        });
        let mut sessions = vec![first];
        for s in others {
            sessions.push(Arc::new(s?));
        }
        Ok(Sftp { link: Arc::new(Link::new(sessions, Some(connect))), ..self })
    }

    /// The session now: another one started first where it was lost and may be started again.
    fn session(&self) -> Arc<Session> {
        self.link.session()
    }

    /// Another handle on the same session and root (the folders to flush are shared).
    pub fn share(&self) -> Sftp {
        Sftp {
            link: self.link.clone(),
            root: self.root.clone(),
            touched: self.touched.clone(),
            timing: self.timing,
            holding: self.holding.clone(),
            writing: self.writing.clone(),
            known: self.known.clone(),
            durable: self.durable.clone(),
        }
    }

    /// Makes its copies durable as `durable` says ([`Durable::probe`]).
    pub fn durable(self, durable: Durable) -> Sftp {
        Sftp { durable: Arc::new(durable), ..self }
    }

    /// The root as the server resolved it.
    pub fn root(&self) -> PathBuf {
        path_of(&self.root)
    }

    /// Takes a claim's file seen unchanged for `stale` as left by a run that is gone, and touches
    /// its own every `refresh` (tests).
    #[cfg(all(test, unix))]
    pub(crate) fn timing(&mut self, stale: Duration, refresh: Duration) {
        self.timing = Timing { stale, refresh };
    }

    fn touch(&self, folder: &[u8]) {
        self.touch_all(std::slice::from_ref(&folder.to_vec()));
    }

    /// Adds `folders` to those the next [`Backend::flush_all`] fsyncs; none where a flush is one
    /// `sync -f` of the whole filesystem (the set would only grow, a record per folder).
    fn touch_all(&self, folders: &[Vec<u8>]) {
        if self.durable.batched() {
            return;
        }
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        for f in folders {
            if !touched.contains(f) {
                touched.insert(f.clone());
            }
        }
    }

    /// Checks the folders `paths` (each inside the one before; `parts` their names) for a link
    /// and makes the missing ones when `create`: nothing is sent for one this run already knows,
    /// one MKDIR for a new folder in a known one, else every component LSTATed in one burst.
    fn resolve(&self, paths: &[Vec<u8>], parts: &[Vec<u8>], create: bool) -> io::Result<()> {
        if paths.last().is_none_or(|last| self.known.knows(last)) {
            return Ok(());
        }
        if create && self.made_in_known_parent(paths)? {
            return Ok(());
        }
        let looks = self.burst(&paths.iter().map(|p| Request::Lstat(p)).collect::<Vec<_>>());
        for (i, look) in looks.into_iter().enumerate() {
            match look {
                Ok(Reply::Attrs(a)) if a.is_symlink() => return Err(link_error(&self.root, &parts[..=i])),
                Ok(Reply::Attrs(a)) if !a.is_dir() => return Err(io::ErrorKind::NotFound.into()),
                Ok(Reply::Attrs(_)) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    self.make(&paths[i..], parts)?;
                    break;
                }
                Err(e) => return Err(e.into()),
                Ok(other) => return Err(unexpected("lstat", &other)),
            }
        }
        self.known.learn(paths);
        Ok(())
    }

    /// Every reply to `requests`, sent back to back: one round trip for all.
    fn burst(&self, requests: &[Request<'_>]) -> Vec<Result<Reply, SftpError>> {
        let tickets: Vec<_> = requests.iter().map(|r| self.session().submit(r)).collect();
        tickets.into_iter().map(crate::sftp::Ticket::wait).collect()
    }

    fn lstat(&self, path: &[u8]) -> io::Result<Attrs> {
        match self.session().call(&Request::Lstat(path))? {
            Reply::Attrs(a) => Ok(a),
            other => Err(unexpected("lstat", &other)),
        }
    }

    /// Opens `path`: the handle, and the session it belongs to (every later request on it goes
    /// there).
    fn open_file(&self, path: &[u8], mode: OpenMode, attrs: Attrs) -> io::Result<Opened> {
        let session = self.session();
        match session.call(&Request::Open { path, mode, attrs })? {
            Reply::Handle(handle) => Ok(Opened { session, handle }),
            other => Err(unexpected("open", &other)),
        }
    }

    /// A writer on `handle`, the file at `path` (among the files being written until complete),
    /// writing from `offset`.
    fn writer(&self, opened: Opened, path: Vec<u8>, offset: u64) -> Writer {
        self.writing.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        let state = Writing { offset, unanswered: 0, failed: None, closed: false };
        Writer {
            session: opened.session,
            handle: opened.handle,
            path,
            writing: self.writing.clone(),
            state: Mutex::new(state),
            answers: crossbeam_channel::unbounded(),
        }
    }

    /// A refused request whose code cannot tell why (OpenSSH answers EEXIST as FAILURE): the
    /// name there makes it AlreadyExists.
    fn exists_or(&self, path: &[u8], e: io::Error) -> io::Error {
        match self.lstat(path) {
            Ok(_) if e.kind() != io::ErrorKind::ConnectionAborted => io::ErrorKind::AlreadyExists.into(),
            _ => e,
        }
    }

    /// Whether the last of `paths` (a folder's components) was just made by one MKDIR, its parent
    /// known: no look before (a MKDIR never follows a link at its last component, and the parent
    /// is one this run looked at or made). Not for two new components or more: the second MKDIR,
    /// sent before the first's answer, would go through a link planted at the first. A refused
    /// MKDIR (the folder there already) is false: the folder is then looked at.
    fn made_in_known_parent(&self, paths: &[Vec<u8>]) -> io::Result<bool> {
        let Some((last, above)) = paths.split_last() else { return Ok(false) };
        if !above.last().is_none_or(|parent| self.known.knows(parent)) {
            return Ok(false);
        }
        match self.session().call(&Request::Mkdir { path: last, attrs: Attrs::default() }) {
            Ok(_) => {
                self.known.learn(std::slice::from_ref(last));
                Ok(true)
            }
            Err(e) if e.is_connection_lost() => Err(e.into()),
            Err(_) => Ok(false),
        }
    }

    /// Makes the folders `paths` (each inside the one before), all MKDIRs sent back to back on one
    /// session (which runs them in order). A folder this MKDIR made is ours, no link (MKDIR never
    /// follows one): no look. One that was refused (made meanwhile by another worker, or a link
    /// planted there) is looked at, in one burst.
    fn make(&self, paths: &[Vec<u8>], parts: &[Vec<u8>]) -> io::Result<()> {
        let session = self.session();
        let tickets: Vec<_> =
            paths.iter().map(|path| session.submit(&Request::Mkdir { path, attrs: Attrs::default() })).collect();
        let mut refused = Vec::new();
        for (path, ticket) in paths.iter().zip(tickets) {
            match ticket.wait() {
                Ok(_) => {}
                Err(e) if e.is_connection_lost() => return Err(e.into()),
                Err(_) => refused.push(path),
            }
        }
        let looks = self.burst(&refused.iter().map(|p| Request::Lstat(p)).collect::<Vec<_>>());
        for look in looks {
            match look? {
                Reply::Attrs(a) if a.is_dir() && !a.is_symlink() => {}
                _ => return Err(link_error(&self.root, parts)),
            }
        }
        Ok(())
    }

    /// Fsyncs each of `paths`, folders or files (opened read-only, fsync@openssh.com, close: the
    /// server fsyncs the descriptor of either), pipelined in bursts of [`FLUSH_BURST`] (requests in
    /// flight bounded however many folders a resumed run looked at).
    fn fsync_each(&self, paths: &[Vec<u8>]) -> io::Result<()> {
        let mut failed = None;
        for burst in paths.chunks(FLUSH_BURST) {
            if let Err(e) = self.flush_burst(burst) {
                failed = failed.or(Some(e));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Fsyncs each of `folders`, all in one burst.
    fn flush_burst(&self, folders: &[Vec<u8>]) -> io::Result<()> {
        let mut failed: Option<io::Error> = None;
        let opening: Vec<_> = folders
            .iter()
            .map(|f| {
                let session = self.session();
                let ticket = session.submit(&Request::Open { path: f, mode: OpenMode::Read, attrs: Attrs::default() });
                (session, ticket)
            })
            .collect();
        let mut opened = Vec::new();
        for (session, ticket) in opening {
            match ticket.wait() {
                Ok(Reply::Handle(handle)) => opened.push(Opened { session, handle }),
                Ok(other) => failed = failed.or(Some(unexpected("open", &other))),
                Err(e) => failed = failed.or(Some(e.into())),
            }
        }
        // Each folder's fsync and close on the session that opened it, all in one burst.
        let flushing: Vec<_> = opened
            .iter()
            .flat_map(|o| [o.session.submit(&Request::Fsync(&o.handle)), o.session.submit(&Request::Close(&o.handle))])
            .collect();
        for ticket in flushing {
            if let Err(e) = ticket.wait() {
                failed = failed.or(Some(e.into()));
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Who holds the lock file at `path`, if there is one: what it says.
    fn holder(&self, path: &[u8]) -> io::Result<Option<String>> {
        let opened = match self.open_file(path, OpenMode::Read, Attrs::default()) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut text = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(Reader::new(opened), 512), &mut text)?;
        Ok(Some(super::claim::described(&String::from_utf8_lossy(&text))))
    }

    /// What the lock file at `path` looked like, when it stays unchanged (size and times) for
    /// `self.stale`, looked at every [`REFRESH`]: only then is its run gone. An error or a change
    /// says it is not (`None`).
    fn stays_unchanged(&self, path: &[u8]) -> Option<Attrs> {
        let first = self.lstat(path).ok()?;
        let since = Instant::now();
        while since.elapsed() < self.timing.stale {
            std::thread::sleep(self.timing.refresh.min(self.timing.stale));
            match self.lstat(path) {
                Ok(now) if (now.size, now.times) == (first.size, first.times) => {}
                _ => return None,
            }
        }
        Some(first)
    }

    /// Moves the stale lock file at `path`, `seen` so, aside under a name of our own and removes
    /// it. The rename goes by name: a run that took the same stale file over first may have made
    /// its own there since it was last looked at, which is then put back (never removed: a link
    /// fails if a third run's file is there, and then it stays aside) and this run refused.
    fn set_aside(&self, path: &[u8], seen: &Attrs) -> Result<(), String> {
        let shown = path_of(path);
        let cannot = |e: io::Error| format!("cannot claim {}: {e}", shown.display());
        let mut aside = path.to_vec();
        aside.extend_from_slice(format!(".stale-{}", std::process::id()).as_bytes());
        self.session().call(&Request::PosixRename { from: path, to: &aside }).map_err(|e| cannot(e.into()))?;
        if self.lstat(&aside).is_ok_and(|moved| (moved.size, moved.times) == (seen.size, seen.times)) {
            let _ = self.session().call(&Request::Remove(&aside));
            return Ok(());
        }
        let holder = self.holder(&aside).ok().flatten().unwrap_or_default();
        if self.session().call(&Request::Hardlink { from: &aside, to: path }).is_ok() {
            let _ = self.session().call(&Request::Remove(&aside));
        }
        Err(format!(
            "destination {} is being copied to by another softcopy ({holder}), which took it over first",
            shown.parent().unwrap_or(&shown).display()
        ))
    }

    /// Makes the lock file at `path` saying `who` (and [`super::claim::TOUCHED`]), exclusively: AlreadyExists when one is there.
    fn make_lock(&self, path: &[u8], who: &str) -> io::Result<()> {
        let attrs = Attrs { permissions: Some(0o644), ..Attrs::default() };
        let opened = self.open_file(path, OpenMode::CreateNew, attrs).map_err(|e| self.exists_or(path, e))?;
        let w = self.writer(opened, path.to_vec(), 0);
        // Marked as a claim kept by touching: a local run that gets the OS lock on it waits for
        // the stale time before it takes it (`claim.rs`).
        self.write(&w, format!("{}\n{}\n", who.trim(), super::claim::TOUCHED).as_bytes())?;
        self.flush_file(&w)
    }

    /// Reads the claim's file at `path` back: ours, the claim is confirmed as of `touched` (when
    /// its last touch was sent; `None`: not touched now, nothing learned); another's or gone, it
    /// is lost. A read that fails tells nothing.
    fn judge(&self, path: &[u8], who: &str, touched: Option<Instant>) {
        let Ok(found) = self.holder(path) else { return };
        match super::claim::judged(found.as_deref(), who, &self.root()) {
            Ok(()) => {
                if let Some(sent) = touched {
                    self.holding.confirmed(sent, self.timing.hold_for(), who);
                }
            }
            Err(why) => self.holding.lost(why),
        }
    }
}

impl Sftp {
    /// Fsyncs the files `rels` below the root on the server, all pipelined: the flush of everything
    /// reaches folders only (each copy this run names was fsynced first), so a copy found there,
    /// one no run of ours wrote or one a local run on the server left unflushed, is made durable
    /// this way before its source is freed (docs/design.md, "The end of a run", Freeing).
    pub fn flush_files(&self, rels: &[&Path]) -> io::Result<()> {
        if self.durable.batched() {
            // The flush of everything is then a `sync -f` of the whole filesystem: every dirty
            // page there, whoever wrote it (an earlier run, rsync), is written by it.
            return Ok(());
        }
        let path =
            |r: &Path| r.components().fold(self.root.clone(), |at, c| join(&at, &bytes(Path::new(c.as_os_str()))));
        self.fsync_each(&rels.iter().map(|r| path(r)).collect::<Vec<_>>())
    }

    /// What each of `rels` below the root is, with its path on the server, all in two bursts:
    /// every folder on the way looked at (a link or not a folder there is an error naming it),
    /// then the names themselves, never followed. For proofs of many copies at once
    /// (`server_hash.rs`), where a look per file in sequence would cost a round trip each.
    pub fn look_all(&self, rels: &[&Path]) -> Vec<io::Result<(Vec<u8>, Look)>> {
        // A name that is not plainly below the root (`..`, absolute) has no components: refused.
        let normal = |r: &Path| r.components().all(|c| matches!(c, Component::Normal(_)));
        let parts: Vec<Vec<Vec<u8>>> = rels
            .iter()
            .map(|r| if normal(r) { r.components().map(|c| bytes(Path::new(c.as_os_str()))).collect() } else { vec![] })
            .collect();
        let prefix = |p: &[Vec<u8>]| p.iter().fold(self.root.clone(), |at, c| join(&at, c));
        let folders: Vec<Vec<u8>> = parts
            .iter()
            .flat_map(|p| (1..p.len()).map(move |n| p[..n].to_vec()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|p| prefix(&p))
            .collect();
        let looks = self.burst(&folders.iter().map(|p| Request::Lstat(p)).collect::<Vec<_>>());
        let bad: std::collections::HashMap<&[u8], io::Error> = folders
            .iter()
            .zip(looks)
            .filter_map(|(path, look)| match look {
                Ok(Reply::Attrs(a)) if a.is_dir() && !a.is_symlink() => None,
                Ok(Reply::Attrs(a)) if a.is_symlink() => {
                    Some((path.as_slice(), super::Refused::Link(path_of(path)).into()))
                }
                Ok(Reply::Attrs(_)) => Some((path.as_slice(), io::ErrorKind::NotFound.into())),
                Ok(other) => Some((path.as_slice(), unexpected("lstat", &other))),
                Err(e) => Some((path.as_slice(), e.into())),
            })
            .collect();
        let files: Vec<Vec<u8>> = parts.iter().map(|p| prefix(p)).collect();
        let looks = self.burst(&files.iter().map(|p| Request::Lstat(p)).collect::<Vec<_>>());
        parts
            .iter()
            .zip(files)
            .zip(looks)
            .map(|((p, path), look)| {
                if p.is_empty() {
                    return Err(io::ErrorKind::InvalidInput.into());
                }
                if let Some(e) = (1..p.len()).find_map(|n| bad.get(prefix(&p[..n]).as_slice())) {
                    return Err(io::Error::new(e.kind(), e.to_string()));
                }
                match look? {
                    Reply::Attrs(a) => Ok((path, Look { kind: kind_of(&a), ident: identity(&a) })),
                    other => Err(unexpected("lstat", &other)),
                }
            })
            .collect()
    }
}

impl Backend for Sftp {
    type Folder = Folder;
    type Writer = Writer;
    type Reader = Reader;
    type Claim = Claim;

    fn folder(&self, rel_dir: &Path, create: bool) -> io::Result<Folder> {
        let mut parts = Vec::new();
        for c in rel_dir.components() {
            match c {
                Component::Normal(p) => parts.push(bytes(Path::new(p))),
                _ => return Err(io::ErrorKind::InvalidInput.into()),
            }
        }
        let paths: Vec<Vec<u8>> =
            (1..=parts.len()).map(|n| parts[..n].iter().fold(self.root.clone(), |p, c| join(&p, c))).collect();
        let folder = Folder { path: paths.last().cloned().unwrap_or_else(|| self.root.clone()) };
        self.resolve(&paths, &parts, create)?;
        // Whatever this run finds here (an earlier run's copies too) is made durable by the next
        // flush of everything, with the entries of each folder above it: known or not.
        self.touch_all(&paths);
        Ok(folder)
    }

    fn list(&self, folder: &Folder) -> io::Result<Vec<(OsString, Kind)>> {
        // Every request on the folder's handle goes to the session that opened it.
        let session = self.session();
        let h = match session.call(&Request::Opendir(&folder.path))? {
            Reply::Handle(h) => h,
            other => return Err(unexpected("opendir", &other)),
        };
        let mut out = Vec::new();
        let listed = loop {
            match session.call(&Request::Readdir(&h)) {
                Ok(Reply::Names(names)) => {
                    for n in names.into_iter().filter(|n| n.filename != b"." && n.filename != b"..") {
                        out.push((path_of(&n.filename).into_os_string(), kind_of(&n.attrs)));
                    }
                }
                Ok(Reply::Eof) => break Ok(()),
                Ok(other) => break Err(unexpected("readdir", &other)),
                Err(e) => break Err(e.into()),
            }
        };
        let _ = session.call(&Request::Close(&h));
        // A listing cut short is no listing: never taken for a folder with fewer names.
        listed.map(|()| out)
    }

    fn look(&self, folder: &Folder, name: &Path) -> io::Result<Look> {
        let a = self.lstat(&folder.join(name))?;
        Ok(Look { kind: kind_of(&a), ident: identity(&a) })
    }

    fn read(&self, folder: &Folder, name: &Path) -> io::Result<Reader> {
        let path = folder.join(name);
        // OPEN follows a link: the name is looked at first (racy, as the portable local path).
        if self.lstat(&path)?.is_symlink() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a link"));
        }
        Ok(Reader::new(self.open_file(&path, OpenMode::Read, Attrs::default())?))
    }

    fn create(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<Writer> {
        let path = folder.join(name);
        let attrs = Attrs { permissions: Some(mode), ..Attrs::default() };
        let opened = self.open_file(&path, OpenMode::CreateNew, attrs).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                // Removed since it was looked at: looked at (and made) again at the next copy.
                self.known.forget(&folder.path);
            }
            self.exists_or(&path, e)
        })?;
        Ok(self.writer(opened, path, 0))
    }

    fn create_unnamed(&self, _folder: &Folder, _mode: u32, _learned: &Learned) -> io::Result<Option<Writer>> {
        Ok(None)
    }

    fn name_unnamed(&self, _w: &Writer, _folder: &Folder, _name: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    // OpenSSH's SFTP server keeps no extended attributes: a resumed run compares the bytes (by
    // the server's hash where it has one).
    fn set_mark(&self, _w: &Writer, _mark: &[u8], _learned: &Learned) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn mark(&self, _folder: &Folder, _name: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn unmark(&self, _folder: &Folder, _name: &Path) -> io::Result<()> {
        Ok(())
    }

    fn fill<P: Pacing>(&self, w: &Writer, src: &File, how: Fill<'_, P>) -> io::Result<(u64, Option<Hash>)> {
        let (limit, pace, mut hasher) = match how {
            Fill::Copy { size, pace, .. } => (size, pace, None),
            Fill::Hashed { pace } => (u64::MAX, pace, Some(blake3::Hasher::new())),
        };
        let n = crate::sys::read_paced(src, limit, pace, &mut |block| {
            if let Some(h) = hasher.as_mut() {
                h.update(block);
            }
            self.write(w, block)
        })?;
        Ok((n, hasher.map(|h| crate::content::truncate(&h))))
    }

    fn stamp(&self, w: &Writer, mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
        // SFTP carries whole seconds: verification compares within that (`vocab::same_mtime_ns`).
        let secs = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs() as u32);
        let attrs = Attrs { permissions: Some(mode & 0o7777), times: secs.map(|s| (s, s)), ..Attrs::default() };
        w.send(&Request::Fsetstat { handle: &w.handle, attrs });
        Ok(())
    }

    fn flush_file(&self, w: &Writer) -> io::Result<()> {
        // Behind its writes, and every answer read: the file stays open (the journal appends on).
        w.send(&Request::Fsync(&w.handle));
        w.settle()
    }

    fn complete(&self, w: &Writer) -> io::Result<()> {
        // The copy's burst ends here: fsync (unless a `sync -f` of the whole filesystem comes
        // before the batch counts: `Durable`), then close, both behind its writes, and every
        // answer read before the copy may be named.
        if !self.durable.batched() {
            w.send(&Request::Fsync(&w.handle));
        }
        w.send(&Request::Close(&w.handle));
        w.lock().closed = true;
        w.settle()?;
        self.writing.lock().unwrap_or_else(|e| e.into_inner()).remove(&w.path);
        Ok(())
    }

    fn rename(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        let (from, to) = (from_folder.join(from), to_folder.join(to));
        if self.writing.lock().unwrap_or_else(|e| e.into_inner()).contains(&from) {
            return Err(io::Error::other("a copy is named only once all of it was answered OK (not yet)"));
        }
        self.session().call(&Request::PosixRename { from: &from, to: &to })?;
        self.touch(&from_folder.path);
        self.touch(&to_folder.path);
        Ok(())
    }

    fn link(&self, from_folder: &Folder, from: &Path, to_folder: &Folder, to: &Path) -> io::Result<()> {
        let (from, to) = (from_folder.join(from), to_folder.join(to));
        self.session().call(&Request::Hardlink { from: &from, to: &to }).map_err(|e| self.exists_or(&to, e.into()))?;
        self.touch(&to_folder.path);
        Ok(())
    }

    fn remove_file(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        self.session().call(&Request::Remove(&folder.join(name)))?;
        self.touch(&folder.path);
        Ok(())
    }

    fn remove_folder(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        let path = folder.join(name);
        self.session().call(&Request::Rmdir(&path))?;
        self.known.forget(&path);
        // Gone, with whatever was named in it: its removal is durable with its parent's entries.
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        touched.remove(&path);
        touched.insert(folder.path.clone());
        Ok(())
    }

    fn flush_folder(&self, folder: &Folder) -> io::Result<()> {
        self.touched.lock().unwrap_or_else(|e| e.into_inner()).remove(&folder.path);
        self.fsync_each(std::slice::from_ref(&folder.path))
    }

    fn append(&self, folder: &Folder, name: &Path, mode: u32) -> io::Result<Writer> {
        let path = folder.join(name);
        let size = match self.lstat(&path) {
            Ok(a) if a.is_symlink() => return Err(io::Error::new(io::ErrorKind::InvalidInput, "a link")),
            Ok(a) => Some(a.size.unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (opened, offset) = match size {
            Some(n) => (self.open_file(&path, OpenMode::Write, Attrs::default())?, n),
            None => {
                let attrs = Attrs { permissions: Some(mode), ..Attrs::default() };
                (self.open_file(&path, OpenMode::CreateNew, attrs).map_err(|e| self.exists_or(&path, e))?, 0)
            }
        };
        Ok(self.writer(opened, path, offset))
    }

    fn write(&self, w: &Writer, bytes: &[u8]) -> io::Result<()> {
        let offset = {
            let mut st = w.lock();
            let at = st.offset;
            st.offset += bytes.len() as u64;
            at
        };
        let n = w.session.submit_write(&w.handle, offset, bytes, 0, &w.answers.0);
        w.lock().unanswered += n;
        Ok(())
    }

    fn flush_named(&self, folder: &Folder, name: &Path) -> io::Result<()> {
        // Opened for writing without truncating it (never through a link: looked at first).
        let path = folder.join(name);
        if self.lstat(&path)?.is_symlink() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a link"));
        }
        let w = self.writer(self.open_file(&path, OpenMode::Write, Attrs::default())?, path.clone(), 0);
        self.flush_file(&w)
    }

    fn flush_all(&self, root: &Folder) -> io::Result<()> {
        if let Durable::Batched(syncer) = &*self.durable {
            // The whole filesystem, every copy and name in it: no folder left to fsync.
            return syncer.sync();
        }
        let mut folders: Vec<Vec<u8>> = self.touched.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        if !folders.contains(&root.path) {
            folders.push(root.path.clone());
        }
        let flushed = self.fsync_each(&folders);
        if flushed.is_err() {
            // Not flushed: asked again at the next flush.
            self.touched.lock().unwrap_or_else(|e| e.into_inner()).extend(folders);
        }
        flushed
    }

    fn flushes_in_background(&self) -> bool {
        // A `sync -f` every few seconds while copies land leaves the one before the marker
        // little to write (as the local path's syncfs, `flush.rs`).
        self.durable.batched()
    }

    fn free_space(&self, root: &Folder) -> Option<Space> {
        match self.session().call(&Request::Statvfs(&root.path)).ok()? {
            Reply::Statvfs(s) => Some(Space {
                free_bytes: s.available_bytes(),
                total_bytes: s.blocks.saturating_mul(s.fragment_size),
                free_files: s.files_available,
                total_files: s.files,
            }),
            _ => None,
        }
    }

    fn locate(&self, given: &Path) -> io::Result<Located<Folder>> {
        let path = realpath(&self.session(), &bytes(given))?;
        if !self.lstat(&path)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"));
        }
        // SFTP tells no file numbers: the origin's record tells a folder swapped in (`Dest::check_root`).
        Ok(Located { path: path_of(&path), id: (0, 0), folder: Folder { path } })
    }

    fn whole_storage_error(&self, e: &io::Error) -> bool {
        if e.kind() == io::ErrorKind::ConnectionAborted {
            return true;
        }
        // OpenSSH answers ENOSPC and EDQUOT as a bare FAILURE: the server's figures tell a full disk.
        let full = |s: Space| s.free_bytes == 0 || s.free_files == 0;
        e.kind() == io::ErrorKind::Other && self.free_space(&Folder { path: self.root.clone() }).is_some_and(full)
    }

    fn claim(&self, root: &Folder, who: &str) -> Result<Claim, String> {
        let shown = path_of(&root.path);
        for outer in shown.ancestors().skip(1) {
            if let Ok(Some(holder)) = self.holder(&join(&bytes(outer), LOCK.as_bytes())) {
                return Err(format!(
                    "destination {} is inside {}, which another softcopy is copying to ({holder})",
                    shown.display(),
                    outer.display()
                ));
            }
        }
        let path = root.join(Path::new(LOCK));
        let cannot = |e: io::Error| format!("cannot claim {}: {e}", path_of(&path).display());
        let made = loop {
            let made = Instant::now();
            match self.make_lock(&path, who) {
                Ok(()) => break made,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cannot(e)),
            }
            let held = self.holder(&path).map_err(cannot)?.unwrap_or_default();
            let Some(seen) = self.stays_unchanged(&path) else {
                return Err(format!("destination {} is being copied to by another softcopy ({held})", shown.display()));
            };
            // Stale: of two runs taking it over at once, only one rename finds it, and the other
            // tries again (and finds the winner's claim), or meets the winner's file (refused).
            self.set_aside(&path, &seen)?;
        };
        self.holding.confirmed(made, self.timing.hold_for(), who);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (storage, touched, mine) = (self.share(), path.clone(), who.to_string());
        let refresher = std::thread::Builder::new()
            .name("softcopy-claim".into())
            .spawn(move || refresh(&storage, &touched, &mine, &stopped))
            .map_err(cannot)?;
        let who = who.to_string();
        Ok(Claim { stop: Some(stop), refresher: Some(refresher), storage: self.share(), path, who })
    }

    fn standing(&self) -> Standing {
        self.holding.standing(&self.root())
    }

    fn reconfirm(&self) -> Standing {
        if let Some(who) = self.holding.who() {
            self.judge(&join(&self.root, LOCK.as_bytes()), &who, None);
        }
        self.standing()
    }

    fn claimed(&self, folder: &Folder) -> Option<String> {
        // A lock file is a claim until a run that wants the folder finds it stale: one look cannot
        // tell, and a claim wrongly seen keeps softcopy out (never in).
        self.holder(&folder.join(Path::new(LOCK))).unwrap_or_else(|e| Some(format!("its claim cannot be read: {e}")))
    }
}

/// Touches the claim's file every refresh until `stopped` (its sender dropped). Its mtime is set
/// to a count of refreshes, not a time: the file changes at each touch (whole seconds could
/// repeat), and a waiting run compares it with itself, never with a clock. After each touch the
/// file is read back: still ours, the claim is confirmed as of when the touch was sent (no run
/// can find it stale before that plus the stale time); another's or gone, it is lost for good.
fn refresh(storage: &Sftp, path: &[u8], who: &str, stopped: &Receiver<()>) {
    let mut n: u32 = 1;
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(storage.timing.refresh) {
        n = n.wrapping_add(1);
        let sent = Instant::now();
        if storage.session().call(&Request::Setstat { path, attrs: Attrs::mtime(n) }).is_ok() {
            storage.judge(path, who, Some(sent));
        }
    }
}

fn realpath(session: &Session, path: &[u8]) -> io::Result<Vec<u8>> {
    match session.call(&Request::Realpath(path))? {
        Reply::Names(mut n) if n.len() == 1 => Ok(n.remove(0).filename),
        other => Err(unexpected("realpath", &other)),
    }
}

fn kind_of(a: &Attrs) -> Kind {
    match a.permissions.map(|p| p & 0o170000) {
        Some(0o100000) => Kind::File,
        Some(0o040000) => Kind::Folder,
        _ => Kind::Other,
    }
}

/// What SFTP tells of a file: its size and mtime (whole seconds); no device, file number or
/// change time.
fn identity(a: &Attrs) -> Identity {
    let mtime_ns = a.times.map_or(0, |(_, m)| i64::from(m) * 1_000_000_000);
    Identity { dev: 0, ino: 0, size: a.size.unwrap_or(0), mtime_ns, ctime_ns: 0 }
}

fn unexpected(op: &str, reply: &Reply) -> io::Error {
    io::Error::other(format!("{op}: unexpected reply {reply:?}"))
}

fn lost(why: &str) -> io::Error {
    SftpError::ConnectionLost(why.into()).into()
}

fn link_error(root: &[u8], rel: &[Vec<u8>]) -> io::Error {
    let at = rel.iter().fold(root.to_vec(), |p, c| join(&p, c));
    super::Refused::Link(path_of(&at)).into()
}

/// `name` in the remote folder `folder`.
fn join(folder: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = folder.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A remote path's bytes (the server's names are bytes; on Windows, UTF-8 with `/`).
pub(crate) fn bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().replace('\\', "/").into_bytes()
    }
}

/// A remote path's bytes as a path, for messages and listings.
fn path_of(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

mod durable;
#[cfg(all(test, unix))]
mod tests;

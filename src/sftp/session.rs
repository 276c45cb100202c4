//! One SFTP session over a spawned program's pipes (`ssh … -s host sftp`, or an `sftp-server`
//! directly): a writer thread sends packets in submission order, a reader thread routes each reply
//! to its request by id, so thousands of requests can be in flight and no thread waits per file
//! (docs/design.md, "The ssh destination: the SFTP client").

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::error::SftpError;
use super::wire::{self, Expect, Reply, Request};

/// How a session is run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Requests sent and not yet answered, at most: `submit` waits past this. Bounds the memory of
    /// queued writes and the server's backlog, not the latency hiding (a few hundred files suffice).
    pub max_in_flight: usize,
    /// How long the start may wait for the server's VERSION: past it the program is killed and the
    /// start fails as lost, so a server (or a program) that never answers cannot hang a service.
    pub handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_in_flight: 4096, handshake_timeout: Duration::from_secs(60) }
    }
}

/// The answer to one request, delivered to the channel it was submitted with.
#[derive(Debug)]
pub struct Done {
    /// The caller's tag, given back unchanged.
    pub tag: u64,
    pub result: Result<Reply, SftpError>,
}

/// The answer to one request submitted with [`Session::submit`], to wait for when needed.
#[derive(Debug)]
pub struct Ticket(Receiver<Done>);

impl Ticket {
    /// Waits for the answer.
    pub fn wait(self) -> Result<Reply, SftpError> {
        self.0.recv().map_or_else(|_| Err(SftpError::ConnectionLost("the session ended".into())), |d| d.result)
    }

    /// Waits at most `limit` for the answer: `None` if it has not come by then (the request stays
    /// in flight; a bounded wait for a poll, never a guess that it failed).
    pub fn wait_timeout(&self, limit: Duration) -> Option<Result<Reply, SftpError>> {
        match self.0.recv_timeout(limit) {
            Ok(d) => Some(d.result),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Some(Err(SftpError::ConnectionLost("the session ended".into())))
            }
        }
    }
}

struct Route {
    expect: Expect,
    op: &'static str,
    tag: u64,
    done: Sender<Done>,
}

#[derive(Default)]
struct Pending {
    routes: HashMap<u32, Route>,
    /// Why the session is over, once it is: every later request fails with it at once.
    lost: Option<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when a request is answered or the session is lost: room for `submit`.
    room: Condvar,
    /// What the program last wrote on stderr (ssh's reason for failing), at most `STDERR_TAIL`.
    stderr: Mutex<String>,
}

const STDERR_TAIL: usize = 2048;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the session: every request in flight fails with the same reason, and so will any later.
    fn lose(&self, why: String) {
        let mut p = self.lock();
        let why = p.lost.get_or_insert(why).clone();
        for (_, r) in p.routes.drain() {
            let _ = r.done.send(Done { tag: r.tag, result: Err(SftpError::ConnectionLost(why.clone())) });
        }
        self.room.notify_all();
    }

    fn stderr_tail(&self) -> String {
        let s = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        s.trim().lines().last().unwrap_or("").to_string()
    }
}

/// One SFTP session. `submit` may be called from several threads; requests from one thread reach
/// the server in the order submitted, and OpenSSH's sftp-server runs them in that order.
pub struct Session {
    outgoing: Option<Sender<Vec<u8>>>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    max_in_flight: usize,
    extensions: Extensions,
    max_write: usize,
    child: Child,
    threads: Vec<JoinHandle<()>>,
}

impl Session {
    /// Starts `command` (its stdin and stdout become the SFTP stream; stderr is kept for messages)
    /// and does the version handshake.
    pub fn spawn(mut command: Command, options: Options) -> Result<Session, SftpError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SftpError::Spawn { program, message: e.to_string() })?;
        let (stdin, stdout, stderr) = pipes(&mut child);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            room: Condvar::new(),
            stderr: Mutex::new(String::new()),
        });
        let (stderr_done, stderr_ended) = crossbeam_channel::bounded::<()>(0);
        let s = shared.clone();
        let mut threads = vec![std::thread::spawn(move || keep_stderr(stderr, &s, stderr_done))];
        let stdin = BufWriter::with_capacity(1 << 16, stdin);
        let stdout = BufReader::with_capacity(1 << 16, stdout);
        let ((stdin, stdout), extensions) = match handshake_within(stdin, stdout, options.handshake_timeout) {
            Ok(x) => x,
            Err(e) => return Err(failed_start(e, child, &shared, &stderr_ended, threads)),
        };
        let (outgoing, queue) = crossbeam_channel::unbounded();
        let s = shared.clone();
        threads.push(std::thread::spawn(move || write_loop(stdin, &queue, &s)));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || read_loop(stdout, &s, &stderr_ended)));
        let mut session = Session {
            outgoing: Some(outgoing),
            shared,
            next_id: AtomicU32::new(0),
            max_in_flight: options.max_in_flight.max(1),
            extensions,
            max_write: DRAFT_MAX_WRITE,
            child,
            threads,
        };
        session.max_write = session.ask_max_write()?;
        Ok(session)
    }

    /// Whether the server announced extension `name` (e.g. "posix-rename@openssh.com").
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|(n, _)| n == name)
    }

    /// The largest WRITE this server takes (limits@openssh.com; 32 KiB, the draft's minimum,
    /// when it does not say).
    pub fn max_write(&self) -> usize {
        self.max_write
    }

    /// Sends `request`; its answer goes to `done` tagged `tag`. Waits only while `max_in_flight`
    /// requests are unanswered. On a lost session the error is delivered at once, the same way.
    pub fn submit_to(&self, request: &Request<'_>, tag: u64, done: &Sender<Done>) {
        if let Some(ext) = request.extension().filter(|e| !self.has_extension(e)) {
            let _ = done.send(Done { tag, result: Err(SftpError::Unsupported(ext)) });
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let route = Route { expect: request.expect(), op: request.op(), tag, done: done.clone() };
        if let Err(why) = self.enter(id, route) {
            let _ = done.send(Done { tag, result: Err(SftpError::ConnectionLost(why)) });
            return;
        }
        let sent = self.outgoing.as_ref().is_some_and(|o| o.send(request.encode(id)).is_ok());
        if !sent {
            self.shared.lose("the session is closing".into());
        }
    }

    /// Sends `request` and returns a ticket for its answer.
    pub fn submit(&self, request: &Request<'_>) -> Ticket {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit_to(request, 0, &tx);
        Ticket(rx)
    }

    /// Sends `request` and waits for its answer: for the rare request nothing else waits behind.
    pub fn call(&self, request: &Request<'_>) -> Result<Reply, SftpError> {
        self.submit(request).wait()
    }

    /// Sends `data` to be written at `offset` as WRITEs of at most `max_write` bytes, back to back,
    /// each answered to `done` with `tag`; returns how many answers to expect.
    pub fn submit_write(
        &self,
        handle: &wire::Handle,
        offset: u64,
        data: &[u8],
        tag: u64,
        done: &Sender<Done>,
    ) -> usize {
        let mut n = 0;
        for (i, chunk) in data.chunks(self.max_write).enumerate() {
            let at = offset + (i * self.max_write) as u64;
            self.submit_to(&Request::Write { handle, offset: at, data: chunk }, tag, done);
            n += 1;
        }
        n
    }

    /// The spawned program's process id (ssh's, or the server's when spawned directly).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Why the session is over, if it is.
    pub fn lost(&self) -> Option<String> {
        self.shared.lock().lost.clone()
    }

    /// Waits for every request in flight to be answered, then ends the session.
    pub fn close(self) {
        let mut p = self.shared.lock();
        while !p.routes.is_empty() && p.lost.is_none() {
            p = self.shared.room.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn enter(&self, id: u32, route: Route) -> Result<(), String> {
        let mut p = self.shared.lock();
        while p.routes.len() >= self.max_in_flight && p.lost.is_none() {
            p = self.shared.room.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(why) = &p.lost {
            return Err(why.clone());
        }
        p.routes.insert(id, route);
        Ok(())
    }

    /// The server's WRITE limit, or the draft's minimum when it does not offer limits@openssh.com
    /// (OpenSSH leaves a request its administrator denied, `sftp-server -P limits`, unannounced).
    fn ask_max_write(&self) -> Result<usize, SftpError> {
        if !self.has_extension("limits@openssh.com") {
            return Ok(DRAFT_MAX_WRITE);
        }
        match self.call(&Request::Limits)? {
            Reply::Limits(l) => Ok(write_size(l.max_write)),
            _ => Ok(DRAFT_MAX_WRITE),
        }
    }
}

impl Drop for Session {
    /// Closes the program's stdin (the server then exits); the program is killed too, so a hung
    /// network cannot hang the drop: whatever was unanswered fails as lost.
    fn drop(&mut self) {
        drop(self.outgoing.take());
        let _ = self.child.kill();
        self.shared.lose("the session was closed".into());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = self.child.wait();
    }
}

/// The WRITE size every server must take (the draft's 32 KiB).
const DRAFT_MAX_WRITE: usize = 32 * 1024;

/// The WRITE size for a server's stated limit: zero says "no limit stated"; past 255 KiB a WRITE
/// would not fit the 256 KiB packet most servers take.
pub(super) fn write_size(stated: u64) -> usize {
    const CEILING: u64 = 255 * 1024;
    match stated {
        0 => DRAFT_MAX_WRITE,
        n => n.min(CEILING) as usize,
    }
}

fn pipes(child: &mut Child) -> (ChildStdin, ChildStdout, ChildStderr) {
    let piped = "stdio was set to piped above";
    (child.stdin.take().expect(piped), child.stdout.take().expect(piped), child.stderr.take().expect(piped))
}

type Pipes = (BufWriter<ChildStdin>, BufReader<ChildStdout>);
/// The extensions a server announced: (name, data).
type Extensions = Vec<(String, Vec<u8>)>;

/// The handshake on a thread of its own, waited for at most `limit`; on time out the thread is
/// left to end by itself when the caller kills the program (its pipes then close).
fn handshake_within(
    mut stdin: BufWriter<ChildStdin>,
    mut stdout: BufReader<ChildStdout>,
    limit: Duration,
) -> Result<(Pipes, Extensions), SftpError> {
    let (tx, rx) = crossbeam_channel::bounded::<(Pipes, Result<_, SftpError>)>(1);
    std::thread::spawn(move || {
        let r = handshake(&mut stdin, &mut stdout);
        let _ = tx.send(((stdin, stdout), r));
    });
    match rx.recv_timeout(limit) {
        Ok((pipes, r)) => r.map(|x| (pipes, x)),
        Err(_) => Err(SftpError::ConnectionLost(format!("no answer to the SFTP handshake within {limit:?}"))),
    }
}

fn handshake(stdin: &mut impl Write, stdout: &mut impl Read) -> Result<Extensions, SftpError> {
    let lost = |e: std::io::Error| SftpError::ConnectionLost(e.to_string());
    stdin.write_all(&wire::init()).map_err(lost)?;
    stdin.flush().map_err(lost)?;
    wire::version(&read_packet(stdout).map_err(lost)?)
}

/// A start that failed: the reason is what the program said on stderr when it says anything
/// (ssh's "Permission denied (publickey)", "Could not resolve hostname …").
fn failed_start(
    e: SftpError,
    mut child: Child,
    shared: &Shared,
    stderr_ended: &Receiver<()>,
    threads: Vec<JoinHandle<()>>,
) -> SftpError {
    let _ = stderr_ended.recv_timeout(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    for t in threads {
        let _ = t.join();
    }
    match (e, shared.stderr_tail()) {
        (SftpError::ConnectionLost(_), said) if !said.is_empty() => SftpError::ConnectionLost(said),
        (e, _) => e,
    }
}

fn read_packet(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > wire::MAX_PACKET {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a packet of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Sends packets in order, flushing when the queue runs dry: many small requests share a write.
fn write_loop(mut stdin: BufWriter<ChildStdin>, queue: &Receiver<Vec<u8>>, shared: &Shared) {
    while let Ok(first) = queue.recv() {
        let mut result = stdin.write_all(&first);
        while let (Ok(()), Ok(next)) = (&result, queue.try_recv()) {
            result = stdin.write_all(&next);
        }
        if let Err(e) = result.and_then(|()| stdin.flush()) {
            shared.lose(format!("writing to the server: {e}"));
            return;
        }
    }
}

/// Routes each reply to its request until the stream ends, then fails whatever is left as lost.
fn read_loop(mut stdout: BufReader<ChildStdout>, shared: &Shared, stderr_ended: &Receiver<()>) {
    let why = loop {
        let packet = match read_packet(&mut stdout) {
            Ok(p) => p,
            Err(e) => break format!("reading from the server: {e}"),
        };
        if let Err(e) = route(&packet, shared) {
            break e.to_string();
        }
    };
    // ssh says why on stderr as it exits: give it a moment to, so the reason is in the message.
    let _ = stderr_ended.recv_timeout(Duration::from_secs(1));
    let said = shared.stderr_tail();
    shared.lose(if said.is_empty() { why } else { format!("{why} ({said})") });
}

fn route(packet: &[u8], shared: &Shared) -> Result<(), SftpError> {
    let id = wire::reply_id(packet)?;
    let r = {
        let mut p = shared.lock();
        let r = p.routes.remove(&id);
        shared.room.notify_all();
        r
    };
    let r = r.ok_or_else(|| SftpError::Protocol(format!("a reply to request {id}, which is not in flight")))?;
    let result = wire::decode(packet, r.expect, r.op);
    let broken = match &result {
        Err(e @ SftpError::Protocol(_)) => Some(e.clone()),
        _ => None,
    };
    let _ = r.done.send(Done { tag: r.tag, result });
    broken.map_or(Ok(()), Err)
}

fn keep_stderr(mut stderr: ChildStderr, shared: &Shared, _ended: Sender<()>) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = stderr.read(&mut buf) {
        let mut s = shared.stderr.lock().unwrap_or_else(|p| p.into_inner());
        s.push_str(&String::from_utf8_lossy(&buf[..n]));
        // Keep the tail: the end of a string is a char boundary, so one is always found.
        let cut = (s.len().saturating_sub(STDERR_TAIL)..).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.drain(..cut);
    }
}

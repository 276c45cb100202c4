//! The ssh destination's hot path with each candidate SFTP client, driven by `benches/sftp.py`
//! (docs/design.md, "The ssh destination: the SFTP client"): every file of SRC is written to
//! DEST on the server under a partial name (CREAT|EXCL), its mtime set (FSETSTAT), optionally
//! flushed (fsync@openssh.com), closed and renamed into place (posix-rename@openssh.com), with many
//! files in flight over one or more sessions; each folder is made once, before the files.
//!
//! `sftp_bench own|openssh SRC DEST SESSIONS FILES_IN_FLIGHT fsync|nofsync -- COMMAND…` where
//! COMMAND starts one SFTP session (`ssh … -s host sftp`). Prints one line:
//! `connected=S` (seconds to the sessions' logins), then `files=N bytes=B wall=S client_cpu=S ssh_cpu=S`.

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

/// One file to copy: where it is here, where it goes there, and its mtime in whole seconds.
struct Job {
    src: PathBuf,
    partial: String,
    fin: String,
    mtime: u32,
}

struct Plan {
    dirs: Vec<String>,
    jobs: Vec<Job>,
    bytes: u64,
}

struct Args {
    own: bool,
    plan: std::sync::Arc<Plan>,
    sessions: usize,
    in_flight: usize,
    fsync: bool,
    command: Vec<String>,
    /// When the run began: the time to connect is reported apart.
    t0: Instant,
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = "sftp_bench own|openssh SRC DEST SESSIONS FILES_IN_FLIGHT fsync|nofsync -- COMMAND...";
    if a.len() < 8 || a[6] != "--" {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    }
    let args = Args {
        own: a[0] == "own",
        plan: std::sync::Arc::new(plan(Path::new(&a[1]), &a[2])),
        sessions: a[3].parse().expect("SESSIONS is a number"),
        in_flight: a[4].parse().expect("FILES_IN_FLIGHT is a number"),
        fsync: a[5] == "fsync",
        command: a[7..].to_vec(),
        t0: Instant::now(),
    };
    let t0 = args.t0;
    if args.own {
        own::run(&args);
    } else {
        dep::run(&args);
    }
    let wall = t0.elapsed().as_secs_f64();
    eprintln!(
        "files={} bytes={} wall={wall:.3} client_cpu={:.3} ssh_cpu={:.3}",
        args.plan.jobs.len(),
        args.plan.bytes,
        cpu(Whose::Client),
        cpu(Whose::Children)
    );
}

/// Whose CPU time: this process's, or its waited-for children's (the ssh processes).
enum Whose {
    Client,
    Children,
}

/// CPU seconds (user + system) of `who`.
#[cfg(unix)]
fn cpu(who: Whose) -> f64 {
    let who = match who {
        Whose::Client => libc::RUSAGE_SELF,
        Whose::Children => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: getrusage writes into the zeroed struct it is given and nothing else.
    let r = unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut r);
        r
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(r.ru_utime) + s(r.ru_stime)
}

/// Not measured where there is no getrusage (the bench runs on Linux; it only has to build).
#[cfg(not(unix))]
fn cpu(_who: Whose) -> f64 {
    0.0
}

/// Every folder (parents first) and file below `src`, mapped below `dest` on the server.
fn plan(src: &Path, dest: &str) -> Plan {
    let mut dirs = vec![dest.to_string()];
    let mut jobs = Vec::new();
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let e = e.expect("the source can be walked");
        let rel = e.path().strip_prefix(src).unwrap().to_str().expect("UTF-8 names").to_string();
        let there = format!("{dest}/{rel}");
        if e.file_type().is_dir() {
            dirs.push(there);
            continue;
        }
        let md = e.metadata().unwrap();
        bytes += md.len();
        let mtime = md.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32;
        let (parent, name) = there.rsplit_once('/').unwrap();
        let partial = format!("{parent}/.{name}.partial");
        jobs.push(Job { src: e.path().to_path_buf(), partial, fin: there, mtime });
    }
    Plan { dirs, jobs, bytes }
}

/// Our own client (`softcopy::sftp`): one thread drives every file through its three dependent
/// steps on completions from all sessions.
mod own {
    use super::*;
    use _softcopy::sftp::{Attrs, Done, Handle, OpenMode, Options, Reply, Request, Session};
    use crossbeam_channel::Sender;

    const OPEN: u64 = 0;
    const BODY: u64 = 1;
    const RENAME: u64 = 2;

    pub fn run(args: &Args) {
        // Logins at once, as the engine would: each is a few round trips of ssh's handshake.
        let sessions: Vec<Session> = std::thread::scope(|t| {
            let logins: Vec<_> = (0..args.sessions).map(|_| t.spawn(|| connect(&args.command))).collect();
            logins.into_iter().map(|l| l.join().expect("the login thread ends")).collect()
        });
        eprintln!("connected={:.3}", args.t0.elapsed().as_secs_f64());
        make_dirs(&sessions[0], &args.plan.dirs);
        copy(args, &sessions);
        for s in sessions {
            s.close();
        }
    }

    fn connect(command: &[String]) -> Session {
        let mut c = std::process::Command::new(&command[0]);
        c.args(&command[1..]);
        Session::spawn(c, Options::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every folder pipelined on one session: its sftp-server makes them in order, parents first.
    fn make_dirs(s: &Session, dirs: &[String]) {
        let (tx, rx) = crossbeam_channel::unbounded();
        for d in dirs {
            s.submit_to(&Request::Mkdir { path: d.as_bytes(), attrs: Attrs::default() }, 0, &tx);
        }
        for d in rx.iter().take(dirs.len()) {
            d.result.unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
    }

    fn copy(args: &Args, sessions: &[Session]) {
        let jobs = &args.plan.jobs;
        let (tx, rx) = crossbeam_channel::unbounded();
        // Per file, the answers its body still waits for before the rename may go.
        let mut waiting = vec![0usize; jobs.len()];
        let (mut next, mut done) = (0, 0);
        while next < jobs.len().min(args.in_flight) {
            open(sessions, jobs, next, &tx);
            next += 1;
        }
        while done < jobs.len() {
            let Done { tag, result } = rx.recv().expect("the sessions answer");
            let (i, step) = ((tag >> 2) as usize, tag & 3);
            let s = &sessions[i % sessions.len()];
            let reply = result.unwrap_or_else(|e| panic!("{}: {e}", jobs[i].fin));
            match (step, reply) {
                (OPEN, Reply::Handle(h)) => waiting[i] = body(s, &jobs[i], &h, args.fsync, &tx, tag),
                (BODY, _) => {
                    waiting[i] -= 1;
                    if waiting[i] == 0 {
                        let j = &jobs[i];
                        let to = Request::PosixRename { from: j.partial.as_bytes(), to: j.fin.as_bytes() };
                        s.submit_to(&to, (i as u64) << 2 | RENAME, &tx);
                    }
                }
                (RENAME, _) => {
                    done += 1;
                    if next < jobs.len() {
                        open(sessions, jobs, next, &tx);
                        next += 1;
                    }
                }
                (_, r) => panic!("unexpected reply {r:?}"),
            }
        }
    }

    fn open(sessions: &[Session], jobs: &[Job], i: usize, tx: &Sender<Done>) {
        let r = Request::Open { path: jobs[i].partial.as_bytes(), mode: OpenMode::CreateNew, attrs: Attrs::default() };
        sessions[i % sessions.len()].submit_to(&r, (i as u64) << 2 | OPEN, tx);
    }

    /// Writes, mtime, fsync and close back to back: one round trip for all of them.
    fn body(s: &Session, job: &Job, h: &Handle, fsync: bool, tx: &Sender<Done>, tag: u64) -> usize {
        let tag = tag & !3 | BODY;
        let data = std::fs::read(&job.src).expect("the source can be read");
        let mut waiting = s.submit_write(h, 0, &data, tag, tx);
        s.submit_to(&Request::Fsetstat { handle: h, attrs: Attrs::mtime(job.mtime) }, tag, tx);
        if fsync {
            s.submit_to(&Request::Fsync(h), tag, tx);
            waiting += 1;
        }
        s.submit_to(&Request::Close(h), tag, tx);
        waiting + 2
    }
}

/// openssh-sftp-client over the same command: a tokio runtime on its own thread, files handed to
/// it through a channel and answered through another, as the engine would have to.
mod dep {
    use super::*;
    use openssh_sftp_client::metadata::MetaDataBuilder;
    use openssh_sftp_client::{Sftp, SftpOptions, UnixTimeStamp};
    use std::num::NonZeroU16;
    use std::sync::Arc;

    pub fn run(args: &Args) {
        let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        let plan = args.plan.clone();
        let (sessions, command, fsync, window) = (args.sessions, args.command.clone(), args.fsync, args.in_flight);
        let t0 = args.t0;
        let p = plan.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut logins = tokio::task::JoinSet::new();
                for _ in 0..sessions {
                    let command = command.clone();
                    logins.spawn(async move { connect(&command).await });
                }
                let (mut children, mut sftps) = (Vec::new(), Vec::new());
                while let Some(login) = logins.join_next().await {
                    let (child, sftp) = login.unwrap();
                    children.push(child);
                    sftps.push(Arc::new(sftp));
                }
                eprintln!("connected={:.3}", t0.elapsed().as_secs_f64());
                make_dirs(&sftps[0], &p.dirs).await;
                let gate = Arc::new(tokio::sync::Semaphore::new(window));
                let mut tasks = tokio::task::JoinSet::new();
                while let Some(i) = jobs_rx.recv().await {
                    let permit = gate.clone().acquire_owned().await.unwrap();
                    let (sftp, p, done) = (sftps[i % sessions].clone(), p.clone(), done_tx.clone());
                    tasks.spawn(async move {
                        copy_one(&sftp, &p.jobs[i], fsync).await;
                        drop(permit);
                        done.send(i).unwrap();
                    });
                }
                while tasks.join_next().await.is_some() {}
                for s in sftps {
                    Arc::try_unwrap(s).expect("no task holds it").close().await.unwrap();
                }
                for mut c in children {
                    c.wait().await.unwrap();
                }
            });
        });
        for i in 0..plan.jobs.len() {
            jobs_tx.send(i).unwrap();
        }
        drop(jobs_tx);
        assert_eq!(done_rx.iter().take(plan.jobs.len()).count(), plan.jobs.len());
        runtime.join().unwrap();
    }

    async fn connect(command: &[String]) -> (tokio::process::Child, Sftp) {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let options = SftpOptions::new().max_pending_requests(NonZeroU16::new(1024).unwrap());
        let sftp = Sftp::new(stdin, stdout, options).await.unwrap();
        (child, sftp)
    }

    async fn make_dirs(sftp: &Arc<Sftp>, dirs: &[String]) {
        // Parents first: each depth after the one above it, a depth's folders all at once.
        let depth = |d: &String| d.matches('/').count();
        let deepest = dirs.iter().map(depth).max().unwrap_or(0);
        for level in 0..=deepest {
            let mut set = tokio::task::JoinSet::new();
            for d in dirs.iter().filter(|d| depth(d) == level) {
                let (sftp, d) = (sftp.clone(), d.clone());
                set.spawn(async move { sftp.fs().create_dir(&d).await });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap().unwrap();
            }
        }
    }

    async fn copy_one(sftp: &Sftp, job: &Job, fsync: bool) {
        let data = std::fs::read(&job.src).unwrap();
        let mut f = sftp.options().write(true).create_new(true).open(&job.partial).await.unwrap();
        f.write_all(&data).await.unwrap();
        let t = UnixTimeStamp::from_raw(job.mtime).unwrap();
        f.set_metadata(MetaDataBuilder::new().time(t, t).create()).await.unwrap();
        if fsync {
            f.sync_all().await.unwrap();
        }
        f.close().await.unwrap();
        sftp.fs().rename(&job.partial, &job.fin).await.unwrap();
    }
}

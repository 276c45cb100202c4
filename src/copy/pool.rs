//! The worker threads of one target: each takes a [`Job`], does it (the copy of
//! [`crate::copy::sync_file`]), and reports a [`Done`]; beside them, the makers of the folders the
//! copies will need (`folders.rs`). Workers and makers run at the lowest CPU and IO priority and
//! never touch Python.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::copy::folders::{make_ahead, Folders, MAKERS};
use crate::copy::{sync_file, CopyOptions};
use crate::dest::Dest;
use crate::sys;
use crate::vocab::{Job, Outcome};

/// A finished job, as reported back to the coordinator.
pub struct Done {
    pub rel: PathBuf,
    pub outcome: Outcome,
    /// When the worker began it: a copy begun before the destination failed proves nothing about
    /// it since (docs/design.md, "Unavailable is not elsewhere").
    pub begun: Instant,
}

/// Where the workers' priority goes: why it could not be lowered (said once per pool), and the
/// workers whose priority was (given back at a stop).
#[derive(Clone)]
pub struct Priority {
    pub warning: Sender<String>,
    pub lowered: Arc<sys::Lowered>,
}

/// The worker threads of one target.
pub struct Pool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// The folders made ahead of the copies, and their makers (none for a pool of other work).
    folders: Option<Arc<Folders>>,
    makers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `n` workers copying from `src_root` to `dst_root` with `opts`, reporting on `done`.
    /// `priority` receives (once per pool) why the priority could not be lowered, and holds the
    /// workers whose priority was.
    pub fn start(
        n: usize,
        src_root: PathBuf,
        dest: Arc<Dest>,
        opts: CopyOptions,
        done: Sender<Done>,
        stop: Arc<AtomicBool>,
        priority: Priority,
    ) -> std::io::Result<Pool> {
        let (low_priority, sleep) = (opts.low_priority, opts.sleep);
        let folders = Arc::new(Folders::default());
        let mut opts = opts;
        opts.folders = Some(folders.clone());
        let mut makers = Vec::with_capacity(MAKERS);
        // The workers say why the priority could not be lowered; the makers need not again.
        let warned = Arc::new(AtomicBool::new(true));
        for i in 0..MAKERS {
            let (mine, src_root, dest, stop) = (folders.clone(), src_root.clone(), dest.clone(), stop.clone());
            let (priority, warned) = (priority.clone(), warned.clone());
            let maker = std::thread::Builder::new().name(format!("softcopy-folders-{i}")).spawn(move || {
                let _registered = low_priority.then(|| priority.lowered.register());
                lower(low_priority, &priority, &warned, &stop);
                make_ahead(&mine, &src_root, &dest, &stop);
            });
            match maker {
                Ok(m) => makers.push(m),
                Err(e) => {
                    folders.close();
                    return Err(e);
                }
            }
        }
        let work = move |job: &Job, stop: &AtomicBool| sync_file(&src_root, &dest, job, &opts, stop);
        let mut pool = Pool::with_work(n, low_priority, sleep, work, done, stop, priority)?;
        (pool.folders, pool.makers) = (Some(folders), makers);
        Ok(pool)
    }

    /// [`Pool::start`] with the work of one job given: the copy, or in tests anything else.
    pub fn with_work(
        n: usize,
        low_priority: bool,
        sleep: Duration,
        work: impl Fn(&Job, &AtomicBool) -> (Outcome, bool) + Send + Sync + 'static,
        done: Sender<Done>,
        stop: Arc<AtomicBool>,
        priority: Priority,
    ) -> std::io::Result<Pool> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let warned = Arc::new(AtomicBool::new(false));
        let work = Arc::new(work);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let (rx, done, stop, warned, work) = (rx.clone(), done.clone(), stop.clone(), warned.clone(), work.clone());
            let (priority, lowered) = (priority.clone(), priority.lowered.clone());
            let handle = std::thread::Builder::new().name(format!("softcopy-worker-{i}")).spawn(move || {
                // Registered first: a stop that comes before the priority is lowered finds it.
                let _registered = low_priority.then(|| lowered.register());
                lower(low_priority, &priority, &warned, &stop);
                for job in rx.iter() {
                    if stop.load(Ordering::Relaxed) {
                        // Report instead of copying so the coordinator's in-flight count stays exact.
                        let outcome = Outcome::Failed("stopped".into());
                        let _ = done.send(Done { rel: job.rel, outcome, begun: Instant::now() });
                        continue;
                    }
                    // A bug in one file's copy must not hang the engine waiting for its result
                    // (docs/design.md, "Invariants"): the file is reported failed, and retried like any failure.
                    let begun = Instant::now();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&job, &stop)));
                    let (outcome, copied) = result.unwrap_or_else(|_| {
                        (Outcome::Failed(format!("internal error: the copy of {} panicked", job.rel.display())), false)
                    });
                    if done.send(Done { rel: job.rel, outcome, begun }).is_err() {
                        break;
                    }
                    if copied && !sleep.is_zero() {
                        std::thread::sleep(sleep);
                    }
                }
            })?;
            threads.push(handle);
        }
        Ok(Pool { jobs: Some(tx), threads, folders: None, makers: Vec::new() })
    }

    /// The files due next, in order: their folders are made ahead of their copies.
    pub fn ahead<'p>(&self, due: impl Iterator<Item = &'p Path>) {
        if let Some(f) = &self.folders {
            f.ahead(due);
        }
    }

    /// Nothing more is made ahead until fed again (the destination is paused or leads elsewhere).
    pub fn hold(&self) {
        if let Some(f) = &self.folders {
            f.hold();
        }
    }

    /// Hands a job to the next free worker.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(job);
        }
    }

    /// Closes the queue and waits for every worker to finish its current file.
    pub fn shutdown(mut self) {
        self.jobs = None;
        if let Some(f) = &self.folders {
            f.close();
        }
        for t in self.threads.drain(..).chain(self.makers.drain(..)) {
            let _ = t.join();
        }
    }
}

/// Lowers this thread's priority where asked (per thread on Linux: each lowers its own); says why
/// not once per pool (`warned`).
fn lower(low_priority: bool, priority: &Priority, warned: &AtomicBool, stop: &AtomicBool) {
    if !low_priority {
        return;
    }
    if let Err(msg) = sys::lower_thread_priority() {
        if !warned.swap(true, Ordering::Relaxed) {
            let _ = priority.warning.send(msg);
        }
    }
    // A stop between the registration and the lowering gave back a priority not yet taken: this
    // thread gives its own back (docs/design.md, "Stopping").
    if stop.load(Ordering::SeqCst) {
        priority.lowered.restore();
    }
}

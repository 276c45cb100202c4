//! The end of a run, inside the engine (docs/design.md, "The end of a run"): once the final
//! reconcile has drained, **Verifying** (the destination against the source and the expected
//! Zarr file set that Python hands over once) → **Publishing** (every copy flushed, then the
//! marker copied last) → **Freeing** (`--delete-source`: only what is proven identical). Each
//! step runs only if the one before it succeeded, and a stop request cancels whatever is left:
//! nothing is published or deleted after it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::copy::{self, CopyOptions};
use crate::dest::RootProblem;
use crate::end::verify::Expected;
use crate::run::config::Config;
use crate::run::status::{lock, Level, NotCopied, Phase, Shared, Verdict};
use crate::source::root::RootId;
use crate::track::Tracker;
use crate::vocab::{Copied, Job, Outcome};
use crate::{Error, Result};

/// Everything the end steps need from the run that drained.
pub struct Drained<'a> {
    pub cfg: &'a Config,
    pub sh: &'a Shared,
    pub src: &'a Path,
    /// The destination as the copy saw it (its marker withdrawn before the first change).
    pub dest: &'a crate::dest::Dest,
    pub root: &'a RootId,
    /// What was copied (or found copied), for `--delete-source`.
    pub copied: Vec<Copied>,
    /// Everything at the destination is this run's copies, known without looking there.
    pub landed: Option<crate::end::verify::Landed<'a>>,
    /// This run's records of what it copied (whether or not the destination held other files).
    pub records: crate::end::verify::Landed<'a>,
    /// The destination stayed unavailable too long: verified it cannot be.
    pub gave_up: bool,
    /// The source files changed since the final look (asked once the marker is published).
    pub late: &'a dyn Fn() -> Late,
}

/// Runs the end steps; returns the final phase and the verdict.
/// What the watch saw after the final look (see `coordinator::moved_since`).
pub struct Late {
    /// Source paths whose change was seen (the root as an empty path).
    pub moved: Vec<PathBuf>,
    /// Events were lost: whether anything changed is told by looking at the source again.
    pub lost: bool,
}

pub fn conclude(mut d: Drained<'_>) -> (Phase, Verdict) {
    let mut v = Verdict::default();
    let copied = std::mem::take(&mut d.copied);
    let phase = match end_steps(&d, &mut v, copied) {
        Ok(()) => Phase::Verified,
        Err(phase) => phase,
    };
    if phase == Phase::Stopped {
        v.reason = Some("stopped before the end steps were done: nothing was published or deleted after that".into());
    }
    (phase, v)
}

/// Verifying → Publishing → Freeing, each step writing what it found in `v`. `Err` holds the
/// phase the run ends in where a step ends it.
fn end_steps(d: &Drained<'_>, v: &mut Verdict, copied: Vec<Copied>) -> std::result::Result<(), Phase> {
    d.sh.set_phase(Phase::Verifying);
    crate::crash_point!("verify.start");
    let Some(Expected { arrays, unreadable }) = expected(d.sh) else { return Err(Phase::Stopped) };
    if let Err(why) = d.root.check(d.src) {
        v.reason = Some(format!("cannot verify: {why}"));
        return Err(Phase::Incomplete);
    }
    let check = crate::end::verify::Check {
        marker: &d.cfg.marker,
        arrays: &arrays,
        content: false,
        prune: Some(d.root),
        landed: d.landed.as_ref(),
        exclude: Some(&d.cfg.exclude),
    };
    verifying(d, v, &check, &unreadable)?;
    let proof = proving(d, v, copied)?;
    d.sh.set_phase(Phase::Publishing);
    if d.sh.stopped() {
        return Err(Phase::Stopped);
    }
    publishing(d, v, &check)?;
    v.verified = true;
    if let Some(proof) = proof {
        freeing(d, v, proof);
    }
    Ok(())
}

/// The destination against the source and the expected Zarr file set. A destination that
/// cannot be reached is waited for, before the walk and after one that failed or found files
/// missing while it could not be reached: only a name that leads elsewhere ends the run here.
fn verifying(
    d: &Drained<'_>,
    v: &mut Verdict,
    check: &crate::end::verify::Check<'_>,
    unreadable: &[(PathBuf, String)],
) -> std::result::Result<(), Phase> {
    let walked = match when_reached(
        d,
        |w: &std::io::Result<crate::end::verify::Report>| !w.as_ref().is_ok_and(crate::end::verify::Report::ok),
        || crate::end::verify::verify(d.src, d.dest, check, &d.sh.stop),
    ) {
        Ok(walked) => walked,
        Err(Reach::No(why)) => {
            v.reason = Some(format!("cannot verify: {why}"));
            return Err(Phase::Incomplete);
        }
        Err(_) => return Err(Phase::Stopped),
    };
    if d.sh.stopped() {
        return Err(Phase::Stopped);
    }
    match walked {
        Ok(report) => v.report = report,
        Err(e) => {
            v.reason = Some(format!("cannot verify: {e}"));
            return Err(Phase::Incomplete);
        }
    }
    if d.gave_up {
        v.reason =
            Some(format!("gave up: the destination was unavailable for over {} s", d.cfg.give_up_after.as_secs()));
        return Err(Phase::Incomplete);
    }
    if !v.report.ok() {
        return Err(Phase::Incomplete);
    }
    if !unreadable.is_empty() {
        let named: Vec<String> =
            unreadable.iter().map(|(file, why)| format!("{} ({why})", d.src.join(file).display())).collect();
        v.reason = Some(format!(
            "cannot verify: metadata that cannot be read or understood, so its array's chunks cannot be \
             accounted for: {}",
            named.join("; ")
        ));
        return Err(Phase::Incomplete);
    }
    Ok(())
}

/// With `--delete-source`, verification goes on to content: every copy whose source may go is
/// read back (against its hash) or compared with its source, before the marker says "whole".
fn proving(
    d: &Drained<'_>,
    v: &mut Verdict,
    copied: Vec<Copied>,
) -> std::result::Result<Option<crate::end::mover::Proof>, Phase> {
    let proof = d.cfg.delete_source.then(|| crate::end::mover::prove(d.src, d.dest, copied, &d.sh.stop));
    // Over ssh, which proof was used and how much was read back is the cost (design.md, "The ssh
    // destination: proof by the server's hash").
    if let Some(p) = proof.as_ref().filter(|_| d.dest.local_root().is_none()) {
        let said = match d.dest.server_algo() {
            Some(a) => {
                format!("{} copies proven by the server's {}, {} read back", p.by_server, a.program(), p.read_back)
            }
            None => format!("{} copies proven by reading them back", p.read_back),
        };
        d.sh.say(Level::Info, said);
    }
    if d.sh.stopped() {
        return Err(Phase::Stopped);
    }
    // A copy found different, or gone, fails the run: its proof is the last look before the
    // marker, and the verification before it may have trusted this run's records alone.
    if let Some(p) = proof.as_ref().filter(|p| !p.differs.is_empty() || !p.gone.is_empty()) {
        // A copy that differs is no version of its source, whatever its mark says: the next run
        // compares its bytes and copies it again (damage at the destination, size and mtime kept).
        for rel in &p.differs {
            if let Err(e) = d.dest.unmark(rel) {
                d.sh.say(Level::Warning, format!("could not take the mark off {}: {e}", d.dest.shown(rel).display()));
            }
        }
        v.report.content_mismatch = p.differs.clone();
        v.report.missing.extend(p.gone.iter().cloned());
        return Err(Phase::Incomplete);
    }
    Ok(proof)
}

/// The marker goes where the user's name for the destination leads, or nowhere; a destination
/// that cannot be reached is waited for, also after a copy of the marker it failed. It stands
/// over the source as it is now: a chunk or a resize that landed after the final look (a
/// writer's last write not awaited) withdraws it.
fn publishing(
    d: &Drained<'_>,
    v: &mut Verdict,
    check: &crate::end::verify::Check<'_>,
) -> std::result::Result<(), Phase> {
    match when_reached(d, Result::is_err, || publish_marker(d)) {
        Ok(Ok(published)) => v.marker_published = published,
        Ok(Err(why)) => {
            v.reason = Some(format!("could not copy the marker {:?}: {why}", d.cfg.marker));
            return Err(Phase::Incomplete);
        }
        Err(Reach::No(why)) => {
            v.reason = Some(format!("the marker is not published: {why}"));
            return Err(Phase::Incomplete);
        }
        Err(_) => return Err(Phase::Stopped),
    }
    let Late { mut moved, lost } = (d.late)();
    if moved.is_empty() && lost && !still_as_verified(d, check, &v.report.extra) {
        moved.push(PathBuf::new());
    }
    if moved.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = moved.iter().take(5).map(|p| d.src.join(p).display().to_string()).collect();
    let withdrawn = withdraw_marker(d);
    v.marker_published = false;
    v.reason = Some(format!(
        "the source changed after it was verified ({} changes: {}){}; run the same command again to copy it",
        moved.len(),
        names.join(", "),
        withdrawn.map_or_else(|e| format!("; the marker could not be withdrawn: {e}"), |()| String::new())
    ));
    v.not_copied = moved;
    v.not_copied_why = NotCopied::ChangedLate;
    Err(Phase::Incomplete)
}

/// Frees the source of what `proof` proved copied (the run is verified whatever comes of it).
fn freeing(d: &Drained<'_>, v: &mut Verdict, proof: crate::end::mover::Proof) {
    d.sh.set_phase(Phase::Freeing);
    let marker = v.marker_published.then(|| marker_version(d)).flatten();
    // Excluded files stay at the source: its metadata and marker stay with them, so what is
    // left is still a readable archive (design.md "Excluded files").
    let unproven = !proof.kept.is_empty() || !v.report.excluded.is_empty();
    let (src, dst) = (d.src, d.dest);
    match crate::end::mover::delete_sources(src, dst, &proof.proven, marker.as_ref(), unproven, d.cfg.quiet, &d.sh.stop)
    {
        Ok(mut moved) => {
            moved.kept.extend(proof.kept);
            v.freed = Some(moved);
        }
        Err(e) => d.sh.say(Level::Error, format!("freeing the source stopped: {e}")),
    }
    if d.sh.stopped() {
        // The copy is verified and whole; the freeing was cut short (nothing after the stop).
        d.sh.say(Level::Warning, "stopped while freeing the source: the rest of it is kept".into());
    }
}

/// What waiting for the destination came to.
enum Reach {
    Reached,
    Stopped,
    /// It leads elsewhere, or stayed unreachable past `give_up_after`: why.
    No(String),
}

/// Runs `attempt` once the destination can be reached, and again each time one `failed` while it
/// could not be (docs/design.md, "Unavailable is not elsewhere"); why not, if it cannot be reached
/// (`Reach::Stopped` or `Reach::No`).
fn when_reached<T>(d: &Drained<'_>, failed: impl Fn(&T) -> bool, mut attempt: impl FnMut() -> T) -> Result<T, Reach> {
    loop {
        match reachable(d) {
            Reach::Reached => {}
            other => return Err(other),
        }
        let outcome = attempt();
        if !failed(&outcome) || !matches!(d.dest.check_root(), Err(RootProblem::Unavailable(_))) {
            return Ok(outcome);
        }
    }
}

/// Longest pause between two looks at a destination that cannot be reached during the end steps.
const REACH_MAX: Duration = Duration::from_secs(5);

/// Waits, with backoff, while the destination's name cannot be resolved (a share dropped), up to
/// `give_up_after`; the status says so meanwhile, for the service's "needs attention" notice.
fn reachable(d: &Drained<'_>) -> Reach {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    let mut said = false;
    let answer = loop {
        let why = match d.dest.check_root() {
            Ok(()) => break Reach::Reached,
            Err(RootProblem::Elsewhere(why)) => break Reach::No(why),
            Err(RootProblem::Unavailable(why)) => why,
        };
        let limit = d.cfg.give_up_after;
        if started.elapsed() > limit {
            break Reach::No(format!("gave up: {why} for over {} s", limit.as_secs()));
        }
        if !said {
            said = true;
            d.sh.say(Level::Warning, format!("{why}: waiting for it (giving up after {} s)", limit.as_secs()));
        }
        lock(&d.sh.status).destination_trouble = Some(why);
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if d.sh.stopped() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
        if d.sh.stopped() {
            break Reach::Stopped;
        }
        pause = (pause * 2).min(REACH_MAX);
    };
    if said {
        lock(&d.sh.status).destination_trouble = None;
    }
    answer
}

/// Whether the source is still exactly what this run copied: asked only where events after the
/// final look were lost, so it must be as strict as the events it stands in for. Every source file
/// must be proven by this run's own records (its whole identity, ctime and inode too: a rewrite
/// within one mtime tick, or at a destination keeping whole seconds, passes a look at size and
/// mtime), and the source must hold as many files as were copied (one deleted since is a change,
/// not an extra). An extra the verification found (`verified_extra`: the copy of a file deleted
/// while no run watched, kept) is no change since. Nothing is pruned: the marker stands now.
fn still_as_verified(d: &Drained<'_>, check: &crate::end::verify::Check<'_>, verified_extra: &[PathBuf]) -> bool {
    let new_extra = |r: &crate::end::verify::Report| r.extra.iter().any(|e| !verified_extra.contains(e));
    let again = crate::end::verify::Check { prune: None, landed: Some(&d.records), ..*check };
    let Ok(r) = crate::end::verify::verify(d.src, d.dest, &again, &d.sh.stop) else { return false };
    if !(r.ok() && r.proven_as_copied == r.files && !new_extra(&r)) {
        return false;
    }
    if d.records.settled.is_none_or(crate::track::settled::Settled::exact) {
        return r.files == d.records.count as u64;
    }
    // Records of settled copies were given up: their copies found again are counted twice, so the
    // count is only a bound. A file deleted since is then told by walking the destination for a
    // copy the source no longer has.
    let walked = crate::end::verify::Check { prune: None, landed: None, ..*check };
    crate::end::verify::verify(d.src, d.dest, &walked, &d.sh.stop).is_ok_and(|r| r.ok() && !new_extra(&r))
}

/// Withdraws the destination's marker when dropped, unless the run was [`Unverified::verified`]:
/// a run that ends any other way (stopped, incomplete, failed, even by a panic) leaves none
/// (invariant 9), also one it found and never had to withdraw: the source may have changed.
pub struct Unverified<'a> {
    dest: Option<&'a crate::dest::Dest>,
    sh: &'a Shared,
}

impl<'a> Unverified<'a> {
    pub fn new(dest: &'a crate::dest::Dest, sh: &'a Shared) -> Self {
        Unverified { dest: Some(dest), sh }
    }

    /// The run was verified: its marker stands.
    pub fn verified(&mut self) {
        self.dest = None;
    }
}

impl Drop for Unverified<'_> {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.dest.map(crate::dest::Dest::changing) {
            self.sh.say(Level::Error, e.to_string());
        }
    }
}

/// How often files still open at the end are looked at again (a close event may have been lost,
/// or no lease can tell: then their quiet decides).
const RECHECK_OPEN: Duration = Duration::from_secs(1);

/// The end's wait for files a writer still has open (docs/design.md, "The end of a run"): their last version is not
/// the one copied, so the end waits for their close (or quiet), within a bound.
#[derive(Default)]
pub struct OpenAtEnd {
    since: Option<Instant>,
    recheck: Option<Instant>,
}

/// What the end does about the files still open.
pub enum OpenWait {
    /// None is open: on to the end steps.
    None,
    /// Open longer than the bound: the run ends incomplete, naming them.
    TooLong,
    /// Look at them again now (each gets a job that checks for a writer).
    LookAgain,
    /// Sleep until an event or [`OpenAtEnd::wake`].
    Wait,
}

impl OpenAtEnd {
    pub fn decide(&mut self, open: &[PathBuf], bound: Duration, now: Instant, sh: &Shared) -> OpenWait {
        if open.is_empty() {
            return OpenWait::None;
        }
        let since = *self.since.get_or_insert_with(|| {
            let names: Vec<_> = open.iter().take(5).map(|p| p.display().to_string()).collect();
            let (n, secs) = (open.len(), bound.as_secs());
            sh.say(
                Level::Info,
                format!("waiting up to {secs} s for {n} files still open for writing: {}", names.join(", ")),
            );
            now
        });
        if now >= since + bound {
            return OpenWait::TooLong;
        }
        if self.recheck.is_none_or(|t| t <= now) {
            self.recheck = Some(now + RECHECK_OPEN);
            return OpenWait::LookAgain;
        }
        OpenWait::Wait
    }

    /// When to look again; never a time already past (the loop would spin).
    pub fn wake(&self, now: Instant) -> Option<Instant> {
        self.recheck.filter(|t| *t > now)
    }
}

/// The verdict of a run whose files stayed open too long.
pub fn still_open(cfg: &Config, sh: &Shared, open: Vec<PathBuf>) -> (Phase, Verdict) {
    let why = format!(
        "{} files were still open for writing {} s after the acquisition ended; their last version was not copied",
        open.len(),
        cfg.quiet.as_secs()
    );
    let names: Vec<_> = open.iter().map(|p| p.display().to_string()).collect();
    sh.say(Level::Error, format!("{why}: {}", names.join(", ")));
    let not_copied_why = NotCopied::StillOpen;
    (Phase::Incomplete, Verdict { reason: Some(why), not_copied: open, not_copied_why, ..Verdict::default() })
}

/// Asks for the expected Zarr file set and waits for it (or a stop: `None`).
fn expected(sh: &Shared) -> Option<Expected> {
    lock(&sh.status).wants_expected = true;
    let mut given = lock(&sh.expected);
    loop {
        if let Some(arrays) = given.take() {
            lock(&sh.status).wants_expected = false;
            return Some(arrays);
        }
        if sh.stopped() {
            return None;
        }
        given = sh.expected_given.wait_timeout(given, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// The marker's version at the source, as the mover needs it (it is compared by content).
fn marker_version(d: &Drained<'_>) -> Option<Copied> {
    let ident = crate::sys::path_identity(&d.src.join(&d.cfg.marker)).ok()?;
    Some(Copied { rel: PathBuf::from(&d.cfg.marker), ident, hash: None })
}

/// Flushes every copy to stable storage, then copies the marker last and flushes it too, so a
/// marker at the destination means a whole, durable copy. `Ok(false)` when the source has none.
fn publish_marker(d: &Drained<'_>) -> Result<bool, String> {
    let dst = d.dest.root();
    // Where no whole filesystem can be flushed, each copy was flushed as it was named (the marker
    // too); the root folder is flushed after them, where the filesystem allows it.
    let flush = || d.dest.flush_all().map_err(|e| format!("flush of {}: {e}", dst.display()));
    flush()?;
    crate::crash_point!("publish.flushed");
    let rel = PathBuf::from(&d.cfg.marker);
    if !d.src.join(&rel).is_file() {
        return Ok(false);
    }
    let opts = CopyOptions { method: d.cfg.method, ..CopyOptions::default() };
    let job = Job { rel, prev: crate::vocab::Prev::Unknown, verify_closed: false, partial: Default::default() };
    // Its own view of the destination (the folder held, its case folding and freed names):
    // publishing the marker must not withdraw it.
    let dest = d.dest.view(None).map_err(|e| e.to_string())?;
    match copy::sync_file(d.src, &dest, &job, &opts, &AtomicBool::new(false)).0 {
        Outcome::Copied { .. } | Outcome::Unchanged(_) => {}
        other => return Err(format!("{other:?}")),
    }
    crate::crash_point!("publish.marker");
    if let Err(why) = flush() {
        // Not durable, so not published: a marker must mean a durable copy.
        let _ = withdraw_marker(d);
        return Err(why);
    }
    Ok(true)
}

/// Removes the marker just published, durably (its own view of the destination, which withdraws
/// it as before a change).
fn withdraw_marker(d: &Drained<'_>) -> Result<(), String> {
    let dest = d.dest.view(Some(&d.cfg.marker)).map_err(|e| e.to_string())?;
    dest.changing().map_err(|e| e.to_string())
}

/// Writes the manifest of everything copied: hashes from the copies themselves, and for files
/// copied by an earlier run, hashes of the destination files. Beside an ssh destination
/// (`remote`), `path` names a file on that server: written there over SFTP, whole or not at all.
pub fn write_manifest(
    tracker: &Tracker,
    dest: &crate::dest::Dest,
    path: &Path,
    remote: Option<&crate::dest::remote::Remote>,
    ssh: Option<&str>,
) -> Result<()> {
    let mut entries = Vec::new();
    for (rel, size, hash) in tracker.copied_files() {
        let hash = match hash {
            Some(h) => h,
            None => dest
                .open_file(rel)
                .and_then(crate::content::hash_reader)
                .map_err(|e| Error::io("hash", dest.shown(rel), e))?,
        };
        entries.push((rel.to_path_buf(), size, hash));
    }
    match remote {
        Some(remote) => {
            let at = crate::dest::remote::Remote { path: path.to_path_buf(), ..remote.clone() };
            write_remote_manifest(&at, ssh, &mut entries)
        }
        None => crate::end::manifest::write(path, &mut entries).map_err(|e| Error::io("write manifest", path, e)),
    }
}

/// Writes the manifest at `remote` (beside an ssh destination, in its existing parent folder):
/// under a partial name, flushed, renamed over the name, the rename flushed.
fn write_remote_manifest(
    remote: &crate::dest::remote::Remote,
    ssh: Option<&str>,
    entries: &mut [(PathBuf, u64, crate::vocab::Hash)],
) -> Result<()> {
    let (Some(parent), Some(name)) = (remote.path.parent(), remote.path.file_name()) else {
        return Err(Error::Config(format!("{}: not a file's name", remote.shown())));
    };
    let folder = crate::dest::remote::Remote { path: parent.to_path_buf(), ..remote.clone() };
    let dest = folder.view(ssh, false).map_err(Error::Config)?;
    let partial = PathBuf::from(format!(".{}.partial", name.to_string_lossy()));
    let bytes = crate::end::manifest::render(entries);
    dest.write_file(Path::new(name), &partial, &bytes).map_err(|e| Error::io("write manifest", remote.shown(), e))
}

// Not under Wine: these tests take the destination's path as given, where the engine takes it
// canonical (`\\?\C:\...` on Windows), and expect Linux's errors for a path under a file; the
// Windows end steps are run by the live tests under Wine (tests/windows).
#[cfg(all(test, not(windows)))]
mod tests;

//! softcopy's native core, and the only file that touches PyO3.
//!
//! The engine (`engine`, `tracker`, `watcher`, `copier`, `verify`, `sys`) is plain Rust: its threads
//! never hold the GIL or call Python. This file converts plain values at the boundary, releases the
//! GIL around everything that blocks, and maps errors to Python exceptions.

pub mod content;
pub mod copy;
pub mod dest;
pub mod end;
mod error;
pub mod failpoint;
pub mod gentle;
pub mod run;
pub mod sftp;
pub mod source;
pub mod sys;
pub mod track;
pub mod vocab;

pub use error::{Error, Result};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use end::manifest;
use end::verify::{self, ArraySpec, ShardIndex};
use gentle::rate;
use run::config::Config;
use run::engine::Engine;
use run::origin;
use run::status::{self, Level, Verdict};
use source::{arrivals, root};
use sys::CopyMethod;
use track::exclude;

pyo3::create_exception!(_softcopy, SoftcopyError, PyRuntimeError, "An error inside softcopy's engine.");

/// Errors reach Python typed: bad configuration as `ValueError`; an OS error as the `OSError`
/// subclass its errno picks (`PermissionError`, `FileNotFoundError`, ...) with the path as its
/// filename; the rest (internal faults, watcher trouble) as `SoftcopyError`.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Config(why) => PyValueError::new_err(why),
            Error::Io { path, source, .. } | Error::SourceIo { path, source, .. }
                if source.raw_os_error().is_some() =>
            {
                os_error(source.raw_os_error().unwrap_or_default(), path)
            }
            Error::SourceMissing(path) => os_error(NOT_FOUND, path),
            _ => SoftcopyError::new_err(e.to_string()),
        }
    }
}

/// "No such file or directory": ENOENT on POSIX, ERROR_FILE_NOT_FOUND on Windows.
const NOT_FOUND: i32 = 2;

/// `OSError(errno, strerror, filename)` for the OS's error `code`, which Python itself turns into
/// the subclass for it (`PermissionError`, `FileNotFoundError`, ...).
fn os_error(code: i32, path: PathBuf) -> PyErr {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    let strerror = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text).to_string();
    let filename = path.into_os_string();
    Python::attach(|py| {
        let oserror = py.get_type::<pyo3::exceptions::PyOSError>();
        // A Windows code is no errno: given as `winerror`, Python maps it to one.
        #[cfg(windows)]
        let made = oserror.call1((0, strerror, filename, code));
        #[cfg(not(windows))]
        let made = oserror.call1((code, strerror, filename));
        made.map_or_else(|failed| failed, PyErr::from_value)
    })
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
}

/// Python's `softcopy.config.EngineConfig`, read attribute by attribute: a target and what the
/// run around it adds.
#[derive(FromPyObject)]
struct EngineConfigIn {
    target: TargetIn,
    log_events: bool,
    max_total_rate: Option<Py<PyRateBudget>>,
    low_priority: bool,
    copy_method: String,
}

/// A destination as Python holds it: an ssh destination (`SshDestination`) or a local path (a
/// `str` or a `Path` is always local here: Python's `Target` decided, by the one rule).
#[derive(FromPyObject)]
enum DestinationIn {
    Ssh(PySshDestination),
    Local(PathBuf),
}

impl DestinationIn {
    /// How the user names it, for messages (and the engine's `destination`).
    fn shown(&self) -> PathBuf {
        match self {
            DestinationIn::Ssh(d) => PathBuf::from(d.remote.shown()),
            DestinationIn::Local(p) => p.clone(),
        }
    }

    /// The destination opened for one-off looks (nothing made, nothing claimed): `None` when its
    /// folder is not there. Over ssh, one session for the call (the GIL released by the caller).
    fn look(&self, ssh_command: Option<&str>) -> std::io::Result<Option<dest::Dest>> {
        let dest = match self {
            DestinationIn::Ssh(d) => d.remote.open_dest(ssh_command),
            DestinationIn::Local(p) => std::fs::symlink_metadata(p).map(|_| dest::Dest::at(p)),
        };
        match dest {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        }
    }
}

/// Python's `softcopy.config.Target` (its options checked there as bad input, and again here).
#[derive(FromPyObject)]
struct TargetIn {
    source: PathBuf,
    destination: DestinationIn,
    ssh_command: Option<String>,
    connections: usize,
    nprocs: Option<usize>,
    sleep_time: f64,
    wait_for_source: bool,
    marker: String,
    once: bool,
    settle_time: f64,
    give_up_after: f64,
    max_rate: Option<u64>,
    back_off: bool,
    checksum: bool,
    delete_source: bool,
    exclude: Vec<String>,
    evict_after: Option<f64>,
    quiet_time: f64,
    manifest: Option<PathBuf>,
}

impl TryFrom<EngineConfigIn> for Config {
    type Error = PyErr;

    fn try_from(c: EngineConfigIn) -> PyResult<Self> {
        let t = c.target;
        if t.nprocs == Some(0) {
            return Err(PyValueError::new_err("nprocs must be at least 1"));
        }
        if t.connections == 0 {
            return Err(PyValueError::new_err("connections must be at least 1"));
        }
        let method = match c.copy_method.as_str() {
            "auto" => CopyMethod::Auto,
            "sendfile" => CopyMethod::SendFile,
            "readwrite" => CopyMethod::ReadWrite,
            other => return Err(PyValueError::new_err(format!("unknown copy_method {other:?}"))),
        };
        Ok(Config {
            nprocs: t.nprocs.unwrap_or_else(|| {
                crate::run::config::default_nprocs(match &t.destination {
                    DestinationIn::Ssh(d) => Some(&d.remote),
                    DestinationIn::Local(_) => None,
                })
            }),
            sleep: seconds("sleep_time", t.sleep_time)?,
            wait_for_source: t.wait_for_source,
            marker: t.marker,
            settle: seconds("settle_time", t.settle_time)?,
            once: t.once,
            method,
            low_priority: c.low_priority,
            back_off: t.back_off,
            log_events: c.log_events,
            give_up_after: seconds("give_up_after", t.give_up_after)?,
            max_rate: t.max_rate,
            max_total_rate: c.max_total_rate.map(|b| b.get().limit.clone()),
            exclude: std::sync::Arc::new(exclude::Exclude::new(&t.exclude).map_err(PyValueError::new_err)?),
            checksum: t.checksum,
            manifest: t.manifest,
            delete_source: t.delete_source,
            quiet: seconds("quiet_time", t.quiet_time)?,
            evict_after: t.evict_after.map(|s| seconds("evict_after", s)).transpose()?,
            ssh_command: t.ssh_command,
            connections: t.connections,
            remote: match &t.destination {
                DestinationIn::Ssh(d) => Some(d.remote.clone()),
                DestinationIn::Local(_) => None,
            },
            ..Config::new(t.source, t.destination.shown())
        })
    }
}

/// One target being copied. See `_softcopy.pyi` for the documentation.
#[pyclass(module = "softcopy._softcopy", name = "Engine", frozen)]
struct PyEngine {
    engine: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    fn new(config: EngineConfigIn) -> PyResult<Self> {
        Ok(PyEngine { engine: Engine::start(config.try_into()?)? })
    }

    fn status(&self) -> PyStatus {
        self.engine.status().into()
    }

    fn messages(&self) -> Vec<(&'static str, String)> {
        self.engine
            .messages()
            .into_iter()
            .map(|(level, text)| {
                let name = match level {
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warning => "warning",
                    Level::Error => "error",
                };
                (name, text)
            })
            .collect()
    }

    fn finish(&self) {
        self.engine.finish();
    }

    fn stop(&self) {
        self.engine.stop();
    }

    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds("timeout", timeout)?;
        Ok(py.detach(|| self.engine.wait(timeout)))
    }

    #[getter]
    fn source(&self) -> PathBuf {
        self.engine.roots().map_or_else(|| self.engine.config().source.clone(), |r| r.0)
    }

    #[getter]
    fn destination(&self) -> PathBuf {
        self.engine.roots().map_or_else(|| self.engine.config().destination.clone(), |r| r.1)
    }

    /// Its copy workers (the user's `nprocs`, or the default for its kind of destination).
    #[getter]
    fn workers(&self) -> usize {
        self.engine.config().nprocs
    }

    #[pyo3(signature = (arrays, unreadable = Vec::new()))]
    fn expect(&self, arrays: Vec<ArraySpecIn>, unreadable: Vec<UnreadableIn>) {
        let unreadable = unreadable.into_iter().map(|u| (u.path, u.why)).collect();
        self.engine.expect(verify::Expected { arrays: specs_from(arrays), unreadable });
    }

    fn verdict(&self, py: Python<'_>) -> PyResult<Option<Py<PyVerdict>>> {
        self.engine.verdict().map(|v| Py::new(py, v)).transpose()
    }
}

/// What a verification found: `verify_trees`, `verify_manifest` and (as the base of `Verdict`) the
/// end of a run all answer with it. See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "Report", frozen, get_all, subclass)]
struct PyReport {
    ok: bool,
    files: u64,
    bytes: u64,
    missing: Vec<PathBuf>,
    size_mismatch: Vec<(PathBuf, u64, u64)>,
    mtime_mismatch: Vec<PathBuf>,
    content_mismatch: Vec<PathBuf>,
    partials: Vec<PathBuf>,
    symlinks: Vec<PathBuf>,
    extra: Vec<PathBuf>,
    stale_chunks: Vec<PathBuf>,
    pruned: Vec<PathBuf>,
    expected_chunks: u64,
    present_chunks: u64,
    proven_as_copied: u64,
    destination_walked: bool,
    outside_grid: Vec<PathBuf>,
    bad_shards: Vec<(PathBuf, String)>,
    bad_shards_at_source: Vec<(PathBuf, String)>,
    excluded: Vec<PathBuf>,
    excluded_chunks: u64,
}

impl From<verify::Report> for PyReport {
    fn from(r: verify::Report) -> Self {
        PyReport {
            ok: r.ok(),
            files: r.files,
            bytes: r.bytes,
            missing: r.missing,
            size_mismatch: r.size_mismatch,
            mtime_mismatch: r.mtime_mismatch,
            content_mismatch: r.content_mismatch,
            partials: r.partials,
            symlinks: r.symlinks,
            extra: r.extra,
            stale_chunks: r.stale_chunks,
            pruned: r.pruned,
            expected_chunks: r.expected_chunks,
            present_chunks: r.present_chunks,
            proven_as_copied: r.proven_as_copied,
            destination_walked: r.destination_walked,
            outside_grid: r.outside_grid,
            bad_shards: r.bad_shards,
            bad_shards_at_source: r.bad_shards_at_source,
            excluded: r.excluded,
            excluded_chunks: r.excluded_chunks,
        }
    }
}

/// How a target ended, as Python reads it: what verification found (its `Report` base) and what
/// the end did. See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "Verdict", frozen, get_all, extends = PyReport)]
struct PyVerdict {
    verified: bool,
    reason: Option<String>,
    not_copied: Vec<PathBuf>,
    not_copied_why: PyNotCopiedWhy,
    marker_published: bool,
    freed: bool,
    source_deleted: Vec<PathBuf>,
    source_kept: Vec<(PathBuf, String)>,
    folders_removed: u64,
    found_at_end: u64,
}

/// A snapshot of one target's progress (`status::Status`). See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "Status", frozen, get_all)]
#[derive(Debug)]
struct PyStatus {
    phase: &'static str,
    files_copied: u64,
    bytes_copied: u64,
    files_deleted: u64,
    files_unchanged: u64,
    redundant: u64,
    files_distinct: u64,
    max_copies: u64,
    errors: u64,
    failed: u64,
    backlog: u64,
    in_flight: u64,
    writing: u64,
    oldest_wait: f64,
    known: u64,
    settled: u64,
    bytes_known: u64,
    bytes_left: u64,
    last_error: Option<String>,
    fatal: Option<String>,
    elapsed: f64,
    finishing: bool,
    destination_trouble: Option<String>,
    gave_up: bool,
    paused: Option<String>,
    wants_expected: bool,
    back_off: PyBackOff,
}

#[pymethods]
impl PyStatus {
    /// Every field, for a failed test's message and a log (the dict it replaced showed them).
    fn __repr__(&self) -> String {
        format!("{self:?}")
    }
}

impl From<status::Status> for PyStatus {
    fn from(s: status::Status) -> Self {
        PyStatus {
            phase: s.phase.name(),
            files_copied: s.files_copied,
            bytes_copied: s.bytes_copied,
            files_deleted: s.files_deleted,
            files_unchanged: s.files_unchanged,
            redundant: s.redundant,
            files_distinct: s.files_distinct,
            max_copies: s.max_copies,
            errors: s.errors,
            failed: s.failed,
            backlog: s.backlog,
            in_flight: s.in_flight,
            writing: s.writing,
            oldest_wait: s.oldest_wait,
            known: s.known,
            settled: s.settled,
            bytes_known: s.bytes_known,
            bytes_left: s.bytes_left,
            last_error: s.last_error,
            fatal: s.fatal,
            elapsed: s.elapsed,
            finishing: s.finishing,
            destination_trouble: s.destination_trouble,
            gave_up: s.gave_up,
            paused: s.paused,
            wants_expected: s.wants_expected,
            back_off: s.back_off.into(),
        }
    }
}

/// Whether the back-off holds the copy back now (`status::BackOffState`).
#[pyclass(module = "softcopy._softcopy", name = "BackOffState", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PyBackOffState {
    Off,
    Free,
    Yielding,
}

/// The back-off as the status shows it (`status::BackOff`). See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "BackOff", frozen, get_all)]
#[derive(Clone, Debug)]
struct PyBackOff {
    state: PyBackOffState,
    reads: f64,
    nprocs: u64,
    held_back_s: f64,
    rate: f64,
    signal: String,
}

impl From<status::BackOff> for PyBackOff {
    fn from(b: status::BackOff) -> Self {
        let state = match b.state {
            status::BackOffState::Off => PyBackOffState::Off,
            status::BackOffState::Free => PyBackOffState::Free,
            status::BackOffState::Yielding => PyBackOffState::Yielding,
        };
        PyBackOff { state, reads: b.reads, nprocs: b.nprocs, held_back_s: b.held_back, rate: b.rate, signal: b.signal }
    }
}

/// Why a verdict's `not_copied` files did not arrive (`status::NotCopied`).
#[pyclass(module = "softcopy._softcopy", name = "NotCopiedWhy", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PyNotCopiedWhy {
    SourceGone,
    StillOpen,
    ChangedLate,
}

impl From<status::NotCopied> for PyNotCopiedWhy {
    fn from(why: status::NotCopied) -> Self {
        match why {
            status::NotCopied::SourceGone => PyNotCopiedWhy::SourceGone,
            status::NotCopied::StillOpen => PyNotCopiedWhy::StillOpen,
            status::NotCopied::ChangedLate => PyNotCopiedWhy::ChangedLate,
        }
    }
}

impl From<Verdict> for PyClassInitializer<PyVerdict> {
    fn from(v: Verdict) -> Self {
        let freed = v.freed.is_some();
        let moved = v.freed.unwrap_or_default();
        // A verdict is ok only when verified: an end that refused to verify (or never ran the
        // verification) may hold a report listing nothing wrong (docs/design.md, "The end of a run").
        let report = PyReport { ok: v.verified, ..PyReport::from(v.report) };
        PyClassInitializer::from(report).add_subclass(PyVerdict {
            verified: v.verified,
            reason: v.reason,
            not_copied: v.not_copied,
            not_copied_why: v.not_copied_why.into(),
            marker_published: v.marker_published,
            freed,
            source_deleted: moved.deleted,
            source_kept: moved.kept,
            folders_removed: moved.folders_removed,
            found_at_end: v.found_at_end,
        })
    }
}

/// A Zarr array as Python's `softcopy.zarr.ArraySpec` describes it, read attribute by attribute.
#[derive(FromPyObject)]
struct ArraySpecIn {
    path: String,
    shape: Vec<u64>,
    grid: Vec<u64>,
    prefix: Option<String>,
    separator: char,
    shard: Option<ShardLayoutIn>,
}

/// Python's `softcopy.zarr.ShardLayout`.
#[derive(FromPyObject)]
struct ShardLayoutIn {
    chunks_per_shard: u64,
    index_at_end: bool,
    crc32c: bool,
}

impl From<ArraySpecIn> for ArraySpec {
    fn from(a: ArraySpecIn) -> Self {
        let shard =
            a.shard.map(|s| ShardIndex { chunks: s.chunks_per_shard, at_end: s.index_at_end, crc32c: s.crc32c });
        ArraySpec { path: a.path, shape: a.shape, grid: a.grid, prefix: a.prefix, separator: a.separator, shard }
    }
}

/// Python's `softcopy.zarr.Unreadable`: a metadata file (relative to the source) and why.
#[derive(FromPyObject)]
struct UnreadableIn {
    path: PathBuf,
    why: String,
}

fn specs_from(arrays: Vec<ArraySpecIn>) -> Vec<ArraySpec> {
    arrays.into_iter().map(ArraySpec::from).collect()
}

/// Compares two trees without an engine (`softcopy verify`); the GIL is released while it reads
/// (over ssh, the destination's looks go through the SFTP backend).
#[pyfunction]
#[pyo3(signature = (source, destination, arrays, *, content=false, marker="complete".to_string(), ssh_command=None))]
fn verify_trees(
    py: Python<'_>,
    source: PathBuf,
    destination: DestinationIn,
    arrays: Vec<ArraySpecIn>,
    content: bool,
    marker: String,
    ssh_command: Option<String>,
) -> PyResult<PyReport> {
    let specs = specs_from(arrays);
    let r = py.detach(|| {
        let dest = open_to_verify(&destination, content, ssh_command.as_deref())?;
        let check =
            verify::Check { marker: &marker, arrays: &specs, content, prune: None, landed: None, exclude: None };
        verify::verify(&source, &dest, &check, &AtomicBool::new(false)).map_err(|e| Error::io("verify", &source, e))
    })?;
    Ok(r.into())
}

/// The destination to verify: a local folder, or an ssh destination (its copies hashed by the
/// server where it can and `content` is asked: `dest/server_hash.rs`).
fn open_to_verify(destination: &DestinationIn, content: bool, ssh_command: Option<&str>) -> error::Result<dest::Dest> {
    match destination {
        DestinationIn::Ssh(d) => d.remote.view(ssh_command, content).map_err(Error::Config),
        DestinationIn::Local(p) => dest::Dest::open(p, p, None).map_err(|e| Error::io("open", p, e)),
    }
}

/// Checks a destination against a manifest: every listed file present with its size and hash, and
/// which files are not listed. The GIL is released while it reads.
#[pyfunction]
fn verify_manifest(py: Python<'_>, manifest: PathBuf, destination: PathBuf) -> PyResult<PyReport> {
    let r = py.detach(|| manifest_report(&manifest, &destination));
    Ok(r.map_err(|e| Error::io("verify manifest", &manifest, e))?.into())
}

/// The manifest check as a verification report: `files` and `bytes` as listed, `extra` the files
/// the manifest does not list.
fn manifest_report(manifest: &std::path::Path, destination: &std::path::Path) -> std::io::Result<verify::Report> {
    let entries = manifest::read(manifest)?;
    let mut r = verify::Report { files: entries.len() as u64, ..Default::default() };
    for (rel, size, hash) in &entries {
        r.bytes += size;
        let file = destination.join(rel);
        match std::fs::metadata(&file) {
            Ok(m) if m.len() != *size => r.size_mismatch.push((rel.clone(), *size, m.len())),
            Ok(_) => {
                if manifest::hash_file(&file).map(|h| manifest::hex(&h)).ok().as_deref() != Some(hash.as_str()) {
                    r.content_mismatch.push(rel.clone());
                }
            }
            Err(_) => r.missing.push(rel.clone()),
        }
    }
    let listed: std::collections::HashSet<&std::path::Path> = entries.iter().map(|e| e.0.as_path()).collect();
    // Our own state at the destination root (the move journal: docs/design.md, "The end of a run") is never data.
    for entry in walkdir::WalkDir::new(destination).follow_links(false).into_iter().filter_map(|e| e.ok()) {
        if let Ok(rel) = entry.path().strip_prefix(destination) {
            if entry.file_type().is_file() && !listed.contains(rel) && !vocab::is_ignored(rel) {
                r.extra.push(rel.to_path_buf());
            }
        }
    }
    Ok(r)
}

/// Turns "0.1.0-alpha.1" into PEP 440's "0.1.0a1", so `softcopy.__version__` matches the wheel.
fn python_version() -> String {
    env!("CARGO_PKG_VERSION").replace("-alpha.", "a").replace("-beta.", "b").replace("-rc.", "rc")
}

/// The watch on an acquisitions folder (a pattern target's parent): the names that appear in it.
#[pyclass(module = "softcopy._softcopy", name = "Arrivals", frozen)]
struct PyArrivals {
    inner: arrivals::Arrivals,
}

#[pymethods]
impl PyArrivals {
    #[new]
    fn new(folder: PathBuf) -> PyResult<Self> {
        Ok(PyArrivals { inner: arrivals::Arrivals::watch(&folder)? })
    }

    /// Names that appeared (waiting up to `timeout` seconds, GIL released), and whether the folder
    /// must be listed again (events were lost).
    fn wait(&self, py: Python<'_>, timeout: f64) -> (Vec<std::ffi::OsString>, bool) {
        let got = py.detach(|| self.inner.wait(std::time::Duration::from_secs_f64(timeout.max(0.0))));
        let relist = got.contains(&arrivals::Arrival::Relist);
        let names = got
            .into_iter()
            .filter_map(|a| match a {
                arrivals::Arrival::Name(n) => Some(n),
                arrivals::Arrival::Relist => None,
            })
            .collect();
        (names, relist)
    }

    /// False once the watch died (nothing more will be heard from it): make another.
    #[getter]
    fn alive(&self) -> bool {
        !self.inner.is_dead()
    }
}

/// A target's exclude globs (`exclude.rs`), checked once and handed to its engine.
#[pyclass(module = "softcopy._softcopy", name = "Exclude", frozen)]
struct PyExclude {
    inner: std::sync::Arc<exclude::Exclude>,
}

#[pymethods]
impl PyExclude {
    #[new]
    fn new(globs: Vec<String>) -> PyResult<Self> {
        let inner = exclude::Exclude::new(&globs).map_err(PyValueError::new_err)?;
        Ok(PyExclude { inner: std::sync::Arc::new(inner) })
    }

    /// Whether `rel` (relative to the source root), or a folder it is in, is excluded.
    fn matches(&self, rel: PathBuf) -> bool {
        self.inner.matches(&rel)
    }

    #[getter]
    fn globs(&self) -> Vec<String> {
        self.inner.globs().to_vec()
    }
}

/// A bandwidth budget shared by every engine it is given to (`--max-total-rate`).
#[pyclass(module = "softcopy._softcopy", name = "RateBudget", frozen)]
struct PyRateBudget {
    limit: std::sync::Arc<rate::RateLimit>,
    bytes_per_s: u64,
}

#[pymethods]
impl PyRateBudget {
    #[new]
    fn new(bytes_per_s: u64) -> PyResult<Self> {
        if bytes_per_s == 0 {
            return Err(PyValueError::new_err("a rate budget must be at least 1 byte per second"));
        }
        Ok(PyRateBudget { limit: std::sync::Arc::new(rate::RateLimit::new(bytes_per_s)), bytes_per_s })
    }

    #[getter]
    fn bytes_per_s(&self) -> u64 {
        self.bytes_per_s
    }
}

/// Whose copy a destination folder holds, seen from a source folder (`origin.rs`).
#[pyclass(module = "softcopy._softcopy", name = "Owner", frozen, eq, eq_int)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PyOwner {
    Free,
    Ours,
    SameNumber,
    Unrecorded,
    Another,
    Finished,
    /// Another softcopy run holds it as its destination now (its claim): nothing else is known.
    Claimed,
}

/// An ssh destination (`dest::remote::Remote`) as Python holds it. See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "SshDestination", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
struct PySshDestination {
    remote: dest::remote::Remote,
}

#[pymethods]
impl PySshDestination {
    /// The ssh destination `destination` names by the one rule (`dest::remote`), or None. A name
    /// that is not UTF-8 is a local path's. The rule may look whether the path exists here,
    /// which hangs on a dead share: without the GIL, so the service's loop goes on.
    #[staticmethod]
    fn parse(py: Python<'_>, destination: PathBuf) -> Option<Self> {
        let text = destination.to_str();
        py.detach(|| text.and_then(dest::remote::Remote::parse)).map(|remote| PySshDestination { remote })
    }

    /// The folder `name` (one component, perhaps not UTF-8) in this one.
    fn __truediv__(&self, name: PathBuf) -> PyResult<Self> {
        let remote =
            self.remote.join(&name).ok_or_else(|| PyValueError::new_err(format!("not a plain name: {name:?}")))?;
        Ok(PySshDestination { remote })
    }

    fn __str__(&self) -> String {
        self.remote.shown()
    }

    /// Immutable: a copy is itself (`dataclasses.asdict`, `copy.deepcopy`).
    fn __copy__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: PyRef<'py, Self>, _memo: &Bound<'py, PyAny>) -> PyRef<'py, Self> {
        slf
    }

    fn __repr__(&self) -> String {
        format!("SshDestination({:?})", self.remote.shown())
    }

    /// The last component of its path.
    #[getter]
    fn name(&self) -> String {
        self.remote.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    #[getter]
    fn host(&self) -> String {
        self.remote.host.clone()
    }

    #[getter]
    fn port(&self) -> Option<u16> {
        self.remote.port
    }

    /// Its path on the server.
    #[getter]
    fn path(&self) -> String {
        self.remote.path.to_string_lossy().into_owned()
    }
}

/// Checks an ssh destination before a copy starts (the host reached over SFTP; the folder there,
/// or with `holds_acquisitions=False` its parent to make it in; not the `source`'s own storage);
/// ValueError with one line a person can act on when not.
#[pyfunction]
#[pyo3(signature = (destination, ssh_command=None, *, holds_acquisitions=false, source=None))]
fn check_ssh_destination(
    py: Python<'_>,
    destination: PySshDestination,
    ssh_command: Option<String>,
    holds_acquisitions: bool,
    source: Option<PathBuf>,
) -> PyResult<()> {
    use dest::remote::Needed;
    let needed = if holds_acquisitions { Needed::Folder } else { Needed::FolderOrParent };
    py.detach(|| destination.remote.check(ssh_command.as_deref(), needed, source.as_deref()))
        .map_err(PyValueError::new_err)
}

/// What a file at a destination is (`destination_file`). See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "DestinationFile", frozen, get_all)]
struct PyDestinationFile {
    size: u64,
    mtime_ns: i64,
    is_file: bool,
    is_dir: bool,
}

/// The file (or folder) `rel` below `destination`, looked at through its backend without passing a
/// link; None where it is not there (nor its destination). The GIL is released.
#[pyfunction]
#[pyo3(signature = (destination, rel, *, ssh_command=None))]
fn destination_file(
    py: Python<'_>,
    destination: DestinationIn,
    rel: PathBuf,
    ssh_command: Option<String>,
) -> PyResult<Option<PyDestinationFile>> {
    let shown = destination.shown();
    let looked = py.detach(|| {
        let Some(dest) = destination.look(ssh_command.as_deref())? else { return Ok(None) };
        match dest.stat(&rel) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(None),
            other => other.map(Some),
        }
    });
    let look = looked.map_err(|e| Error::io("look at", shown.join(&rel), e))?;
    Ok(look.map(|m| PyDestinationFile {
        size: m.ident.size,
        mtime_ns: m.ident.mtime_ns,
        is_file: m.is_file(),
        is_dir: m.is_dir(),
    }))
}

/// Whose copy `destination` holds for the source folder `source` (whose end marker is `marker`),
/// and why, in words, when it is another acquisition's. `Free` when the destination is missing.
/// An ssh destination is looked at over SFTP (`ssh_command` reaches it).
#[pyfunction]
#[pyo3(signature = (source, destination, marker="complete".to_string(), *, ssh_command=None))]
fn destination_owner(
    py: Python<'_>,
    source: PathBuf,
    destination: DestinationIn,
    marker: String,
    ssh_command: Option<String>,
) -> PyResult<(PyOwner, String)> {
    let shown = destination.shown();
    // Every look at the destination without the GIL (on a dead share or a slow network each
    // hangs, and the service's loop must go on): opening it too.
    let owner = py.detach(|| {
        let dest = match destination.look(ssh_command.as_deref()) {
            Ok(Some(dest)) => dest,
            Ok(None) => return Some(Ok(origin::Owner::Free)),
            Err(e) => return Some(Err(e)),
        };
        if dest.claimed(Path::new("")).is_some() {
            return None;
        }
        Some(origin::owner(&source, &dest, &marker))
    });
    let Some(owner) = owner else {
        return Ok((PyOwner::Claimed, String::new()));
    };
    Ok(match owner.map_err(|e| Error::io("look at", &shown, e))? {
        origin::Owner::Free => (PyOwner::Free, String::new()),
        origin::Owner::Ours => (PyOwner::Ours, String::new()),
        origin::Owner::SameNumber => (PyOwner::SameNumber, origin::same_number_why(&shown, &source)),
        origin::Owner::Unrecorded => (PyOwner::Unrecorded, String::new()),
        origin::Owner::Another(why) => (PyOwner::Another, why),
        origin::Owner::Finished => (PyOwner::Finished, String::new()),
    })
}

/// An unfinished copy at a destination (`origin::unfinished_copies`).
#[pyclass(module = "softcopy._softcopy", name = "UnfinishedCopy", frozen, get_all)]
pub struct PyUnfinished {
    /// The copy's folder: a `Path`, or an `SshDestination` where the destination is one.
    copy: Py<PyAny>,
    /// The identity of the source folder it is recorded as the copy of (as `folder_identity`).
    source: FolderTuple,
    /// The source's path as recorded.
    shown: String,
    /// The source folder's name (the name it had in its acquisitions folder).
    name: std::ffi::OsString,
}

/// The unfinished copies in `destination` of folders that were in `acquisitions`: recorded, without
/// their marker, not claimed by a run, not yet noted as let go.
#[pyfunction]
#[pyo3(signature = (destination, acquisitions, marker="complete".to_string(), *, ssh_command=None))]
fn unfinished_copies(
    py: Python<'_>,
    destination: DestinationIn,
    acquisitions: PathBuf,
    marker: String,
    ssh_command: Option<String>,
) -> PyResult<Vec<PyUnfinished>> {
    let shown = destination.shown();
    let found = py.detach(|| {
        let dest = destination.look(ssh_command.as_deref())?.ok_or(std::io::ErrorKind::NotFound)?;
        origin::unfinished_copies(&dest, &shown, &acquisitions, &marker)
    });
    let found = found.map_err(|e| Error::io("look for unfinished copies in", &shown, e))?;
    let mut out = Vec::with_capacity(found.len());
    for u in found {
        let copy = match &destination {
            DestinationIn::Ssh(d) => {
                let name = Path::new(u.copy.file_name().unwrap_or_default());
                let remote = d.remote.join(name).ok_or_else(|| PyValueError::new_err(format!("{name:?}")))?;
                Py::new(py, PySshDestination { remote })?.into_any()
            }
            DestinationIn::Local(_) => u.copy.into_pyobject(py)?.unbind(),
        };
        out.push(PyUnfinished { copy, source: folder_tuple(&u.source), shown: u.shown, name: u.name });
    }
    Ok(out)
}

/// Notes at the copy `copy` that its acquisition was let go, and why (told once). False where
/// the copy is not there (let go before its copy began: nothing for a later start to name).
#[pyfunction]
#[pyo3(signature = (copy, why, *, ssh_command=None))]
fn note_let_go(py: Python<'_>, copy: DestinationIn, why: String, ssh_command: Option<String>) -> PyResult<bool> {
    let shown = copy.shown();
    let noted = py.detach(|| {
        let Some(dest) = copy.look(ssh_command.as_deref())? else { return Ok(false) };
        origin::note_let_go(&dest, &why).map(|()| true)
    });
    Ok(noted.map_err(|e| Error::io("note at", &shown, e))?)
}

/// A folder's identity across time, as Python holds it: (device, inode, birth time in ns or None
/// where the filesystem keeps none, the filesystem's own identifier or None).
type FolderTuple = (u64, u64, Option<i64>, Option<u64>);

fn folder_tuple(id: &root::FolderId) -> FolderTuple {
    (id.dev, id.ino, id.born, id.fs)
}

fn folder_id((dev, ino, born, fs): FolderTuple) -> root::FolderId {
    root::FolderId { dev, ino, born, fs }
}

/// A folder's identity across time (`FolderTuple`). A folder made again under a name, even on the
/// same inode, differs.
#[pyfunction]
fn folder_identity(py: Python<'_>, path: PathBuf) -> PyResult<FolderTuple> {
    let id = py.detach(|| root::FolderId::of(&path)).map_err(|e| Error::io("look at", &path, e))?;
    Ok(folder_tuple(&id))
}

/// Whether two identities (`folder_identity`) may be of one folder (`FolderId::same`: a birth time
/// missing on either side cannot tell them apart).
#[pyfunction]
fn same_folder(a: FolderTuple, b: FolderTuple) -> bool {
    folder_id(a).same(&folder_id(b))
}

/// Whether two identities (`folder_identity`) are on one filesystem (`FolderId::same_filesystem`).
#[pyfunction]
fn same_filesystem(a: FolderTuple, b: FolderTuple) -> bool {
    folder_id(a).same_filesystem(&folder_id(b))
}

#[pymodule(gil_used = false)]
fn _softcopy(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", python_version())?;
    m.add_function(wrap_pyfunction!(verify_trees, m)?)?;
    m.add_function(wrap_pyfunction!(verify_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(destination_owner, m)?)?;
    m.add_function(wrap_pyfunction!(check_ssh_destination, m)?)?;
    m.add_function(wrap_pyfunction!(destination_file, m)?)?;
    m.add_class::<PySshDestination>()?;
    m.add_class::<PyDestinationFile>()?;
    m.add_function(wrap_pyfunction!(folder_identity, m)?)?;
    m.add_function(wrap_pyfunction!(same_folder, m)?)?;
    m.add_function(wrap_pyfunction!(same_filesystem, m)?)?;
    m.add_function(wrap_pyfunction!(unfinished_copies, m)?)?;
    m.add_function(wrap_pyfunction!(note_let_go, m)?)?;
    m.add_class::<PyUnfinished>()?;
    m.add_class::<PyOwner>()?;
    m.add("SoftcopyError", m.py().get_type::<SoftcopyError>())?;
    m.add_class::<PyEngine>()?;
    m.add_class::<PyReport>()?;
    m.add_class::<PyVerdict>()?;
    m.add_class::<PyArrivals>()?;
    m.add_class::<PyRateBudget>()?;
    m.add_class::<PyNotCopiedWhy>()?;
    m.add_class::<PyStatus>()?;
    m.add_class::<PyBackOff>()?;
    m.add_class::<PyBackOffState>()?;
    m.add_class::<PyExclude>()?;
    Ok(())
}

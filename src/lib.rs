//! softcopy's native core, and the only file that touches PyO3.
//!
//! The engine (`engine`, `tracker`, `watcher`, `copier`, `verify`, `sys`) is plain Rust: its threads
//! never hold the GIL or call Python. This file converts plain values at the boundary, releases the
//! GIL around everything that blocks, and maps errors to Python exceptions.

pub mod arrivals;
pub mod aside;
pub mod claim;
pub mod config;
mod coordinator;
pub mod copier;
pub mod dest;
pub mod engine;
mod error;
pub mod exclude;
pub mod failpoint;
mod finish;
mod flush;
pub mod gate;
pub mod gentle;
mod health;
mod in_the_way;
pub mod journal;
pub mod manifest;
mod mirror;
pub mod mover;
pub mod names;
pub mod origin;
pub mod pool;
pub mod rate;
mod rescan;
pub mod root;
pub mod settled;
pub mod sftp;
pub mod shard;
pub mod spread;
pub mod status;
pub mod sys;
pub mod tracker;
pub mod verify;
pub mod vocab;
pub mod watcher;

pub use error::{Error, Result};

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use config::Config;
use engine::Engine;
use status::{Level, Verdict};
use sys::CopyMethod;
use verify::{ArraySpec, ShardIndex};

pyo3::create_exception!(_softcopy, SoftcopyError, PyRuntimeError, "An error inside softcopy's engine.");

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string())
            }
            Error::SourceMissing(_) => pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string()),
            _ => SoftcopyError::new_err(e.to_string()),
        }
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
}

/// One target being copied. See `_softcopy.pyi` for the documentation.
#[pyclass(module = "softcopy._softcopy", name = "Engine", frozen)]
struct PyEngine {
    engine: Engine,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (source, destination, *, nprocs=8, sleep_time=0.0, wait_for_source=true,
        marker="complete".to_string(), settle_time=0.05, once=false, low_priority=true, log_events=false,
        copy_method="auto", give_up_after=86400.0, max_rate=None, max_total_rate=None, exclude=None, checksum=false,
        manifest=None, delete_source=false, quiet_time=60.0, evict_after=Some(30.0), back_off=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        source: PathBuf,
        destination: PathBuf,
        nprocs: usize,
        sleep_time: f64,
        wait_for_source: bool,
        marker: String,
        settle_time: f64,
        once: bool,
        low_priority: bool,
        log_events: bool,
        copy_method: &str,
        give_up_after: f64,
        max_rate: Option<u64>,
        max_total_rate: Option<&Bound<'_, PyRateBudget>>,
        exclude: Option<&Bound<'_, PyExclude>>,
        checksum: bool,
        manifest: Option<PathBuf>,
        delete_source: bool,
        quiet_time: f64,
        evict_after: Option<f64>,
        back_off: bool,
    ) -> PyResult<Self> {
        if nprocs == 0 {
            return Err(PyValueError::new_err("nprocs must be at least 1"));
        }
        let method = match copy_method {
            "auto" => CopyMethod::Auto,
            "sendfile" => CopyMethod::SendFile,
            "readwrite" => CopyMethod::ReadWrite,
            other => return Err(PyValueError::new_err(format!("unknown copy_method {other:?}"))),
        };
        let config = Config {
            nprocs,
            sleep: seconds("sleep_time", sleep_time)?,
            wait_for_source,
            marker,
            settle: seconds("settle_time", settle_time)?,
            once,
            method,
            low_priority,
            back_off,
            log_events,
            give_up_after: seconds("give_up_after", give_up_after)?,
            max_rate,
            max_total_rate: max_total_rate.map(|b| b.get().limit.clone()),
            exclude: exclude.map(|e| e.get().inner.clone()).unwrap_or_default(),
            checksum,
            manifest,
            delete_source,
            quiet: seconds("quiet_time", quiet_time)?,
            evict_after: evict_after.map(|s| seconds("evict_after", s)).transpose()?,
            ..Config::new(source, destination)
        };
        Ok(PyEngine { engine: Engine::start(config)? })
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.engine.status();
        let d = PyDict::new(py);
        d.set_item("phase", s.phase.name())?;
        d.set_item("files_copied", s.files_copied)?;
        d.set_item("bytes_copied", s.bytes_copied)?;
        d.set_item("files_deleted", s.files_deleted)?;
        d.set_item("files_unchanged", s.files_unchanged)?;
        d.set_item("redundant", s.redundant)?;
        d.set_item("files_distinct", s.files_distinct)?;
        d.set_item("max_copies", s.max_copies)?;
        d.set_item("errors", s.errors)?;
        d.set_item("failed", s.failed)?;
        d.set_item("backlog", s.backlog)?;
        d.set_item("in_flight", s.in_flight)?;
        d.set_item("writing", s.writing)?;
        d.set_item("oldest_wait", s.oldest_wait)?;
        d.set_item("known", s.known)?;
        d.set_item("settled", s.settled)?;
        d.set_item("bytes_known", s.bytes_known)?;
        d.set_item("bytes_left", s.bytes_left)?;
        d.set_item("last_error", s.last_error)?;
        d.set_item("fatal", s.fatal)?;
        d.set_item("elapsed", s.elapsed)?;
        d.set_item("finishing", s.finishing)?;
        d.set_item("destination_trouble", s.destination_trouble)?;
        d.set_item("gave_up", s.gave_up)?;
        d.set_item("paused", s.paused)?;
        d.set_item("wants_expected", s.wants_expected)?;
        d.set_item("back_off", PyBackOff::from(s.back_off))?;
        Ok(d)
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

    #[pyo3(signature = (arrays, unreadable = Vec::new()))]
    fn expect(&self, arrays: Vec<ArrayTuple>, unreadable: Vec<(PathBuf, String)>) {
        self.engine.expect(verify::Expected { arrays: specs_from(arrays), unreadable });
    }

    fn verdict(&self) -> Option<PyVerdict> {
        self.engine.verdict().map(PyVerdict::from)
    }
}

/// How a target ended, as Python reads it. See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "Verdict", frozen, get_all)]
struct PyVerdict {
    verified: bool,
    reason: Option<String>,
    files: u64,
    bytes: u64,
    missing: Vec<PathBuf>,
    not_copied: Vec<PathBuf>,
    not_copied_why: PyNotCopiedWhy,
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
    marker_published: bool,
    freed: bool,
    source_deleted: Vec<PathBuf>,
    source_kept: Vec<(PathBuf, String)>,
    folders_removed: u64,
    excluded: Vec<PathBuf>,
    excluded_chunks: u64,
    found_at_end: u64,
}

/// Whether the back-off holds the copy back now (`status::BackOffState`).
#[pyclass(module = "softcopy._softcopy", name = "BackOffState", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PyBackOffState {
    Off,
    Free,
    Yielding,
}

/// The back-off as the status shows it (`status::BackOff`). See `_softcopy.pyi`.
#[pyclass(module = "softcopy._softcopy", name = "BackOff", frozen, get_all)]
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

impl From<Verdict> for PyVerdict {
    fn from(v: Verdict) -> Self {
        let r = v.report;
        let freed = v.freed.is_some();
        let moved = v.freed.unwrap_or_default();
        PyVerdict {
            verified: v.verified,
            reason: v.reason,
            files: r.files,
            bytes: r.bytes,
            missing: r.missing,
            not_copied: v.not_copied,
            not_copied_why: v.not_copied_why.into(),
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
            marker_published: v.marker_published,
            freed,
            source_deleted: moved.deleted,
            source_kept: moved.kept,
            folders_removed: moved.folders_removed,
            excluded: r.excluded,
            excluded_chunks: r.excluded_chunks,
            found_at_end: v.found_at_end,
        }
    }
}

/// One array spec tuple from Python per Zarr array, as the verifier takes it.
type ArrayTuple = (String, Vec<u64>, Vec<u64>, Option<String>, char, Option<(u64, bool, bool)>);

fn specs_from(arrays: Vec<ArrayTuple>) -> Vec<ArraySpec> {
    arrays
        .into_iter()
        .map(|(path, shape, grid, prefix, separator, shard)| ArraySpec {
            path,
            shape,
            grid,
            prefix,
            separator,
            shard: shard.map(|(chunks, at_end, crc32c)| ShardIndex { chunks, at_end, crc32c }),
        })
        .collect()
}

/// The verification report as a dict of plain values.
fn report_dict<'py>(py: Python<'py>, r: &verify::Report) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ok", r.ok())?;
    d.set_item("files", r.files)?;
    d.set_item("bytes", r.bytes)?;
    d.set_item("missing", &r.missing)?;
    d.set_item("size_mismatch", &r.size_mismatch)?;
    d.set_item("content_mismatch", &r.content_mismatch)?;
    d.set_item("mtime_mismatch", &r.mtime_mismatch)?;
    d.set_item("partials", &r.partials)?;
    d.set_item("symlinks", &r.symlinks)?;
    d.set_item("extra", &r.extra)?;
    d.set_item("stale_chunks", &r.stale_chunks)?;
    d.set_item("pruned", &r.pruned)?;
    d.set_item("expected_chunks", r.expected_chunks)?;
    d.set_item("present_chunks", r.present_chunks)?;
    d.set_item("outside_grid", &r.outside_grid)?;
    d.set_item("bad_shards", &r.bad_shards)?;
    d.set_item("bad_shards_at_source", &r.bad_shards_at_source)?;
    Ok(d)
}

/// Compares two trees without an engine (`softcopy verify`); the GIL is released while it reads.
#[pyfunction]
#[pyo3(signature = (source, destination, arrays, *, content=false, marker="complete".to_string()))]
fn verify_trees<'py>(
    py: Python<'py>,
    source: PathBuf,
    destination: PathBuf,
    arrays: Vec<ArrayTuple>,
    content: bool,
    marker: String,
) -> PyResult<Bound<'py, PyDict>> {
    let specs = specs_from(arrays);
    let r = py
        .detach(|| {
            let dest = dest::Dest::open(&destination, &destination, None)?;
            let check =
                verify::Check { marker: &marker, arrays: &specs, content, prune: None, landed: None, exclude: None };
            verify::verify(&source, &dest, &check, &AtomicBool::new(false))
        })
        .map_err(|e| Error::io("verify", &source, e))?;
    report_dict(py, &r)
}

/// Checks a destination against a manifest: every listed file present with its size and hash, and
/// which files are not listed. The GIL is released while it reads.
#[pyfunction]
fn verify_manifest<'py>(py: Python<'py>, manifest: PathBuf, destination: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let (mut missing, mut size_mismatch, mut content_mismatch, mut extra) = (vec![], vec![], vec![], vec![]);
    let files = py.detach(|| -> std::io::Result<usize> {
        let entries = manifest::read(&manifest)?;
        let listed: std::collections::HashSet<PathBuf> = entries.iter().map(|e| e.0.clone()).collect();
        // Our own state at the destination root (the move journal: docs/design.md, "The end of a run") is never data.
        for (rel, size, hash) in &entries {
            let file = destination.join(rel);
            match std::fs::metadata(&file) {
                Ok(m) if m.len() != *size => size_mismatch.push((rel.clone(), *size, m.len())),
                Ok(_) => {
                    if manifest::hash_file(&file).map(|h| manifest::hex(&h)).ok().as_deref() != Some(hash.as_str()) {
                        content_mismatch.push(rel.clone());
                    }
                }
                Err(_) => missing.push(rel.clone()),
            }
        }
        for entry in walkdir::WalkDir::new(&destination).follow_links(false).into_iter().filter_map(|e| e.ok()) {
            if let Ok(rel) = entry.path().strip_prefix(&destination) {
                if entry.file_type().is_file() && !listed.contains(rel) && !vocab::is_ignored(rel) {
                    extra.push(rel.to_path_buf());
                }
            }
        }
        Ok(entries.len())
    });
    let files = files.map_err(|e| Error::io("verify manifest", &manifest, e))?;
    let d = PyDict::new(py);
    d.set_item("ok", missing.is_empty() && size_mismatch.is_empty() && content_mismatch.is_empty())?;
    d.set_item("files", files)?;
    d.set_item("missing", missing)?;
    d.set_item("size_mismatch", size_mismatch)?;
    d.set_item("content_mismatch", content_mismatch)?;
    d.set_item("extra", extra)?;
    Ok(d)
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

/// Whose copy `destination` holds for the source folder `source` (whose end marker is `marker`),
/// and why, in words, when it is another acquisition's. `Free` when the destination is missing.
#[pyfunction]
#[pyo3(signature = (source, destination, marker="complete".to_string()))]
fn destination_owner(
    py: Python<'_>,
    source: PathBuf,
    destination: PathBuf,
    marker: String,
) -> PyResult<(PyOwner, String)> {
    if py.detach(|| claim::held_in(&destination)).is_some() {
        return Ok((PyOwner::Claimed, String::new()));
    }
    let owner = py.detach(|| match std::fs::symlink_metadata(&destination) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(origin::Owner::Free),
        _ => origin::owner(&source, &destination, &marker),
    });
    Ok(match owner.map_err(|e| SoftcopyError::new_err(format!("{}: {e}", destination.display())))? {
        origin::Owner::Free => (PyOwner::Free, String::new()),
        origin::Owner::Ours => (PyOwner::Ours, String::new()),
        origin::Owner::SameNumber => (PyOwner::SameNumber, origin::same_number_why(&destination, &source)),
        origin::Owner::Unrecorded => (PyOwner::Unrecorded, String::new()),
        origin::Owner::Another(why) => (PyOwner::Another, why),
        origin::Owner::Finished => (PyOwner::Finished, String::new()),
    })
}

/// An unfinished copy at a destination (`origin::unfinished_copies`).
#[pyclass(module = "softcopy._softcopy", name = "UnfinishedCopy", frozen, get_all)]
pub struct PyUnfinished {
    /// The copy's folder.
    copy: PathBuf,
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
#[pyo3(signature = (destination, acquisitions, marker="complete".to_string()))]
fn unfinished_copies(
    py: Python<'_>,
    destination: PathBuf,
    acquisitions: PathBuf,
    marker: String,
) -> PyResult<Vec<PyUnfinished>> {
    let found = py
        .detach(|| origin::unfinished_copies(&destination, &acquisitions, &marker))
        .map_err(|e| SoftcopyError::new_err(format!("{}: {e}", destination.display())))?;
    let typed = |u: origin::Unfinished| PyUnfinished {
        copy: u.copy,
        source: folder_tuple(&u.source),
        shown: u.shown,
        name: u.name,
    };
    Ok(found.into_iter().map(typed).collect())
}

/// Notes at the copy `copy` that its acquisition was let go, and why (told once).
#[pyfunction]
fn note_let_go(py: Python<'_>, copy: PathBuf, why: String) -> PyResult<()> {
    py.detach(|| origin::note_let_go(&copy, &why))
        .map_err(|e| SoftcopyError::new_err(format!("{}: {e}", copy.display())))
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
    let id = py
        .detach(|| root::FolderId::of(&path))
        .map_err(|e| SoftcopyError::new_err(format!("{}: {e}", path.display())))?;
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
    m.add_function(wrap_pyfunction!(folder_identity, m)?)?;
    m.add_function(wrap_pyfunction!(same_folder, m)?)?;
    m.add_function(wrap_pyfunction!(same_filesystem, m)?)?;
    m.add_function(wrap_pyfunction!(unfinished_copies, m)?)?;
    m.add_function(wrap_pyfunction!(note_let_go, m)?)?;
    m.add_class::<PyUnfinished>()?;
    m.add_class::<PyOwner>()?;
    m.add("SoftcopyError", m.py().get_type::<SoftcopyError>())?;
    m.add_class::<PyEngine>()?;
    m.add_class::<PyVerdict>()?;
    m.add_class::<PyArrivals>()?;
    m.add_class::<PyRateBudget>()?;
    m.add_class::<PyNotCopiedWhy>()?;
    m.add_class::<PyBackOff>()?;
    m.add_class::<PyBackOffState>()?;
    m.add_class::<PyExclude>()?;
    Ok(())
}

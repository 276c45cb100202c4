//! One target's configuration: everything the engine needs to know, with the CLI's defaults. Read
//! by the engine, the coordinator and the end steps; built by the PyO3 layer from Python's
//! `Target`. Imports nothing of the engine's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::CopyMethod;

/// Everything one target needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: PathBuf,
    /// A local path, or an ssh destination's name as the user gave it (for messages).
    pub destination: PathBuf,
    /// The ssh destination, where it is one: decided by the caller (Python's `SshDestination`;
    /// a `Path` is always local), never again from `destination`'s text.
    pub remote: Option<crate::dest::remote::Remote>,
    /// The program (and its options) that reaches an ssh destination instead of `ssh`.
    pub ssh_command: Option<String>,
    /// SFTP sessions to an ssh destination (each its own ssh process and server process).
    pub connections: usize,
    /// Copy workers for this target ([`default_nprocs`] unless the user set it).
    pub nprocs: usize,
    /// Pause in each worker after each file copied.
    pub sleep: Duration,
    /// Wait for a missing source to appear instead of failing.
    pub wait_for_source: bool,
    /// Name of the file at the source root that marks the end of the acquisition.
    pub marker: String,
    /// How long a file written in place must stay closed and quiet before it is copied.
    pub settle: Duration,
    /// How long a new version of an already-copied file waits for further versions.
    pub debounce: Duration,
    /// Copy what is there now and finish, without waiting for the marker.
    pub once: bool,
    pub method: CopyMethod,
    pub low_priority: bool,
    /// Yield the source disk to others' writes, whatever the IO scheduler (docs/design.md,
    /// "Gentle on any scheduler").
    pub back_off: bool,
    /// Report every filesystem event as a debug message (`--verbose`).
    pub log_events: bool,
    /// How long an unavailable destination (full, gone) is retried before the target gives up.
    pub give_up_after: Duration,
    /// This target's bandwidth budget in bytes per second (`--max-rate`).
    pub max_rate: Option<u64>,
    /// The budget this target shares with others (`--max-total-rate`): the same one given to each.
    pub max_total_rate: Option<Arc<crate::gentle::rate::RateLimit>>,
    /// What is not part of the acquisition (`--exclude`): never copied, waited for or verified.
    pub exclude: Arc<crate::track::exclude::Exclude>,
    /// Hash every file while copying and read the copy back (`--checksum`).
    pub checksum: bool,
    /// Where to write the manifest (hash, size, path per file) once drained.
    pub manifest: Option<PathBuf>,
    /// Keep what was copied so `delete_source()` can free the source afterwards.
    pub delete_source: bool,
    /// Where no writer check is possible, how long a file found by a scan must go unwritten before
    /// it is taken as closed.
    pub quiet: Duration,
    /// How long a copied file stays quiet before it leaves memory for its folder's record
    /// (docs/design.md, "Memory"); `None`: never. Not with `--delete-source`, `--checksum` or a
    /// manifest, which need every file's record at the end.
    pub evict_after: Option<Duration>,
}

/// Copy workers to a local destination unless the user sets `--nprocs`.
pub const NPROCS: usize = 8;
/// Copy workers to an ssh destination unless the user sets `--nprocs`: each worker's copy waits
/// mostly on the network (three dependent round trips per file, docs/design.md "The ssh
/// destination: the SFTP client"), so more files in flight overlap those waits. Measured through
/// the delay proxy (BENCHMARKS.md, "Issue 28: the ssh destination at speed"): 2000 files of
/// 16 KiB, flat, 8/16/32/64 workers: 319/417/454/450 files/s at 2 ms, 132/196/266/300 at 10 ms;
/// a folder per chunk: 316/376/312/302 and 129/172/177/167. 32 is at or near the best at both;
/// the source's reads stay gated by the back-off (`gentle`), which caps them at this count.
pub const SSH_NPROCS: usize = 32;

/// The workers for a destination when the user set none: `remote` when it is across ssh (the
/// caller knows: a name is never parsed again, `Config::remote`).
pub fn default_nprocs(remote: Option<&crate::dest::remote::Remote>) -> usize {
    match remote {
        Some(_) => SSH_NPROCS,
        None => NPROCS,
    }
}

impl Config {
    /// A configuration with the CLI's defaults.
    pub fn new(source: impl Into<PathBuf>, destination: impl Into<PathBuf>) -> Self {
        Config {
            source: source.into(),
            destination: destination.into(),
            remote: None,
            ssh_command: None,
            connections: 4,
            nprocs: NPROCS,
            sleep: Duration::ZERO,
            wait_for_source: true,
            marker: "complete".into(),
            settle: Duration::from_millis(50),
            debounce: Duration::from_millis(100),
            once: false,
            method: CopyMethod::Auto,
            low_priority: true,
            back_off: true,
            log_events: false,
            give_up_after: Duration::from_secs(24 * 3600),
            max_rate: None,
            max_total_rate: None,
            exclude: Default::default(),
            checksum: false,
            manifest: None,
            delete_source: false,
            quiet: Duration::from_secs(60),
            evict_after: Some(Duration::from_secs(30)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_destination_gets_more_workers_by_default() {
        let remote = crate::dest::remote::Remote::parse("me@lab:/data/acq").unwrap();
        assert_eq!(default_nprocs(Some(&remote)), SSH_NPROCS);
        assert_eq!(default_nprocs(None), NPROCS);
    }
}

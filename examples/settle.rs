//! The tracker's memory at 10^7 files, which a live copy on this VM cannot reach in a session:
//! `settle FILES [PER_FOLDER] [--keep]` feeds FILES chunk files (PER_FOLDER to a folder, 1000 by
//! default) through the real tracker in batches of 10 000, as a live acquisition would (a rename
//! into place, a job, a copy), calling its settling pass after each batch (`--keep`: never), and
//! prints the process's peak RSS. No file is read or written: this measures the tracker alone,
//! `benches/memory.py` the whole process (BENCHMARKS.md, "memory over a live acquisition").

use std::path::PathBuf;
use std::time::{Duration, Instant};

use _softcopy::track::Tracker;
use _softcopy::vocab::{Change, Identity, Outcome};

/// The process's peak resident set (VmHWM), in KiB; 0 where /proc has none.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let files: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let per_folder: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let keep = args.iter().any(|a| a == "--keep");
    let before = peak_kib();
    let started = Instant::now();
    let mut t = Tracker::new(Duration::from_millis(50), Duration::ZERO);
    let now = Instant::now();
    let mut ino = 0u64;
    for batch in (0..files).step_by(10_000) {
        for i in batch..(batch + 10_000).min(files) {
            let rel = PathBuf::from(format!("c/{}/{}", i / per_folder, i % per_folder));
            t.event(&rel, Change::Replaced, now);
        }
        while let Some(job) = t.next_job(now) {
            ino += 1;
            let ident = Identity { dev: 1, ino, size: 64, mtime_ns: ino as i64, ctime_ns: ino as i64 };
            t.finish(&job.rel, Outcome::Copied { ident, bytes: 64, hash: None }, now);
        }
        if !keep {
            t.evict_settled();
        }
    }
    let peak = peak_kib();
    let grown = peak.saturating_sub(before) * 1024;
    eprintln!(
        "files {files} per folder {per_folder} {}: known {} settled {} in {} records; peak RSS {:.1} MiB \
         ({:.1} B per file over the start); {:.1} s",
        if keep { "all kept" } else { "settled out" },
        t.known(),
        t.settled().held(),
        t.settled().folders(),
        peak as f64 / 1024.0,
        grown as f64 / files as f64,
        started.elapsed().as_secs_f64()
    );
}

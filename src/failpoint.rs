//! Named crash points in the end steps (docs/design.md, "Crash points"). A test sets
//! `SOFTCOPY_FAILPOINTS="free.journaled=2*off->return;publish.marker=return"` and the process
//! kills itself (SIGKILL, as a power cut or `kill -9` would end it: no destructor runs, nothing is
//! flushed) the Nth time it passes the point. Unset, each point is one lookup in an empty table.
//! The points: `verify.start`, `verify.prune` (before each stale copy is removed),
//! `publish.flushed` (copies flushed, marker not yet copied), `publish.marker` (the marker copied,
//! not yet flushed), `free.journaled` (a batch journaled, not yet unlinked), `free.aside` (a file
//! set aside, not yet unlinked: `aside.rs`), `free.unlinked` (after each unlink), `free.folders`
//! (before empty folders are removed), `origin.recorded`, `kind.removed` (a copy of another kind
//! removed from a name, the new one not yet copied).

use std::sync::Once;

/// The environment variable that configures the points: `name=actions` separated by `;`, in
/// the `fail` crate's action syntax.
pub const ENV: &str = "SOFTCOPY_FAILPOINTS";

/// Reads [`ENV`] once per process.
pub fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(spec) = std::env::var(ENV) else { return };
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            if let Some((name, actions)) = item.split_once('=') {
                let _ = fail::cfg(name.trim(), actions.trim());
            }
        }
    });
}

/// Ends the process at once, as a power cut would: no destructor, no flush, no exit handler.
pub fn crash(point: &str) -> ! {
    let _ = point;
    crate::sys::die_now()
}

/// A crash point: kills the process here when the test configured `$name` to `return`.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoint::crash($name))
    };
}

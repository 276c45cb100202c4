//! The source side (docs/design.md, "Data flow"): filesystem events reduced to what the tracker
//! needs, with the scans events cannot replace (`watcher.rs`), the source root as a thing with an
//! identity (`root.rs`), when to rescan (`rescan.rs`), and the folders that appear in an
//! acquisitions folder for the service (`arrivals.rs`).
//!
//! May import only the base: `sys`, `vocab`, `error`.

pub mod arrivals;
#[cfg(target_os = "linux")]
mod inotify;
pub mod rescan;
pub mod root;
pub mod watcher;

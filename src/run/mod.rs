//! One target's run, top of the engine (docs/design.md, "Data flow" and "Shape"): the engine
//! that Python drives (`engine.rs`), its configuration (`config.rs`), the coordinator thread that
//! turns events and outcomes into jobs (`coordinator/`), the end of a run (`finish/`), the status
//! Python reads (`status.rs`), the destination's health while it cannot take files (`health.rs`),
//! and which acquisition a destination folder is the copy of (`origin.rs`).
//!
//! May import every other subsystem: `source`, `track`, `copy`, `end`, `dest`, `gentle`, and the
//! base (`sys`, `vocab`, `error`, `failpoint`). Nothing below imports `run`.

pub mod config;
pub(crate) mod coordinator;
pub mod engine;
pub(crate) mod finish;
pub(crate) mod health;
pub mod origin;
pub mod status;

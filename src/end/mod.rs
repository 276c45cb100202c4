//! The end of a copy, as proof and as freeing (docs/design.md, "The end of a run"): verification
//! against the source and the Zarr metadata (`verify.rs`, `shard.rs`), content hashes and the
//! manifest (`manifest.rs`), freeing the source (`mover.rs`, through the set-aside folder of
//! `aside.rs`), the journal of what was freed (`journal.rs`) and the line-safe names these
//! records hold (`names.rs`). The sequencing of the end steps is `run::finish`'s.
//!
//! May import `dest`, `track` (settled records, exclusions), `source` (the root's identity) and
//! the base; never `run` or `copy`.

pub mod aside;
pub mod journal;
pub mod manifest;
pub mod mover;
pub mod names;
pub mod shard;
pub mod verify;

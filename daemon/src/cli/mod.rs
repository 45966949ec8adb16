//! The command-line tools beside the daemon: `glimpse check`, `detect`/`embed`, `models`,
//! `bench`, `outbox`, `index` and `search`. They use the stages; no stage uses them. Unlike the daemon's stages
//! they may speak to the outside directly (`models fetch` downloads over HTTP, `bench` drives
//! GStreamer pipelines of its own).

pub mod bench;
pub mod check;
pub mod index;
pub mod inspect;
pub mod models;
pub mod outbox;
pub mod search;

//! Glimpse: an edge appliance that turns camera streams into searchable embeddings.
//!
//! Module map, in the order data flows (ARCHITECTURE.md has the invariants):
//! - [`config`]: reads the TOML file, gathers each stage's section, reports every problem with
//!   its line and column.
//! - [`source`]: GStreamer pipelines, one per camera, sampling RGB [`source::Frame`]s.
//! - [`schedule`]: one frame slot per camera, served to inference round-robin.
//! - [`track`]: per-camera motion gate and object tracker (what is worth detecting, embedding).
//! - [`detect`]: DETR in tract, with DetrImageProcessor's pre- and post-processing.
//! - [`embed`]: CLIP vision in tract, with CLIPImageProcessor's pre-processing; crops boxes.
//! - [`analyze`]: one frame → gate → detections → tracks → crops → embeddings → [`record::Record`]s.
//! - [`outbox`]: the durable sled buffer; nothing leaves it before the index acknowledged it.
//! - [`sync`]: the Pinecone data-plane client and the syncer that drains the outbox.
//! - [`status`]: MQTT availability, stats and camera status (or the log without a broker).
//! - [`supervisor`]: threads, channels, signals and the order of shutdown.
//! - [`check`]: `glimpse check`, every problem of a deployment in one report.
//!
//! Shared pieces: [`stats`] (counters and typed events), [`model`] (tract loading),
//! [`backoff`], [`redact`] (secrets out of logs), [`systemd_notify`].

pub mod analyze;
pub mod backoff;
pub mod bench;
pub mod check;
pub mod config;
pub mod control;
pub mod detect;
pub mod embed;
pub mod inspect;
pub mod model;
pub mod models;
pub mod outbox;
pub mod record;
pub mod redact;
pub mod schedule;
pub mod secrets;
pub mod source;
pub mod stats;
pub mod status;
pub mod supervisor;
pub mod sync;
pub mod systemd_notify;
pub mod track;

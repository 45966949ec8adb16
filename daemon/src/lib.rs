//! Glimpse: an edge appliance that turns camera streams into searchable embeddings.
//!
//! Module map, in the order data flows (ARCHITECTURE.md has the invariants):
//! - [`config`]: reads the TOML file, gathers each stage's section, reports every problem with
//!   its line and column.
//! - [`source`]: GStreamer pipelines, one thread per camera, sampling RGB [`source::Frame`]s.
//! - [`schedule`]: one frame slot per camera, served to inference round-robin.
//! - [`analyzer`]: the inference thread: gate → detect → track → crop → embed → [`record::Record`]s.
//!   - [`track`]: per-camera motion gate and object tracker (what is worth detecting, embedding).
//!   - [`detect`]: DETR in tract, with DetrImageProcessor's pre- and post-processing.
//!   - [`embed`]: CLIP vision in tract, with CLIPImageProcessor's pre-processing; crops boxes.
//! - [`keeper`]: what happens to an accepted record, in one order on one thread: crop stored →
//!   record durable → indexed → released.
//!   - [`crops`]: each record's crop as a JPEG, stored before the record is accepted.
//!   - [`outbox`]: the durable sled buffer; nothing leaves it before the index on the device
//!     has it and (with Pinecone) Pinecone acknowledged it.
//!   - [`index`]: the index on the device (int8 scan, exact re-rank).
//! - [`sync`]: the Pinecone data-plane client and the syncer that drains the outbox.
//! - [`status`]: MQTT availability, stats and camera status (or the log without a broker).
//! - [`http`]: the box's HTTP API (`[http]`): the stats and cameras, behind an access token.
//! - [`supervisor`]: starts the stages, carries out reloads and commands, stops in data order.
//! - [`cli`]: `glimpse check`, `detect`, `embed`, `models`, `bench`, `outbox` (no stage uses them).
//!
//! Shared pieces: [`stats`] (numbers, moved only by typed events), [`camera_state`] (each
//! camera's state), [`shutdown`] (one trigger for every stage), [`clock`] (monotonic time and
//! record-id keys), [`model`] (tract loading), [`backoff`], [`control`] (operator commands),
//! [`redact`] and [`secrets`] (secrets out of logs), [`tls`] (rustls with ring), [`systemd_notify`] (sd_notify, heartbeats),
//! [`validate`] (the leaf every section validates with: key paths, problems, sizes, ages).

pub mod analyzer;
pub mod backoff;
pub mod camera_state;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crops;
pub mod detect;
pub mod embed;
pub mod events;
pub mod history;
pub mod http;
pub mod index;
pub mod keeper;
pub mod labels;
pub mod model;
pub mod outbox;
pub mod record;
pub mod redact;
pub mod schedule;
pub mod secrets;
pub mod shutdown;
pub mod source;
pub mod stats;
pub mod status;
pub mod supervisor;
pub mod sync;
pub mod systemd_notify;
pub mod tls;
pub mod track;
pub mod triggers;
pub mod validate;

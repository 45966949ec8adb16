//! End-to-end tests: the real `glimpse` binary against a real mosquitto broker, a real
//! gst-rtsp-server and a strict Pinecone emulator, all on loopback. Each test reads as a
//! specification of one behaviour an operator relies on.

mod harness;

mod attention;
mod check;
mod clock;
mod detectors;
mod disk;
mod durability;
mod engines;
mod events;
mod fleet;
mod http;
mod ingest;
mod models;
mod numerics;
mod pages;
mod pipeline;
mod search;
mod service;

#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests of the real binary against a real
# mosquitto broker, a real gst-rtsp-server and the strict Pinecone emulator (all on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

echo "==> cargo test"
cargo test --workspace --locked

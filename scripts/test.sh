#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests of the real binary against a real
# mosquitto broker, a real gst-rtsp-server and the strict Pinecone emulator (all on loopback), on
# both inference engines (tract, and ONNX Runtime's library fetched from PyPI);
# then the Yocto layer checks. Clippy lints the aarch64 build, which is also the check that the
# daemon cross-compiles: one build for both (the code has no target-specific parts to lint apart).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> scripts/aarch64.sh clippy (warnings are errors; the workspace compiles for aarch64-unknown-linux-gnu)"
scripts/aarch64.sh clippy

# The onnxruntime engine's tests load ONNX Runtime's library from PyPI's wheel (checksummed).
echo "==> scripts/onnxruntime.sh (ONNX Runtime's library for the onnxruntime engine's tests)"
ORT_DYLIB_PATH="$(scripts/onnxruntime.sh)"
export ORT_DYLIB_PATH

# test-hooks: the fault injection the end-to-end tests use (release builds never have it).
echo "==> cargo test"
cargo test --workspace --locked --features glimpse/test-hooks

echo "==> yocto/check.sh (meta-glimpse: oelint-adv, bitbake parse, kas files, crate checksums)"
yocto/check.sh

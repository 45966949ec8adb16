#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests of the real binary against a real
# mosquitto broker, a real gst-rtsp-server and the strict Pinecone emulator (all on loopback), on
# both inference engines (tract, and ONNX Runtime's library fetched from PyPI);
# then the Yocto layer checks.
#
# One build serves the lints and the tests: clippy-driver compiles the workspace's own crates
# (linting them, warnings as errors, tests and benches included) while cargo builds the test
# binaries, instead of a separate clippy build of every dependency. The cross-compile check
# builds only what differs on aarch64: the daemon and its dependencies for that target (their
# build scripts and target-specific code); the code has no target-specific parts to lint apart.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
started=$SECONDS
stage() { echo "==> $* (at $((SECONDS - started)) s)"; }

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "scripts/aarch64.sh check (the daemon compiles for aarch64-unknown-linux-gnu)"
scripts/aarch64.sh check

# The onnxruntime engine's tests load ONNX Runtime's library from PyPI's wheel (checksummed).
stage "scripts/onnxruntime.sh (ONNX Runtime's library for the onnxruntime engine's tests)"
ORT_DYLIB_PATH="$(scripts/onnxruntime.sh)"
export ORT_DYLIB_PATH

# The same two variables for the build and the run, or cargo would build our crates again.
RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
# test-hooks: the fault injection the end-to-end tests use (release builds never have it).
stage "cargo test build, linted by clippy (warnings are errors)"
cargo test --workspace --locked --features glimpse/test-hooks --all-targets --no-run
stage "cargo test"
cargo test --workspace --locked --features glimpse/test-hooks

stage "yocto/check.sh (meta-glimpse: oelint-adv, bitbake parse, kas files, crate checksums)"
yocto/check.sh
stage "done"

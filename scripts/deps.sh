#!/usr/bin/env bash
# Installs what building and testing Glimpse needs on Debian 12: GStreamer (with the RTSP
# server library the tests use), libsystemd, mosquitto, and a Rust toolchain new enough for the
# GStreamer crates. Sourced by install.sh and test.sh; safe to run again.
set -euo pipefail

APT_PACKAGES=(
  pkg-config build-essential ca-certificates curl libsystemd-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp
  mosquitto mosquitto-clients openssl systemd chromium chromium-driver
)
MIN_RUST_MINOR=95   # rust-version in Cargo.toml

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${#missing[@]} Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "==> Debian packages already installed"
  fi
}

rust_is_recent() {
  command -v cargo >/dev/null 2>&1 || return 1
  local minor
  minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
  [ "${minor:-0}" -ge "$MIN_RUST_MINOR" ]
}

install_rust() {
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if rust_is_recent; then
    echo "==> $(rustc --version)"
    return
  fi
  # Debian 12's own rustc (1.63) is too old for the GStreamer crates; rustup is the supported way.
  echo "==> installing Rust 1.$MIN_RUST_MINOR+ with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    || { echo "error: could not install Rust. Install rustup (https://rustup.rs) and run this again." >&2; exit 1; }
  . "$HOME/.cargo/env"
  rust_is_recent || { echo "error: rustc 1.$MIN_RUST_MINOR or newer is needed, found $(rustc --version)" >&2; exit 1; }
}

# The test command checks formatting and lints: rustfmt and clippy come with rustup's default
# profile, not with the minimal one.
install_rust_tools() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "==> adding rustfmt and clippy"
    rustup component add rustfmt clippy
  fi
}

install_apt_packages
install_rust
install_rust_tools

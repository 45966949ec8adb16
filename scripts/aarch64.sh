#!/usr/bin/env bash
# Cross-builds Glimpse for aarch64-unknown-linux-gnu (Jetson, Raspberry Pi 4/5, Rockchip) on
# Debian 12 (x86_64).
#
#   scripts/aarch64.sh check   cargo check of the daemon for aarch64: what differs on that target,
#                              its dependencies' build scripts and target-specific code (about 5 min
#                              from scratch on 2 cores, the sysroot 1 more; CI runs this)
#   scripts/aarch64.sh clippy  cargo clippy -D warnings of the whole workspace, tests included, for
#                              aarch64 (by hand; CI lints the host build as it builds the tests)
#   scripts/aarch64.sh smoke   release build for aarch64 (about 8 min on 2 cores), then the
#                              e2e test that indexes bikes.mp4 with the small models runs the
#                              aarch64 binary under qemu-aarch64-static: every record must reach
#                              the Pinecone emulator (run by hand before flashing a release). It
#                              runs tract only: ONNX Runtime's CPU detection misbehaves under
#                              qemu-user, so its engine is tested on x86_64 and compiled here
#   scripts/aarch64.sh binary  release build for aarch64 with the test hooks, for
#                              scripts/boot-test.sh: target/aarch64-unknown-linux-gnu/release/glimpse
#
# Debian's arm64 -dev packages cannot be installed beside the amd64 ones (libgstreamer-plugins-
# base1.0-dev:arm64 conflicts with :amd64), so they are unpacked into a sysroot under
# target/aarch64-sysroot with `apt-get download` + `dpkg -x`; pkg-config and the linker look there.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-check}"
case "$mode" in check | clippy | smoke | binary) ;; *) echo "usage: $0 check|clippy|smoke|binary" >&2; exit 2 ;; esac

. scripts/deps.sh
TARGET=aarch64-unknown-linux-gnu
SYSROOT="$PWD/target/aarch64-sysroot"
# The libraries the daemon links (-dev for the .pc files and .so links) and what they pull in.
ARM64_DEV=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev libglib2.0-dev liborc-0.4-dev libsystemd-dev
  libffi-dev libpcre2-dev libselinux1-dev libsepol-dev libmount-dev libblkid-dev zlib1g-dev libdw-dev libelf-dev libunwind-dev
  liblzma-dev libzstd-dev)
ARM64_RUNTIME=(libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libgstrtspserver-1.0-0 libglib2.0-0 liborc-0.4-0 libsystemd0 libffi8 libpcre2-8-0
  libunwind8 libdw1 libelf1 zlib1g libmount1 libblkid1 libselinux1 liblzma5 libzstd1 libgcrypt20 libgpg-error0 liblz4-1
  libcap2 libbz2-1.0 libc6 libgcc-s1)
# Only for the smoke run: the plugins that decode the test clip, and every library they load.
arm64_closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
    --no-pre-depends "${@/%/:arm64}" 2>/dev/null | grep -E '^[a-z0-9].*:arm64$' | sed 's/:arm64$//' | sort -u
}

as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"

unpack_arm64() {
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    as_root dpkg --add-architecture arm64
    as_root apt-get update -qq
  fi
  local debs="$PWD/target/aarch64-debs"
  mkdir -p "$debs" "$SYSROOT"
  local p
  for p in "$@"; do
    if ! ls "$debs/${p}_"*_arm64.deb >/dev/null 2>&1; then
      (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$p:arm64") || { echo "error: cannot download $p:arm64" >&2; exit 1; }
    fi
    dpkg -x "$(ls "$debs/${p}_"*_arm64.deb | head -n1)" "$SYSROOT"
  done
}

echo "==> arm64 sysroot in $SYSROOT"
unpack_arm64 "${ARM64_DEV[@]}" "${ARM64_RUNTIME[@]}"
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# The arm64 libraries live in the sysroot, not where the cross linker looks by default.
lib="$SYSROOT/usr/lib/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-L$lib -C link-arg=-Wl,-rpath-link,$lib -C link-arg=-Wl,-rpath-link,$SYSROOT/lib/aarch64-linux-gnu"

if [ "$mode" = check ]; then
  echo "==> cargo check --target $TARGET"
  cargo check -p glimpse --target "$TARGET" --locked
  exit 0
fi

if [ "$mode" = clippy ]; then
  # test-hooks: the end-to-end tests' fault injection, so that their code is linted too.
  echo "==> cargo clippy --target $TARGET --workspace --all-targets (warnings are errors)"
  cargo clippy --workspace --all-targets --target "$TARGET" --locked --features glimpse/test-hooks -- -D warnings
  exit 0
fi

if [ "$mode" = binary ]; then
  echo "==> cargo build --release --target $TARGET --features test-hooks"
  cargo build -p glimpse --release --target "$TARGET" --locked --features test-hooks
  exit 0
fi

echo "==> cargo build --release --target $TARGET"
cargo build -p glimpse --release --target "$TARGET" --locked
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
mapfile -t plugins < <(arm64_closure gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav)
unpack_arm64 "${plugins[@]}"
# Debian puts these in place with update-alternatives, which `dpkg -x` does not run (libav needs them).
ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
echo "==> running the aarch64 binary under qemu-aarch64-static"
# The e2e harness runs whatever GLIMPSE_BIN names: a wrapper that execs qemu (so signals reach
# the daemon), with the arm64 libraries and GStreamer plugins taken from the sysroot.
wrapper="$PWD/target/aarch64-glimpse"
cat >"$wrapper" <<WRAPPER
#!/bin/sh
export GST_PLUGIN_SYSTEM_PATH_1_0="$SYSROOT/usr/lib/aarch64-linux-gnu/gstreamer-1.0"
export GST_PLUGIN_SCANNER_1_0="$SYSROOT/usr/lib/aarch64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"
export GST_REGISTRY_1_0="$PWD/target/aarch64-gst-registry.bin"
exec qemu-aarch64-static -L "$SYSROOT" "$PWD/target/$TARGET/release/glimpse" "\$@"
WRAPPER
chmod +x "$wrapper"
"$wrapper" --version
# The test harness itself is built for this machine: the arm64 pkg-config settings must not reach it.
unset PKG_CONFIG_ALLOW_CROSS PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
GLIMPSE_BIN="$wrapper" cargo test -p glimpse --test e2e --locked -- --exact \
  pipeline::a_file_is_indexed_completely_and_indexing_it_again_adds_no_duplicates

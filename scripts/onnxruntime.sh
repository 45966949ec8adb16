#!/usr/bin/env bash
# Fetches ONNX Runtime's C library for the optional onnxruntime engine from PyPI's onnxruntime
# wheel (manylinux_2_28: glibc 2.28 or newer; pinned by address and sha256) and unpacks only the
# library. Nothing is committed; the daemon loads it at run time (docs/inference.md).
#
#   scripts/onnxruntime.sh [x86_64|aarch64]   prints the library's path (default: this machine)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.31.1   # the ONNX Runtime API ort 2.0.0-rc.15 (daemon/Cargo.toml) is built for
PYPI=https://files.pythonhosted.org/packages
declare -A WHEEL_URL=(
  [x86_64]=$PYPI/b4/1d/0f85ee31a3d93f2243a5cc29252becf858f53ac5cfa6c9c15d9ffe107eea/onnxruntime-$VERSION-cp311-cp311-manylinux_2_28_x86_64.whl
  [aarch64]=$PYPI/02/ee/b173a49293b146b54bd057bf8681a015aef764d8f56d999ad8c6e53ab18d/onnxruntime-$VERSION-cp311-cp311-manylinux_2_28_aarch64.whl
)
declare -A WHEEL_SHA256=(
  [x86_64]=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
  [aarch64]=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
)
arch="${1:-$(uname -m)}"
[ -n "${WHEEL_SHA256[$arch]:-}" ] || { echo "error: no onnxruntime wheel is pinned for '$arch' (x86_64 or aarch64)" >&2; exit 2; }

dir="target/onnxruntime/$VERSION/$arch"
lib="$dir/libonnxruntime.so.$VERSION"
if [ -f "$lib" ]; then
  echo "$PWD/$lib"
  exit 0
fi
wheel="$(basename "${WHEEL_URL[$arch]}")"
mkdir -p "$dir"
if [ ! -f "$dir/$wheel" ]; then
  echo "==> downloading $wheel from PyPI" >&2
  curl -fsSL --retry 3 -o "$dir/$wheel.part" "${WHEEL_URL[$arch]}" && mv "$dir/$wheel.part" "$dir/$wheel" \
    || { echo "error: cannot download $wheel from PyPI (files.pythonhosted.org)" >&2; exit 1; }
fi
echo "${WHEEL_SHA256[$arch]}  $dir/$wheel" | sha256sum --check --quiet - >&2 \
  || { rm -f "$dir/$wheel"; echo "error: $wheel does not have the pinned sha256; removed, run again" >&2; exit 1; }
python3 - "$dir/$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"onnxruntime/capi/{out.rsplit('/', 1)[1]}") as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$lib.part" "$lib"
rm -f "$dir/$wheel"
echo "$PWD/$lib"

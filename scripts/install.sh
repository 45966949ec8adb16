#!/usr/bin/env bash
# Installs everything Glimpse needs on Debian 12, builds the release binary, and runs the
# daemon's main job on a sample clip: bikes.mp4 → NanoDet-m (a real COCO detector, trained
# weights) → CLIP → the index on the device. The CLIP weights are random: no real CLIP ships in
# any package registry, so searches rank nothing in particular (models/README.md exports real ones).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

echo "==> building glimpse (release; about 15 to 20 minutes on 2 cores the first time)"
cargo build --release --locked

work="$PWD/target/quickstart"
rm -rf "$work/data"
mkdir -p "$work"
cat > "$work/glimpse.toml" <<TOML
# Written by scripts/install.sh: one file camera, the real COCO detector NanoDet-m, the tiny
# random-weight CLIP (no real CLIP ships in any registry), no Pinecone, no MQTT.
[device]
id = "quickstart"
data_dir = "$work/data"

[[cameras]]
name = "bikes"
uri = "file://$PWD/tests/media/bikes.mp4"
sample_fps = 5

[detector]
model = "$PWD/models/coco/nanodet-m.onnx"       # family "nanodet", told by its outputs

[embedder]
model = "$PWD/models/tiny/clip-tiny-random.onnx"
text_model = "$PWD/models/tiny/clip-text-tiny-random.onnx"
tokenizer = "$PWD/models/tiny/clip-tokenizer.json"
TOML

echo "==> glimpse check"
target/release/glimpse check --config "$work/glimpse.toml"
echo "==> glimpse run (stops by itself at the end of the clip)"
target/release/glimpse run --config "$work/glimpse.toml" --exit-when-done
echo "==> glimpse search: the bicycles and people the real detector found (random CLIP weights: the order means nothing)"
target/release/glimpse search --config "$work/glimpse.toml" --text "a bicycle" --label bicycle --label person --top-k 20 --html "$work/results.html"
echo "==> done: records are in $work/data/outbox, crops in $work/data/crops, matches in $work/results.html; config in $work/glimpse.toml"

"""What models/manifest.toml says of each file, shared by export.py and quantize.py (which must
run without torch)."""
import hashlib
import sys


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


DETR_EXTRA = {
    "input": '"pixel_values float32 [batch, 3, height, width], any size (resized per the rule below)"',
    "labels": "\"coco-91\"",
    "resize": '"shortest_edge=800,longest_edge=1333,bilinear"',
    "mean": "[0.485, 0.456, 0.406]",
    "std": "[0.229, 0.224, 0.225]",
}
CLIP_EXTRA = {
    "input": '"pixel_values float32 [batch, 3, 224, 224]"',
    "resize": '"shortest_edge=224,bicubic,center_crop=224"',
    "mean": "[0.48145466, 0.4578275, 0.40821073]",
    "std": "[0.26862954, 0.26130258, 0.27577711]",
    "output_dim": 512,
}

# The tiny real-time DETRs' fixed input (RTDetrImageProcessor's `size`; 640 for the published
# checkpoints).
REALTIME_SIDE = 320
REALTIME_EXTRA = {
    "family": '"rt-detr"',
    "input": f'"pixel_values float32 [batch, 3, {REALTIME_SIDE}, {REALTIME_SIDE}]"',
    "labels": '"coco-80"',
    "resize": f'"height={REALTIME_SIDE},width={REALTIME_SIDE},bilinear"',
    "rescale": "0.00392156862745098",
}


def update_manifest(out, files):
    """Replaces (or adds) these files' entries in the manifest, keeping every other entry."""
    manifest = out.parent / "manifest.toml"
    text = manifest.read_text() if manifest.exists() else "# Written by models/export.py; `glimpse models verify` checks files against it.\n\n"
    blocks = text.split("[[model]]\n")
    names = {f'file = "{out.name}/{name}"' for name, *_ in files}
    kept = [blocks[0]] + [b for b in blocks[1:] if b.splitlines()[0] not in names]
    for name, kind, source, fmt, extra in files:
        lines = [f'file = "{out.name}/{name}"', f'kind = "{kind}"', f'source = "{source}"', f'format = "{fmt}"', f'sha256 = "{sha256(out / name)}"']
        lines += [f"{k} = {v}" for k, v in extra.items()]
        kept.append("\n".join(lines) + "\n\n")
    manifest.write_text("[[model]]\n".join(kept))
    print(f"updated {manifest}", file=sys.stderr)

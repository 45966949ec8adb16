"""What models/manifest.toml says of each file, shared by export.py and quantize.py (which must
run without torch)."""
import hashlib


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

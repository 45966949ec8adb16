#!/usr/bin/env python3
"""What a smaller DETR input costs in geometry: DETR-R50 at shortest_edge/longest_edge 320/533
(and 480/800) against 800/1333 on the same frames, query by query.

No trained DETR can be downloaded here, so the reference is the random-weight DETR-R50 itself
(the geometry reference the detectors issue names): each of its 100 queries gives a box and a
class at both sizes, and the script reports how far the smaller input moves them,

- the IoU of each query's box at the smaller size with its box at 800/1333 (median and 10th
  percentile over all queries and frames);
- the share of queries whose best class is the same;
- the largest change of a query's best-class probability.

A trained DETR's queries settle on objects, so its boxes move less with resolution than a random
one's; these figures bound the geometry's sensitivity, not a trained model's recall.

    python models/bench_detr_sizes.py --detr target/bench-detectors/detr-r50-random.onnx --frames target/bench-detectors/frames

Needs numpy, onnxruntime, pillow and transformers; prints one JSON line per size.
"""
import argparse
import json
import pathlib

import numpy as np


def outputs(session, processor, image):
    pixel_values = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
    logits, boxes = session.run(None, {"pixel_values": pixel_values})
    probabilities = np.exp(logits[0] - logits[0].max(-1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(-1, keepdims=True))[:, :-1]
    cx, cy, w, h = boxes[0].T
    corners = np.stack([(cx - w / 2) * image.width, (cy - h / 2) * image.height, (cx + w / 2) * image.width, (cy + h / 2) * image.height], 1)
    return probabilities, corners


def iou(a, b):
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detr", type=pathlib.Path, required=True)
    p.add_argument("--frames", type=pathlib.Path, required=True, help="a folder of PNG frames")
    p.add_argument("--sizes", nargs="+", default=["320/533", "480/800"], help="shortest/longest edges against 800/1333")
    args = p.parse_args()
    import onnxruntime as ort
    from PIL import Image
    from transformers import DetrImageProcessor

    session = ort.InferenceSession(str(args.detr), providers=["CPUExecutionProvider"])
    images = [Image.open(f).convert("RGB") for f in sorted(args.frames.glob("*.png"))]
    if not images:
        raise SystemExit(f"no PNG frames in {args.frames}")
    processor = lambda s, l: DetrImageProcessor(size={"shortest_edge": s, "longest_edge": l})  # noqa: E731
    reference = [outputs(session, processor(800, 1333), i) for i in images]
    for size in args.sizes:
        short, long = map(int, size.split("/"))
        ious, same, moved = [], [], 0.0
        for image, (ref_p, ref_b) in zip(images, reference):
            prob, box = outputs(session, processor(short, long), image)
            ious.append(iou(box, ref_b))
            same.append(prob.argmax(1) == ref_p.argmax(1))
            moved = max(moved, float(np.abs(prob.max(1) - ref_p.max(1)).max()))
        ious, same = np.concatenate(ious), np.concatenate(same)
        print(json.dumps({
            "size": size, "against": "800/1333", "frames": len(images), "queries": int(len(ious)),
            "box_iou_median": round(float(np.median(ious)), 3), "box_iou_p10": round(float(np.percentile(ious, 10)), 3),
            "same_best_class": round(float(same.mean()), 3), "largest_best_probability_change": round(moved, 4),
        }), flush=True)


if __name__ == "__main__":
    main()

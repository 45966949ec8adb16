#!/usr/bin/env python3
"""tract (through `glimpse bench models`) against onnxruntime on the same ONNX files and inputs,
in the same run: DETR-R50 at 640x640 and CLIP-B/32 on batches of 1 and 8, one thread.

Without --detr/--clip, full-size models of the real architectures with random weights are
exported first (same compute as the real ones; hub checkpoints cannot be downloaded here):

    python models/bench.py --glimpse target/release/glimpse --work target/bench-models
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import export  # noqa: E402


def full_size_models(work):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, DetrConfig, DetrForObjectDetection, ResNetConfig

    work.mkdir(parents=True, exist_ok=True)
    detr, clip = work / "detr-r50-random.onnx", work / "clip-b32-random.onnx"
    torch.manual_seed(0)
    if not detr.exists():
        config = DetrConfig(use_timm_backbone=False, backbone_config=ResNetConfig(out_features=["stage4"]), use_pretrained_backbone=False,
                            id2label=dict(enumerate(export.COCO_LABELS)))
        export.export_detr(DetrForObjectDetection(config), detr)
    if not clip.exists():
        config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                  image_size=224, patch_size=32, projection_dim=512)
        export.export_clip(CLIPVisionModelWithProjection(config), clip)
    return detr, clip


def ort_ms(path, shape, threads, runs):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.full(shape, 0.5, dtype=np.float32)
    session.run(None, {"pixel_values": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"pixel_values": x})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glimpse", default="target/release/glimpse")
    p.add_argument("--work", type=pathlib.Path, default=pathlib.Path("target/bench-models"))
    p.add_argument("--detr", type=pathlib.Path)
    p.add_argument("--clip", type=pathlib.Path)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    detr, clip = (args.detr, args.clip) if args.detr and args.clip else full_size_models(args.work)
    out = subprocess.run([args.glimpse, "bench", "models", "--detector", str(detr), "--embedder", str(clip), "--runs", str(args.runs)],
                         check=True, capture_output=True, text=True).stdout
    tract = json.loads(out.strip().splitlines()[-1])
    rows = [("DETR-R50 640x640", "detr_640_ms", detr, (1, 3, 640, 640)),
            ("CLIP-B/32 batch 1", "clip_b1_ms", clip, (1, 3, 224, 224)),
            ("CLIP-B/32 batch 8", "clip_b8_ms", clip, (8, 3, 224, 224))]
    print("| model | tract 1 thread (ms) | onnxruntime 1 thread (ms) | onnxruntime 2 threads (ms) | tract / ort 1 thread |")
    print("|---|---|---|---|---|")
    for name, key, path, shape in rows:
        ort1 = ort_ms(path, shape, 1, args.runs)
        ort2 = ort_ms(path, shape, 2, args.runs)
        print(f"| {name} | {tract[key]:.0f} | {ort1:.0f} | {ort2:.0f} | {tract[key] / ort1:.2f} |")


if __name__ == "__main__":
    main()

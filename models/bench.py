#!/usr/bin/env python3
"""tract (through `glimpse bench models`) against onnxruntime on the same ONNX files and inputs,
in the same run: DETR-R50 at 640x640 and CLIP-B/32 on batches of 1 and 8, with 1 and 2 threads,
fp32 and int8 (the MatMulInteger files models/quantize.py makes for tract, and onnxruntime's own
best int8 format, QDQ, as the bar).

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


def quantized(fp32, kind):
    """The int8 file Glimpse runs (static MatMulInteger/ConvInteger, weights only) and onnxruntime's own best
    int8 format (QDQ, every operator), both calibrated on the committed photos."""
    import quantize

    ours, qdq = fp32.with_name(fp32.stem + "-int8.onnx"), fp32.with_name(fp32.stem + "-int8-qdq.onnx")
    if not (ours.exists() and qdq.exists()):
        images = quantize.photos(pathlib.Path("tests/media/photos"))
        calibration = [quantize.clip_input(i) if kind == "clip" else quantize.detr_input(i, quantize.DETR_CALIBRATION_SIZE) for i in images]
        quantize.quantize_for_tract(fp32, ours, calibration)
        quantize.quantize_for_onnxruntime(fp32, qdq, calibration)
    return ours, qdq


def tract_ms(glimpse, detr, clip, runs, threads):
    out = subprocess.run([glimpse, "bench", "models", "--detector", str(detr), "--embedder", str(clip), "--runs", str(runs),
                          "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glimpse", default="target/release/glimpse")
    p.add_argument("--work", type=pathlib.Path, default=pathlib.Path("target/bench-models"))
    p.add_argument("--detr", type=pathlib.Path)
    p.add_argument("--clip", type=pathlib.Path)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    detr, clip = (args.detr, args.clip) if args.detr and args.clip else full_size_models(args.work)
    (detr8, detr_qdq), (clip8, clip_qdq) = quantized(detr, "detr"), quantized(clip, "clip")
    tract = {(fmt, t): tract_ms(args.glimpse, d, c, args.runs, t) for fmt, d, c in [("fp32", detr, clip), ("int8", detr8, clip8)] for t in (1, 2)}
    rows = [("DETR-R50 640x640", "detr_640_ms", (detr, detr8, detr_qdq), (1, 3, 640, 640)),
            ("CLIP-B/32 batch 1", "clip_b1_ms", (clip, clip8, clip_qdq), (1, 3, 224, 224)),
            ("CLIP-B/32 batch 8", "clip_b8_ms", (clip, clip8, clip_qdq), (8, 3, 224, 224))]
    print("Milliseconds, median of", args.runs, "runs; threads 1 / 2.")
    print()
    print("| model | tract fp32 | ort fp32 | tract int8 (MatMulInteger) | ort int8 (same file) | ort int8 QDQ (its best) | tract int8 / ort best int8, 1 thread |")
    print("|---|---|---|---|---|---|---|")
    for name, key, (fp32, ours, qdq), shape in rows:
        ort = {(path, t): ort_ms(path, shape, t, args.runs) for path in (fp32, ours, qdq) for t in (1, 2)}
        best = min(ort[(ours, 1)], ort[(qdq, 1)])
        pair = lambda a, b: f"{a:.0f} / {b:.0f}"  # noqa: E731
        print(f"| {name} | {pair(tract[('fp32', 1)][key], tract[('fp32', 2)][key])} | {pair(ort[(fp32, 1)], ort[(fp32, 2)])} "
              f"| {pair(tract[('int8', 1)][key], tract[('int8', 2)][key])} | {pair(ort[(ours, 1)], ort[(ours, 2)])} "
              f"| {pair(ort[(qdq, 1)], ort[(qdq, 2)])} | {tract[('int8', 1)][key] / best:.2f} |")
    print()
    print("tract CLIP-B/32 plans (Glimpse uses the batch-1 plan and embeds a frame's crops one call each):")
    print()
    print("| file | batch 1 | 8 crops, 8 calls (Glimpse) | 8 crops, batch-8 plan | batch 1, symbolic-batch plan | 8 crops, symbolic-batch plan |")
    print("|---|---|---|---|---|---|")
    for fmt in ("fp32", "int8"):
        cells = [f"{tract[(fmt, 1)][k]:.0f} / {tract[(fmt, 2)][k]:.0f}" for k in
                 ("clip_b1_ms", "clip_b8_ms", "clip_b8_batch8_plan_ms", "clip_b1_any_batch_plan_ms", "clip_b8_any_batch_plan_ms")]
        print(f"| {fmt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

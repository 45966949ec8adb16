#!/usr/bin/env python3
"""Glimpse's onnxruntime engine against Python's onnxruntime on the same ONNX files, threads and
inputs, in the same run (and tract beside them): is there overhead of ours on top of the library?

    scripts/onnxruntime.sh && pip install onnxruntime==1.31.1
    python models/bench_engines.py --glimpse target/release/glimpse \\
        --detr models/tiny/detr-tiny-random.onnx --clip models/tiny/clip-tiny-random.onnx

Both sides load the same libonnxruntime (the wheel's), with the session options Glimpse uses:
all graph optimisations, `--threads` intra-op threads, one inter-op thread, no spinning. Inputs
are constant 0.5 pixels, DETR at 640x640 and CLIP on one crop, as `glimpse bench engine` does.
Prints a Markdown table: medians of `--runs` runs, and Glimpse / Python for each row.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort

SHAPES = {"detr_640_ms": (1, 3, 640, 640), "clip_b1_ms": (1, 3, 224, 224)}


def python_ms(path, shape, threads, runs):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.full(shape, 0.5, np.float32)
    session.run(None, {name: x})  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def glimpse_ms(glimpse, engine, detr, clip, threads, runs, library):
    command = [glimpse, "bench", "engine", "--engine", engine, "--detector", str(detr), "--embedder", str(clip),
               "--threads", str(threads), "--runs", str(runs)]
    if engine == "onnxruntime":
        command += ["--onnxruntime-library", library]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glimpse", default="target/release/glimpse")
    p.add_argument("--detr", type=pathlib.Path, required=True)
    p.add_argument("--clip", type=pathlib.Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--library", help="libonnxruntime for Glimpse (default: the one inside the onnxruntime Python package)")
    args = p.parse_args()
    library = args.library or str(next((pathlib.Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.*")))
    ours = glimpse_ms(args.glimpse, "onnxruntime", args.detr, args.clip, args.threads, args.runs, library)
    tract = glimpse_ms(args.glimpse, "tract", args.detr, args.clip, args.threads, args.runs, library)
    files = {"detr_640_ms": args.detr, "clip_b1_ms": args.clip}
    print(f"onnxruntime {ort.__version__} ({library}), {args.threads} thread(s), median of {args.runs} runs, ms")
    print()
    print("| model | Python onnxruntime | Glimpse onnxruntime | Glimpse / Python | Glimpse tract |")
    print("|---|---|---|---|---|")
    for key, shape in SHAPES.items():
        theirs = python_ms(files[key], shape, args.threads, args.runs)
        print(f"| {files[key].name} {'x'.join(map(str, shape[2:]))} | {theirs:.2f} | {ours[key]:.2f} | {ours[key] / theirs:.2f} | {tract[key]:.2f} |")


if __name__ == "__main__":
    main()

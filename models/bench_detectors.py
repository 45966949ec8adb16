"""Cameras per core by detector family and engine: `glimpse bench frames` on bikes.mp4's frames at
1 fps (the real number of objects per frame), one thread, with the peak RSS of each run.

    python models/bench_detectors.py --glimpse target/release/glimpse --work target/bench-detectors

Needs gst-launch-1.0 (the frames), full-size random DETR-R50 and CLIP-B/32 in --work (made by
models/bench.py's full_size_models when missing; torch and transformers then), optionally a
random RT-DETR-R18 there (models/export.py --realtime-full --out WORK), and
ORT_DYLIB_PATH for the onnxruntime rows (scripts/onnxruntime.sh prints it). Prints a markdown
table whose ratios are against DETR-R50 at 800/1333 on tract, measured in the same run.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def frames(work):
    """bikes.mp4 at 1 fps as PNG files (GStreamer's own decoder and videorate)."""
    out = work / "frames"
    if not any(out.glob("*.png")):
        out.mkdir(parents=True, exist_ok=True)
        pipeline = f"filesrc location={REPO}/tests/media/bikes.mp4 ! decodebin ! videorate ! video/x-raw,framerate=1/1 ! videoconvert ! pngenc ! multifilesink location={out}/f%02d.png"
        subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True)
    return sorted(out.glob("*.png"))


def run_with_rss(args):
    """Runs `args`, returns (stdout, peak RSS in MB) of that process alone."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        sys.exit(f"{args[0]} {' '.join(args[1:4])} failed: {stderr.decode()}")
    return stdout.decode(), usage.ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glimpse", required=True)
    p.add_argument("--work", type=pathlib.Path, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--embedder", type=pathlib.Path, help="default: --work/clip-b32-random.onnx")
    p.add_argument("--int8", action="store_true", help="the embedder's int8 forms beside it (models/quantize.py): -int8.onnx on tract, -int8-qdq.onnx on onnxruntime")
    args = p.parse_args()
    work = args.work
    detr, clip = work / "detr-r50-random.onnx", args.embedder or work / "clip-b32-random.onnx"
    if not detr.exists() or not clip.exists():
        sys.path.insert(0, str(REPO / "models"))
        import bench as full_size

        detr, clip = full_size.full_size_models(work)
    pictures = frames(work)
    nanodet, ssd = REPO / "models/coco/nanodet-m.onnx", REPO / "models/coco/ssd-mobilenet-v2.onnx"
    rows = [
        ("DETR-R50, 800/1333", detr, ()),
        ("DETR-R50, 320/533", detr, ("--shortest-edge", "320", "--longest-edge", "533")),
        ("NanoDet-m, 416×416", nanodet, ()),
        ("SSD-MobileNet-v2 uint8, 300×300", ssd, ()),
    ]
    # A full-size random RT-DETR, when made (models/export.py --realtime-full --out WORK).
    if (work / "rtdetr-r18-random.onnx").exists():
        rows.append(("RT-DETR-R18 (random), 640×640", work / "rtdetr-r18-random.onnx", ()))
    engines = ["tract"] + (["onnxruntime"] if os.environ.get("ORT_DYLIB_PATH") else [])
    results = []
    for engine in engines:
        for name, detector, extra in rows:
            embedder = clip.with_name(clip.stem + ("-int8.onnx" if engine == "tract" else "-int8-qdq.onnx")) if args.int8 else clip
            command = [args.glimpse, "bench", "frames", "--detector", str(detector), "--embedder", str(embedder), "--engine", engine, "--runs", str(args.runs), *extra]
            stdout, rss = run_with_rss(command + [str(p) for p in pictures])
            report = json.loads(stdout.strip().splitlines()[-1])
            results.append((name, engine, report, rss))
            print(f"{name} on {engine}: {json.dumps(report)}, peak RSS {rss:.0f} MB", file=sys.stderr)
    reference = results[0][2]["frame_ms"]
    forms = " (int8: -int8.onnx on tract, -int8-qdq.onnx on onnxruntime)" if args.int8 else ""
    print(f"{len(pictures)} frames of bikes.mp4 at 1 fps, one thread, embedder {clip.name}{forms}\n")
    print("| detector | engine | objects per frame | per frame (ms) | cameras at 1 fps per core | against DETR-R50 800/1333 on tract | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, engine, report, rss in results:
        ms = report["frame_ms"]
        print(f"| {name} | {engine} | {report['objects_per_frame']:.1f} | {ms:.0f} | {1000 / ms:.2f} | {reference / ms:.1f}× | {rss:.0f} |")


if __name__ == "__main__":
    main()

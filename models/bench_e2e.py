#!/usr/bin/env python3
"""End-to-end: Glimpse against the cloud pipeline's method, on the same clip, models and index,
in the same run.

The reference does what the cloud pipeline did, in one Python process with onnxruntime: extract
every sampled frame (GStreamer, as its frame extractor did with ffmpeg) -> DETR on every frame
-> every crop -> CLIP -> upsert in batches of 100. Both sides upsert to the Pinecone emulator
(tests/pinecone-emulator) on loopback; wall time, CPU seconds and peak RSS come from
/usr/bin/time around each side.

    cargo build --release -p glimpse -p pinecone-emulator
    python models/bench_e2e.py --detr models/tiny/detr-tiny-fixture.onnx --clip target/bench-models/clip-b32-random.onnx

Two scenes: tests/media/bikes.mp4 (real, moving; Glimpse with dedupe and the gate off, so both
sides index the same records) and a still scene of the same length (Glimpse with the gate and
dedupe on, as deployed).
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np

API_KEY = "bench-key"
BATCH = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Api-Key": API_KEY, "X-Pinecone-Api-Version": "2025-10", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def vector_count(url, namespace):
    stats = post(f"{url}/describe_index_stats", {})
    return stats.get("namespaces", {}).get(namespace, {}).get("vectorCount", 0)


def timed(command, env=None):
    """Runs `command` under /usr/bin/time: (wall s, CPU s, peak RSS MB)."""
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%e %U %S %M", *command], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, user, system, rss_kb = report.read().split()
    return float(wall), float(user) + float(system), int(rss_kb) / 1024


# --- the reference pipeline (run as a child process of this script) ----------------------------

def frame_size(clip):
    out = subprocess.run(["gst-launch-1.0", "-v", "filesrc", f"location={clip}", "!", "decodebin", "!", "videoconvert", "!",
                          "video/x-raw,format=RGB", "!", "fakesink", "num-buffers=1"], capture_output=True, text=True).stdout
    caps = next(line for line in out.splitlines() if "fakesink" in line and "width=" in line)
    grab = lambda key: int(caps.split(f"{key}=(int)")[1].split(",")[0])  # noqa: E731
    return grab("width"), grab("height")


def frames(clip, fps):
    """The frame extractor: every sampled frame as an RGB array."""
    width, height = frame_size(clip)
    gst = subprocess.Popen(["gst-launch-1.0", "-q", "filesrc", f"location={clip}", "!", "decodebin", "!", "videorate", "!",
                            f"video/x-raw,framerate={fps}/1", "!", "videoconvert", "!", "video/x-raw,format=RGB", "!", "fdsink", "fd=1"],
                           stdout=subprocess.PIPE)
    size = width * height * 3
    while (data := gst.stdout.read(size)) and len(data) == size:
        yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
    gst.wait()


def reference(args):
    import onnxruntime as ort
    from PIL import Image
    from transformers import CLIPImageProcessor, DetrImageProcessor
    from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    detr, clip = (ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]) for path in (args.detr, args.clip))
    detr_processor = DetrImageProcessor(size={"shortest_edge": args.shortest_edge, "longest_edge": args.longest_edge})
    clip_processor = CLIPImageProcessor()
    pending = []
    for n, frame in enumerate(frames(args.reference_clip, args.fps)):
        image = Image.fromarray(frame)
        logits, boxes = detr.run(None, {"pixel_values": detr_processor(images=image, return_tensors="np")["pixel_values"]})
        found = detr_processor.post_process_object_detection(
            DetrObjectDetectionOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes)),
            threshold=args.threshold, target_sizes=[(image.height, image.width)])[0]
        for i, box in enumerate(found["boxes"].tolist()):
            x0, y0, x1, y1 = [int(round(v)) for v in box]
            crop = image.crop((max(x0, 0), max(y0, 0), min(x1, image.width), min(y1, image.height)))
            embedding = clip.run(None, {"pixel_values": clip_processor(images=crop, return_tensors="np")["pixel_values"]})[0][0]
            pending.append({"id": f"ref:{n}:{i}", "values": (embedding / np.linalg.norm(embedding)).tolist(), "metadata": {"frame": n}})
            if len(pending) == BATCH:
                post(f"{args.reference_url}/vectors/upsert", {"vectors": pending, "namespace": args.reference_namespace})
                pending = []
    if pending:
        post(f"{args.reference_url}/vectors/upsert", {"vectors": pending, "namespace": args.reference_namespace})


# --- the comparison -----------------------------------------------------------------------------

def inference_section(args):
    if args.engine == "tract":
        return ""
    return f'\n[inference]\nengine = "onnxruntime"\nonnxruntime_library = "{pathlib.Path(args.onnxruntime_library).resolve()}"\n'


def glimpse_config(work, name, clip, args, url, analysis):
    path = work / f"{name}.toml"
    path.write_text(f"""[device]
id = "bench"
data_dir = "{work / name}"
inference_threads = {args.threads}
{inference_section(args)}
[[cameras]]
name = "{name}"
uri = "file://{clip.resolve()}"
sample_fps = {args.fps}

[detector]
model = "{pathlib.Path(args.detr).resolve()}"
threshold = {args.threshold}
shortest_edge = {args.shortest_edge}
longest_edge = {args.longest_edge}

[embedder]
model = "{pathlib.Path(args.clip).resolve()}"

[pinecone]
host = "{url}"
namespace = "glimpse-{name}"
batch_size = 100

[analysis]
{analysis}
""")
    return path


def still_clip(work, seconds):
    path = work / "still.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={seconds * 25}", "pattern=smpte100", "!",
                    "video/x-raw,width=640,height=272,framerate=25/1", "!", "x264enc", "key-int-max=25", "speed-preset=ultrafast", "!",
                    "h264parse", "!", "mp4mux", "!", "filesink", f"location={path}"], check=True)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detr", required=True)
    p.add_argument("--clip", required=True)
    p.add_argument("--reference-embedder", help="the reference's CLIP file (default: --clip), e.g. the fp32 source of Glimpse's int8 file")
    p.add_argument("--reference-detector", help="the reference's DETR file (default: --detr)")
    p.add_argument("--threshold", type=float, default=0.9, help="detection threshold on both sides")
    p.add_argument("--shortest-edge", type=int, default=800, help="DETR resize rule on both sides (DetrImageProcessor's default)")
    p.add_argument("--longest-edge", type=int, default=1333)
    p.add_argument("--scenes", default="real,still", help="which scenes to run: real, still or both")
    p.add_argument("--still-seconds", type=int, default=10, help="length of the still scene")
    p.add_argument("--glimpse-only", action="store_true", help="run only Glimpse (e.g. for its peak RSS with full-size models)")
    p.add_argument("--glimpse", default="target/release/glimpse")
    p.add_argument("--emulator", default="target/release/pinecone-emulator")
    p.add_argument("--video", type=pathlib.Path, default=pathlib.Path("tests/media/bikes.mp4"))
    p.add_argument("--fps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="inference threads on both sides")
    p.add_argument("--engine", default="tract", choices=["tract", "onnxruntime"], help="Glimpse's inference engine")
    p.add_argument("--onnxruntime-library", help="with --engine onnxruntime: libonnxruntime (scripts/onnxruntime.sh prints its path)")
    p.add_argument("--reference-clip", help=argparse.SUPPRESS)
    p.add_argument("--reference-url", help=argparse.SUPPRESS)
    p.add_argument("--reference-namespace", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference_clip:
        return reference(args)
    if args.engine == "onnxruntime" and not args.onnxruntime_library:
        p.error("--engine onnxruntime needs --onnxruntime-library")

    port = free_port()
    emulator = subprocess.Popen([args.emulator, str(port), API_KEY, "512"], stdout=subprocess.PIPE, text=True)
    url = emulator.stdout.readline().strip()
    env = {**os.environ, "PINECONE_API_KEY": API_KEY, "OMP_NUM_THREADS": str(args.threads), "GLIMPSE_LOG": "warn"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        wanted = set(args.scenes.split(","))
        scenes = [("real clip, dedupe and gate off", "real", lambda: args.video, "motion_gate = false\ndedupe = false"),
                  (f"still scene ({args.still_seconds} s), gate and dedupe on", "still", lambda: still_clip(work, args.still_seconds), "")]
        for label, name, make_clip, analysis in (scene for scene in scenes if scene[1] in wanted):
            clip = make_clip()
            config = glimpse_config(work, name, clip, args, url, analysis)
            g = timed([args.glimpse, "run", "--config", str(config), "--exit-when-done"], env)
            r = (float("nan"),) * 3 if args.glimpse_only else timed(
                [sys.executable, __file__, "--detr", args.reference_detector or args.detr, "--clip", args.reference_embedder or args.clip,
                 "--fps", str(args.fps), "--threads", str(args.threads), "--threshold", str(args.threshold),
                 "--shortest-edge", str(args.shortest_edge), "--longest-edge", str(args.longest_edge),
                 "--reference-clip", str(clip), "--reference-url", url, "--reference-namespace", f"ref-{name}"], env)
            counts = (vector_count(url, f"glimpse-{name}"), vector_count(url, f"ref-{name}"))
            rows.append((label, g, r, counts))
    emulator.terminate()
    print(f"Glimpse on {args.engine}. Clips sampled at {args.fps} fps; {args.threads} inference thread(s); detector {args.detr}; embedder {args.clip} "
          f"(reference: {args.reference_detector or args.detr}, {args.reference_embedder or args.clip}); threshold {args.threshold}; DETR resize {args.shortest_edge}/{args.longest_edge}.\n")
    print("| scene | wall s Glimpse / reference | CPU s Glimpse / reference | peak RSS MB Glimpse / reference | records Glimpse / reference | wall ratio | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, g, r, (gc, rc) in rows:
        print(f"| {label} | {g[0]:.1f} / {r[0]:.1f} | {g[1]:.1f} / {r[1]:.1f} | {g[2]:.0f} / {r[2]:.0f} | {gc} / {rc} | {r[0] / g[0]:.2f} | {r[1] / g[1]:.2f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The box's HTTP API under load, with full-size CLIP-B/32 towers (random weights; no real CLIP
can be downloaded here), all measured in one run of the release daemon:

- search latency through HTTP, p50 and p95, by words, by example (`like=`) and by picture, over
  N records in the index on the device (`glimpse bench search` makes them);
- the daemon's RSS before the first search (the server idle, no tower loaded) and after the
  searches (the API's text and image towers loaded);
- the inference frame time with no searches and with 5 searches a second: inference is kept
  busy (a live test pattern sampled faster than it can be analysed, gate and dedupe off), so the
  frame time is the phase's length over the frames analysed in it. Quiet and busy phases
  alternate in pairs, in ABBA order (quiet-busy, busy-quiet, ...), so that the machine's drift
  falls on both sides; the ratio reported is the median of the pairs' ratios, with their spread.

    cargo build --release -p glimpse
    python models/bench_http.py --glimpse target/release/glimpse --work target/bench-http --records 10000 100000

Needs torch and transformers (to export the towers once) and prints one JSON line per size.
"""
import argparse
import io
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import export  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def towers(work):
    """Full-size CLIP-B/32 vision (with projection) and text towers, random weights."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

    work.mkdir(parents=True, exist_ok=True)
    vision, text = work / "clip-b32-random.onnx", work / "clip-text-b32-random.onnx"
    torch.manual_seed(0)
    if not vision.exists():
        config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                  image_size=224, patch_size=32, projection_dim=512)
        export.export_clip(CLIPVisionModelWithProjection(config), vision)
    if not text.exists():
        config = CLIPTextConfig(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                                max_position_embeddings=export.CONTEXT, projection_dim=512, bos_token_id=49406,
                                eos_token_id=export.END_OF_TEXT, pad_token_id=export.END_OF_TEXT)
        export.export_text(CLIPTextModelWithProjection(config).eval(), text)
    return vision, text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, path, body=None, kind=None):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if kind:
        headers["Content-Type"] = kind
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def rss_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def config(work, records, vision, text, port):
    data = work / f"index-{records}"
    token = work / "token"
    token.write_text(TOKEN)
    path = work / f"bench-{records}.toml"
    path.write_text(f"""[device]
id = "bench"
data_dir = "{data}"
inference_threads = 1

[[cameras]]
name = "gate"
uri = "test:"
sample_fps = 10

[detector]
model = "{ROOT / 'models/tiny/detr-tiny-fixture.onnx'}"
threshold = 0.9

[embedder]
model = "{vision}"
text_model = "{text}"
tokenizer = "{ROOT / 'models/tiny/clip-tokenizer.json'}"

[search]
retain_days = 36500
max_bytes = "4 GiB"

[analysis]
motion_gate = false
dedupe = false

[http]
listen = "127.0.0.1:{port}"
token_file = "{token}"
""")
    return path, data


def frames(port):
    return call(port, "/api/stats")["cameras"]["gate"]["frames_processed"]


def next_frame(port, after=None, timeout=120):
    """Waits for a frame to end and returns (frames so far, when): the phases run from frame end
    to frame end, so that a phase's length holds whole frames (a frame is ~4 % of 20 s)."""
    count = frames(port) if after is None else after
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now, seen = time.monotonic(), frames(port)
        if seen > count:
            return seen, now
        time.sleep(0.02)
    raise SystemExit(f"no frame analysed in {timeout} s: is the daemon's camera running?")


def frame_time_ms(port, seconds, load=None):
    """Mean inference time per frame over about `seconds` (inference is always busy), with `load`
    running."""
    stop = threading.Event()
    worker = threading.Thread(target=load, args=(stop,)) if load else None
    if worker:
        worker.start()
        time.sleep(1)  # the load in its stride before the phase starts
    before, started = next_frame(port)
    time.sleep(max(0.0, seconds - 2))
    after, ended = next_frame(port, frames(port))
    stop.set()
    if worker:
        worker.join()
    return (ended - started) * 1000 / (after - before)


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def percentile(values, share):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(share * (len(values) - 1))))]


def latencies(port, path, runs, body=None, kind=None):
    call(port, path, body, kind)  # loads the tower, warms the caches
    times = []
    for _ in range(runs):
        started = time.monotonic()
        call(port, path, body, kind)
        times.append((time.monotonic() - started) * 1000)
    return {"p50_ms": round(percentile(times, 0.5), 1), "p95_ms": round(percentile(times, 0.95), 1)}


def photo():
    from PIL import Image
    out = io.BytesIO()
    Image.open(ROOT / "tests/media/photos" / sorted(os.listdir(ROOT / "tests/media/photos"))[0]).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def measure(args, vision, text, records):
    subprocess.run([args.glimpse, "bench", "search", "--records", str(records), "--queries", "1", "--dir",
                    str(args.work / f"index-{records}")], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    path, _ = config(args.work, records, vision, text, port)
    env = {**os.environ, "GLIMPSE_LOG": "warn"}
    daemon = subprocess.Popen([args.glimpse, "run", "--config", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if frames(port) >= 3:
                    break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(1)
        idle_rss = rss_mb(daemon.pid)
        words = [f"a {c} {t}" for c in ("red", "blue", "white", "dark") for t in ("car", "van", "person", "bicycle", "dog")]
        middle = records // 2  # a record `glimpse bench search` made: cameras in turn
        like = f"bench:{('gate', 'yard', 'street', 'door')[middle % 4]}:{middle}:0"
        result = {
            "records": records,
            "text": latencies(port, "/api/search?" + urllib.parse.urlencode({"text": words[0], "top_k": 20}), args.runs),
            "like": latencies(port, f"/api/search?like={like}&top_k=20", args.runs),
            "picture": latencies(port, "/api/search?top_k=20", args.runs, photo(), "image/jpeg"),
        }
        loaded_rss = rss_mb(daemon.pid)

        def five_a_second(stop):
            rng = random.Random(1)
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                n += 1  # words never searched before: each search runs the text tower
                call(port, "/api/search?" + urllib.parse.urlencode({"text": f"{rng.choice(words)} {n}", "top_k": 20}))
                stop.wait(max(0.0, 0.2 - (time.monotonic() - started)))

        quiet, busy = [], []
        for pair in range(args.pairs):
            phases = [(quiet, None), (busy, five_a_second)]
            for times, load in phases if pair % 2 == 0 else reversed(phases):
                times.append(frame_time_ms(port, args.seconds, load))
        ratios = sorted(b / q for q, b in zip(quiet, busy))
        result.update({
            "rss_mb_idle_server": round(idle_rss), "rss_mb_after_searches": round(loaded_rss),
            "frame_ms_quiet": round(median(quiet), 1), "frame_ms_5_searches_a_second": round(median(busy), 1),
            "frame_time_ratio": round(median(ratios), 3),
            "frame_time_ratios": [round(r, 3) for r in ratios],
        })
        print(json.dumps(result), flush=True)
    finally:
        daemon.terminate()
        daemon.wait(60)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glimpse", default="target/release/glimpse")
    p.add_argument("--work", type=pathlib.Path, default=pathlib.Path("target/bench-http"))
    p.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--runs", type=int, default=20, help="searches of each kind, after one warm-up")
    p.add_argument("--seconds", type=float, default=20, help="length of each frame-time phase")
    p.add_argument("--pairs", type=int, default=6, help="quiet and busy phase pairs, in ABBA order")
    args = p.parse_args()
    args.work = args.work.resolve()
    vision, text = towers(args.work)
    for records in args.records:
        measure(args, vision, text, records)


if __name__ == "__main__":
    main()

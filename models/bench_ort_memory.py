"""ONNX Runtime's memory options, one at a time: the peak RSS of one session of a detector at one
input size, each configuration in its own process, and the time of a run with the memory
pattern on and off (alternating).

    python models/bench_ort_memory.py --model target/bench-detectors/detr-r50-random.onnx

Python's onnxruntime from PyPI (the same release as scripts/onnxruntime.sh's library).
"""

import argparse
import json
import resource
import subprocess
import sys
import time

# (memory pattern, CPU arena, weight prepacking): ONNX Runtime's defaults first.
CONFIGURATIONS = [(True, True, True), (False, True, True), (True, False, True), (False, False, True), (True, True, False), (False, False, False)]


def session(model, mem_pattern=True, arena=True, prepack=True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_mem_pattern, options.enable_cpu_mem_arena, options.intra_op_num_threads = mem_pattern, arena, 1
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def rss_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024


def one(model, shape, configuration):
    import numpy as np

    s = session(model, *configuration)
    x = np.zeros(shape, np.float32)
    for _ in range(2):
        s.run(None, {s.get_inputs()[0].name: x})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    names = ("mem_pattern", "arena", "prepack")
    print(json.dumps({**dict(zip(names, configuration)), "peak_mb": round(peak), "rss_after_runs_mb": round(rss_mb())}))


def timing(model, shape, runs):
    import numpy as np

    sessions = {on: session(model, mem_pattern=on) for on in (True, False)}
    x = np.zeros(shape, np.float32)
    times = {True: [], False: []}
    for i in range(runs + 1):
        for on in (True, False) if i % 2 == 0 else (False, True):
            start = time.perf_counter()
            sessions[on].run(None, {sessions[on].get_inputs()[0].name: x})
            if i:
                times[on].append(time.perf_counter() - start)
    for on in (True, False):
        print(f"memory pattern {'on' if on else 'off'}: median {sorted(times[on])[len(times[on]) // 2]:.2f} s a run of {runs}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--shape", default="1,3,750,1333", help="the input, default DETR's 800/1333 on a 16:9 frame")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.one:
        return one(args.model, shape, tuple(v == "1" for v in args.one))
    for configuration in CONFIGURATIONS:
        flags = "".join("1" if v else "0" for v in configuration)
        subprocess.run([sys.executable, __file__, "--model", args.model, "--shape", args.shape, "--one", flags], check=True)
    timing(args.model, shape, args.runs)


if __name__ == "__main__":
    main()

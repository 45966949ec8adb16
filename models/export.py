#!/usr/bin/env python3
"""Export Glimpse's two models to ONNX.

Real checkpoints (needs a model hub or a local checkpoint directory):
    python models/export.py --detr facebook/detr-resnet-50 --clip b32 --out models/dist
    python models/export.py --detr facebook/detr-resnet-50 --clip l14 --out models/dist   # ViT-L/14, 768-d
then quantize them for tract (models/quantize.py) and check them against fp32:
    python models/quantize.py --detr models/dist/detr.onnx --clip models/dist/clip_vision.onnx --manifest models/manifest.toml

Small random-weight models of the same architectures, with no download at all (these are the
files committed under models/tiny/ and used by the test suite):
    python models/export.py --tiny --out models/tiny --golden tests/media/golden.json

CLIP's text tower (for search by words and text triggers) and its tokenizer, for the same
checkpoint as the image tower: `--clip` exports clip_text.onnx and clip-tokenizer.json beside
clip_vision.onnx. The tokenizer is built from CLIP's own BPE vocabulary, which ships inside the
open_clip_torch wheel (bpe_simple_vocab_16e6.txt.gz), so it is the real one even offline:
    python models/export.py --tiny --out models/tiny --text-golden tests/media/text_golden.json

The tiny set holds these files:
  detr-tiny-random.onnx   DETR (ResNet backbone + transformer) with random weights.
  detr-tiny-fixture.onnx  the same architecture whose class head is fixed so that every one of its
                          FIXTURE_QUERIES object queries is a "person" at a score above 0.99 on any
                          input: tests can assert exact record counts end to end.
  clip-tiny-random.onnx   CLIP ViT vision tower with projection (512-d output) and random weights.
  clip-text-tiny-random.onnx  CLIP text tower with projection (512-d), random weights, the real
                          49,408-token vocabulary and 77-token context.
  clip-tokenizer.json     CLIP's real BPE tokenizer (the `tokenizers` format).
and models/manifest.toml is rewritten with their sha256 and pre-processing constants.
"""
import argparse
import pathlib
import sys

import torch

from golden_margins import detection_margins
from manifest_fields import CLIP_EXTRA, DETR_EXTRA, REALTIME_EXTRA, REALTIME_SIDE, sha256, update_manifest  # noqa: F401 (export.sha256 etc. for the other scripts)

# The COCO label map of facebook/detr-resnet-50 (config.id2label); index 91 is "no object".
COCO_LABELS = [
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
FIXTURE_QUERIES = 5
PERSON = COCO_LABELS.index("person")
OPSET = 17


class DetrOutputs(torch.nn.Module):
    """DETR with the two tensors Glimpse reads: logits [B,Q,C+1] and pred_boxes [B,Q,4] (cx,cy,w,h)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return out.logits, out.pred_boxes


class ClipImageEmbeds(torch.nn.Module):
    """CLIP vision tower + visual projection: image_embeds [B,D], not yet L2-normalised."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).image_embeds


def export(module, example, path, output_names, dynamic_axes):
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), input_names=["pixel_values"], output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


def export_detr(model, path):
    export(
        DetrOutputs(model), torch.rand(1, 3, 320, 480), path, ["logits", "pred_boxes"],
        {"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
    )


def export_clip(model, path):
    export(
        ClipImageEmbeds(model), torch.rand(2, 3, 224, 224), path, ["image_embeds"],
        {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
    )


def tiny_detr():
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=["stage4"],
    )
    config = DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        num_queries=FIXTURE_QUERIES, id2label=dict(enumerate(COCO_LABELS)),
    )
    return DetrForObjectDetection(config)


def make_fixture(model):
    """Every query: class "person" with probability > 0.99; boxes near the centre, half the frame."""
    with torch.no_grad():
        head = model.class_labels_classifier
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[PERSON] = 10.0
        last = model.bbox_predictor.layers[-1]
        last.weight.mul_(0.05)
        last.bias.zero_()  # sigmoid(0) = 0.5: centre (0.5, 0.5), size (0.5, 0.5)
    return model


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=224, patch_size=32, projection_dim=512,
    )
    return CLIPVisionModelWithProjection(config)


class ClipTextEmbeds(torch.nn.Module):
    """CLIP text tower + text projection: text_embeds [B,D] from input_ids [B,T], T <= 77, not yet
    L2-normalised. The pooled token is the first end-of-text token (eos_token_id = 49407)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).text_embeds


CONTEXT = 77
END_OF_TEXT = 49407


def export_text(model, path):
    module = ClipTextEmbeds(model).eval()
    example = torch.full((2, CONTEXT), END_OF_TEXT, dtype=torch.int64)
    example[:, 0] = 49406
    with torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), input_names=["input_ids"], output_names=["text_embeds"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "text_embeds": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    check_short_equals_padded(path)


def check_short_equals_padded(path):
    """The tower on a query's ids up to its end token gives what it gives on all 77 (CLIP's
    text tower is causal and pools at the first end token): Glimpse runs only those ids."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = [49406, 320, 1746, 1615, END_OF_TEXT]
    padded = np.array([ids + [END_OF_TEXT] * (CONTEXT - len(ids))], dtype=np.int64)
    full, short = (session.run(None, {"input_ids": x})[0] for x in (padded, np.array([ids], dtype=np.int64)))
    difference = float(np.abs(full - short).max())
    assert difference < 1e-5, f"{path}: 5 ids and 77 padded ids give embeddings {difference} apart"
    print(f"{path}: 5 ids against 77 padded: largest difference {difference:.2e}", file=sys.stderr)


def symbolic_tokens(path):
    """Makes an older export's fixed 77-token input symbolic, in place, once a short input is
    shown to give the padded input's embedding (torch's export already computes every shape
    from the input; only the declared input dimension was fixed). The file is replaced only
    when the check passes."""
    import os

    import onnx

    model = onnx.load(str(path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "tokens"
    del model.graph.value_info[:]  # shapes the export recorded for 77 tokens; engines infer them
    edited = path.with_name(path.name + ".symbolic")
    onnx.save(model, str(edited))
    try:
        check_short_equals_padded(edited)
    except BaseException:
        edited.unlink()
        raise
    os.replace(edited, path)


def tiny_clip_text():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=CONTEXT, projection_dim=512, bos_token_id=49406, eos_token_id=END_OF_TEXT, pad_token_id=END_OF_TEXT,
    )
    return CLIPTextModelWithProjection(config)


def clip_tokenizer():
    """CLIP's tokenizer with the real BPE vocabulary from the open_clip_torch wheel, as
    transformers' CLIPTokenizer (the vocabulary OpenAI's SimpleTokenizer builds)."""
    import gzip
    import os

    import open_clip
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    bpe = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = [tuple(m.split()) for m in gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def save_tokenizer(tokenizer, path):
    tokenizer.backend_tokenizer.save(str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


def text_strings():
    """At least 500 strings that exercise the tokenizer: accents, CJK, emoji, punctuation, case,
    whitespace runs, and strings longer than the 77-token context."""
    import random

    rng = random.Random(7)
    words = [
        "a", "red", "van", "stopped", "at", "the", "gate", "person", "walking", "dog", "bicycle", "truck", "parked",
        "Café", "naïve", "façade", "Ærø", "Straße", "jalapeño", "Ελλάδα", "Москва", "東京", "日本語", "中文字符", "한국어",
        "🚗", "🚓", "🐕", "👍🏽", "🇫🇷", "don't", "it's", "we'll", "you're", "I'm", "they've", "she'd",
        "e-mail", "U.S.A.", "$100", "50%", "#hashtag", "@user", "C++", "3.14", "2026-12-01", "12:30",
        "HELLO", "WoRlD", "x", "!!", "?", "...", "(parens)", "[brackets]", "{braces}", "\"quoted\"", "'single'",
    ]
    strings = ["", " ", "a", "A", "a red van", "a photo of a dog", "  two   spaces  ", "tab\tand\nnewline", "<|startoftext|>", "<|endoftext|>"]
    while len(strings) < 480:
        n = rng.randint(1, 12)
        sep = rng.choice([" ", "  ", " \t ", "\n", "", "-"])
        text = sep.join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.2:
            text = text.upper()
        strings.append(text)
    for i in range(40):  # longer than the context: truncated, end token kept
        strings.append(" ".join(rng.choice(words) for _ in range(60 + i)))
    return strings


def write_text_golden(tokenizer, model_path, out):
    """Token ids from transformers' CLIPTokenizer (and OpenAI's reference tokenizer from
    open_clip, for the record) and onnxruntime embeddings of the text model, for Glimpse's
    parity tests."""
    import json

    import numpy as np
    import onnxruntime as ort
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    strings = text_strings()
    encoded = tokenizer(strings, truncation=True, max_length=CONTEXT)["input_ids"]
    # transformers truncates to 77 keeping the end token, as CLIP does.
    assert all(len(ids) <= CONTEXT and ids[-1] == END_OF_TEXT for ids in encoded)
    openai = reference(strings)
    agree = sum(list(ids) == [int(t) for t in row[: len(ids)]] and all(int(t) == 0 for t in row[len(ids):]) for ids, row in zip(encoded, openai))
    print(f"text golden: transformers and OpenAI's tokenizer agree on {agree}/{len(strings)} strings", file=sys.stderr)
    session = ort.InferenceSession(str(model_path))
    sample = strings[:12] + strings[-3:]
    ids = np.full((len(sample), CONTEXT), END_OF_TEXT, dtype=np.int64)
    for row, text in enumerate(tokenizer(sample, truncation=True, max_length=CONTEXT)["input_ids"]):
        ids[row, : len(text)] = text
    embeds = session.run(None, {"input_ids": ids})[0]
    embeds = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    golden = {
        "context": CONTEXT,
        "tokens": [{"text": t, "ids": list(map(int, i))} for t, i in zip(strings, encoded)],
        "openai_agreement": f"{agree}/{len(strings)}",
        "model": model_path.name,
        "embeddings": [{"text": t, "embedding": [float(v) for v in e]} for t, e in zip(sample, embeds)],
    }
    out.write_text(json.dumps(golden, ensure_ascii=False, indent=0))
    print(f"wrote {out}", file=sys.stderr)


def check_text_against_transformers(model, tokenizer, model_path):
    """The exported file against the transformers model it came from (cosine of each row)."""
    import numpy as np
    import onnxruntime as ort

    sample = text_strings()[:8]
    batch = tokenizer(sample, truncation=True, max_length=CONTEXT, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"]).text_embeds.numpy()
    got = ort.InferenceSession(str(model_path)).run(None, {"input_ids": batch["input_ids"].numpy()})[0]
    cos = (expected * got).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.9999, cos
    print(f"text model: onnxruntime against transformers, min cosine {cos.min():.6f}", file=sys.stderr)


def export_tiny_text(out, golden):
    """The tiny text tower and the real tokenizer, checked against transformers; their manifest
    entries; and, with `golden`, the reference token ids and embeddings."""
    tokenizer, text_model = clip_tokenizer(), tiny_clip_text()
    save_tokenizer(tokenizer, out / "clip-tokenizer.json")
    export_text(text_model, out / "clip-text-tiny-random.onnx")
    check_text_against_transformers(text_model.eval(), tokenizer, out / "clip-text-tiny-random.onnx")
    update_manifest(out, [
        ("clip-text-tiny-random.onnx", "text-embedder", "random:clip-text-tiny", "onnx-fp32", TEXT_EXTRA),
        ("clip-tokenizer.json", "tokenizer", "open_clip_torch:bpe_simple_vocab_16e6", "tokenizers-json", {}),
    ])
    if golden:
        write_text_golden(tokenizer, out / "clip-text-tiny-random.onnx", golden)


# The real-time DETRs (transformers' RT-DETR, RT-DETRv2 and D-FINE): tiny random-weight models
# of the real architectures, their input fixed at REALTIME_SIDE (RTDetrImageProcessor's `size`,
# 640 for the published checkpoints), COCO's 80 labels.
REALTIME_QUERIES = 30
# Random class heads put every score near the prior (1/81); scaled up, they spread over 0..1
# so that the golden's scores stand apart from each other and from its threshold.
REALTIME_HEAD_SCALE = 3.0
REALTIME_GAP = 3e-3


def coco80():
    return [label for label in COCO_LABELS if label != "N/A"][:80]


def tiny_realtime(kind):
    """A tiny RT-DETR, RT-DETRv2 or D-FINE: the real architecture at toy widths and depths."""
    import transformers as t

    # Two decoder layers: with one, transformers 5.25 cannot tie RT-DETRv2's and D-FINE's box heads.
    common = dict(
        encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_attention_heads=2, d_model=32,
        num_queries=REALTIME_QUERIES, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64,
        decoder_layers=2, decoder_attention_heads=2, num_denoising=0, id2label=dict(enumerate(coco80())),
    )
    resnet = t.RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    if kind == "rtdetr":
        model = t.RTDetrForObjectDetection(t.RTDetrConfig(backbone_config=resnet, encoder_in_channels=[16, 24, 32], **common))
    elif kind == "rtdetrv2":
        model = t.RTDetrV2ForObjectDetection(t.RTDetrV2Config(backbone_config=resnet, encoder_in_channels=[16, 24, 32], **common))
    else:
        hgnet = t.HGNetV2Config(
            embedding_size=8, hidden_sizes=[16, 24, 32, 48], stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 24, 32], stage_mid_channels=[8, 8, 16, 16],
            stage_out_channels=[16, 24, 32, 48], stage_num_blocks=[1, 1, 1, 1], stage_downsample=[False, True, True, True],
            stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[1, 1, 1, 1],
            out_features=["stage2", "stage3", "stage4"],
        )
        model = t.DFineForObjectDetection(t.DFineConfig(backbone_config=hgnet, encoder_in_channels=[24, 32, 48], **common))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "class_embed" in name and name.endswith("weight"):
                parameter.mul_(REALTIME_HEAD_SCALE)
    return model.eval()


REALTIME = {
    "rtdetr": ("rtdetr-tiny-random.onnx", "random:rt-detr-tiny"),
    "rtdetrv2": ("rtdetrv2-tiny-random.onnx", "random:rt-detr-v2-tiny"),
    "dfine": ("dfine-tiny-random.onnx", "random:d-fine-tiny"),
}


def full_realtime():
    """A random-weight RT-DETR shaped as PekingU/rtdetr_r18vd (ResNet-18 backbone, 300 queries,
    3 decoder layers; ~20M parameters), for benchmarks: the real-time DETR an edge box would run."""
    import transformers as t

    resnet = t.RTDetrResNetConfig(
        embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic", out_features=["stage2", "stage3", "stage4"],
    )
    config = t.RTDetrConfig(backbone_config=resnet, encoder_in_channels=[128, 256, 512], decoder_layers=3, num_denoising=0, id2label=dict(enumerate(coco80())))
    return t.RTDetrForObjectDetection(config).eval()


def export_full_realtime(out):
    """`rtdetr-r18-random.onnx` in `out`, at RTDetrImageProcessor's 640×640 (not in the manifest)."""
    export(
        DetrOutputs(full_realtime()), torch.rand(1, 3, 640, 640), out / "rtdetr-r18-random.onnx", ["logits", "pred_boxes"],
        {"pixel_values": {0: "batch"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
    )


def export_realtime(out):
    """The three tiny real-time DETRs, fixed input, into `out` and the manifest."""
    for kind, (name, _) in REALTIME.items():
        export(
            DetrOutputs(tiny_realtime(kind)), torch.rand(1, 3, REALTIME_SIDE, REALTIME_SIDE), out / name, ["logits", "pred_boxes"],
            {"pixel_values": {0: "batch"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
        )
    update_manifest(out, [(name, "detector", source, "onnx-fp32", REALTIME_EXTRA) for name, source in REALTIME.values()])


def realtime_threshold(scores):
    """A threshold in the widest gap below the 3rd best score or a lower one (at least
    REALTIME_GAP wide), so that no error a comparison allows moves a score across it; and how
    many scores are above it."""
    import numpy as np

    ranked = np.sort(scores.ravel())[::-1][: REALTIME_QUERIES + 1]
    gaps = ranked[:-1] - ranked[1:]
    count = 3 + int(np.argmax(gaps[2:REALTIME_QUERIES]))
    if gaps[count - 1] < REALTIME_GAP:
        return None, 0
    return float((ranked[count - 1] + ranked[count]) / 2), count


REALTIME_PHOTOS = f"rtdetr-{REALTIME_SIDE}"


def write_realtime_golden(models, photos_dir, out):
    """RTDetrImageProcessor + onnxruntime + its post_process_object_detection on the photos, for
    the tiny real-time DETRs and their int8 files when models/quantize.py has made them.

    The photos are first stretched to the input with PIL's bilinear filter and saved (in
    photos/rtdetr-320/), so that both sides see the same pixels: these random models, their class
    heads spread, move their scores by up to 2.3e-2 for the one grey level by which PIL's and
    Glimpse's bilinear filters differ on a few pixels (the real NanoDet moved by 2e-3)."""
    import json

    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    from transformers import RTDetrImageProcessor
    from transformers.models.rt_detr.modeling_rt_detr import RTDetrObjectDetectionOutput

    processor = RTDetrImageProcessor(size={"height": REALTIME_SIDE, "width": REALTIME_SIDE})
    files = {kind: name for kind, (name, _) in REALTIME.items()}
    files.update({f"{kind}-int8": name.replace(".onnx", "-int8.onnx") for kind, name in list(files.items())
                  if (models / name.replace(".onnx", "-int8.onnx")).exists()})
    sessions = {kind: ort.InferenceSession(str(models / name)) for kind, name in files.items()}
    golden = {"detectors": {}, "embedders": {"fp32": "clip-tiny-random.onnx"}, "photos": REALTIME_PHOTOS, "images": {}}
    fitted = photos_dir / REALTIME_PHOTOS
    fitted.mkdir(exist_ok=True)
    # Glimpse runs each file once at a floor that lets all Q best pairs out; a photo's threshold
    # then picks its detections from them, as post_process_object_detection did here.
    # Scores of different pairs may lie closer than a comparison's tolerance, so the order of
    # equal-looking detections is not decided: "unordered" has the tests match them by label and box.
    for kind, name in files.items():
        golden["detectors"][kind] = {"model": name, "threshold": 0.001, "thresholds": {}, "unordered": True}
    for photo in sorted(photos_dir.glob("*.png")):
        Image.open(photo).convert("RGB").resize((REALTIME_SIDE, REALTIME_SIDE), Image.BILINEAR).save(fitted / photo.name)
        image = Image.open(fitted / photo.name).convert("RGB")
        pixel_values = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
        detections = {}
        for kind, session in sessions.items():
            logits, boxes = session.run(None, {"pixel_values": pixel_values})
            threshold, count = realtime_threshold(1 / (1 + np.exp(-logits[0].astype(np.float64))))
            assert threshold is not None, f"{kind} on {photo.name}: no threshold with scores {REALTIME_GAP} apart"
            outputs = RTDetrObjectDetectionOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))
            result = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=[(image.height, image.width)])[0]
            assert len(result["scores"]) == count, (kind, photo.name, len(result["scores"]), count)
            golden["detectors"][kind]["thresholds"][photo.name] = threshold
            detections[kind] = [
                {"label": coco80()[int(l)], "score": float(s), "x": float(b[0]), "y": float(b[1]), "w": float(b[2] - b[0]), "h": float(b[3] - b[1])}
                for s, l, b in zip(result["scores"], result["labels"], result["boxes"])
            ]
        golden["images"][photo.name] = {"size": [image.width, image.height], "detections": detections}
        print(f"golden: {photo.name} -> {[len(d) for d in detections.values()]} detections", file=sys.stderr)
    out.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def write_manifest(out, files):
    lines = ["# Written by models/export.py; `glimpse models verify` checks files against it.", ""]
    for name, kind, source, extra in files:
        lines += [
            "[[model]]",
            f'file = "{out.name}/{name}"',
            f'kind = "{kind}"',
            f'source = "{source}"',
            'format = "onnx-fp32"',
            f'sha256 = "{sha256(out / name)}"',
        ]
        lines += [f"{k} = {v}" for k, v in extra.items()]
        lines.append("")
    manifest = out.parent / "manifest.toml"
    manifest.write_text("\n".join(lines))
    print(f"wrote {manifest}", file=sys.stderr)


TEXT_EXTRA = {
    "input": '"input_ids int64 [batch, tokens <= 77]: start token, tokens, end token (Glimpse runs the ids up to the end token)"',
    "output_dim": 512,
}


# --clip shorthands: B/32 is the default (fast on CPUs); L/14 is what the cloud pipeline used.
CLIP_PRESETS = {"b32": "openai/clip-vit-base-patch32", "l14": "openai/clip-vit-large-patch14"}


GOLDEN_PHOTOS = {
    # name: function of skimage.data returning an RGB array
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}


def write_golden(models, photos_dir, out):
    """Reference outputs of transformers' processors + onnxruntime for the tiny models on real
    photos, for the exactness tests of `glimpse detect` and `glimpse embed`."""
    import json

    import numpy as np
    import onnxruntime as ort
    import skimage.data
    from PIL import Image
    from transformers import CLIPImageProcessor, DetrImageProcessor
    from transformers.models.detr.modeling_detr import DetrObjectDetectionOutput

    photos_dir.mkdir(parents=True, exist_ok=True)
    # The fixture finds 5 fixed "persons" anywhere; the random model at a tiny threshold gives
    # input-dependent boxes and scores, which is what exposes pre-processing differences.
    detectors = {"fixture": ("detr-tiny-fixture.onnx", 0.9), "random": ("detr-tiny-random.onnx", 0.001)}
    embedders = {"fp32": "clip-tiny-random.onnx"}
    # The int8 files models/quantize.py makes, when present: onnxruntime's outputs on the very
    # same files (tract against onnxruntime), and the fp32 ones above (quantized against source).
    if (models / "detr-tiny-random-int8.onnx").exists():
        detectors["random-int8"] = ("detr-tiny-random-int8.onnx", 0.001)
    if (models / "clip-tiny-random-int8.onnx").exists():
        embedders["int8"] = "clip-tiny-random-int8.onnx"
    sessions = {k: ort.InferenceSession(str(models / f)) for k, (f, _) in detectors.items()}
    clips = {k: ort.InferenceSession(str(models / f)) for k, f in embedders.items()}
    detr_processor = DetrImageProcessor()  # shortest_edge 800, longest_edge 1333, bilinear
    clip_processor = CLIPImageProcessor()  # shortest_edge 224 bicubic, centre crop 224
    golden = {
        "detectors": {k: {"model": f, "threshold": t} for k, (f, t) in detectors.items()},
        "embedder": embedders["fp32"],
        "embedders": embedders,
        "images": {},
    }
    for name, load in GOLDEN_PHOTOS.items():
        path = photos_dir / f"{name}.png"
        Image.fromarray(load(skimage.data)).convert("RGB").save(path)
        image = Image.open(path).convert("RGB")
        pixel_values = detr_processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
        detections = {}
        for key, (_, threshold) in detectors.items():
            logits, boxes = sessions[key].run(None, {"pixel_values": pixel_values})
            outputs = DetrObjectDetectionOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))
            result = detr_processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=[(image.height, image.width)])[0]
            detections[key] = [
                {"label": COCO_LABELS[int(l)], "score": float(s), "x": float(b[0]), "y": float(b[1]), "w": float(b[2] - b[0]), "h": float(b[3] - b[1])}
                for s, l, b in zip(result["scores"], result["labels"], result["boxes"])
            ]
            # How far an error may move a probability before another label could win.
            for detection, margin in zip(detections[key], detection_margins(logits[0], threshold)):
                detection["margin"] = margin
        clip_input = clip_processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
        embeddings = {}
        for key, session in clips.items():
            embedding = session.run(None, {"pixel_values": clip_input})[0][0]
            embeddings[key] = [float(v) for v in embedding / np.linalg.norm(embedding)]
        golden["images"][path.name] = {
            "size": [image.width, image.height],
            "detr_input": list(pixel_values.shape),
            "detections": detections,
            "embedding": embeddings["fp32"],
            "embeddings": embeddings,
        }
        print(f"golden: {name} {image.size} -> {[len(d) for d in detections.values()]} detections", file=sys.stderr)
    out.write_text(json.dumps(golden, indent=1))
    print(f"wrote {out}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="build small random-weight models, no download")
    parser.add_argument("--detr", help="DETR checkpoint (hub id or directory)")
    parser.add_argument("--clip", help="CLIP checkpoint: b32 (ViT-B/32, 512-d), l14 (ViT-L/14, 768-d), a hub id or a directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, help="the folder to write to (all but --symbolic-tokens)")
    parser.add_argument("--golden", type=pathlib.Path, help="with --tiny: also write reference outputs on photos to this JSON file")
    parser.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("tests/media/photos"))
    parser.add_argument("--tiny-text", action="store_true", help="only the tiny text tower and the tokenizer (the other tiny files stay)")
    parser.add_argument("--text-golden", type=pathlib.Path, help="with --tiny: write token ids and text embeddings to this JSON file")
    parser.add_argument("--symbolic-tokens", type=pathlib.Path, metavar="FILE",
                        help="make an older text tower's fixed 77-token input symbolic, in place (Glimpse then runs only a query's tokens)")
    parser.add_argument("--realtime", action="store_true", help="only the tiny RT-DETR, RT-DETRv2 and D-FINE (the other tiny files stay)")
    parser.add_argument("--realtime-full", action="store_true", help="only a full-size random RT-DETR-R18 for benchmarks, rtdetr-r18-random.onnx")
    parser.add_argument("--realtime-golden", type=pathlib.Path, help="write the real-time DETRs' reference detections to this JSON file")
    args = parser.parse_args()
    if args.symbolic_tokens:
        symbolic_tokens(args.symbolic_tokens)
        return
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    if args.realtime_full:
        export_full_realtime(args.out)
        return
    if args.realtime or args.realtime_golden:
        if args.realtime:
            export_realtime(args.out)
        if args.realtime_golden:
            write_realtime_golden(args.out, args.photos, args.realtime_golden)
        return
    if args.tiny_text:
        export_tiny_text(args.out, args.text_golden)  # the other tiny files stay as they are
        return
    if args.golden and not args.tiny:
        write_golden(args.out, args.photos, args.golden)  # for the models already in --out
        return
    if args.tiny:
        export_detr(tiny_detr(), args.out / "detr-tiny-random.onnx")
        export_detr(make_fixture(tiny_detr()), args.out / "detr-tiny-fixture.onnx")
        export_clip(tiny_clip(), args.out / "clip-tiny-random.onnx")
        write_manifest(args.out, [
            ("detr-tiny-random.onnx", "detector", "random:detr-tiny", DETR_EXTRA),
            ("detr-tiny-fixture.onnx", "detector", "random:detr-tiny-fixture", DETR_EXTRA),
            ("clip-tiny-random.onnx", "embedder", "random:clip-vit-tiny", CLIP_EXTRA),
        ])
        export_tiny_text(args.out, args.text_golden)
        if args.golden:
            write_golden(args.out, args.photos, args.golden)
        return
    if not (args.detr and args.clip):
        parser.error("give --tiny, or both --detr and --clip")
    from transformers import CLIPVisionModelWithProjection, DetrForObjectDetection

    clip_id = CLIP_PRESETS.get(args.clip, args.clip)
    export_detr(DetrForObjectDetection.from_pretrained(args.detr, use_timm_backbone=False), args.out / "detr.onnx")
    clip = CLIPVisionModelWithProjection.from_pretrained(clip_id)
    if clip.config.image_size != 224:
        sys.exit(f"{clip_id} takes {clip.config.image_size}px input; Glimpse's CLIP pre-processing is for 224px models")
    export_clip(clip, args.out / "clip_vision.onnx")
    from transformers import CLIPTextModelWithProjection

    text = CLIPTextModelWithProjection.from_pretrained(clip_id)
    text.config.eos_token_id = END_OF_TEXT  # pool at the first end-of-text token, as the padding needs
    export_text(text, args.out / "clip_text.onnx")
    save_tokenizer(clip_tokenizer(), args.out / "clip-tokenizer.json")
    write_manifest(args.out, [
        ("detr.onnx", "detector", args.detr, DETR_EXTRA),
        # ViT-B/32 gives 512-d embeddings, ViT-L/14 768-d: the Pinecone index must match.
        ("clip_vision.onnx", "embedder", clip_id, {**CLIP_EXTRA, "output_dim": clip.config.projection_dim}),
        ("clip_text.onnx", "text-embedder", clip_id, {**TEXT_EXTRA, "output_dim": text.config.projection_dim}),
        ("clip-tokenizer.json", "tokenizer", "open_clip_torch:bpe_simple_vocab_16e6", {}),
    ])


if __name__ == "__main__":
    main()

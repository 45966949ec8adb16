#!/usr/bin/env python3
"""Checks of meta-glimpse that a parse cannot make, found in a review as defects:

1. glimpse's do_configure:append, run twice in the same CARGO_HOME (WORKDIR survives between
   AUTOREV builds), must leave exactly one [source.bitbake] table: cargo refuses two.
2. The image must carry what the daemon needs at run time for TLS: ca-certificates (rustls
   verifies Pinecone and the bucket against the system store) and glib-networking (rtsps:// and
   https:// cameras), through packagegroup-glimpse's RDEPENDS.

    recipe-behaviour.py --layer yocto/meta-glimpse
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def configure_block(recipe: str) -> str:
    match = re.search(r"^do_configure:append\(\) \{\n(.*?)^\}", recipe, re.S | re.M)
    if not match:
        raise SystemExit("FAIL: glimpse_git.bb has no do_configure:append")
    return match.group(1)


def check_configure_twice(layer: Path) -> list[str]:
    body = configure_block((layer / "recipes-glimpse/glimpse/glimpse_git.bb").read_text())
    with tempfile.TemporaryDirectory() as home:
        config = Path(home) / "config.toml"
        config.write_text('[build]\njobs = 2\n')
        script = body.replace("${CARGO_HOME}", home).replace("${CARGO_VENDORING_DIRECTORY}", "/work/cargo_home/bitbake")
        for run in (1, 2):
            done = subprocess.run(["sh", "-eu", "-c", script], capture_output=True, text=True)
            if done.returncode != 0:
                return [f"do_configure:append failed on run {run}: {done.stderr.strip()}"]
        text = config.read_text()
        problems = []
        if text.count("[source.bitbake]") != 1:
            problems.append(f"after two do_configure runs config.toml defines [source.bitbake] {text.count('[source.bitbake]')} times")
        if "[build]" not in text:
            problems.append("do_configure:append dropped the class's own settings")
        return problems


def check_tls_rdepends(layer: Path) -> list[str]:
    group = (layer / "recipes-glimpse/packagegroups/packagegroup-glimpse.bb").read_text()
    match = re.search(r'^RDEPENDS:\$\{PN\} = "(.*?)"', group, re.S | re.M)
    packages = match.group(1).replace("\\", " ").split() if match else []
    return [f"packagegroup-glimpse does not RDEPEND on {p}" for p in ("ca-certificates", "glib-networking") if p not in packages]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=Path, required=True)
    layer = parser.parse_args().layer
    problems = check_configure_twice(layer) + check_tls_rdepends(layer)
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("ok: do_configure is idempotent; ca-certificates and glib-networking are in the image")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

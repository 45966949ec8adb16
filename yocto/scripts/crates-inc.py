#!/usr/bin/env python3
"""Write glimpse-crates.inc from Cargo.lock: one crate:// entry and one sha256 per registry package.

bitbake fetches these into ${WORKDIR}/cargo_home/bitbake (with a .cargo-checksum.json each), and
the glimpse recipe points cargo's crates-io source at that directory, so do_compile builds offline.
The format is what poky's cargo-update-recipe-crates class writes: the fetcher's name for a crate
is NAME-VERSION, so two versions of one crate get separate checksums.

    yocto/scripts/crates-inc.py [--lock Cargo.lock] [--out FILE]   (stdout without --out)
"""

import argparse
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def render(lock_path: Path) -> str:
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    packages = [p for p in lock.get("package", []) if p.get("source") == REGISTRY]
    if not packages:
        raise SystemExit(f"{lock_path}: no crates.io packages found")
    others = sorted({p["source"].split("+")[0] for p in lock["package"] if "source" in p and p["source"] != REGISTRY})
    if others:
        # git or other registries would need their own fetcher entries and [patch] tables.
        raise SystemExit(f"{lock_path}: sources other than crates.io are not supported: {', '.join(others)}")
    missing = [f"{p['name']} {p['version']}" for p in packages if "checksum" not in p]
    if missing:
        raise SystemExit(f"{lock_path}: packages without a checksum: {', '.join(missing)}")

    lines = [
        "# Generated from Cargo.lock by yocto/scripts/crates-inc.py; do not edit.",
        "# Regenerate after every Cargo.lock change (yocto/check.sh fails until then).",
        "",
        'SRC_URI += "\\',
    ]
    lines += [f"    crate://crates.io/{p['name']}/{p['version']};name={p['name']}-{p['version']} \\" for p in packages]
    lines += ['"', ""]
    lines += [f'SRC_URI[{p["name"]}-{p["version"]}.sha256sum] = "{p["checksum"]}"' for p in packages]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=REPO / "Cargo.lock")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = render(args.lock)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Write glimpse-licences.inc: the licences of every crate linked into the daemon, from cargo metadata.

The recipe's LICENSE is the daemon's own Apache-2.0 and GLIMPSE_CRATES_LICENSE, which this file
defines: one term per distinct licence expression of a linked crate, converted from SPDX to
OpenEmbedded's syntax (OR -> |, AND -> &, "A/B" -> A | B). OpenEmbedded has no WITH, so
"A WITH B" becomes "(A & B)": the image's licence manifest then carries both texts, and
INCOMPATIBLE_LICENSE still sees A. LIC_FILES_CHKSUM gets every licence file the crates ship, with
its md5, at the path where bitbake's crate fetcher unpacks it.

Linked means: a normal dependency of the glimpse crate, reached through normal dependencies, on
the targets the layer builds. Build scripts, proc-macros and dev-dependencies run on the build
host and leave nothing in the binary, so their licences are not the image's.

    yocto/scripts/crate-licences.py [--out FILE]   (stdout without --out)

Needs cargo and the crates' sources (cargo metadata fetches them when missing).
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The layer's machines: aarch64 (Jetson, Raspberry Pi 4/5, qemuarm64) and x86-64 (genericx86-64).
TARGETS = ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"]
LICENCE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|UNLICENSE|COPYRIGHT)([-._].*)?$", re.IGNORECASE)
# Where bitbake's crate fetcher unpacks NAME-VERSION (the recipe's CARGO_VENDORING_DIRECTORY).
UNPACKED = "${WORKDIR}/cargo_home/bitbake"
# A crate patched in the tree ([patch.crates-io] to a path, e.g. third_party/tract-linalg) is not
# fetched: its files are in the recipe's checkout, ${S}.
SOURCE = "${S}"
# Licences that may have no generic text in poky's common-licenses; their text is taken from the
# first crate that ships it (NO_GENERIC_LICENSE), so the manifest is never without one.
MAYBE_NOT_GENERIC = {"Unicode-3.0"}


def cargo_metadata() -> dict:
    command = ["cargo", "metadata", "--format-version", "1", "--locked", "--manifest-path", str(REPO / "daemon/Cargo.toml")]
    for target in TARGETS:
        command += ["--filter-platform", target]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"crate-licences.py: {' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def linked_packages(metadata: dict) -> list[dict]:
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    root = next(p["id"] for p in metadata["packages"] if p["name"] == "glimpse")
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node in seen or any("proc-macro" in t["kind"] for t in packages[node]["targets"]):
            continue
        seen.add(node)
        stack += [d["pkg"] for d in nodes[node]["deps"] if any(k["kind"] is None for k in d["dep_kinds"])]
    members = set(metadata["workspace_members"])
    return sorted((packages[i] for i in seen if i not in members), key=lambda p: (p["name"], p["version"]))


def openembedded_expression(spdx: str, where: str) -> str:
    tokens = re.findall(r"\(|\)|/|[A-Za-z0-9.+_-]+", spdx)
    if "".join(tokens) != re.sub(r"\s+", "", spdx):
        raise SystemExit(f"crate-licences.py: {where}: cannot read the licence expression {spdx!r}")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("OR", "/"):
            out.append("|")
        elif token == "AND":
            out.append("&")
        elif i + 2 < len(tokens) and tokens[i + 1] == "WITH":
            out.append(f"({token} & {tokens[i + 2]})")
            i += 2
        else:
            out.append(token)
        i += 1
    if len(out) > 1 and out.count("|") == len(out) // 2 and all(t not in "()&" for t in out[::2]):
        # Only alternatives: one order, so that "MIT OR Apache-2.0" and "Apache-2.0/MIT" are one term.
        out = " | ".join(sorted(out[::2])).split(" ")
    text = " ".join(out).replace("( ", "(").replace(" )", ")")
    return f"({text})" if len(out) > 1 else text


def licence_files(package: dict) -> list[Path]:
    crate_dir = Path(package["manifest_path"]).parent
    files = {f for f in crate_dir.iterdir() if f.is_file() and LICENCE_FILE.match(f.name)}
    if package.get("license_file"):
        files.add(crate_dir / package["license_file"])
    return sorted(files)


def unpacked_dir(package: dict, crate: str) -> str:
    """Where the recipe's build finds a crate's files: the fetcher's directory, or the checkout."""
    if package.get("source"):
        return f"{UNPACKED}/{crate}"
    return f"{SOURCE}/{Path(package['manifest_path']).parent.relative_to(REPO)}"


def render(packages: list[dict]) -> str:
    expressions: dict[str, list[str]] = {}
    checksums: list[str] = []
    unlicensed: list[str] = []
    generic_text: dict[str, str] = {}
    for package in packages:
        crate = f"{package['name']}-{package['version']}"
        if not package.get("license"):
            raise SystemExit(f"crate-licences.py: {crate} declares no SPDX licence; add it to the expression by hand")
        expressions.setdefault(openembedded_expression(package["license"], crate), []).append(crate)
        files = licence_files(package)
        if not files:
            unlicensed.append(crate)
        crate_dir = Path(package["manifest_path"]).parent
        for f in files:
            md5 = hashlib.md5(f.read_bytes()).hexdigest()
            path = f"{unpacked_dir(package, crate)}/{f.relative_to(crate_dir)}"
            checksums.append(f"    file://{path};md5={md5} \\")
            for name in MAYBE_NOT_GENERIC & set(re.findall(r"[A-Za-z0-9.+_-]+", package["license"])):
                if package["license"].strip() == name:
                    generic_text.setdefault(name, path)

    lines = [
        "# Generated from cargo metadata by yocto/scripts/crate-licences.py; do not edit.",
        "# Regenerate after every Cargo.lock change (yocto/check.sh fails until then).",
        f"# {len(packages)} crates linked into the daemon; licence terms, each with how many crates use it:",
    ]
    for expression in sorted(expressions):
        lines.append(f"#   {len(expressions[expression]):4d}  {expression}")
    if unlicensed:
        lines.append("# Crates that ship no licence file (their licences' generic texts cover them):")
        lines += [f"#   {crate}" for crate in unlicensed]
    lines += ["", f'GLIMPSE_CRATES_LICENSE = "{" & ".join(sorted(expressions))}"', "", 'LIC_FILES_CHKSUM += "\\']
    lines += checksums + ['"', ""]
    for name, path in sorted(generic_text.items()):
        lines.append(f'NO_GENERIC_LICENSE[{name}] = "{path}"')
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = render(linked_packages(cargo_metadata()))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks of meta-glimpse that a parse cannot make, found in a review as defects:

1. glimpse's do_configure:append, run twice in the same CARGO_HOME (WORKDIR survives between
   AUTOREV builds), must leave exactly one [source.bitbake] table: cargo refuses two.
2. The daemon must bring what it needs at run time for TLS: ca-certificates (rustls verifies
   Pinecone and the bucket against the system store) and glib-networking (rtsps:// and https://
   cameras), in glimpse's own RDEPENDS.
3. No machine-arch leak: a recipe of the tune's architecture (glimpse) must not RDEPEND on one
   whose PACKAGE_ARCH is MACHINE_ARCH (packagegroup-glimpse): it would be rebuilt per machine.
   The image installs the packagegroup instead.
4. Build paths stay out of the binary: EXTRA_RUSTFLAGS remaps ${WORKDIR}.
5. The image's authorized_keys step, run on a scratch root file system, writes each key on its
   own line with the modes sshd demands, and writes nothing when no key is set.

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


def variable(recipe: str, name: str) -> list[str]:
    """The words of `NAME = "..."` (the first plain assignment), continuation lines joined."""
    match = re.search(rf'^{re.escape(name)} = "(.*?)"', recipe, re.S | re.M)
    return match.group(1).replace("\\", " ").split() if match else []


def machine_arch_recipes(layer: Path) -> dict[str, Path]:
    found = {}
    for recipe in layer.rglob("*.bb"):
        if re.search(r'^PACKAGE_ARCH = "\$\{MACHINE_ARCH\}"', recipe.read_text(), re.M):
            found[recipe.name.split("_")[0].removesuffix(".bb")] = recipe
    return found


def check_rdepends(layer: Path) -> list[str]:
    recipe = (layer / "recipes-glimpse/glimpse/glimpse_git.bb").read_text()
    rdepends = variable(recipe, "RDEPENDS:${PN}")
    problems = [f"glimpse does not RDEPEND on {p}" for p in ("ca-certificates", "glib-networking") if p not in rdepends]
    for name in sorted(set(rdepends) & set(machine_arch_recipes(layer))):
        problems.append(f"glimpse RDEPENDS on {name}, whose PACKAGE_ARCH is MACHINE_ARCH (machine-arch leak); install it from the image")
    image = (layer / "recipes-core/images/glimpse-image.bb").read_text()
    for name in machine_arch_recipes(layer):
        if name not in image:
            problems.append(f"glimpse-image does not install {name}")
    return problems


def check_remapped_paths(layer: Path) -> list[str]:
    recipe = (layer / "recipes-glimpse/glimpse/glimpse_git.bb").read_text()
    flags = " ".join(variable(recipe, "EXTRA_RUSTFLAGS"))
    return [] if "--remap-path-prefix=${WORKDIR}=" in flags else ["EXTRA_RUSTFLAGS does not remap ${WORKDIR}: build paths end up in the binary"]


def authorized_keys_after(layer: Path, keys: str) -> tuple[Path, subprocess.CompletedProcess] | None:
    image = (layer / "recipes-core/images/glimpse-image.bb").read_text()
    match = re.search(r"^glimpse_authorized_keys\(\) \{\n(.*?)^\}", image, re.S | re.M)
    if not match:
        return None
    rootfs = Path(tempfile.mkdtemp(prefix="glimpse-rootfs-"))
    script = match.group(1).replace("${IMAGE_ROOTFS}", str(rootfs)).replace("${ROOT_HOME}", "/root")
    script = script.replace("${GLIMPSE_SSH_AUTHORIZED_KEYS}", keys)
    return rootfs, subprocess.run(["sh", "-eu", "-c", script], capture_output=True, text=True)


def check_authorized_keys(layer: Path) -> list[str]:
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB one@laptop", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC two@desk"]
    done = authorized_keys_after(layer, "; ".join(keys))
    if done is None:
        return ["glimpse-image has no glimpse_authorized_keys()"]
    rootfs, run = done
    if run.returncode != 0:
        return [f"glimpse_authorized_keys failed: {run.stderr.strip()}"]
    problems = []
    written = rootfs / "root/.ssh/authorized_keys"
    if not written.exists() or written.read_text().splitlines() != keys:
        problems.append(f"authorized_keys holds {written.read_text() if written.exists() else 'nothing'!r}, expected one key per line")
    elif (written.stat().st_mode & 0o777, written.parent.stat().st_mode & 0o777) != (0o600, 0o700):
        problems.append("authorized_keys must be 0600 in a 0700 .ssh, or sshd ignores it")
    empty = authorized_keys_after(layer, "")
    if empty and (empty[0] / "root/.ssh").exists():
        problems.append("glimpse_authorized_keys writes .ssh although no key is set")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=Path, required=True)
    layer = parser.parse_args().layer
    problems = check_configure_twice(layer) + check_rdepends(layer) + check_remapped_paths(layer) + check_authorized_keys(layer)
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("ok: do_configure is idempotent; glimpse brings TLS without a machine-arch leak; build paths remapped; SSH keys installed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Parse meta-glimpse with bitbake's own parser, without poky, and check what a build relies on.

Uses the `bb` package that the bitbake-setup wheel ships. bitbake's parser is the same as in a
real build: unparsed lines, unclosed functions, bad includes and classes that cannot be
inherited are errors. Poky and meta-rust-bin are not here, so the classes this layer takes from
them are stubbed (EXTERNAL_CLASSES); any other inherit that resolves nowhere is an error.

On top of parsing, it checks the ties to the rest of the repository that a parse alone misses:
every crate:// entry has a sha256, file:// entries exist, the ${S}/... files the recipes install
exist in the repository, the in-repository LIC_FILES_CHKSUM matches, and the default
configuration uses the paths the unit and the models recipe use.

    parse-check.py [--layer DIR]       exit 0 when everything passes, 1 otherwise
"""

import argparse
import ast
import glob
import hashlib
import re
import sys
import tempfile
import tomllib
import types
from pathlib import Path

# The wheel ships bb without bitbake's hashserv package, which bb.siggen imports when it loads;
# parsing never calls it (the signature generator here is the no-op one).
for _name in ("hashserv", "hashserv.client"):
    sys.modules.setdefault(_name, types.ModuleType(_name))
sys.modules["hashserv"].client = sys.modules["hashserv.client"]

import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.parse  # noqa: E402
import bb.siggen  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Classes from other layers, stubbed because those layers are not checked out here. An inherit
# of anything else must resolve inside meta-glimpse.
EXTERNAL_CLASSES = {
    # openembedded-core (poky)
    "allarch": "openembedded-core",
    "core-image": "openembedded-core",
    "features_check": "openembedded-core",
    "packagegroup": "openembedded-core",
    "systemd": "openembedded-core",
    "useradd": "openembedded-core",
    # meta-rust-bin
    "cargo_bin": "meta-rust-bin",
}

# The recipes whose sources are this repository (S is the repository root).
SOURCES_FROM_REPO = {"glimpse"}

# What bitbake.conf would define and the checks below read, as bitbake.conf defines it.
BASE_VARS = {
    "PN": "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[0] or 'defaultpkgname'}",
    "PV": "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[1] or '1.0'}",
    "BPN": "${PN}",
    "THISDIR": "${@os.path.dirname(d.getVar('FILE'))}",
}

errors: list[str] = []


def error(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def base_datastore(layer: Path, stubs: Path):
    """The configuration a recipe is parsed against: layer.conf plus BASE_VARS."""
    d = bb.data.init()
    d.setVar("BBPATH", f"{layer}:{stubs}")
    d.setVar("__bbclasstype", "recipe")
    for name, value in BASE_VARS.items():
        d.setVar(name, value)
    # As bitbake's cooker reads a layer: LAYERDIR is set while layer.conf is parsed, then
    # expanded in place.
    d.setVar("LAYERDIR", str(layer))
    d.setVar("LAYERDIR_RE", re.escape(str(layer)))
    bb.parse.handle(str(layer / "conf" / "layer.conf"), d, 0)
    d.expandVarref("LAYERDIR")
    d.expandVarref("LAYERDIR_RE")
    d.delVar("LAYERDIR")
    d.delVar("LAYERDIR_RE")
    bb.parse.siggen = bb.siggen.init(d)
    return d


def check_layer_conf(d, layer: Path) -> list[Path]:
    """The layer's identity, and the recipes its BBFILES find (every .bb must be among them)."""
    where = "conf/layer.conf"
    collections = (d.getVar("BBFILE_COLLECTIONS") or "").split()
    if collections != ["glimpse"]:
        error(where, f"BBFILE_COLLECTIONS is {collections}, expected ['glimpse']")
    if "scarthgap" not in (d.getVar("LAYERSERIES_COMPAT_glimpse") or "").split():
        error(where, "LAYERSERIES_COMPAT_glimpse does not name scarthgap")
    if str(layer) not in (d.getVar("BBPATH") or "").split(":"):
        error(where, "BBPATH does not include the layer")
    found = set()
    for pattern in (d.getVar("BBFILES") or "").split():
        found.update(Path(p) for p in glob.glob(pattern))
    recipes = sorted(p for p in found if p.suffix == ".bb")
    for stray in sorted(set(layer.rglob("*.bb")) - set(recipes)):
        error(str(stray.relative_to(layer)), "not matched by BBFILES, so bitbake would never see it")
    return recipes


def parse(recipe: Path, base, extra: dict | None = None):
    d = bb.data.createCopy(base)
    for name, value in (extra or {}).items():
        d.setVar(name, value)
    return bb.parse.handle(str(recipe), d, 0)[""]


def lic_md5(path: Path, beginline: int, endline: int) -> str:
    """As insane.bbclass computes it."""
    if not beginline and not endline:
        return hashlib.md5(path.read_bytes()).hexdigest()
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno >= beginline:
                if lineno <= endline or not endline:
                    md5.update(line)
                else:
                    break
    return md5.hexdigest()


def check_recipe(recipe: Path, d, layer: Path) -> None:
    where = str(recipe.relative_to(layer))
    pn = d.getVar("PN")
    src_uri = (d.getVar("SRC_URI") or "").split()

    # Each crate needs a checksum (the fetcher's name for it is the ;name= parameter).
    crates = [u for u in src_uri if u.startswith("crate://")]
    for uri in crates:
        params = dict(p.split("=", 1) for p in uri.split(";")[1:] if "=" in p)
        name = params.get("name")
        if not name:
            error(where, f"{uri} has no ;name=")
        elif not re.fullmatch(r"[0-9a-f]{64}", d.getVarFlag("SRC_URI", f"{name}.sha256sum") or ""):
            error(where, f"{uri}: SRC_URI[{name}.sha256sum] is missing or not a sha256")

    # file:// entries are looked up next to the recipe, in files/ or ${BPN}/ (FILESPATH).
    for uri in src_uri:
        if uri.startswith("file://"):
            rel = uri[len("file://"):].split(";")[0]
            candidates = [recipe.parent / sub / rel for sub in ("files", pn, d.getVar("BPN") or pn)]
            if not any(c.exists() for c in candidates):
                error(where, f"{uri} not found in files/ or {pn}/ next to the recipe")

    # A function that lost its closing brace swallows the next one whole; bitbake only notices
    # when it is the last in the file. A function header inside a body gives it away.
    # Machine-specific parts count too: look at the functions as a Jetson build sees them.
    funcs = bb.data.createCopy(d)
    funcs.setVar("OVERRIDES", "tegra")
    header = bb.parse.parse_py.BBHandler.__func_start_regexp__
    for name in sorted({k.split(":")[0] for k in d.keys() if d.getVarFlag(k, "func", False)}):
        if d.getVarFlag(name, "python", False):
            continue
        for line in (funcs.getVar(name, False) or "").splitlines():
            if header.match(line.strip()):
                error(where, f"{name} contains '{line.strip()}': is a closing brace missing above it?")

    if pn not in SOURCES_FROM_REPO:
        return
    if len(crates) == 0:
        error(where, "no crate:// entries: is glimpse-crates.inc required?")

    # Files taken from ${S} (the repository) by the install steps and cargo.
    used = set()
    for func in ("do_install", "do_configure", "do_compile"):
        body = funcs.getVar(func, False) or ""
        used.update(re.findall(r"\$\{S\}/([\w./-]+)", body))
    manifest = d.getVar("CARGO_MANIFEST_PATH", False) or ""
    used.update(re.findall(r"\$\{S\}/([\w./-]+)", manifest))
    for rel in sorted(used):
        if not (REPO / rel).exists():
            error(where, f"uses ${{S}}/{rel}, which is not in the repository")

    check_licence_expression(where, d.getVar("LICENSE") or "")
    for entry in (d.getVar("LIC_FILES_CHKSUM") or "").split():
        if not entry.startswith("file://") or "${" in entry:
            continue
        rel, *params = entry[len("file://"):].split(";")
        params = dict(p.split("=", 1) for p in params)
        path = REPO / rel
        if not path.exists():
            error(where, f"LIC_FILES_CHKSUM names {rel}, which is not in the repository")
            continue
        actual = lic_md5(path, int(params.get("beginline", 0)), int(params.get("endline", 0)))
        if params.get("md5") != actual:
            error(where, f"LIC_FILES_CHKSUM for {rel} has md5={params.get('md5')}, the file gives {actual}: has the licence changed?")


def check_licence_expression(where: str, licence: str) -> None:
    """LICENSE in OpenEmbedded's grammar (oe.license): names joined by & and |, with parentheses."""
    names = re.findall(r"[A-Za-z0-9.+_-]+", licence)
    if not names:
        error(where, "LICENSE is empty")
        return
    if any(name in ("AND", "OR", "WITH") for name in names):
        error(where, f"LICENSE uses SPDX operators, which OpenEmbedded does not read: {licence}")
    shape = re.sub(r"[A-Za-z0-9.+_-]+", "x", licence)
    try:
        ast.parse(shape, mode="eval")
    except SyntaxError:
        error(where, f"LICENSE is not a valid expression (names joined by & and |): {licence}")


def check_decoder_choice(recipe: Path, base, where: str) -> None:
    """GLIMPSE_DECODERS selects the decoder packages, per machine; a misspelt choice stops the parse."""
    expected = {
        ("hardware libav", ""): {"gstreamer1.0-libav"},
        ("hardware", ""): set(),
        ("hardware openh264", ""): {"gstreamer1.0-plugins-bad-openh264"},
        ("hardware libav", "tegra"): {"gstreamer1.0-libav", "gstreamer1.0-plugins-nvvideo4linux2"},
        ("libav", "tegra"): {"gstreamer1.0-libav"},
    }
    decoders = {"gstreamer1.0-libav", "gstreamer1.0-plugins-bad-openh264", "gstreamer1.0-plugins-nvvideo4linux2"}
    for (choice, machine), wanted in expected.items():
        d = parse(recipe, base, {"GLIMPSE_DECODERS": choice, "OVERRIDES": machine})
        got = set((d.getVar(f"RDEPENDS:{d.getVar('PN')}") or "").split()) & decoders
        if got != wanted:
            error(where, f"GLIMPSE_DECODERS = {choice!r} on {machine or 'a generic machine'} installs {sorted(got)}, expected {sorted(wanted)}")
    try:
        parse(recipe, base, {"GLIMPSE_DECODERS": "hardwre"})
        error(where, "a misspelt GLIMPSE_DECODERS is accepted")
    except Exception:  # bb.fatal raises bb.BBHandledException from the anonymous function
        pass


def check_inference_choice(recipe: Path, base, where: str) -> None:
    """GLIMPSE_INFERENCE = onnxruntime installs ONNX Runtime's package; tract installs none; a typo stops."""
    for choice, package, wanted in (("tract", None, set()), ("onnxruntime", None, {"onnxruntime"}),
                                    ("onnxruntime", "onnxruntime-gpu", {"onnxruntime-gpu"})):
        extra = {"GLIMPSE_INFERENCE": choice} | ({"GLIMPSE_ONNXRUNTIME_PACKAGE": package} if package else {})
        d = parse(recipe, base, extra)
        got = set((d.getVar(f"RDEPENDS:{d.getVar('PN')}") or "").split()) & {"onnxruntime", "onnxruntime-gpu"}
        if got != wanted:
            error(where, f"GLIMPSE_INFERENCE = {choice!r} (package {package}) installs {sorted(got)}, expected {sorted(wanted)}")
    try:
        parse(recipe, base, {"GLIMPSE_INFERENCE": "onnx"})
        error(where, "a misspelt GLIMPSE_INFERENCE is accepted")
    except Exception:
        pass


def check_default_config(layer: Path) -> None:
    """The image's glimpse.toml against the unit and the models recipe."""
    where = "recipes-glimpse/glimpse/files/glimpse.toml"
    path = layer / where
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        error(where, f"not valid TOML: {e}")
        return
    unit = (REPO / "systemd" / "glimpse.service").read_text()
    if "StateDirectory=glimpse" in unit and config.get("device", {}).get("data_dir") != "/var/lib/glimpse":
        error(where, "device.data_dir is not /var/lib/glimpse, the unit's StateDirectory (the only writable path)")
    models = "/usr/share/glimpse/models"
    for section, name in (("detector", "detr.onnx"), ("embedder", "clip_vision.onnx")):
        if config.get(section, {}).get("model") != f"{models}/{name}":
            error(where, f"{section}.model is not {models}/{name}, where glimpse-models installs it")
    for credential in ("pinecone-api-key", "mqtt-password"):
        if f"LoadCredential={credential}:/etc/glimpse/credentials/{credential}" not in unit:
            error("systemd/glimpse.service", f"no LoadCredential= for {credential} from /etc/glimpse/credentials, where the recipe installs it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=Path, default=REPO / "yocto" / "meta-glimpse")
    args = parser.parse_args()
    layer = args.layer.resolve()

    with tempfile.TemporaryDirectory(prefix="glimpse-parse-") as tmp:
        stubs = Path(tmp)
        (stubs / "classes").mkdir()
        for name, origin in EXTERNAL_CLASSES.items():
            (stubs / "classes" / f"{name}.bbclass").write_text(f"# stub for {origin}'s {name}.bbclass\n")

        try:
            base = base_datastore(layer, stubs)
        except bb.parse.ParseError as e:
            print(f"FAIL conf/layer.conf: {e}")
            return 1
        recipes = check_layer_conf(base, layer)
        if not recipes:
            error("conf/layer.conf", "BBFILES finds no recipes")

        for recipe in recipes:
            where = str(recipe.relative_to(layer))
            try:
                d = parse(recipe, base)
                # A recipe may skip itself until configured (glimpse-models): parse it
                # configured as well, so that its whole body is checked.
                skipped = d.getVar("__SKIPPED")
                if skipped:
                    print(f"note {where}: skipped when unconfigured: {skipped}")
                    d = parse(recipe, base, {
                        "GLIMPSE_MODELS_URI": "https://models.example.net/glimpse",
                        "GLIMPSE_DETR_SHA256": "0" * 64,
                        "GLIMPSE_CLIP_SHA256": "0" * 64,
                    })
                    if d.getVar("__SKIPPED"):
                        error(where, f"still skipped when configured: {d.getVar('__SKIPPED')}")
                        continue
            except bb.parse.ParseError as e:
                text = str(e)
                error(where, f"does not parse: {text[:400]}{' ...' if len(text) > 400 else ''}")
                continue
            except Exception as e:  # bitbake raises plain exceptions for some syntax errors
                error(where, f"does not parse: {type(e).__name__}: {e}")
                continue
            inherited = sorted({Path(c).stem for c in d.getVar("__inherit_cache", False) or []})
            print(f"ok   {where} (PN {d.getVar('PN')}, inherits {', '.join(inherited) or 'nothing'})")
            check_recipe(recipe, d, layer)
            if d.getVar("PN") == "packagegroup-glimpse":
                check_decoder_choice(recipe, base, where)
                check_inference_choice(recipe, base, where)

        check_default_config(layer)

    for e in errors:
        print(f"FAIL {e}")
    if errors:
        print(f"parse check: {len(errors)} problem(s)")
        return 1
    print(f"parse check: {len(recipes)} recipes parse; stubbed external classes: {', '.join(sorted(EXTERNAL_CLASSES))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

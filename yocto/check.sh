#!/usr/bin/env bash
# Checks for meta-glimpse that need neither poky nor a build: oelint-adv, a parse of every recipe
# with bitbake's own parser, the kas files with kas, glimpse-crates.inc against Cargo.lock and
# glimpse-licences.inc against the crates linked into the daemon (cargo metadata).
# Runs them all, then exits 1 if any failed.
#
#   yocto/check.sh
#   GLIMPSE_YOCTO_VENV=/path/to/venv yocto/check.sh   (default: $TMPDIR/glimpse-yocto-venv)
#
# Needs python3 >= 3.11 and PyPI; the venv is created once and reused while
# yocto/requirements.txt is unchanged.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
layer="$here/meta-glimpse"
venv="${GLIMPSE_YOCTO_VENV:-${TMPDIR:-/tmp}/glimpse-yocto-venv}"
requirements="$here/requirements.txt"

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "check.sh: needs python3 >= 3.11 (tomllib), found $(python3 --version 2>&1)" >&2
    exit 1
}

# --- the venv ------------------------------------------------------------------------------
stamp="$venv/.glimpse-requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    echo "== installing checkers into $venv"
    if [ ! -x "$venv/bin/python" ]; then
        # Debian ships ensurepip separately (python3-venv); without it, make the venv without
        # pip and install into it with the system pip.
        python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; python3 -m venv --without-pip "$venv"; } || {
            echo "check.sh: cannot create a venv at $venv" >&2
            exit 1
        }
    fi
    if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        pip=("$venv/bin/python" -m pip)
    else
        pip=(python3 -m pip --python "$venv/bin/python")
    fi
    "${pip[@]}" install --quiet --disable-pip-version-check -r "$requirements" || {
        echo "check.sh: pip install -r $requirements failed" >&2
        exit 1
    }
    cp "$requirements" "$stamp"
fi

failed=()

# --- 1. oelint-adv -------------------------------------------------------------------------
echo "== oelint-adv $("$venv/bin/oelint-adv" --version 2>/dev/null | awk '{print $NF}') --release scarthgap"
mapfile -t lintable < <(cd "$here" && find meta-glimpse -type f \
    \( -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' -o -name '*.inc' -o -name '*.conf' \) | sort)
# oelint-constants.json tells oelint about meta-rust-bin's variables and meta-tegra's "tegra"
# override, which its bundled data lacks; the few suppressions are inline, each with its reason.
if (cd "$here" && "$venv/bin/oelint-adv" --release scarthgap --quiet --relpaths \
        --constantmods=+oelint-constants.json "${lintable[@]}" 2>&1); then
    echo "clean: ${#lintable[@]} files"
else
    failed+=("oelint-adv (findings above)")
fi

# --- 2. parse check ------------------------------------------------------------------------
echo "== parse check (bitbake's parser from bitbake-setup $("$venv/bin/python" -c 'import bb; print(bb.__version__)' 2>/dev/null))"
"$venv/bin/python" "$here/scripts/parse-check.py" --layer "$layer" || failed+=("parse check (FAIL lines above)")

# --- 3. kas files ---------------------------------------------------------------------------
echo "== kas files (kas $("$venv/bin/python" -c 'import kas; print(kas.__version__)'))"
"$venv/bin/python" "$here/scripts/kas-check.py" 2>&1 || failed+=("kas files (FAIL lines above)")

# --- 3b. what a parse cannot see ------------------------------------------------------------
echo "== recipe behaviour (do_configure twice, run-time TLS, machine-arch leak, path remapping, SSH keys)"
"$venv/bin/python" "$here/scripts/recipe-behaviour.py" --layer "$layer" || failed+=("recipe behaviour (FAIL lines above)")

# --- 4. crates against Cargo.lock ----------------------------------------------------------
echo "== glimpse-crates.inc against Cargo.lock"
inc="$layer/recipes-glimpse/glimpse/glimpse-crates.inc"
fresh="$(mktemp)"
trap 'rm -f "$fresh"' EXIT
if "$venv/bin/python" "$here/scripts/crates-inc.py" --lock "$repo/Cargo.lock" --out "$fresh"; then
    if diff -u "$inc" "$fresh" >/dev/null; then
        echo "up to date: $(grep -c '^    crate://' "$inc") crates"
    else
        diff -u --label "glimpse-crates.inc (committed)" --label "from Cargo.lock" "$inc" "$fresh" | grep '^[-+]  *crate://' | head -20
        echo "glimpse-crates.inc does not match Cargo.lock; regenerate it with:"
        echo "    python3 yocto/scripts/crates-inc.py --out yocto/meta-glimpse/recipes-glimpse/glimpse/glimpse-crates.inc"
        failed+=("glimpse-crates.inc is stale")
    fi
else
    failed+=("crates-inc.py could not read Cargo.lock")
fi

# --- 5. crate licences against cargo metadata ---------------------------------------------
echo "== glimpse-licences.inc against cargo metadata"
licences="$layer/recipes-glimpse/glimpse/glimpse-licences.inc"
fresh_licences="$(mktemp)"
trap 'rm -f "$fresh" "$fresh_licences"' EXIT
if "$venv/bin/python" "$here/scripts/crate-licences.py" --out "$fresh_licences"; then
    if diff -u "$licences" "$fresh_licences" >/dev/null; then
        echo "up to date: $(grep -c '^    file://' "$licences") licence files, $(grep -o '^# [0-9]* crates' "$licences" | tr -d '#')"
    else
        diff -u --label "glimpse-licences.inc (committed)" --label "from cargo metadata" "$licences" "$fresh_licences" | grep '^[-+][^-+]' | head -20
        echo "glimpse-licences.inc does not match the crates linked into the daemon; regenerate it with:"
        echo "    python3 yocto/scripts/crate-licences.py --out yocto/meta-glimpse/recipes-glimpse/glimpse/glimpse-licences.inc"
        failed+=("glimpse-licences.inc is stale")
    fi
else
    failed+=("crate-licences.py could not read cargo metadata")
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
    printf 'yocto/check.sh: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "yocto/check.sh: all checks passed"

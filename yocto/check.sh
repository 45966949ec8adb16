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

# --- 4, 5. generated files against what they are generated from ----------------------------
# check_generated WHAT FILE COMMAND...: COMMAND --out writes FILE afresh; it must equal FILE.
check_generated() {
    local what="$1" file="$2" fresh
    shift 2
    fresh="$(mktemp)"
    if ! "$venv/bin/python" "$@" --out "$fresh"; then
        failed+=("$(basename "$file"): $what could not be read")
    elif diff -u "$file" "$fresh" >/dev/null; then
        echo "up to date: $(basename "$file")"
    else
        diff -u --label "$(basename "$file") (committed)" --label "from $what" "$file" "$fresh" | grep '^[-+][^-+]' | head -20
        echo "$(basename "$file") does not match $what; regenerate it with:"
        echo "    python3 ${*#"$repo/"} --out ${file#"$repo/"}"
        failed+=("$(basename "$file") is stale")
    fi
    rm -f "$fresh"
}

echo "== glimpse-crates.inc against Cargo.lock"
check_generated "Cargo.lock" "$layer/recipes-glimpse/glimpse/glimpse-crates.inc" "$here/scripts/crates-inc.py" --lock "$repo/Cargo.lock"
echo "== glimpse-licences.inc against the crates linked into the daemon (cargo metadata)"
check_generated "cargo metadata" "$layer/recipes-glimpse/glimpse/glimpse-licences.inc" "$here/scripts/crate-licences.py"

echo
if [ ${#failed[@]} -gt 0 ]; then
    printf 'yocto/check.sh: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "yocto/check.sh: all checks passed"

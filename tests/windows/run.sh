#!/usr/bin/env bash
# `make test-windows`: the engine built for Windows (x86_64-pc-windows-gnu) and tested under Wine:
# its Rust tests, then live tests driven from Linux against the engine running under Wine
# (tests/windows/wine_live.py). Installs what it needs (Debian's wine + mingw, the Rust target). Where
# that cannot be installed it says so loudly and exits 0: best effort, never a silent pass.
# What Wine can and cannot show: docs/design.md, "Windows".
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=x86_64-pc-windows-gnu
skip() {
    printf '\n!!!!! WINDOWS TESTS SKIPPED: %s !!!!!\n\n' "$1" >&2
    exit 0
}

if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        wine wine64 gcc-mingw-w64-x86-64 >/dev/null; } || skip "wine or mingw cannot be installed"
fi
rustup target list --installed | grep -qx "$TARGET" || timeout 300 rustup target add "$TARGET" >/dev/null \
    || skip "the Rust target $TARGET cannot be installed"

# abi3 links python3.dll into every binary: generate-import-lib makes the import library.
FEATURES=(--features pyo3/generate-import-lib)
cargo clippy --quiet --target "$TARGET" "${FEATURES[@]}" --all-targets -- -D warnings
cargo test --quiet --target "$TARGET" "${FEATURES[@]}" --no-run
cargo build --quiet --target "$TARGET" "${FEATURES[@]}" --example engine --example holder

OUT=target/$TARGET/wine
mkdir -p "$OUT"
def=$(ls -t target/$TARGET/debug/build/pyo3-ffi-*/out/lib/python3.def | head -1)
{
    echo "LIBRARY python3.dll"
    echo "EXPORTS"
    awk 'NR > 2 && NF { if ($2 == "DATA") print "    " $1 "=python_data DATA"; else print "    " $1 "=python_missing" }' "$def"
} > "$OUT/python3.def"
x86_64-w64-mingw32-gcc -shared -O2 -o "$OUT/python3.dll" tests/windows/python3.c "$OUT/python3.def"
x86_64-w64-mingw32-gcc -shared -O2 -o "$OUT/bcryptprimitives.dll" tests/windows/bcryptprimitives.c -ladvapi32

export WINEPREFIX=$PWD/$OUT/prefix WINEDEBUG=-all
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
    wineboot -i >/dev/null 2>&1 || true
    wineserver -w || true
fi
cp "$OUT/python3.dll" "$OUT/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"

# One wineserver for the whole run: no test's process starts while the last one's server winds down.
wineserver -p
trap 'wineserver -k || true' EXIT
echo "== the engine's Rust tests, under $(wine --version)"
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine cargo test --quiet --target "$TARGET" "${FEATURES[@]}"

echo "== live engine tests under Wine"
SOFTCOPY_WINE_BIN=$PWD/target/$TARGET/debug/examples ${PYTHON:-python3} -m pytest -q -p no:cacheprovider --basetemp="${TMPDIR:-/tmp}/softcopy-wine-$$" tests/windows/wine_live.py

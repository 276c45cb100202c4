#!/usr/bin/env bash
# mutmut over the Python layer's decision code with the fast tests only (docs/mutants.md, "Python").
#
# mutmut names a mutant by its file's path and finds the mutated package only under ./ or src/, so
# the run is laid out in target/mutants-py as src/softcopy (the package, with its built engine),
# tests/, benches/ and pyproject.toml, whose [tool.mutmut] says what is mutated and which tests run.
# mutmut is pinned and installed in a venv of its own (it wants a newer click than softcopy's).
# Usage: tests/mutants_py.sh [MUTANT_GLOB ...]   (default: every decision function, DECISIONS below)
#        MUTANTS_PY_TESTS_AT=COMMIT tests/mutants_py.sh   (the score of that commit's tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MUTMUT_VERSION=3.8.1
venv=target/mutmut-venv
stage=target/mutants-py

# The decision code: validation (config), which files are metadata or chunks (zarr), the webhook's
# queue and retries (notify), and the service's pure decisions; not presentation.
DECISIONS=(
    "softcopy.config.*"
    "softcopy.zarr.*"
    "softcopy.notify.*"
    "softcopy.service.x_report_file__mutmut_*"
    "softcopy.service.x__stopped_report_of__mutmut_*"
    "softcopy.service.x__status__mutmut_*"
    "softcopy.service.xǁServiceǁ_destination__mutmut_*"
    "softcopy.service.xǁServiceǁ_failed_start__mutmut_*"
    "softcopy.service.xǁServiceǁ_forget__mutmut_*"
)
(($#)) || set -- "${DECISIONS[@]}"

if ! "$venv/bin/mutmut" --version 2>/dev/null | grep -q "$MUTMUT_VERSION"; then
    "$PYTHON" -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "mutmut==$MUTMUT_VERSION"
fi
[ -e python/softcopy/_softcopy.abi3.so ] || { echo "mutants-py: build the engine first (make install)" >&2; exit 2; }

rm -rf "$stage"
mkdir -p "$stage/src" "$stage/benches"
cp -r python/softcopy "$stage/src/"
if [ -n "${MUTANTS_PY_TESTS_AT:-}" ]; then
    # The tests as they were at that commit (the "before" of docs/mutants.md); a test file named
    # in [tool.mutmut] that it lacks is laid empty.
    git archive "$MUTANTS_PY_TESTS_AT" tests | tar -x -C "$stage"
    touch "$stage"/tests/test_{config,notify,zarr,patterns,decisions}.py
else
    cp -r tests "$stage/"
fi
cp benches/_share.py "$stage/benches/"
cp pyproject.toml "$stage/"
cd "$stage"
# mutmut's own sys.path puts mutants/src first; the project's editable install must not come before it.
export PYTHONPATH=
"../../$venv/bin/mutmut" run --max-children "${MUTMUT_JOBS:-1}" "$@"
# The score over what was asked for: every result of the mutants named, survivors listed.
"../../$venv/bin/mutmut" results --all true >results.txt
"../../$venv/bin/python" - "$@" <<'PY'
import fnmatch, sys
from collections import Counter
globs = sys.argv[1:]
rows = [line.strip().rsplit(": ", 1) for line in open("results.txt") if ": " in line]
rows = [(k, v) for k, v in rows if any(fnmatch.fnmatch(k, g) for g in globs)]
count = Counter(v for _, v in rows)
caught = count["killed"] + count["timeout"]
print(f"mutants-py: {caught} of {len(rows)} caught ({dict(count)})")
for k, v in rows:
    if v not in ("killed", "timeout"):
        print(f"    {v}: {k}")
PY

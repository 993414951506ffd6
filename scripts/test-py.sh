#!/usr/bin/env bash
# Tests of the Python package bms-py: builds the wheel with maturin into a virtual
# environment, then runs pytest (bms-py/tests), mypy's stubtest and the example
# bms-py/examples/train_and_export.py.
#
#   ./scripts/test-py.sh            (from anywhere)
#
# The venv is $BMS_VENV (default .venv in the repository root); it is created if missing
# and (re)installed from bms-py/requirements-test.txt when that file changes. A second
# venv, $BMS_MIN_VENV (default .venv-min), holds the oldest numpy/pandas/pyarrow the
# package declares (bms-py/requirements-min.txt) and runs the suite again. The wheel is
# built with the dev profile in $CARGO_TARGET_DIR (bms-core is optimised there anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${BMS_VENV:-$ROOT/.venv}"
MIN_VENV="${BMS_MIN_VENV:-$ROOT/.venv-min}"

# ensure_venv DIR REQUIREMENTS: creates the venv if missing and (re)installs the pinned
# requirements when the file's hash differs from the one recorded at the last install.
ensure_venv() {
  local venv="$1" req="$2"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating venv $venv"
    python3 -m venv "$venv"
  fi
  local stamp="$venv/.bms-py-requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing $(basename "$req") into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
}
ensure_venv "$VENV" "$ROOT/bms-py/requirements-test.txt"

echo "== building the bms command line (parity tests compare with it)"
BMS_BIN="$(cargo build --bin bms --locked --message-format=json-render-diagnostics \
  | "$VENV/bin/python" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bms":
        print(m["executable"])')"
export BMS_BIN
echo "   $BMS_BIN"

echo "== building and installing the wheel (maturin, dev profile)"
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
"$VENV/bin/maturin" build --quiet --locked --profile dev -m bms-py/Cargo.toml \
  -i "$VENV/bin/python" -o "$WHEELS"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
  --no-deps "$WHEELS"/bms_py-*.whl

# Run from outside the source tree so that `import bms` is the installed wheel.
cd "$WHEELS"
echo "== stubtest"
"$VENV/bin/python" -m mypy.stubtest bms
echo "== example: bms-py/examples/train_and_export.py"
"$VENV/bin/python" "$ROOT/bms-py/examples/train_and_export.py" --out "$WHEELS/example"
echo "== pytest bms-py/tests"
"$VENV/bin/python" -m pytest -p no:cacheprovider -q "$ROOT/bms-py/tests"

# The oldest numpy/pandas/pyarrow that pyproject.toml accepts, same wheel, same tests
# except test_model.py (its exporters and reference runtimes need current numpy) and
# test_arrow_inputs.py (polars and DuckDB; the PyCapsule import needs pyarrow >= 14), and
# the scikit-learn comparison of test_evaluate.py (scikit-learn is not in that venv).
ensure_venv "$MIN_VENV" "$ROOT/bms-py/requirements-min.txt"
"$MIN_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
  --no-deps "$WHEELS"/bms_py-*.whl
echo "== pytest bms-py/tests with $("$MIN_VENV/bin/python" -c 'import numpy, pandas, pyarrow; print(f"numpy {numpy.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}")')"
"$MIN_VENV/bin/python" -m pytest -p no:cacheprovider -q "$ROOT/bms-py/tests" \
  --ignore="$ROOT/bms-py/tests/test_model.py" \
  --ignore="$ROOT/bms-py/tests/test_arrow_inputs.py" \
  -k "not test_window_metrics_equal_scikit_learn"

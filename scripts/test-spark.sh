#!/usr/bin/env bash
# Tests of bms.spark (the pipeline on Apache Spark, issue 17): pyspark local[2] in a venv
# of its own, the same wheel as scripts/test-py.sh, compared with the bms command line.
#
#   ./scripts/test-spark.sh            (from anywhere)
#
# The venv is $BMS_SPARK_VENV (default .venv-spark in the repository root), installed from
# bms-py/requirements-spark.txt (pandas 2.3: pyspark's Arrow UDFs warn on pandas 3). Spark
# needs Java 17: $JAVA_HOME, else the Debian OpenJDK 17, installed with apt-get when
# missing and we are root; otherwise the script fails (it never skips).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${BMS_SPARK_VENV:-$ROOT/.venv-spark}"
REQ="$ROOT/bms-py/requirements-spark.txt"

if [ -z "${JAVA_HOME:-}" ] || [ ! -x "${JAVA_HOME}/bin/java" ]; then
  JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
  if [ ! -x "$JAVA_HOME/bin/java" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "== installing openjdk-17-jre-headless (Spark needs Java)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
    fi
    if [ ! -x "$JAVA_HOME/bin/java" ]; then
      echo "test-spark.sh: no Java 17 at $JAVA_HOME and it could not be installed;" \
        "install openjdk-17-jre-headless or set JAVA_HOME" >&2
      exit 1
    fi
  fi
fi
export JAVA_HOME

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.bms-py-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing $(basename "$REQ") into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$stamp"
fi

echo "== building the bms command line (the tests compare with it)"
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

# Workers run this interpreter (it has bms, pyarrow and pandas 2.3).
export PYSPARK_PYTHON="$VENV/bin/python"
export PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
cd "$WHEELS"
echo "== example: examples/spark/score_fleet.py"
"$VENV/bin/python" "$ROOT/examples/spark/score_fleet.py" --work "$WHEELS/example" \
  --model "$ROOT/models/consistency-ref14x6.onnx"
echo "== pytest bms-py/tests-spark (local[2])"
"$VENV/bin/python" -m pytest -p no:cacheprovider -q "$ROOT/bms-py/tests-spark"

#!/usr/bin/env bash
# Tests of deploy/ (issue 16 §5), run last by scripts/test-aws.sh:
#
# 1. deploy/template.yaml: cfn-lint with zero findings (informational ones included); the
#    SAM transform of it (what CloudFormation applies), cfn-lint again on the result (so
#    that a circular dependency through the bucket's notification shows), and the
#    function's contract on it (deploy/check_template.py: runtime, environment,
#    notification filter, routes, table key, exactly the IAM grants bms-lambda needs).
# 2. deploy/athena/*.sql: a simulated fleet scored by `bms predict --out DIR --partition-by
#    date`, then deploy/athena/check.py: the DDL's columns against the Parquet schema
#    DuckDB reads, and each analyst query, run by DuckDB, against the same figures
#    computed from the run's events.jsonl. Again on a batch with tied probabilities.
#
#   ./deploy/test.sh            (from anywhere)
#
# Python packages (cfn-lint, aws-sam-translator, duckdb) come from the venv $BMS_AWS_VENV
# (default .venv-aws in the repository root), installed from bms-aws/requirements-test.txt
# when that file changes (scripts/aws-venv.sh, as for scripts/test-aws.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${BMS_AWS_VENV:-$ROOT/.venv-aws}"

"$ROOT/scripts/aws-venv.sh" "$VENV"
PY="$VENV/bin/python"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "== cfn-lint deploy/template.yaml ($("$VENV/bin/cfn-lint" --version))"
"$VENV/bin/cfn-lint" --include-checks I -- deploy/template.yaml
echo "== deploy/template.yaml through the SAM transform: cfn-lint and the function's contract"
"$PY" deploy/check_template.py deploy/template.yaml "$TMP/template.json"
"$VENV/bin/cfn-lint" --include-checks I -- "$TMP/template.json"

echo "== deploy/athena: bms predict --partition-by date on a simulated fleet, the SQL on DuckDB"
cargo build --locked --quiet --bin bms
target="$(cargo metadata --locked --format-version 1 --no-deps |
  "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BMS="$target/debug/bms"
MODEL="$ROOT/models/consistency-ref14x6.onnx"
"$BMS" simulate --vehicles 40 --days 75 --seed 16 --weak-fraction 0.25 \
  --daily "$TMP/daily.csv" --truth "$TMP/truth.csv"
"$BMS" predict -m "$MODEL" -i "$TMP/daily.csv" --out "$TMP/daily-run" --partition-by date
"$PY" deploy/athena/check.py "$TMP/daily-run"
"$PY" deploy/athena/batch_with_ties.py "$TMP/daily-run" "$TMP/ties.csv"
"$BMS" predict -m "$MODEL" -i "$TMP/ties.csv" --out "$TMP/ties-run" --partition-by date
"$PY" deploy/athena/check.py "$TMP/ties-run" --ties

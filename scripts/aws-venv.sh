#!/usr/bin/env bash
# Makes the venv of the AWS tests ($1, default .venv-aws in the repository root) and
# installs bms-aws/requirements-test.txt into it (moto, cfn-lint, the SAM translator,
# duckdb) when that file changed since the last install. Used by scripts/test-aws.sh and
# deploy/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-aws}"
REQ="$ROOT/bms-aws/requirements-test.txt"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.bms-aws-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing $(basename "$REQ") into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$stamp"
fi

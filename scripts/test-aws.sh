#!/usr/bin/env bash
# Tests of bms-aws (issue 16): the S3 objects, the DynamoDB results table and the
# bucket-event handler, against a moto server (S3 + DynamoDB + SQS on one loopback port)
# that each test starts on a random port and stops.
#
#   ./scripts/test-aws.sh            (from anywhere)
#
# moto lives in the venv $BMS_AWS_VENV (default .venv-aws in the repository root),
# installed from bms-aws/requirements-test.txt when that file changes. bms-aws is left
# out of `cargo test --workspace` (scripts/test.sh) and tested here, where moto is known
# to be present: its tests fail, not skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${BMS_AWS_VENV:-$ROOT/.venv-aws}"

"$ROOT/scripts/aws-venv.sh" "$VENV"

export MOTO_SERVER="$VENV/bin/moto_server"
cargo test -p bms-aws --all-targets --locked
cargo test -p bms-aws --doc --locked
BMS_AWS_VENV="$VENV" "$ROOT/deploy/test.sh"

#!/usr/bin/env bash
# The short version of benches/soak.py in CI: `bms serve` (the debug binary the tests
# built) for 8 s at 64 connections of valid and garbage bodies, with slow, disconnecting
# and oversized-header clients and a /ping probe. The full soak is not in CI:
#   cargo build --release --bin bms && python3 benches/soak.py --seconds 120
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  echo "== installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
command -v wrk >/dev/null || { echo "soak-short: wrk could not be installed" >&2; exit 1; }
bin="${CARGO_TARGET_DIR:-target}/debug/bms"
[[ -x "$bin" ]] || cargo build --locked --bin bms
python3 benches/soak.py --bms "$bin" --seconds 8 --connections 64

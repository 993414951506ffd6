#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration, CLI end-to-end),
# the Python package, the C library and bms.spark on a local Spark.
# Usage: ./scripts/test.sh      (from anywhere; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-chromium.sh   # headless Chromium for tests/report.rs (skips cleanly without it)
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
./scripts/test-py.sh
./scripts/test-c.sh
./scripts/test-spark.sh

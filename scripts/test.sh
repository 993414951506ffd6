#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration, CLI end-to-end),
# the Python package (the development build and the release wheel), the C library, the
# serving container (without a container engine), bms.spark on a local Spark, and bms-aws
# against a local moto server.
# Usage: ./scripts/test.sh      (from anywhere; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-chromium.sh   # headless Chromium for tests/report.rs (skips cleanly without it)
# bms-aws needs a moto server: scripts/test-aws.sh installs it and runs its tests.
cargo test --workspace --exclude bms-aws --all-targets --locked
cargo test --workspace --exclude bms-aws --doc --locked
# The lean build (no graph engine): the model fixtures' goldens and the C library's
# tests on the lean interpreter (tests/lean.rs compares both engines in the full build).
cargo test -p bms-core --no-default-features --test model --locked
cargo test -p bms-ffi --no-default-features --locked
./scripts/test-py.sh
./scripts/test-wheel.sh       # the release wheel (manylinux, from the sdist) in a fresh venv without Rust
./scripts/test-c.sh
./scripts/test-container.sh   # on the debug bms binary that the steps above built
./scripts/soak-short.sh       # bms serve under valid, garbage and abusive clients (8 s)
./scripts/test-spark.sh
./scripts/test-aws.sh

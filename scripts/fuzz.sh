#!/usr/bin/env bash
# Fuzzes every parser of the project (the targets in fuzz/fuzz_targets/) for a bounded
# time each, on a copy of the committed seed corpus, and fails naming the target and the
# crash artefact on any crash, panic, failed property, timeout or out-of-memory.
#
#   BMS_FUZZ_SECONDS      seconds per target (default 30)
#   BMS_FUZZ_TARGETS      space-separated targets to run (default: all)
#   BMS_FUZZ_SANITIZER    address (default) or none
#   BMS_FUZZ_TARGET_DIR   cargo's target dir for the fuzz build (default /var/cache/bms-ci/fuzz-build)
#   BMS_TOOLS             where cargo-fuzz is installed (default /var/cache/bms-ci/tools)
#
# How cargo-fuzz runs here (checked with cargo-fuzz 0.13.2 and rustc 1.95.0 stable): it
# needs nightly-only flags (-Zsanitizer, -Cpasses=sancov-module), and the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, so CI needs no nightly toolchain.
# AddressSanitizer works that way (the default); `BMS_FUZZ_SANITIZER=none` is there for a
# machine where it does not.
#
# Artefacts of a failure are kept under fuzz/artifacts/<target>/ (ignored by git); replay
# one with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`
# from the repository root (README, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds="${BMS_FUZZ_SECONDS:-30}"
sanitizer="${BMS_FUZZ_SANITIZER:-address}"
target_dir="${BMS_FUZZ_TARGET_DIR:-/var/cache/bms-ci/fuzz-build}"
tools="${BMS_TOOLS:-/var/cache/bms-ci/tools}"
cargo_fuzz_version=0.13.2

export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0
export PATH="$tools/bin:$PATH"
# Two cores are shared with other builds.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  echo "== installing cargo-fuzz $cargo_fuzz_version into $tools"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$tools"
fi

# The largest input each target is given: text formats are a few lines; Parquet files and
# models are binary containers whose interesting cases (footers, dictionary pages, graphs)
# need room.
max_len() {
  case "$1" in
    frames_parquet | daily_parquet | model_onnx) echo 1048576 ;;
    *) echo 65536 ;;
  esac
}

start=$(date +%s)
echo "== cargo fuzz build (sanitizer $sanitizer)"
cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer" --target-dir "$target_dir"
built=$(date +%s)
echo "   built in $((built - start)) s"

bin_dir="$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release"
targets="${BMS_FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}"
work=$(mktemp -d "${TMPDIR:-/tmp}/bms-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for t in $targets; do
  if [ ! -d "fuzz/corpus/$t" ]; then
    echo "fuzz target $t has no seed corpus in fuzz/corpus/$t" >&2
    failed+=("$t")
    continue
  fi
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts" "$work/$t/tmp"
  cp -R "fuzz/corpus/$t/." "$work/$t/corpus/"
  t0=$(date +%s)
  rc=0
  # TMPDIR: the Parquet targets write their input to a scratch file.
  TMPDIR="$work/$t/tmp" "$bin_dir/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len="$(max_len "$t")" -timeout=10 \
    -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 \
    "$work/$t/corpus" >"$work/$t/log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1 || true)
  echo "== fuzz $t: ${runs:-?} runs, ${cov:-cov: ?}, $(($(date +%s) - t0)) s, exit $rc"
  if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$work/$t/artifacts")" ]; then
    failed+=("$t")
    keep="$root/fuzz/artifacts/$t"
    mkdir -p "$keep"
    echo "---- $t failed; the end of its log:" >&2
    tail -n 60 "$work/$t/log" >&2
    for a in "$work/$t/artifacts"/*; do
      [ -e "$a" ] || continue
      cp "$a" "$keep/"
      echo "---- $t: artefact $keep/$(basename "$a") ($(wc -c <"$a") bytes)" >&2
      if [ "$(wc -c <"$a")" -le 4096 ]; then
        echo "base64 (decode with: base64 -d > input):" >&2
        base64 "$a" >&2
      fi
      echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/$(basename "$a")" >&2
    done
  fi
done

echo "== fuzzing took $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi

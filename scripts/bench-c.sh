#!/usr/bin/env bash
# Size and speed of libbms in both builds — full (release, with tract's graph engine) and
# lean (`--no-default-features --profile vehicle`, the on-vehicle build): stripped size of
# libbms.so and of examples/c/monitor.c statically linked against libbms.a, push_frame
# cost per 96-cell frame, predict latency and the heap of a model and a monitor
# (benches/c/monitor_bench.c). The two builds' benchmarks run alternately, ROUNDS times
# each (the machine's speed drifts between minutes). Not part of CI; figures are recorded
# in benches/RESULTS.md.
# Usage: scripts/bench-c.sh [frames] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."

frames="${1:-2000000}"
rounds="${2:-3}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME CARGO-ARGS...: copies cargo's libbms_ffi.{so,a} to $work/NAME/libbms.{so,a}.
build() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  cargo build -p bms-ffi --locked "$@" --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact":
        print("\n".join(m.get("filenames") or []))
' >"$work/$name/artifacts"
  cp "$(grep '/libbms_ffi\.so$' "$work/$name/artifacts")" "$work/$name/libbms.so"
  cp "$(grep '/libbms_ffi\.a$' "$work/$name/artifacts")" "$work/$name/libbms.a"
}
build full --release
build lean --no-default-features --profile vehicle

size() { stat -c %s "$1"; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for b in full lean; do
  d="$work/$b"
  strip -o "$d/libbms.stripped.so" "$d/libbms.so"
  gcc -O2 -Ibms-ffi/include examples/c/monitor.c "$d/libbms.a" -lm -lpthread -ldl -Wl,-z,noexecstack,--gc-sections \
    -o "$d/monitor-static"
  strip "$d/monitor-static"
  gcc -O2 -Ibms-ffi/include benches/c/monitor_bench.c "$d/libbms.a" -lm -lpthread -ldl -Wl,-z,noexecstack,--gc-sections \
    -o "$d/monitor_bench"
  echo "$b: libbms.so $(size "$d/libbms.stripped.so") bytes stripped; libbms.a $(size "$d/libbms.a") bytes;" \
    "examples/c/monitor.c statically linked against libbms.a (--gc-sections), stripped: $(size "$d/monitor-static") bytes"
done
for r in $(seq "$rounds"); do
  for b in full lean; do
    echo "== round $r, $b build"
    "$work/$b/monitor_bench" models/consistency-ref14x6.onnx "$frames"
  done
done

#!/usr/bin/env bash
# Size and speed of libbms (release): stripped size of libbms.so and of the statically
# linked examples/c/monitor.c, push_frame cost per 96-cell frame and predict latency
# (benches/c/monitor_bench.c). Not part of CI; figures are recorded in benches/RESULTS.md.
# Usage: scripts/bench-c.sh [frames]
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -p bms-ffi --locked --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact":
        print("\n".join(m.get("filenames") or []))
' >"$work/artifacts"
# Cargo's libbms_ffi.{so,a} are the C artefacts libbms.{so,a} (see scripts/test-c.sh).
so=$(grep '/libbms_ffi\.so$' "$work/artifacts")
a=$(grep '/libbms_ffi\.a$' "$work/artifacts")

strip -o "$work/libbms.so" "$so"
gcc -O2 -Ibms-ffi/include examples/c/monitor.c "$a" -lm -lpthread -ldl -Wl,-z,noexecstack -o "$work/monitor-static"
gcc -O2 -Ibms-ffi/include examples/c/monitor.c "$a" -lm -lpthread -ldl -Wl,-z,noexecstack -Wl,--gc-sections \
  -o "$work/monitor-static-gc"
strip "$work/monitor-static" "$work/monitor-static-gc"
gcc -O2 -Ibms-ffi/include benches/c/monitor_bench.c "$a" -lm -lpthread -ldl -Wl,-z,noexecstack -o "$work/monitor_bench"

size() { stat -c %s "$1"; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "libbms.so: $(size "$so") bytes unstripped, $(size "$work/libbms.so") bytes stripped"
echo "libbms.a: $(size "$a") bytes"
echo "examples/c/monitor.c linked statically with libbms.a, stripped: $(size "$work/monitor-static") bytes; with -Wl,--gc-sections: $(size "$work/monitor-static-gc") bytes"
"$work/monitor_bench" models/consistency-ref14x6.onnx "${1:-2000000}"

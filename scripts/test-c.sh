#!/usr/bin/env bash
# The C side of bms-ffi (called by scripts/test.sh):
#  1. bms-ffi/include/bms.h is what cbindgen (pinned below) generates: any difference fails
#     (`scripts/test-c.sh --write-header` rewrites it after an ABI change);
#  2. the C tests (tests/c/) and the example (examples/c/monitor.c) are compiled with the
#     system C compiler against the header and BOTH libbms.so and libbms.a, and run under
#     valgrind with zero errors and zero definite/indirect leaks;
#  3. tests/c/gbt32960.c decodes the protocol's worked examples through the C decoder;
#  4. tests/c/equivalence.c checks that streaming a `bms simulate --frames` CSV through the
#     monitor gives exactly `bms daily` and `bms windows` + `bms predict`.
# Tools are installed idempotently under $BMS_CI_TOOLS (default /var/cache/bms-ci/tools,
# outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4
TOOLS="${BMS_CI_TOOLS:-/var/cache/bms-ci/tools}"
CBINDGEN="$TOOLS/bin/cbindgen"

if ! "$CBINDGEN" --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
  echo "== installing cbindgen $CBINDGEN_VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --root "$TOOLS"
fi
if ! command -v valgrind >/dev/null || ! command -v gcc >/dev/null || ! command -v pkg-config >/dev/null; then
  echo "== installing gcc, valgrind and pkg-config"
  apt-get update -qq && apt-get install -y -qq gcc valgrind pkg-config >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== bms.h is up to date (cbindgen $CBINDGEN_VERSION)"
"$CBINDGEN" --quiet --config bms-ffi/cbindgen.toml --crate bms-ffi --output "$work/bms.h" bms-ffi
if [[ "${1:-}" == "--write-header" ]]; then
  cp "$work/bms.h" bms-ffi/include/bms.h
  echo "wrote bms-ffi/include/bms.h"
  exit 0
fi
if ! diff -u bms-ffi/include/bms.h "$work/bms.h"; then
  echo "bms-ffi/include/bms.h differs from what cbindgen generates: run scripts/test-c.sh --write-header" >&2
  exit 1
fi

echo "== building libbms and bms"
# The artifacts' paths come from cargo itself (wherever CARGO_TARGET_DIR puts them).
artifacts() {
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact":
        for f in m.get("filenames") or []:
            print(f)
        if m.get("executable"):
            print(m["executable"])
'
}
cargo build -p bms-ffi -p bms --lib --bin bms --locked --message-format=json-render-diagnostics | artifacts | sort -u >"$work/artifacts"
# Cargo names the C artefacts after the Rust library (bms_ffi, so as not to collide with
# the `bms` command's); C links them as libbms, so they get that name here (symlinks).
libdir="$work/lib"
mkdir -p "$libdir"
ln -s "$(grep '/libbms_ffi\.so$' "$work/artifacts")" "$libdir/libbms.so"
ln -s "$(grep '/libbms_ffi\.a$' "$work/artifacts")" "$libdir/libbms.a"
so="$libdir/libbms.so"
a="$libdir/libbms.a"
bms=$(grep '/bms$' "$work/artifacts")

echo "== compiling the C tests and example (shared and static)"
CFLAGS=(-std=c99 -O1 -g -Wall -Wextra -Werror -Ibms-ffi/include)
# tract-linalg's assembly objects carry no .note.GNU-stack: ask for a non-executable stack.
# --gc-sections and -S (no debug info from the archive) keep each static test binary at
# tens of MB instead of hundreds (the debug libbms.a is ~0.9 GB).
STATIC_LIBS=(-lm -lpthread -ldl -lrt -Wl,-z,noexecstack,--gc-sections,-S)
for prog in tests/c/errors.c tests/c/equivalence.c tests/c/gbt32960.c examples/c/monitor.c; do
  name=$(basename "$prog" .c)
  gcc "${CFLAGS[@]}" "$prog" -L"$libdir" -lbms -Wl,-rpath,"$libdir" -lm -o "$work/$name-shared"
  gcc "${CFLAGS[@]}" "$prog" "$a" "${STATIC_LIBS[@]}" -o "$work/$name-static"
done
# The shared build really uses libbms.so, the static one does not.
shared_deps=$(ldd "$work/errors-shared")
static_deps=$(ldd "$work/errors-static")
if ! grep -q 'libbms\.so' <<<"$shared_deps" || grep -q 'libbms' <<<"$static_deps"; then
  echo "the shared test does not load libbms.so or the static one does" >&2
  exit 1
fi

echo "== bms.pc (pkg-config) from bms-ffi/bms.pc.in"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
prefix="$work/prefix"
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
ln -s "$so" "$prefix/lib/libbms.so" && ln -s "$(pwd)/bms-ffi/include/bms.h" "$prefix/include/bms.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" bms-ffi/bms.pc.in >"$prefix/lib/pkgconfig/bms.pc"
[[ $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --modversion bms) == "$version" ]]
# shellcheck disable=SC2046
gcc -std=c99 -Wall -Werror tests/c/errors.c $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs bms) \
  -Wl,-rpath,"$prefix/lib" -lm -o "$work/errors-pc"
"$work/errors-pc" models/consistency-ref14x6.onnx >/dev/null

echo "== a small simulated fleet through the batch commands"
model=models/consistency-ref14x6.onnx
"$bms" simulate --vehicles 4 --days 40 --seed 3 --interval 60s --weak-fraction 0.5 \
  --frames "$work/frames.csv" --truth "$work/truth.csv"
"$bms" daily -i "$work/frames.csv" -o "$work/daily.csv"
"$bms" windows -i "$work/daily.csv" -o "$work/batch.csv"
"$bms" predict -m "$model" -i "$work/batch.csv" >"$work/predictions.csv"

VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
  --show-leak-kinds=definite,indirect)
for kind in shared static; do
  echo "== C tests against libbms ($kind) under valgrind"
  "${VALGRIND[@]}" "$work/errors-$kind" "$model"
  "${VALGRIND[@]}" "$work/gbt32960-$kind" "$model"
  "${VALGRIND[@]}" "$work/equivalence-$kind" "$model" "$work/frames.csv" "$work/daily.csv" "$work/predictions.csv"
  "${VALGRIND[@]}" "$work/monitor-$kind" "$model" "$work/frames.csv" >"$work/monitor-$kind.csv" 2>/dev/null
  # One line per daily row (plus the header), each with the row's date.
  rows=$(($(wc -l <"$work/daily.csv") - 1))
  lines=$(($(wc -l <"$work/monitor-$kind.csv") - 1))
  if [[ $rows != "$lines" ]]; then
    echo "examples/c/monitor.c printed $lines days, bms daily has $rows" >&2
    exit 1
  fi
  # (bms daily sorts by VIN; the frames, and so the example, follow the simulator's order.)
  diff <(tail -n +2 "$work/daily.csv" | cut -d, -f1,2 | sort) <(tail -n +2 "$work/monitor-$kind.csv" | cut -d, -f1,2 | sort)
done
cmp "$work/monitor-shared.csv" "$work/monitor-static.csv"
echo "C tests passed"

#!/usr/bin/env bash
# The C library on ARM, tested rather than assumed (called by scripts/test.sh):
# for each target (default: aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf) and
# each build of bms-ffi (the full one and, once bms-ffi has its onnx-graph feature, the lean
# one without it), scripts/install-c.sh cross-builds libbms.a and libbms.so (release) into a
# prefix; the C tests (tests/c/*.c) and examples/c/monitor.c are compiled with Debian's cross
# gcc against that prefix through pkg-config, linked with libbms.so and statically, and run
# under qemu user emulation:
#  - tests/c/errors.c and tests/c/gbt32960.c pass;
#  - tests/c/equivalence.c finds the monitor's daily rows and predictions bit for bit equal
#    to the x86-64 `bms daily` / `bms windows` / `bms predict` outputs of the fleet
#    scripts/test-c.sh simulates;
#  - examples/c/monitor.c prints byte for byte what the same build of it prints on x86-64.
# It also prints the stripped size of the example linked with libbms.a, per target and build.
# Whatever it needs (the rustup targets, the cross gcc and libc, qemu-user) it installs,
# idempotently; if one cannot be installed it fails, naming it: it never skips.
# Usage: scripts/test-arm.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# Each build of bms-ffi: a name and install-c.sh's flags for it.
builds=(full)
if grep -q onnx-graph bms-ffi/Cargo.toml; then
  builds+=(lean)
fi
build_flags() { if [[ $1 == lean ]]; then echo --lean; fi; }

fail() {
  echo "test-arm.sh: $*" >&2
  exit 1
}
# GNU triple (Debian's cross tools' prefix), Debian architecture and qemu binary per target.
target_info() {
  case "$1" in
  aarch64-unknown-linux-gnu) gnu=aarch64-linux-gnu deb=arm64 qemu=qemu-aarch64 machine=AArch64 ;;
  armv7-unknown-linux-gnueabihf) gnu=arm-linux-gnueabihf deb=armhf qemu=qemu-arm machine=ARM ;;
  *) fail "unsupported target $1 (supported: aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" ;;
  esac
}

echo "== toolchains: rustup targets, cross gcc and libc, qemu-user"
# command or file that must exist, and the Debian package that provides it
needs=("gcc gcc" "pkg-config pkg-config" "readelf binutils")
for t in "${targets[@]}"; do
  target_info "$t"
  needs+=("$gnu-gcc gcc-$gnu" "$gnu-strip binutils-$gnu" "/usr/$gnu/include/stdio.h libc6-dev-$deb-cross"
    "$qemu qemu-user")
done
have() { if [[ $1 == /* ]]; then [[ -e $1 ]]; else command -v "$1" >/dev/null; fi; }
missing=()
for n in "${needs[@]}"; do
  read -r what pkg <<<"$n"
  have "$what" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing ${missing[*]}"
  apt-get update -qq || fail "apt-get update failed, so these cannot be installed: ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    fail "apt-get install failed for: ${missing[*]}"
  for n in "${needs[@]}"; do
    read -r what pkg <<<"$n"
    have "$what" || fail "$what is still missing after apt-get install $pkg"
  done
fi
installed=$(rustup target list --installed) || fail "rustup is needed to add the Rust targets ${targets[*]}"
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    rustup target add "$t" || fail "rustup target add $t failed: the Rust standard library for $t is missing"
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=models/consistency-ref14x6.onnx

echo "== x86-64 reference: bms simulate / daily / windows / predict (the bms of scripts/test-c.sh)"
bms=$(cargo build -p bms-ffi -p bms --lib --bin bms --locked --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bms":
        print(m["executable"])
')
"$bms" simulate --vehicles 4 --days 40 --seed 3 --interval 60s --weak-fraction 0.5 \
  --frames "$work/frames.csv" --truth "$work/truth.csv"
"$bms" daily -i "$work/frames.csv" -o "$work/daily.csv"
"$bms" windows -i "$work/daily.csv" -o "$work/batch.csv"
"$bms" predict -m "$model" -i "$work/batch.csv" >"$work/predictions.csv"

# The flags of scripts/test-c.sh (at -O2, gcc 12 warns that equivalence.c could hand snprintf
# the NULL field of a line without commas).
CFLAGS=(-std=c99 -O1 -Wall -Wextra -Werror)
# --gc-sections and -S (no debug info from the archive) keep the static executables small.
LDFLAGS=("-Wl,--gc-sections,-S")
sizes=()
# size_of PREFIX CC STRIP LABEL: the example linked with PREFIX's libbms.a (the C library
# dynamic, as scripts/bench-c.sh measures), stripped, and the same linked -static.
size_of() {
  local p=$1 cc=$2 strip=$3 label=$4
  "$cc" -O2 -I"$p/include" examples/c/monitor.c "$p/lib/libbms.a" -lm -lpthread -ldl -lrt \
    -Wl,-z,noexecstack,--gc-sections -o "$work/size"
  "$strip" "$work/size"
  local s1 s2
  s1=$(stat -c %s "$work/size")
  "$cc" -O2 -static -I"$p/include" examples/c/monitor.c "$p/lib/libbms.a" -lm -lpthread -ldl -lrt \
    -Wl,-z,noexecstack,--gc-sections -o "$work/size" 2>/dev/null
  "$strip" "$work/size"
  s2=$(stat -c %s "$work/size")
  rm -f "$work/size"
  sizes+=("$(printf '%-40s %10s bytes  (-static: %s bytes)' "$label" "$s1" "$s2")")
}

echo "== x86-64 reference: examples/c/monitor.c on each build of libbms (release)"
for b in "${builds[@]}"; do
  p="$work/x86_64-$b"
  # shellcheck disable=SC2046 # no flags for the full build
  ./scripts/install-c.sh --prefix "$p" $(build_flags "$b") >/dev/null
  # shellcheck disable=SC2046 # pkg-config's output is a list of words
  gcc "${CFLAGS[@]}" examples/c/monitor.c $(PKG_CONFIG_LIBDIR="$p/lib/pkgconfig" pkg-config --cflags --libs bms) \
    -o "$work/monitor-x86_64-$b"
  LD_LIBRARY_PATH="$p/lib" "$work/monitor-x86_64-$b" "$model" "$work/frames.csv" >"$work/monitor-x86_64-$b.csv" 2>/dev/null
  size_of "$p" gcc strip "x86_64-unknown-linux-gnu $b"
  rm -rf "$p"
done

for t in "${targets[@]}"; do
  target_info "$t"
  for b in "${builds[@]}"; do
    echo "== $t, $b build: cross-built libbms, the C tests and the example under $qemu"
    p="$work/$t-$b"
    # shellcheck disable=SC2046
    ./scripts/install-c.sh --prefix "$p" --target "$t" $(build_flags "$b") >/dev/null
    export PKG_CONFIG_LIBDIR="$p/lib/pkgconfig"
    bin="$work/$t-$b-bin"
    mkdir -p "$bin"
    for prog in tests/c/errors.c tests/c/equivalence.c tests/c/gbt32960.c examples/c/monitor.c; do
      name=$(basename "$prog" .c)
      # shellcheck disable=SC2046
      "$gnu-gcc" "${CFLAGS[@]}" "$prog" $(pkg-config --cflags --libs bms) -lm "${LDFLAGS[@]}" -o "$bin/$name-shared"
      # shellcheck disable=SC2046
      "$gnu-gcc" -static "${CFLAGS[@]}" "$prog" $(pkg-config --static --cflags --libs bms) "${LDFLAGS[@]}" \
        -o "$bin/$name-static" 2>"$work/ld.log" || { cat "$work/ld.log" >&2 && exit 1; }
    done
    unset PKG_CONFIG_LIBDIR
    for exe in "$bin"/*; do
      grep -q "Machine: *$machine\b" <<<"$(readelf -h "$exe")" || fail "$exe is not an $machine executable"
    done
    # Shared executables load the sysroot's libc (-L) and the prefix's libbms.
    run=("$qemu" -L "/usr/$gnu" -E "LD_LIBRARY_PATH=$p/lib")
    for kind in shared static; do
      echo "-- $kind"
      "${run[@]}" "$bin/errors-$kind" "$model" >/dev/null || fail "tests/c/errors.c failed on $t ($b, $kind)"
      "${run[@]}" "$bin/gbt32960-$kind" "$model" >/dev/null || fail "tests/c/gbt32960.c failed on $t ($b, $kind)"
      "${run[@]}" "$bin/equivalence-$kind" "$model" "$work/frames.csv" "$work/daily.csv" "$work/predictions.csv" ||
        fail "tests/c/equivalence.c: the monitor on $t ($b, $kind) differs from x86-64 bms daily / windows / predict"
      "${run[@]}" "$bin/monitor-$kind" "$model" "$work/frames.csv" >"$work/monitor-$t-$b-$kind.csv" 2>/dev/null
      if ! cmp "$work/monitor-x86_64-$b.csv" "$work/monitor-$t-$b-$kind.csv"; then
        diff "$work/monitor-x86_64-$b.csv" "$work/monitor-$t-$b-$kind.csv" | head -5 >&2
        fail "examples/c/monitor.c on $t ($b, $kind) does not print what it prints on x86-64"
      fi
      echo "monitor output equals x86-64's ($(($(wc -l <"$work/monitor-$t-$b-$kind.csv") - 1)) days)"
    done
    size_of "$p" "$gnu-gcc" "$gnu-strip" "$t $b"
    rm -rf "$p" "$bin"
  done
done

echo "== examples/c/monitor.c linked with libbms.a, stripped"
printf '%s\n' "${sizes[@]}"
echo "ARM tests passed: ${targets[*]} (${builds[*]})"

#!/usr/bin/env bash
# The C library installed like a release (called by scripts/test.sh): scripts/install-c.sh
# installs the release build into a temporary prefix, and examples/c/monitor.c and
# tests/c/errors.c are built against that prefix with nothing but pkg-config
# (`pkg-config --cflags --libs bms`, and `-static` with `pkg-config --static` for an
# executable linked statically throughout) and run. Also checked: the installed layout and
# SONAME, that the shared executables load the installed libbms.so.ABI and the static ones
# nothing, that bms.pc names the prefix (with DESTDIR too), and that installing again over
# the same prefix works.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v gcc >/dev/null || ! command -v pkg-config >/dev/null || ! command -v readelf >/dev/null; then
  echo "== installing gcc, binutils and pkg-config"
  apt-get update -qq && apt-get install -y -qq gcc binutils pkg-config >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
model=models/consistency-ref14x6.onnx
frames=examples/data/frames-small.csv

./scripts/install-c.sh --prefix "$prefix" >"$work/installed"
# Twice: the second is a fresh build's no-op plus a copy over the first install.
./scripts/install-c.sh --prefix "$prefix" >/dev/null

echo "== installed layout"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
lib="$prefix/lib"
for f in include/bms.h lib/libbms.a "lib/libbms.so.$version" lib/pkgconfig/bms.pc; do
  if [[ ! -f "$prefix/$f" || -L "$prefix/$f" ]]; then
    echo "$prefix/$f is not a regular file" >&2
    exit 1
  fi
done
soname=$(readelf -d "$lib/libbms.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [[ ! "$soname" =~ ^libbms\.so\.[0-9]+(\.[0-9]+)?$ ]]; then
  echo "libbms.so.$version has SONAME '$soname', not libbms.so.ABI" >&2
  exit 1
fi
[[ $(readlink "$lib/$soname") == "libbms.so.$version" && $(readlink "$lib/libbms.so") == "$soname" ]]
cmp "$prefix/include/bms.h" bms-ffi/include/bms.h
echo "libbms.so.$version, SONAME $soname"

export PKG_CONFIG_PATH="$lib/pkgconfig"
[[ $(pkg-config --modversion bms) == "$version" && $(pkg-config --variable=prefix bms) == "$prefix" ]]
echo "pkg-config --cflags --libs bms: $(pkg-config --cflags --libs bms)"
echo "pkg-config --static --libs bms: $(pkg-config --static --libs bms)"

echo "== examples/c/monitor.c and tests/c/errors.c against the installed prefix, through pkg-config"
CFLAGS=(-std=c99 -O2 -Wall -Wextra -Werror)
for prog in examples/c/monitor.c tests/c/errors.c; do
  name=$(basename "$prog" .c)
  # shellcheck disable=SC2046 # pkg-config's output is a list of words
  gcc "${CFLAGS[@]}" "$prog" $(pkg-config --cflags --libs bms) -o "$work/$name-shared"
  # glibc warns that getaddrinfo & co. in a static executable want its shared libraries at
  # run time (Rust's std has them; libbms never calls them): kept out of the log unless
  # the link fails.
  # shellcheck disable=SC2046
  if ! gcc -static "${CFLAGS[@]}" "$prog" $(pkg-config --static --cflags --libs bms) -o "$work/$name-static" \
    2>"$work/ld.log"; then
    cat "$work/ld.log" >&2
    exit 1
  fi
done
needed=$(readelf -d "$work/monitor-shared" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if ! grep -qx "$soname" <<<"$needed"; then
  echo "monitor-shared does not need $soname (it needs: $needed)" >&2
  exit 1
fi
if grep -q '(NEEDED)' <<<"$(readelf -d "$work/monitor-static")"; then
  echo "monitor-static needs shared libraries" >&2
  exit 1
fi
# An installed library is found by the loader's path (ldconfig for a system prefix).
export LD_LIBRARY_PATH="$lib"
loaded=$(ldd "$work/monitor-shared")
if ! grep -q "$soname => $lib/$soname " <<<"$loaded"; then
  echo "$loaded" >&2
  echo "monitor-shared does not load $lib/$soname" >&2
  exit 1
fi
for kind in shared static; do
  "$work/errors-$kind" "$model" >/dev/null
  "$work/monitor-$kind" "$model" "$frames" >"$work/monitor-$kind.csv" 2>/dev/null
done
cmp "$work/monitor-shared.csv" "$work/monitor-static.csv"
# One line per vehicle and UTC day from its first frame's to its last's (days without
# frames too), and the model scored some of them.
days=$(awk -F, 'NR > 1 { d = int($2 / 86400000); if (!($1 in lo) || d < lo[$1]) lo[$1] = d; if (d > hi[$1]) hi[$1] = d }
  END { for (v in lo) n += hi[v] - lo[v] + 1; print n }' "$frames")
lines=$(($(wc -l <"$work/monitor-shared.csv") - 1))
if [[ $lines != "$days" ]] || ! grep -qE ',0\.[0-9]{6},[01]$' "$work/monitor-shared.csv"; then
  echo "examples/c/monitor.c printed $lines days (the frames have $days), or no probability" >&2
  exit 1
fi
unset LD_LIBRARY_PATH

echo "== DESTDIR"
DESTDIR="$work/stage" ./scripts/install-c.sh --prefix /opt/bms >/dev/null
[[ -f "$work/stage/opt/bms/lib/libbms.a" && $(sed -n 's/^prefix=//p' "$work/stage/opt/bms/lib/pkgconfig/bms.pc") == /opt/bms ]]
echo "install tests passed"

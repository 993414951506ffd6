#!/usr/bin/env bash
# Builds the C library (bms-ffi) optimised and installs it into a prefix as a release would:
#
#   PREFIX/include/bms.h
#   PREFIX/lib/libbms.a
#   PREFIX/lib/libbms.so.VERSION            (SONAME libbms.so.ABI, see below)
#   PREFIX/lib/libbms.so.ABI -> libbms.so.VERSION
#   PREFIX/lib/libbms.so     -> libbms.so.ABI
#   PREFIX/lib/pkgconfig/bms.pc             (from bms-ffi/bms.pc.in, prefix= PREFIX)
#
# ABI is the crate version's major number, or 0.MINOR while the major is 0 (0.1 and 0.2
# are not compatible under semver; this is cargo-c's convention too).
# Then, for example:
#   export PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
#   cc monitor.c $(pkg-config --cflags --libs bms) -o monitor                       # libbms.so
#   cc -static monitor.c $(pkg-config --static --cflags --libs bms) -o monitor      # all static
#
# Usage: scripts/install-c.sh --prefix DIR [--target TRIPLE] [--lean] [--profile NAME]
#   --prefix DIR      where to install (created if missing); DESTDIR is honoured as usual
#                     (files go to $DESTDIR/DIR, bms.pc still says DIR)
#   --target TRIPLE   cross-build for a Linux rustup target, e.g. aarch64-unknown-linux-gnu or
#                     armv7-unknown-linux-gnueabihf; the linker and C compiler default to
#                     Debian's cross gcc (aarch64-linux-gnu-gcc, arm-linux-gnueabihf-gcc) unless
#                     CARGO_TARGET_<TRIPLE>_LINKER / CC_<triple> are set
#   --lean            the lean build, without the general ONNX graph engine (bms-ffi
#                     --no-default-features, i.e. without its onnx-graph feature), in the
#                     size-optimised profile `vehicle` (Cargo.toml) unless --profile says
#                     otherwise
#   --profile NAME    cargo profile (default: release; vehicle with --lean). The lean build in
#                     any other profile is built in its own target directory
#                     (CARGO_TARGET_DIR/lean): cargo names the C artefacts of both builds alike
#                     and one would overwrite the other
# The build is cargo's (CARGO_TARGET_DIR as usual), so a second install is only a copy.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

prefix="" target="" lean=0 profile=""
while [[ $# -gt 0 ]]; do
  case "$1" in
  --prefix) prefix="${2:?--prefix needs a directory}" && shift 2 ;;
  --prefix=*) prefix="${1#*=}" && shift ;;
  --target) target="${2:?--target needs a triple}" && shift 2 ;;
  --target=*) target="${1#*=}" && shift ;;
  --lean) lean=1 && shift ;;
  --profile) profile="${2:?--profile needs a name}" && shift 2 ;;
  --profile=*) profile="${1#*=}" && shift ;;
  -h | --help) usage && exit 0 ;;
  *) echo "install-c.sh: unknown argument '$1' (see --help)" >&2 && exit 2 ;;
  esac
done
if [[ -z "$prefix" ]]; then
  echo "install-c.sh: --prefix DIR is required (see --help)" >&2
  exit 2
fi
if [[ "$prefix" != /* ]]; then
  # bms.pc must name an absolute path.
  prefix="$(pwd)/$prefix"
fi

if [[ -z "$profile" ]]; then
  profile=release
  if [[ $lean == 1 ]] && grep -q '^\[profile\.vehicle\]' Cargo.toml; then profile=vehicle; fi
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
minor=${version#*.} && minor=${minor%%.*}
if [[ "$major" == 0 ]]; then abi="0.$minor"; else abi="$major"; fi
soname="libbms.so.$abi"

host=$(rustc -vV | sed -n 's/^host: //p')
cargo_args=(-p bms-ffi --lib --locked --profile "$profile" --message-format=json-render-diagnostics)
if [[ -n "$target" && "$target" != "$host" ]]; then
  case "$target" in
  *-linux-*) ;;
  *) echo "install-c.sh: only Linux targets are supported (got $target)" >&2 && exit 2 ;;
  esac
  # Debian's cross toolchains are named after the GNU triple: aarch64-linux-gnu-gcc,
  # arm-linux-gnueabihf-gcc, …
  gnu=$(sed -e 's/-unknown-/-/' -e 's/^armv7-/arm-/' -e 's/^i[3-6]86-/i686-/' <<<"$target")
  upper=$(tr 'a-z-' 'A-Z_' <<<"$target")
  lower=$(tr '-' '_' <<<"$target")
  linker_var="CARGO_TARGET_${upper}_LINKER" cc_var="CC_${lower}" ar_var="AR_${lower}"
  export "$linker_var=${!linker_var:-$gnu-gcc}" "$cc_var=${!cc_var:-$gnu-gcc}" "$ar_var=${!ar_var:-$gnu-ar}"
  if ! command -v "${!linker_var}" >/dev/null; then
    echo "install-c.sh: the linker for $target, ${!linker_var}, is not installed (Debian: apt-get install gcc-$gnu)" >&2
    exit 1
  fi
  if ! grep -qx "$target" <<<"$(rustup target list --installed 2>/dev/null)"; then
    echo "install-c.sh: the Rust standard library for $target is not installed (rustup target add $target)" >&2
    exit 1
  fi
  cargo_args+=(--target "$target")
fi
if [[ $lean == 1 ]]; then
  if ! grep -q onnx-graph bms-ffi/Cargo.toml; then
    echo "install-c.sh: --lean: bms-ffi has no onnx-graph feature to leave out (the lean build is not in this tree)" >&2
    exit 1
  fi
  if [[ $profile != vehicle ]]; then
    base=${CARGO_TARGET_DIR:-$(cargo metadata --no-deps --format-version 1 --locked |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
    export CARGO_TARGET_DIR="$base/lean"
  fi
  cargo_args+=(--no-default-features)
fi

echo "== building libbms ($profile${target:+, $target}$([[ $lean == 1 ]] && echo ', lean'))" >&2
# `cargo rustc` passes the SONAME to this crate's link only: RUSTFLAGS would reach every
# dependency and rebuild all of them apart from every other build of the same profile.
artifacts=$(cargo rustc "${cargo_args[@]}" -- -C "link-arg=-Wl,-soname,$soname" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bms_ffi":
        print("\n".join(m.get("filenames") or []))
')
so=$(grep '/libbms_ffi\.so$' <<<"$artifacts")
a=$(grep '/libbms_ffi\.a$' <<<"$artifacts")

dest="${DESTDIR:-}$prefix"
echo "== installing into $dest" >&2
install -d "$dest/include" "$dest/lib/pkgconfig"
install -m 644 bms-ffi/include/bms.h "$dest/include/bms.h"
install -m 644 "$a" "$dest/lib/libbms.a"
install -m 755 "$so" "$dest/lib/libbms.so.$version"
ln -sfn "libbms.so.$version" "$dest/lib/$soname"
ln -sfn "$soname" "$dest/lib/libbms.so"
sed -e '/^#/d' -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" bms-ffi/bms.pc.in >"$dest/lib/pkgconfig/bms.pc"
chmod 644 "$dest/lib/pkgconfig/bms.pc"
printf '%s\n' "$dest/include/bms.h" "$dest/lib/libbms.a" "$dest/lib/libbms.so.$version" "$dest/lib/$soname" \
  "$dest/lib/libbms.so" "$dest/lib/pkgconfig/bms.pc"

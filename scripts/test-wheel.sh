#!/usr/bin/env bash
# The release packages of bms-py as a user gets them (issue 21 §3): builds the sdist, builds
# the manylinux wheel from that sdist (maturin --release --zig, glibc 2.17 baseline), checks
# the platform tag (auditwheel: manylinux_2_28 or older) and the metadata (twine check, the
# version equal to the crate's), then installs the wheel with its declared dependencies into
# a fresh venv and, with no cargo or rustc on PATH, runs the README's Python examples and
# bms-py/tests against the installed package.
#
#   ./scripts/test-wheel.sh            (from anywhere)
#
# Building the wheel from the unpacked sdist rather than from the work tree also proves
# the sdist holds everything a build needs (the workspace crates bms-core and bms-batch,
# Cargo.lock, the Python sources).
#
# Caches: the build tools live in $BMS_WHEEL_TOOLS_VENV (default .venv-wheel-tools in the
# repository root; bms-py/requirements-wheel.txt). The release build goes to
# $BMS_WHEEL_TARGET_DIR (default: $CARGO_TARGET_DIR, or target, with "-wheel" appended): a
# target directory of its own, because zig as C compiler and linker changes the build
# scripts' environment, so sharing one with the dev builds would rebuild both each time.
# Use that directory for this script only (see unpack_sdist). With it kept, an unchanged
# tree rebuilds nothing: the wheel costs seconds, not the ~11 min of a cold build.
# The built sdist and wheel stay in $BMS_WHEEL_TARGET_DIR/dist. The test venv is new on
# every run (pip's download cache makes that ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TOOLS_VENV="${BMS_WHEEL_TOOLS_VENV:-$ROOT/.venv-wheel-tools}"
WHEEL_TARGET="${BMS_WHEEL_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}-wheel}"
DIST="$WHEEL_TARGET/dist"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WHEEL_TARGET"

# ensure_venv DIR REQUIREMENTS, as in scripts/test-py.sh: creates the venv if missing and
# (re)installs the pinned requirements when the file's hash differs from the last install.
ensure_venv() {
  local venv="$1" req="$2"
  if [ ! -x "$venv/bin/python" ]; then
    echo "== creating venv $venv"
    python3 -m venv "$venv"
  fi
  local stamp="$venv/.bms-py-requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing $(basename "$req") into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
}
ensure_venv "$TOOLS_VENV" "$ROOT/bms-py/requirements-wheel.txt"
TOOLS="$TOOLS_VENV/bin"
PY="$TOOLS/python"

VERSION="$("$PY" -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["workspace"]["package"]["version"])' "$ROOT/Cargo.toml")"
echo "== bms-py $VERSION"

echo "== sdist (maturin sdist)"
rm -rf "$DIST"
mkdir -p "$DIST"
# (Its log is cargo package's warnings about crate metadata: shown only on a failure.)
if ! "$TOOLS/maturin" sdist -m bms-py/Cargo.toml -o "$DIST" 2> "$WORK/sdist.log"; then
  cat "$WORK/sdist.log" >&2
  exit 1
fi
SDIST="$DIST/bms_py-$VERSION.tar.gz"
[ -f "$SDIST" ] || { echo "test-wheel.sh: no sdist $SDIST" >&2; exit 1; }
echo "   $(basename "$SDIST"): $(du -k "$SDIST" | cut -f1) KiB"

# unpack_sdist: the sdist into $WHEEL_TARGET/sdist-src, writing only the files whose bytes
# changed since the last run. maturin stamps every file of the sdist with one fixed old
# date (reproducible archives), and cargo decides what to rebuild by modification time: a
# plain unpack would either never rebuild (files older than the last build, even when
# changed) or always rebuild (tar --touch). Rewritten files get the current time; files no
# longer in the sdist are removed. (A build of another tree in the same target directory
# would defeat this, hence a directory for this script only.)
SRC="$WHEEL_TARGET/sdist-src/bms_py-$VERSION"
"$PY" - "$SDIST" "$SRC" <<'EOF'
import os, sys, tarfile
sdist, dest = sys.argv[1], sys.argv[2]
top = os.path.basename(dest)
need = {"Cargo.toml", "Cargo.lock", "pyproject.toml", "PKG-INFO", "bms-core/Cargo.toml",
        "bms-core/src/lib.rs", "bms-batch/Cargo.toml", "bms-batch/src/lib.rs",
        "bms-py/Cargo.toml", "bms-py/src/lib.rs", "python/bms/__init__.py",
        "python/bms/_bms.pyi", "python/bms/py.typed"}
seen, written = set(), 0
with tarfile.open(sdist) as tar:
    for m in tar.getmembers():
        if not m.isfile():
            continue
        rel = os.path.relpath(m.name, top)
        if rel.startswith("..") or os.path.isabs(rel):
            sys.exit(f"sdist member outside {top}/: {m.name}")
        seen.add(rel)
        data = tar.extractfile(m).read()
        path = os.path.join(dest, rel)
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        # Cargo.lock is pruned by the build (see below): keep it when the sdist's is unchanged.
        if rel == "Cargo.lock" and os.path.exists(path + ".sdist"):
            with open(path + ".sdist", "rb") as f:
                if f.read() == data:
                    continue
        with open(path, "wb") as f:
            f.write(data)
        if rel == "Cargo.lock":
            with open(path + ".sdist", "wb") as f:
                f.write(data)
        written += 1
missing = need - seen
if missing:
    sys.exit(f"the sdist lacks {sorted(missing)}")
for other in ("bms-ffi", "bms-aws", "src/main.rs"):
    if any(r == other or r.startswith(other + "/") for r in seen):
        sys.exit(f"the sdist carries {other}, which the package does not build")
removed = 0
for d, _, files in os.walk(dest):
    for f in files:
        rel = os.path.relpath(os.path.join(d, f), dest)
        if rel not in seen and rel != "Cargo.lock.sdist":
            os.remove(os.path.join(d, f))
            removed += 1
print(f"   {len(seen)} files ({written} changed, {removed} removed since the last run) in {dest}")
EOF

echo "== wheel from the sdist (maturin build --release --zig --compatibility manylinux2014)"
# No --locked: maturin drops the workspace members the package does not build (the command
# line, bms-ffi, bms-aws) from the sdist's Cargo.toml but ships the workspace's Cargo.lock
# unchanged (maturin issue 2609), so cargo prunes their entries, as it does under
# `pip install bms_py-*.tar.gz`. The check after the build makes sure that pruning is all
# it did: every package and version built is one the repository's Cargo.lock pins.
start=$SECONDS
(cd "$SRC" && PATH="$TOOLS:$PATH" CARGO_TARGET_DIR="$WHEEL_TARGET" CARGO_INCREMENTAL=0 \
  "$TOOLS/maturin" build --quiet --release --zig --compatibility manylinux2014 -i "$PY" -o "$DIST")
echo "   built in $((SECONDS - start)) s"
"$PY" - "$SRC/Cargo.lock" "$ROOT/Cargo.lock" <<'EOF'
import sys, tomllib
def pkgs(p):
    return {(x["name"], x["version"]) for x in tomllib.load(open(p, "rb"))["package"]}
extra = pkgs(sys.argv[1]) - pkgs(sys.argv[2])
if extra:
    sys.exit(f"the sdist build resolved packages the repository's Cargo.lock does not pin: {sorted(extra)}")
EOF
WHEEL="$(ls "$DIST"/bms_py-"$VERSION"-*.whl)"
echo "   $(basename "$WHEEL"): $(du -k "$WHEEL" | cut -f1) KiB"

echo "== auditwheel show"
"$TOOLS/auditwheel" show "$WHEEL" | tee "$WORK/auditwheel.txt"
"$PY" - "$WORK/auditwheel.txt" <<'EOF'
import re, sys
text = " ".join(open(sys.argv[1]).read().split())
m = re.search(r'is consistent with the following platform tag: "manylinux_(\d+)_(\d+)_x86_64"', text)
if not m:
    sys.exit("auditwheel names no manylinux tag for the wheel")
if (int(m.group(1)), int(m.group(2))) > (2, 28):
    sys.exit(f"the wheel needs glibc {m.group(1)}.{m.group(2)}: newer than manylinux_2_28")
EOF

echo "== metadata (twine check --strict, and the fields a release needs)"
"$TOOLS/twine" --no-color check --strict "$WHEEL" "$SDIST"
"$PY" - "$WHEEL" "$VERSION" <<'EOF'
import sys, zipfile
from email.parser import Parser
wheel, version = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(z.read(name).decode())
def want(field, value):
    got = meta.get_all(field) or []
    if value not in got:
        sys.exit(f"METADATA {field}: {got}, expected {value!r}")
want("Name", "bms-py")
want("Version", version)
want("License-Expression", "Apache-2.0")
want("Requires-Python", ">=3.9")
want("Requires-Dist", "numpy>=1.24")
want("Requires-Dist", "pandas>=1.5")
want("Project-URL", "Repository, https://example.invalid/bms")
want("Classifier", "Operating System :: POSIX :: Linux")
for f in ("Metadata-Version", "Name", "Version", "License-Expression", "Requires-Python"):
    print(f"   {f}: {meta[f]}")
print(f"   Requires-Dist: {', '.join(meta.get_all('Requires-Dist'))}")
print(f"   Classifier: {len(meta.get_all('Classifier'))}")
EOF

echo "== the bms command line (the parity tests compare with it)"
BMS_BIN="$(cargo build --bin bms --locked --message-format=json-render-diagnostics \
  | "$PY" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bms":
        print(m["executable"])')"
export BMS_BIN
echo "   $BMS_BIN"

echo "== a fresh venv with the wheel and its declared dependencies (PyPI, binary packages only)"
VENV="$WORK/venv"
start=$SECONDS
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary :all: \
  "$WHEEL[export,arrow]" -r "$ROOT/bms-py/requirements-wheel-test.txt"
echo "   installed in $((SECONDS - start)) s"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"

# PATH without any directory that holds cargo, rustc or rustup: nothing below can build Rust.
NO_RUST_PATH="$VENV/bin"
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  [ -e "$d/cargo" ] || [ -e "$d/rustc" ] || [ -e "$d/rustup" ] || NO_RUST_PATH="$NO_RUST_PATH:$d"
done
run_installed() {
  env PATH="$NO_RUST_PATH" BMS_BIN="$BMS_BIN" BMS_EXPECT_INSTALLED_UNDER="$SITE" "$@"
}
run_installed bash -c '! command -v cargo && ! command -v rustc && ! command -v rustup' \
  || { echo "test-wheel.sh: cargo or rustc is still on the test PATH" >&2; exit 1; }
echo "   no cargo, rustc or rustup on PATH"
(cd "$WORK" && run_installed python -I -c 'import bms, os, sys
where = os.environ["BMS_EXPECT_INSTALLED_UNDER"]
assert bms.__file__.startswith(where), bms.__file__
print(f"   import bms: {bms.__file__} ({bms.__version__})")')

# The examples as the READMEs show them, run from the repository root (their model path is
# relative to it); -I keeps the current directory off sys.path.
run_example() {
  local md="$1" heading="$2"
  echo "== example: the Python block of $md${heading:+ under \"$heading\"}"
  "$PY" - "$ROOT/$md" "$heading" > "$WORK/example.py" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
heading = sys.argv[2]
if heading:
    i = text.index("\n" + heading + "\n")
    text = text[i:]
m = re.search(r"^```python\n(.*?)^```", text, re.M | re.S)
if not m:
    sys.exit(f"no python block in {sys.argv[1]}")
print(m.group(1), end="")
EOF
  (cd "$ROOT" && run_installed python -I "$WORK/example.py")
}
run_example README.md "## Python"
run_example bms-py/README.md ""

echo "== pytest bms-py/tests on the installed wheel"
(cd "$WORK" && run_installed python -I -m pytest -p no:cacheprovider -q "$ROOT/bms-py/tests")

#!/usr/bin/env bash
# A local Apache Superset with a "Fleet risk" dashboard (alarms per day, top vehicles, the
# probability histogram: the queries of deploy/athena/queries.sql) over the Parquet layout
# the function writes, from a `bms predict --out DIR --partition-by date` run. Not run in CI.
#
#   ./deploy/superset/run.sh [--keep]     (from anywhere)
#
# 1. a venv $BMS_SUPERSET_VENV (default /var/cache/bms-superset) with Apache Superset and
#    the pins below, installed from PyPI when they change (a few minutes the first time);
# 2. the data: $BMS_SUPERSET_RUN (a run directory), or a simulated fleet scored by
#    `bms predict --partition-by date` (cargo builds `bms`);
# 3. Superset on 127.0.0.1 (only) on a free port, its metadata in a throwaway SQLite file,
#    an admin user with a random password (printed);
# 4. deploy/superset/dashboard.py: a DuckDB database whose view bms_predictions reads the
#    run's predictions/date=*/*.parquet, the three queries as datasets, three charts and the
#    dashboard, all through Superset's REST API; then a screenshot with headless Chromium
#    (when `chromium` or `chromium-browser` is installed) into
#    deploy/superset/dashboard.png (or $BMS_SUPERSET_PNG);
# 5. Superset stopped, unless --keep (then it runs until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
VENV="${BMS_SUPERSET_VENV:-/var/cache/bms-superset}"
PNG="${BMS_SUPERSET_PNG:-$ROOT/deploy/superset/dashboard.png}"
KEEP=0
[ "${1:-}" = --keep ] && KEEP=1

# Superset 6.1 on CPython 3.11 as found here: rich, cachetools and flask-caching < 2.4
# pinned; duckdb-engine is the SQLAlchemy dialect for DuckDB.
PINS=(
  apache-superset==6.1.0
  duckdb==1.4.4
  duckdb-engine==0.17.0
  rich==15.0.0
  cachetools==8.0.2
  flask-caching==2.3.1
)
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.bms-superset-pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
  echo "== installing ${PINS[*]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$stamp"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bms-superset.XXXXXX")"
SUPERSET_PID=""
cleanup() {
  if [ -n "$SUPERSET_PID" ] && kill -0 "$SUPERSET_PID" 2>/dev/null; then
    echo "== stopping Superset (pid $SUPERSET_PID)"
    kill "$SUPERSET_PID" 2>/dev/null || true
    wait "$SUPERSET_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

RUN="${BMS_SUPERSET_RUN:-}"
if [ -z "$RUN" ]; then
  echo "== a simulated fleet, scored with --partition-by date"
  cargo build --locked --quiet --bin bms
  target="$(cargo metadata --locked --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  BMS="$target/debug/bms"
  "$BMS" simulate --vehicles 120 --days 120 --seed 77 --weak-fraction 0.15 --daily "$WORK/daily.csv" --truth "$WORK/truth.csv" 2>/dev/null
  "$BMS" predict -m "$ROOT/models/consistency-ref14x6.onnx" -i "$WORK/daily.csv" \
    --out "$WORK/run" --partition-by date
  RUN="$WORK/run"
fi
RUN="$(cd "$RUN" && pwd)"
ls "$RUN"/predictions/date=*/*.parquet >/dev/null

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PASSWORD="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(12))')"
export SUPERSET_HOME="$WORK/home" SUPERSET_CONFIG_PATH="$WORK/superset_config.py"
export FLASK_APP=superset PYTHONWARNINGS=ignore
cat > "$SUPERSET_CONFIG_PATH" <<EOF
# A throwaway local Superset (deploy/superset/run.sh): loopback only, metadata in $WORK.
SECRET_KEY = "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')"
SQLALCHEMY_DATABASE_URI = "sqlite:///$WORK/superset.db"
WTF_CSRF_ENABLED = False
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
EOF

echo "== Superset metadata, admin user, roles"
"$VENV/bin/superset" db upgrade >"$WORK/setup.log" 2>&1 || { tail -30 "$WORK/setup.log"; exit 1; }
"$VENV/bin/superset" fab create-admin --username admin --firstname bms --lastname admin \
  --email admin@localhost --password "$PASSWORD" >>"$WORK/setup.log" 2>&1 || { tail -30 "$WORK/setup.log"; exit 1; }
"$VENV/bin/superset" init >>"$WORK/setup.log" 2>&1 || { tail -30 "$WORK/setup.log"; exit 1; }

echo "== Superset on http://127.0.0.1:$PORT (admin / $PASSWORD)"
"$VENV/bin/superset" run --host 127.0.0.1 --port "$PORT" --with-threads >"$WORK/superset.log" 2>&1 &
SUPERSET_PID=$!
for _ in $(seq 1 120); do
  if "$VENV/bin/python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
    break
  fi
  kill -0 "$SUPERSET_PID" 2>/dev/null || { tail -30 "$WORK/superset.log"; exit 1; }
  sleep 1
done

"$VENV/bin/python" "$ROOT/deploy/superset/dashboard.py" \
  --url "http://127.0.0.1:$PORT" --password "$PASSWORD" --run "$RUN" \
  --queries "$ROOT/deploy/athena/queries.sql" --duckdb "$WORK/fleet.duckdb" --png "$PNG" ||
  { echo "== the end of Superset's log:"; tail -40 "$WORK/superset.log"; exit 1; }

if [ "$KEEP" = 1 ]; then
  echo "== Superset keeps running on http://127.0.0.1:$PORT/superset/dashboard/fleet-risk/ (admin / $PASSWORD); Ctrl-C stops it"
  wait "$SUPERSET_PID" || true
fi

"""Holds deploy/athena/*.sql to the files bms writes (run by deploy/test.sh).

    python check.py RUN_DIR [--ties]

RUN_DIR is a `bms predict --out RUN_DIR --partition-by date` run. Checks, with DuckDB:

1. predictions.sql: its columns are exactly the Parquet files' (names, order, types that
   Athena reads the Parquet types as), its partition column is the `date=` directory of the
   files, and its projection properties (type date, yyyy-MM-dd, range,
   storage.location.template) project exactly those directories.
2. queries.sql: each query runs, unchanged, over a DuckDB view named like the Athena table
   (the files with hive_partitioning, `date` typed as the table types it), and its answer
   equals the same figures computed in plain Python from the run's events.jsonl and
   summary.json (an independent store of the same predictions). With --ties (a run of
   batch_with_ties.py's batch), the tie-breaks of top_vehicles must have been exercised.

Every check is an assertion; the script ends with `N passed, 0 failed` or a traceback.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import os
import re
import struct
import sys
from collections import defaultdict

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))

# Athena's DDL types → the DuckDB types that read the same Parquet columns.
ATHENA_TO_DUCKDB = {
    "string": "VARCHAR",
    "varchar": "VARCHAR",
    "float": "FLOAT",
    "real": "FLOAT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "tinyint": "TINYINT",
    "smallint": "SMALLINT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}
# Java date patterns used by projection.*.format → strftime.
JAVA_DATE = {"yyyy-MM-dd": "%Y-%m-%d"}

passed = 0


def ok(cond: bool, what: str) -> None:
    """One named check; a failure stops the run with its name."""
    global passed
    assert cond, what
    passed += 1


def f32(x: float) -> float:
    """x rounded to the nearest float32, as a Python float (exact)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def sql_without_comments(sql: str) -> str:
    """`--` comments removed (outside single-quoted strings)."""
    out = []
    for line in sql.splitlines():
        in_str = False
        for i, ch in enumerate(line):
            if ch == "'":
                in_str = not in_str
            elif not in_str and line.startswith("--", i):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def parse_columns(body: str) -> list[tuple[str, str]]:
    """`name type [COMMENT '…']` items separated by commas."""
    item = re.compile(r"\s*`?([A-Za-z_]\w*)`?\s+([A-Za-z]+)(?:\s+COMMENT\s+'[^']*')?\s*(,|$)")
    cols, pos = [], 0
    body = body.strip()
    while pos < len(body):
        m = item.match(body, pos)
        assert m, f"cannot read a column definition at: {body[pos:pos + 60]!r}"
        cols.append((m.group(1), m.group(2).lower()))
        pos = m.end()
    return cols


def parse_ddl(path: str) -> dict:
    text = sql_without_comments(open(path).read())
    m = re.search(
        r"CREATE\s+EXTERNAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?\s*\((.*?)\)\s*"
        r"PARTITIONED\s+BY\s*\((.*?)\)\s*STORED\s+AS\s+PARQUET\s+LOCATION\s+'([^']+)'\s*"
        r"TBLPROPERTIES\s*\((.*?)\)\s*;\s*$",
        text,
        re.S | re.I,
    )
    assert m, f"{path}: not one CREATE EXTERNAL TABLE … STORED AS PARQUET … TBLPROPERTIES (…);"
    props = dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", m.group(5)))
    return {
        "table": m.group(1),
        "columns": parse_columns(m.group(2)),
        "partitions": parse_columns(m.group(3)),
        "location": m.group(4),
        "props": props,
    }


def parse_queries(path: str) -> dict[str, str]:
    text = open(path).read()
    parts = re.split(r"^-- name: *(\w+) *$", text, flags=re.M)
    queries = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}
    assert queries, f"{path}: no `-- name:` queries"
    for name, q in queries.items():
        body = sql_without_comments(q).strip()
        assert body.endswith(";") and body.count(";") == 1, f"{name}: not one statement"
        queries[name] = body.rstrip(";")
    return queries


def check_ddl(ddl: dict, run: str, con: duckdb.DuckDBPyConnection) -> list[str]:
    """Checks 1; returns the partition dates."""
    files = sorted(glob.glob(os.path.join(run, "predictions", "date=*", "*.parquet")))
    ok(len(files) > 1, f"{run}: no partitioned Parquet files")
    want = [(n, ATHENA_TO_DUCKDB[t]) for n, t in ddl["columns"]]
    for f in files:
        got = [(r[0], r[1]) for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)", [f]).fetchall()]
        ok(got == want, f"{f}: Parquet columns differ from predictions.sql's:\n"
                        f"  only in the files: {[c for c in got if c not in want]}\n"
                        f"  only in the DDL: {[c for c in want if c not in got]}")
    ok(len(want) == 5 + 84 and len({n for n, _ in want}) == len(want), "89 distinct columns")

    (part, ptype), = ddl["partitions"]
    ok(part == "date" and ptype == "string", f"partition column `date` string, not {part} {ptype}")
    ok(part not in {n for n, _ in ddl["columns"]}, "the partition column is not also a file column")
    p = ddl["props"]
    ok(p.get("projection.enabled") == "true", "projection.enabled = true")
    ok(p.get(f"projection.{part}.type") == "date", f"projection.{part}.type = date")
    fmt = p.get(f"projection.{part}.format")
    ok(fmt == "yyyy-MM-dd", f"projection.{part}.format = yyyy-MM-dd, not {fmt}")
    ok(p.get(f"projection.{part}.interval", "1") == "1"
       and p.get(f"projection.{part}.interval.unit", "DAYS") == "DAYS", "one partition a day")
    start, end = p[f"projection.{part}.range"].split(",")
    start = dt.datetime.strptime(start.strip(), JAVA_DATE[fmt]).date()
    ok(end.strip() == "NOW", "the range runs to NOW")

    # LOCATION and the template have the same placeholders; put the run's directory in
    # their place and the template must name each file's directory.
    loc, template = ddl["location"], p["storage.location.template"]
    prefix = "s3://<bucket>/<results-prefix>"
    ok(loc == prefix + "predictions/", f"LOCATION is {prefix}predictions/, not {loc}")
    ok(template == loc + "date=${date}/", f"storage.location.template is LOCATION + date=${{date}}/: {template}")
    dates = []
    for f in files:
        d = os.path.basename(os.path.dirname(f))[len("date="):]
        day = dt.datetime.strptime(d, JAVA_DATE[fmt]).date()
        local = template.replace(prefix, os.path.join(run, "")).replace("${date}", day.strftime(JAVA_DATE[fmt]))
        ok(os.path.dirname(f) + "/" == local, f"{f} is where the template projects {d}: {local}")
        ok(start <= day <= dt.date.today(), f"{d} inside projection.{part}.range")
        dates.append(d)

    # The view the queries run on: the table's name, the table's columns and types.
    glob_path = os.path.join(run, "predictions", "date=*", "*.parquet").replace("'", "''")
    con.execute(
        f"CREATE VIEW {ddl['table']} AS SELECT * FROM read_parquet('{glob_path}', "
        f"hive_partitioning = true, hive_types = {{'{part}': '{ATHENA_TO_DUCKDB[ptype]}'}})")
    got = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {ddl['table']}").fetchall()]
    ok(got == want + [(part, ATHENA_TO_DUCKDB[ptype])], f"the view's columns: {got[-3:]}")
    print(f"predictions.sql: {len(want)} columns + partition {part} match {len(files)} Parquet files "
          f"({min(dates)} … {max(dates)})")
    return sorted(set(dates))


def expected(run: str) -> dict:
    """The queries' answers from events.jsonl and summary.json, without DuckDB."""
    summary = json.load(open(os.path.join(run, "summary.json")))
    threshold = f32(summary["threshold"])
    model = summary["model_id"]
    rows = []
    with open(os.path.join(run, "events.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            p = f32(e["predicted_prob"])
            rows.append((e["request_id"], e["vin"], e["date"], p, p >= threshold))
    ok(len(rows) == summary["scored"], "events.jsonl has a line per scored window")
    ok(sum(r[4] for r in rows) == summary["alarms"], "alarms recomputed from events = summary's")
    ok(len({r[0] for r in rows}) == len(rows), "request ids are unique")

    per_day = defaultdict(list)
    per_vin = defaultdict(list)
    for r in rows:
        per_day[r[2]].append(r)
        per_vin[r[1]].append(r)
    alarms_per_day = [
        (d, model, len({r[1] for r in rs}), len(rs), sum(r[4] for r in rs), max(r[3] for r in rs))
        for d, rs in sorted(per_day.items())
    ]
    top = []
    for vin, rs in per_vin.items():
        best = max(r[3] for r in rs)
        alarm_days = sorted({r[2] for r in rs if r[4]})
        top.append((vin, best, min(r[2] for r in rs if r[3] == best), len(alarm_days),
                    alarm_days[0] if alarm_days else None, len({r[2] for r in rs})))
    top.sort(key=lambda t: (-t[1], t[0]))
    bins = defaultdict(lambda: [0, 0])
    for r in rows:
        b = min(math.floor(r[3] * 20), 19)
        bins[b][0] += 1
        bins[b][1] += r[4]
    histogram = [(b, b / 20, (b + 1) / 20, n, a) for b, (n, a) in sorted(bins.items())]
    return {
        "rows": rows,
        "alarms_per_day": alarms_per_day,
        "top_vehicles": top[:20],
        "probability_histogram": histogram,
    }


def same(got: list[tuple], want: list[tuple], name: str) -> None:
    ok(len(got) == len(want), f"{name}: {len(got)} rows, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        ok(len(g) == len(w), f"{name} row {i}: {len(g)} columns, expected {len(w)}")
        for j, (a, b) in enumerate(zip(g, w)):
            if isinstance(b, float) and not isinstance(a, str):
                a = float(a)
                ok(a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12),
                   f"{name} row {i} column {j}: {a!r}, expected {b!r}")
            else:
                ok(a == b, f"{name} row {i} column {j}: {a!r}, expected {b!r} (row {g} vs {w})")


def main() -> None:
    run = os.path.abspath(sys.argv[1])
    ddl = parse_ddl(os.path.join(HERE, "predictions.sql"))
    queries = parse_queries(os.path.join(HERE, "queries.sql"))
    con = duckdb.connect()
    dates = check_ddl(ddl, run, con)

    want = expected(run)
    ids = {r[0] for r in con.execute(f"SELECT event_id FROM {ddl['table']}").fetchall()}
    ok(ids == {r[0] for r in want["rows"]}, "the Parquet holds exactly the events' predictions")
    ok(sorted({r[2] for r in want["rows"]}) == dates, "a partition per scored day")
    bad = con.execute(
        f"SELECT count(*) FROM {ddl['table']} WHERE alarm <> (predicted_prob >= ?)",
        [json.load(open(os.path.join(run, "summary.json")))["threshold"]]).fetchone()[0]
    ok(bad == 0, f"{bad} rows whose alarm is not predicted_prob >= threshold")

    ok(set(queries) == {"alarms_per_day", "top_vehicles", "probability_histogram"},
       f"queries.sql names {sorted(queries)}")
    for name, q in queries.items():
        tables = re.findall(r"\bFROM\s+([\w.]+)", q, re.I)
        ok(ddl["table"] in tables and set(tables) <= {ddl["table"], "ranked", "binned"},
           f"{name} reads {tables}, not the table {ddl['table']}")
        got = con.execute(q).fetchall()
        same(got, want[name], name)
        print(f"queries.sql {name}: {len(got)} rows as computed from events.jsonl")

    # The fleet has to exercise the queries: alarms on several days, vehicles with and
    # without them, and more than a couple of probability bins.
    per_day = want["alarms_per_day"]
    ok(sum(1 for r in per_day if r[4] > 0) >= 2, "alarms on at least two days")
    ok(any(t[3] > 0 for t in want["top_vehicles"]), "a top vehicle with alarms")
    ok(len(want["probability_histogram"]) >= 3, "at least three probability bins")
    if "--ties" in sys.argv[2:]:
        # The run of batch_with_ties.py: the tie-breaks of top_vehicles were exercised.
        top = want["top_vehicles"]
        ok(any(a[1] == b[1] for a, b in zip(top, top[1:])), "two top vehicles tie on max_prob")
        ties = sum(1 for r in want["rows"] if (r[1], r[3]) in {(t[0], t[1]) for t in top})
        ok(ties > len(top), "a top vehicle reaches its max_prob on two days")
    print(f"athena: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()

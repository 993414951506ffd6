"""The "Fleet risk" dashboard in a running Superset, through its REST API, and a screenshot
(run by deploy/superset/run.sh, in Superset's venv).

    python dashboard.py --url URL --password PW --run RUN_DIR --queries queries.sql \
        --duckdb FILE --png OUT.png

1. FILE: a DuckDB database whose view bms_predictions reads RUN_DIR/predictions/date=*/
   *.parquet (hive partitioning, so the Athena table's columns and `date`);
2. that database registered in Superset (read-only), each query of queries.sql a virtual
   dataset, a chart per dataset (alarms per day and the probability histogram as bars, the
   top vehicles as a table), and the dashboard "Fleet risk" (slug fleet-risk) holding them;
3. every chart's data fetched once through /api/v1/chart/data (a chart whose query fails
   fails the script), then the dashboard rendered by headless Chromium (driven over the
   DevTools protocol on a loopback port, logged in with the admin's session cookie) and
   saved as OUT.png, when Chromium is installed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb
import requests
import websocket


def queries(path: str) -> dict[str, str]:
    text = open(path).read()
    parts = re.split(r"^-- name: *(\w+) *$", text, flags=re.M)
    out = {}
    for i in range(1, len(parts), 2):
        body = "\n".join(l for l in parts[i + 1].splitlines() if not l.lstrip().startswith("--"))
        out[parts[i]] = body.strip().rstrip(";")
    return out


class Superset:
    def __init__(self, url: str, password: str):
        self.url = url
        self.http = requests.Session()
        r = self.http.post(f"{url}/api/v1/security/login", json={
            "username": "admin", "password": password, "provider": "db", "refresh": True})
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def call(self, method: str, path: str, **kw) -> dict:
        r = self.http.request(method, f"{self.url}{path}", **kw)
        if r.status_code >= 400:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:2000]}")
        return r.json() if r.content else {}


def metric(column: str) -> dict:
    return {"expressionType": "SIMPLE", "column": {"column_name": column}, "aggregate": "SUM",
            "label": column}


def build(s: Superset, duck: str, qs: dict[str, str]) -> tuple[int, list[int]]:
    db = s.call("POST", "/api/v1/database/", json={
        "database_name": "bms fleet (DuckDB)",
        "sqlalchemy_uri": f"duckdb:///{duck}",
        "expose_in_sqllab": True,
        "extra": json.dumps({"engine_params": {"connect_args": {"read_only": True}}}),
    })["id"]
    datasets = {}
    for name, sql in qs.items():
        ds = s.call("POST", "/api/v1/dataset/", json={
            "database": db, "schema": "main", "table_name": name, "sql": sql})["id"]
        s.call("PUT", f"/api/v1/dataset/{ds}/refresh")
        datasets[name] = ds
    dash = s.call("POST", "/api/v1/dashboard/", json={
        "dashboard_title": "Fleet risk", "slug": "fleet-risk", "published": True})["id"]

    no_time_filter = lambda col: [{  # noqa: E731
        "clause": "WHERE", "subject": col, "operator": "TEMPORAL_RANGE",
        "comparator": "No filter", "expressionType": "SIMPLE"}]
    charts = [
        ("Alarms per day", "alarms_per_day", {
            "viz_type": "echarts_timeseries_bar", "x_axis": "date", "time_grain_sqla": "P1D",
            "metrics": [metric("alarms")], "groupby": [], "adhoc_filters": no_time_filter("date"),
            "row_limit": 10000, "show_legend": False, "x_axis_title": "day",
            "y_axis_title": "windows with an alarm", "y_axis_title_margin": 30,
            "x_axis_title_margin": 30, "color_scheme": "supersetColors",
        }),
        ("Probability histogram", "probability_histogram", {
            "viz_type": "echarts_timeseries_bar", "x_axis": "bin_start",
            "metrics": [metric("windows"), metric("alarms")], "groupby": [], "adhoc_filters": [],
            "row_limit": 100, "show_legend": True, "x_axis_title": "predicted probability (bin start, width 0.05)",
            "y_axis_title": "windows", "logAxis": True, "y_axis_title_margin": 30,
            "x_axis_title_margin": 30, "color_scheme": "supersetColors",
        }),
        ("Top vehicles by maximum probability", "top_vehicles", {
            "viz_type": "table", "query_mode": "raw",
            "all_columns": ["vin", "max_prob", "max_prob_date", "alarm_days", "first_alarm_date", "days_scored"],
            # The dataset's own LIMIT 20 keeps the table to 20 rows: a row_limit of 20 would
            # make Superset warn that the limit was reached.
            "order_by_cols": [json.dumps(["max_prob", False])], "row_limit": 1000,
            "adhoc_filters": [], "table_timestamp_format": "%Y-%m-%d",
            "column_config": {"max_prob": {"d3NumberFormat": ".4f"}},
        }),
    ]
    ids = []
    for title, ds_name, form in charts:
        ds = datasets[ds_name]
        form = {"datasource": f"{ds}__table", **form}
        ids.append(s.call("POST", "/api/v1/chart/", json={
            "slice_name": title, "viz_type": form["viz_type"], "datasource_id": ds,
            "datasource_type": "table", "params": json.dumps(form), "dashboards": [dash],
        })["id"])

    def chart(n: int, cid: int, title: str, width: int, height: int) -> dict:
        return {"type": "CHART", "id": f"CHART-{n}", "children": [],
                "meta": {"chartId": cid, "width": width, "height": height, "sliceName": title}}
    layout = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": "Fleet risk"}},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": ["ROW-1", "ROW-2"], "parents": ["ROOT_ID"]},
        "ROW-1": {"type": "ROW", "id": "ROW-1", "children": ["CHART-1", "CHART-2"],
                  "parents": ["ROOT_ID", "GRID_ID"], "meta": {"background": "BACKGROUND_TRANSPARENT"}},
        "ROW-2": {"type": "ROW", "id": "ROW-2", "children": ["CHART-3"],
                  "parents": ["ROOT_ID", "GRID_ID"], "meta": {"background": "BACKGROUND_TRANSPARENT"}},
        "CHART-1": chart(1, ids[0], charts[0][0], 6, 55) | {"parents": ["ROOT_ID", "GRID_ID", "ROW-1"]},
        "CHART-2": chart(2, ids[1], charts[1][0], 6, 55) | {"parents": ["ROOT_ID", "GRID_ID", "ROW-1"]},
        "CHART-3": chart(3, ids[2], charts[2][0], 12, 90) | {"parents": ["ROOT_ID", "GRID_ID", "ROW-2"]},
    }
    s.call("PUT", f"/api/v1/dashboard/{dash}", json={
        "position_json": json.dumps(layout),
        "json_metadata": json.dumps({"color_scheme": "supersetColors", "refresh_frequency": 0,
                                     "label_colors": {"windows": "#1FA8C9", "alarms": "#E04355"},
                                     "positions": layout}),
    })
    return dash, ids


def check_data(s: Superset, ids: list[int]) -> None:
    """Each chart's query run once by Superset: it must answer rows."""
    for cid in ids:
        c = s.call("GET", f"/api/v1/chart/{cid}")["result"]
        form = json.loads(c["params"])
        ds = int(form["datasource"].split("__")[0])
        if form["viz_type"] == "table":
            query = {"columns": form["all_columns"], "orderby": [["max_prob", False]],
                     "row_limit": form["row_limit"]}
        else:
            query = {"columns": [form["x_axis"]], "metrics": form["metrics"],
                     "orderby": [[form["x_axis"], True]], "row_limit": form["row_limit"]}
        r = s.call("POST", "/api/v1/chart/data", json={
            "datasource": {"id": ds, "type": "table"}, "force": True,
            "queries": [query], "result_format": "json", "result_type": "full"})
        rows = r["result"][0]["data"]
        assert rows, f"chart {c['slice_name']}: no rows"
        print(f"superset: chart {c['slice_name']!r}: {len(rows)} rows, first {rows[0]}")


class Chrome:
    """Headless Chromium over the DevTools protocol (a loopback port it picks itself)."""

    def __init__(self, exe: str, width: int, height: int):
        self.dir = tempfile.mkdtemp(prefix="bms-chrome.")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-extensions", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self.dir}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = os.path.join(self.dir, "DevToolsActivePort")
            for _ in range(100):
                if os.path.exists(port_file) and open(port_file).read().count("\n") >= 1:
                    break
                time.sleep(0.1)
            port = int(open(port_file).read().split()[0])
            pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list").json()
                     if t["type"] == "page"]
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                                 suppress_origin=True)
        except BaseException:
            self.stop()
            raise
        self.n = 0

    def send(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def eval(self, js: str):
        return self.send("Runtime.evaluate", expression=js, returnByValue=True)["result"].get("value")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.stop()


def screenshot(url: str, password: str, dash: int, png: str) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        print("superset: no chromium, chromium-browser or google-chrome: no screenshot")
        return
    # A browser session: the login form, as a person logs in.
    web = requests.Session()
    r = web.post(f"{url}/login/", data={"username": "admin", "password": password}, allow_redirects=True)
    r.raise_for_status()
    cookie = web.cookies.get("session")
    assert cookie and web.get(f"{url}/api/v1/me/").status_code == 200, "cannot log in with the form"
    width, height = 1600, 1280
    chrome = Chrome(exe, width, height)
    try:
        chrome.send("Network.enable")
        chrome.send("Network.setCookie", name="session", value=cookie, domain="127.0.0.1", path="/")
        chrome.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                    deviceScaleFactor=1, mobile=False)
        chrome.send("Page.enable")
        chrome.send("Page.navigate", url=f"{url}/superset/dashboard/{dash}/?standalone=1")
        ready = ("document.querySelectorAll('.dashboard-chart canvas, .dashboard-chart table tbody tr').length"
                 " >= 3 && document.querySelectorAll('.loading, [data-test=\"loading-indicator\"]').length == 0")
        deadline = time.time() + 120
        while not chrome.eval(ready):
            assert time.time() < deadline, "the dashboard did not render its charts in 120 s: " + str(
                chrome.eval("document.body.innerText.slice(0, 500)"))
            time.sleep(1)
        time.sleep(3)  # the charts' entry animations
        errors = chrome.eval("Array.from(document.querySelectorAll('.dashboard-chart .alert, "
                             "[role=alert]')).map(e => e.innerText).join(' | ')")
        assert not errors, f"a chart shows an error: {errors}"
        shot = chrome.send("Page.captureScreenshot", format="png")
        with open(png, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"superset: screenshot {png} ({width}×{height})")
    finally:
        chrome.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--duckdb", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args()

    files = os.path.join(os.path.abspath(a.run), "predictions", "date=*", "*.parquet").replace("'", "''")
    con = duckdb.connect(a.duckdb)
    con.execute(f"CREATE OR REPLACE VIEW bms_predictions AS SELECT * FROM read_parquet('{files}', "
                "hive_partitioning = true)")
    n = con.execute("SELECT count(*) FROM bms_predictions").fetchone()[0]
    con.close()
    print(f"superset: {a.duckdb}: view bms_predictions over {n} predictions of {a.run}")

    s = Superset(a.url, a.password)
    dash, ids = build(s, os.path.abspath(a.duckdb), queries(a.queries))
    print(f"superset: dashboard 'Fleet risk' ({a.url}/superset/dashboard/fleet-risk/), charts {ids}")
    check_data(s, ids)
    screenshot(a.url, a.password, dash, a.png)


if __name__ == "__main__":
    sys.exit(main())

"""`bms serve` against a Flask + XGBoost server of the reference container's kind, on
loopback, in the same run: requests/s and p50/p99 latency for 1-line and 1,000-line CSV
bodies at a few concurrency levels.

    export CARGO_TARGET_DIR=/work/target
    cargo build --release --bin bms      # then --bms PATH if the binary is elsewhere
    apt-get install -y wrk
    python3 -m venv /work/venv-serve && /work/venv-serve/bin/pip install flask gunicorn xgboost==3.2.0 numpy
    /work/venv-serve/bin/python benches/serve_bench.py [--pin] [--duration 5] [--concurrency 1,8,32]

Both servers load the same model (`benches/data/xgb_ref.onnx` and XGBoost's own
`xgb_ref.json`, see make_bench_model.py) and score the same bodies (rows of
make_bench_model.py's distribution, ~3 % `nan`, written `%.18e` like the reference Lambda's input).
The script first checks that both answer the same probabilities (within 1e-6), then runs
`wrk --latency` for each (server, body, concurrency), each once all servers are idle again,
and prints a table with the ratios.
Flask runs under gunicorn with one process per CPU it may use (gthread workers,
keep-alive), as the reference container does; `bms serve` uses its defaults (which also
size themselves to the CPUs it may use). By default wrk, the servers and anything else on
the machine share all CPUs, so wrk (~16 µs of CPU per request here) takes CPU from the
server it measures: read the ratios, not the absolute figures. With `--pin` the servers
run on the first half of the CPUs and wrk on the other half, as if the client were
another machine; every server gets the same CPUs. The last column, the servers' own CPU
time (user + system, all threads and worker processes, from /proc) per request, depends
least on either.

With a C compiler (`cc`) the harness also runs `floor`, benches/c/http_floor.c: a server
that answers every request with an empty 200 and does nothing else, on 1-line bodies. Its
requests/s is the most any server can reach in this harness on this machine: the ratio
`floor / flask` is the ceiling for `bms / flask`.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WIDTH = 84


def rows(n, seed):
    """`n` rows like make_bench_model.py's: standard normal features, ~3 % NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    x[rng.random(size=x.shape) < 0.03] = np.nan
    return x

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/csv"
local f = io.open("{path}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, what):
    t = time.time()
    while time.time() - t < 60:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not answer /ping")


def post(port, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "text/csv"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return np.array([float(v) for v in r.read().decode().split()])


def cpu_seconds(pid):
    """User + system CPU time of a process, its threads and its child processes."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


def to_seconds(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    num, unit = float(m.group(1)), m.group(2)
    return num * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def settle(pids, quiet=0.05, window=0.3, limit=15.0):
    """Waits until the servers are idle: a server that was just flooded (e.g. Flask with
    32 connections of 1,000-line bodies) keeps working off its queue after wrk stops, and
    that leftover load would land in the next cell's latencies. Idle = the servers
    together used under `quiet` CPU-seconds per second over `window` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        c0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(window)
        if sum(cpu_seconds(p) for p in pids) - c0 < quiet * window:
            return
    print(f"  warning: servers still busy after {limit:.0f} s")


def on_cpus(cpus):
    """A preexec_fn that confines the child to `cpus` (None: leave it where it is)."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def run_wrk(port, pid, lua, conns, duration, cpus=None):
    cpu0 = cpu_seconds(pid)
    threads = min(conns, len(cpus) if cpus else 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", lua,
         f"http://127.0.0.1:{port}/invocations"],
        capture_output=True, text=True, check=True, preexec_fn=on_cpus(cpus),
    ).stdout
    cpu = cpu_seconds(pid) - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        print(f"  warning: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}")
    return rps, to_seconds(lat["50"]), to_seconds(lat["99"]), cpu / max(n, 1)


def fmt_lat(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds; each cell reports its best round (highest req/s)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--workers", type=int,
                    help="gunicorn processes for the Flask server (default: one per CPU "
                         "the servers may use)")
    ap.add_argument("--pin", action="store_true",
                    help="give the servers the first half of the CPUs and wrk the rest, "
                         "instead of letting all of them share every CPU")
    ap.add_argument("--bms", help="the bms binary (default $CARGO_TARGET_DIR/release/bms)")
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = client_cpus = None
    if args.pin:
        if len(cpus) < 2:
            sys.exit("--pin needs at least 2 CPUs")
        server_cpus, client_cpus = cpus[:len(cpus) // 2], cpus[len(cpus) // 2:]
    workers = args.workers or len(server_cpus or cpus)

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bms = args.bms or os.path.join(target, "release", "bms")
    if not os.path.exists(bms):
        sys.exit(f"{bms} not found: cargo build --release --bin bms")

    tmp = tempfile.mkdtemp(prefix="bms-serve-bench-")
    x = rows(1000, 97)
    bodies = {}
    for n in (1, 1000):
        path = os.path.join(tmp, f"body{n}.csv")
        np.savetxt(path, x[:n], fmt="%.18e", delimiter=",")
        with open(path, "rb") as f:
            bodies[n] = f.read()
        with open(os.path.join(tmp, f"body{n}.lua"), "w") as f:
            f.write(LUA.format(path=path))

    servers = {}
    procs = []
    try:
        for name, extra in (("bms", []), ("bms-inline", ["--inline-max-bytes", "8192"])):
            port = free_port()
            p = subprocess.Popen(
                [bms, "serve", "--model", os.path.join(HERE, "data", "xgb_ref.onnx"),
                 "--host", "127.0.0.1", "--port", str(port), *extra],
                stderr=subprocess.DEVNULL, preexec_fn=on_cpus(server_cpus))
            procs.append(p)
            wait_ready(port, p, name)
            servers[name] = (port, p.pid)
        cc = shutil.which("cc")
        if cc:
            floor = os.path.join(tmp, "http_floor")
            subprocess.run([cc, "-O2", "-o", floor, os.path.join(HERE, "c", "http_floor.c")],
                           check=True)
            port = free_port()
            p = subprocess.Popen([floor, str(port)], preexec_fn=on_cpus(server_cpus))
            procs.append(p)
            wait_ready(port, p, "floor")
            servers["floor"] = (port, p.pid)
        else:
            print("no C compiler (cc): the floor server is left out")
        port = free_port()
        p = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-w", str(workers),
             "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{port}", "--chdir", HERE,
             "--log-level", "warning", "serve_flask:app"],
            stderr=subprocess.DEVNULL, preexec_fn=on_cpus(server_cpus))
        procs.append(p)
        wait_ready(port, p, "flask")
        servers["flask"] = (port, p.pid)

        a, b = post(servers["bms"][0], bodies[1000]), post(servers["flask"][0], bodies[1000])
        diff = float(np.max(np.abs(a - b)))
        print(f"1,000 rows scored by both: max |bms - xgboost| = {diff:.2e}")
        if diff > 1e-6:
            sys.exit("the servers disagree")

        where = (f"servers on CPU {server_cpus}, wrk on CPU {client_cpus}"
                 if args.pin else f"{len(cpus)} CPUs shared by wrk and the servers")
        print(f"wrk {args.duration} s per cell, best of {args.rounds} interleaved rounds, "
              f"{where}; Flask: {workers} gunicorn processes\n", flush=True)
        extra = ["bms-inline"] + (["floor"] if "floor" in servers else [])
        cells = [(n, c, name) for n in (1, 1000) for c in conc
                 for name in ["bms", "flask"] + (extra if n == 1 else [])]
        results = {}
        for _ in range(args.rounds):
            for n, c, name in cells:
                lua = os.path.join(tmp, f"body{n}.lua")
                settle([pid for _, pid in servers.values()])
                r = run_wrk(*servers[name], lua, c, args.duration, client_cpus)
                if (n, c, name) not in results or r[0] > results[(n, c, name)][0]:
                    results[(n, c, name)] = r
        print("| body | concurrency | server | req/s | p50 | p99 | server CPU per request |")
        print("|---|---|---|---|---|---|---|")
        for n, c, name in cells:
            r = results[(n, c, name)]
            print(f"| {n} line{'s' if n > 1 else ''} | {c} | {name} | {r[0]:,.0f} | "
                  f"{fmt_lat(r[1])} | {fmt_lat(r[2])} | {fmt_lat(r[3])} |")
        print("\n| body | concurrency | req/s bms / flask | req/s floor / flask (ceiling) "
              "| p99 flask / bms | CPU per request flask / bms |")
        print("|---|---|---|---|---|---|")
        for n in (1, 1000):
            for c in conc:
                b, f = results[(n, c, "bms")], results[(n, c, "flask")]
                fl = results.get((n, c, "floor"))
                ceiling = f"{fl[0] / f[0]:.1f}×" if fl else "–"
                print(f"| {n} | {c} | {b[0] / f[0]:.1f}× | {ceiling} | {f[2] / b[2]:.1f}× "
                      f"| {f[3] / b[3]:.1f}× |")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""benches/soak.py: `bms serve` under sustained, partly hostile load on loopback.

    cargo build --release --bin bms && apt-get install -y wrk
    python3 benches/soak.py [--bms target/release/bms] [--seconds 120] [--connections 64,256]

For each connection count, one phase of `--seconds`: wrk (benches/soak.lua) sends valid
bodies (1-line, and a 1,000-line body every 50th request) on 3/4 of the connections and
garbage bodies (wrong field counts, non-numbers, infinities, bad quotes) on the rest, while
Python threads keep slow clients (headers trickling in a byte at a time), clients that
disconnect in the middle of a body, oversized headers and a `/ping` probe (twice a second)
going. The server's RSS is sampled throughout.

Fails (exit 1) when: a valid body got anything but 200 or a garbage body anything but 400
(429 counts as unexpected: `--max-inflight` is set above the connection count), a `/ping`
failed or took more than 2 s, the abusive clients were not answered or cut off, or the RSS
at the end of a phase is more than 1.5x + 16 MiB the RSS a quarter of the way into it
(warmed up; a phase with more connections may well use more than the one before). `scripts/soak-short.sh` runs a short
version in CI.
"""
import argparse, os, re, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "models", "consistency-ref14x6.onnx")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_bodies(bms, tmp):
    daily, batch = os.path.join(tmp, "daily.csv"), os.path.join(tmp, "batch.csv")
    subprocess.run([bms, "simulate", "--vehicles", "20", "--days", "120", "--seed", "4",
                    "--daily", daily], check=True, stderr=subprocess.DEVNULL)
    subprocess.run([bms, "windows", "-i", daily, "-o", batch], check=True,
                   stderr=subprocess.DEVNULL)
    lines = open(batch).read().splitlines()
    features = [l.split(",", 2)[2] for l in lines]
    good = os.path.join(tmp, "good.txt")
    with open(good, "w") as f:
        for i, l in enumerate(lines[:200]):
            # Feature-only rows (SageMaker's form) and reference batch lines.
            f.write((features[i] if i % 2 else l) + "\n")
    big = os.path.join(tmp, "big.txt")
    with open(big, "w") as f:
        f.write("\\n".join(features[i % len(features)] for i in range(1000)) + "\n")
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "w") as f:
        f.write("1,2,3\n")
        f.write(features[0].replace(",", ";") + "\n")
        f.write(",".join(["abc"] * 84) + "\n")
        f.write(",".join(["inf"] * 84) + "\n")
        f.write(features[0] + ",1e39\n")
        f.write('"unterminated,' + features[0] + "\n")
        f.write(features[1] + "\\n" + "x" * 50 + "\n")
    return good, big, bad


def wrk(url, conns, seconds, script_args):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency",
           "-s", os.path.join(ROOT, "benches", "soak.lua"), url, "--", *script_args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_wrk(text):
    statuses = {int(a): int(b) for a, b in re.findall(r"^status (\d+) (\d+)$", text, re.M)}
    m = re.search(r"^latency p50_us (\d+) p99_us (\d+) max_us (\d+)$", text, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errs = re.search(r"^errors connect (\d+) read (\d+) write (\d+) timeout (\d+)$", text, re.M)
    return {
        "statuses": statuses,
        "p50_ms": int(m.group(1)) / 1000 if m else None,
        "p99_ms": int(m.group(2)) / 1000 if m else None,
        "rps": float(rps.group(1)) if rps else 0.0,
        "errors": tuple(int(x) for x in errs.groups()) if errs else None,
    }


class Abuse:
    """Slow, disconnecting and oversized clients, and the /ping probe, until stopped."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.failures, self.ping_max, self.pings = [], 0.0, 0
        self.counts = {"slow": 0, "cut": 0, "huge": 0}

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def answer(self, s):
        data = b""
        try:
            while b"\r\n" not in data:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        except OSError:
            pass
        return data.split(b"\r\n", 1)[0].decode(errors="replace")

    def slow(self):
        while not self.stop.is_set():
            try:
                s = self.connect(timeout=90)
                req = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n1,2,3"
                closed = False
                for b in req:
                    if self.stop.is_set():
                        break
                    try:
                        s.sendall(bytes([b]))
                    except OSError:
                        closed = True  # the server's timeout cut it off: what we want
                        break
                    time.sleep(0.2)
                if not closed and not self.stop.is_set():
                    self.answer(s)
                s.close()
                self.counts["slow"] += 1
            except OSError as e:
                self.failures.append(f"slow client: {e}")
                time.sleep(1)

    def cut(self):
        while not self.stop.is_set():
            try:
                s = self.connect()
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"1.0," * 50)
                s.close()
                self.counts["cut"] += 1
            except OSError as e:
                self.failures.append(f"disconnecting client: {e}")
            time.sleep(0.02)

    def huge(self):
        while not self.stop.is_set():
            try:
                s = self.connect()
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
                line = self.answer(s)
                s.close()
                if line and not line.startswith("HTTP/1.1 4"):
                    self.failures.append(f"a 1 MB header was answered {line!r}")
                self.counts["huge"] += 1
            except OSError:
                self.counts["huge"] += 1  # reset by the server: refused, as it should be
            time.sleep(0.1)

    def ping(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                s = self.connect(timeout=2)
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                line = self.answer(s)
                s.close()
                took = time.perf_counter() - t
                self.ping_max = max(self.ping_max, took)
                self.pings += 1
                if not line.startswith("HTTP/1.1 200"):
                    self.failures.append(f"/ping answered {line!r}")
                elif took > 2:
                    self.failures.append(f"/ping took {took:.1f} s")
            except OSError as e:
                self.failures.append(f"/ping failed: {e}")
            time.sleep(0.5)

    def start(self):
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in [self.slow] * 8 + [self.cut, self.huge, self.ping]]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bms", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "bms"))
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--connections", default="64,256")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("soak: wrk is missing (apt-get install -y wrk)")
    conns = [int(c) for c in args.connections.split(",")]
    tmp = tempfile.mkdtemp(prefix="bms-soak-")
    good, big, bad = make_bodies(args.bms, tmp)
    port = free_port()
    log = open(os.path.join(tmp, "serve.log"), "w")
    server = subprocess.Popen([args.bms, "serve", "--model", MODEL, "--host", "127.0.0.1",
                               "--port", str(port), "--max-inflight", str(max(conns) + 64),
                               "--timeout-secs", "5"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    failures, rows = [], []
    rss = [("start", rss_kib(server.pid))]
    try:
        for c in conns:
            abuse = Abuse(port)
            abuse.start()
            bad_c = max(1, c // 4)
            w_good = wrk(url, c - bad_c, args.seconds, [good, big, "50"])
            w_bad = wrk(url, bad_c, args.seconds, [bad])
            samples = []
            while w_good.poll() is None or w_bad.poll() is None:
                samples.append(rss_kib(server.pid))
                time.sleep(1)
            abuse.finish()
            g, b = parse_wrk(w_good.stdout.read()), parse_wrk(w_bad.stdout.read())
            end = rss_kib(server.pid)
            rss.append((f"after {c} connections", end))
            # Flat within the phase: the end against a quarter of the way in (warmed up).
            warm = samples[len(samples) // 4] if samples else end
            if end > 1.5 * warm + 16 * 1024:
                failures.append(f"{c} conn.: RSS grew from {warm} KiB to {end} KiB during the phase")
            unexpected = {k: v for k, v in g["statuses"].items() if k != 200}
            unexpected_bad = {k: v for k, v in b["statuses"].items() if k != 400}
            if unexpected:
                failures.append(f"{c} conn.: valid bodies got {unexpected}")
            if unexpected_bad:
                failures.append(f"{c} conn.: garbage bodies got {unexpected_bad}")
            if not g["statuses"].get(200) or not b["statuses"].get(400):
                failures.append(f"{c} conn.: no traffic? {g['statuses']} {b['statuses']}")
            failures += [f"{c} conn.: {f}" for f in abuse.failures]
            rows.append((c, g, b, abuse, max(samples or [0])))
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        if code != 0:
            failures.append(f"bms serve exited {code} after SIGTERM")
    print(f"bms serve soak: {args.bms}, {args.seconds} s per phase, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| conn. | valid req/s | valid p50 / p99 ms | garbage req/s | garbage p99 ms | statuses (valid; garbage) | slow / cut / 1 MB-header clients | /ping max ms | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, g, b, a, peak in rows:
        print(f"| {c} | {g['rps']:.0f} | {g['p50_ms']} / {g['p99_ms']} | {b['rps']:.0f} | {b['p99_ms']} | "
              f"{g['statuses']}; {b['statuses']} | {a.counts['slow']} / {a.counts['cut']} / {a.counts['huge']} | "
              f"{a.ping_max * 1000:.0f} ({a.pings} pings) | {peak / 1024:.0f} |")
    print("RSS: " + ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in rss))
    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures[:20]))
        sys.exit(1)
    print("soak: all checks passed")


if __name__ == "__main__":
    main()

"""benches/gateway_load.py BMS [CONNECTIONS] [VEHICLES] [DAYS]: many vehicles at once against
`bms gateway`: frames acknowledged per second and reply latency (send of a report packet to
its `01` reply), with every connection open at the same time. Not part of CI.

Each connection is one simulated vehicle (`bms simulate --gbt32960`, vehicles reused
round-robin with their VIN rewritten so that every connection is its own VIN) sending its
login, reports and logout one packet at a time, waiting for each reply (a terminal's
behaviour), from asyncio tasks in this one process.

    cargo build --release && python3 benches/gateway_load.py target/release/bms 1000
"""
import asyncio, os, re, statistics, subprocess, sys, tempfile, time

BMS = sys.argv[1]
CONNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
VEHICLES = int(sys.argv[3]) if len(sys.argv) > 3 else 20
DAYS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "consistency-ref14x6.onnx")


def split(cap):
    """The packets of a capture by VIN (header: ## cmd flag vin17 enc len2 ... bcc)."""
    by_vin, i = {}, 0
    while i + 24 <= len(cap):
        n = int.from_bytes(cap[i + 22:i + 24], "big")
        pkt = cap[i:i + 25 + n]
        by_vin.setdefault(pkt[4:21], []).append(pkt)
        i += 25 + n
    return list(by_vin.values())


def with_vin(pkt, vin):
    body = bytearray(pkt)
    body[4:21] = vin
    bcc = 0
    for b in body[2:-1]:
        bcc ^= b
    body[-1] = bcc
    return bytes(body)


async def vehicle(port, pkts, lat):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for p in pkts:
        t = time.perf_counter()
        w.write(p)
        await w.drain()
        head = await r.readexactly(24)
        await r.readexactly(int.from_bytes(head[22:24], "big") + 1)
        if p[2] == 2:
            lat.append(time.perf_counter() - t)
    w.close()


async def main():
    with tempfile.TemporaryDirectory() as d:
        cap = os.path.join(d, "cap.gbt32960")
        subprocess.run([BMS, "simulate", "--vehicles", str(VEHICLES), "--days", str(DAYS),
                        "--interval", "30s", "--gbt32960", cap], check=True,
                       stderr=subprocess.DEVNULL)
        fleet = [v for v in split(open(cap, "rb").read()) if len(v) > 2]
        gw = subprocess.Popen([BMS, "gateway", "--listen", "127.0.0.1:0", "-m", MODEL,
                               "--store", os.path.join(d, "store")],
                              stderr=subprocess.PIPE, text=True)
        port = None
        for line in gw.stderr:
            m = re.search(r"listening on [\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        conns = []
        for k in range(CONNS):
            vin = b"LLOAD%012d" % k
            conns.append([with_vin(p, vin) for p in fleet[k % len(fleet)]])
        lat = []
        t = time.perf_counter()
        await asyncio.gather(*(vehicle(port, c, lat) for c in conns))
        wall = time.perf_counter() - t
        gw.terminate()
        tail = gw.communicate(timeout=120)[1]
        lat.sort()
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1e3
        print(f"{CONNS} connections, {len(lat)} frames in {wall:.2f} s: "
              f"{len(lat) / wall:,.0f} frames/s acknowledged; reply latency "
              f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1] * 1e3:.1f} ms")
        print("gateway exit", gw.returncode, tail.strip().splitlines()[-1])


asyncio.run(main())

"""benches/ab_predict.py N INPUT binA binB [args]: alternating runs of `bms predict --out`
of two binaries on the same input (A B, B A, …), best and median wall and CPU (user+sys)
of each: the way to see a few per cent through this VM's drift."""
import os, resource, shutil, statistics, subprocess, sys, tempfile, time
n, inp, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
extra = sys.argv[5:]
M = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "consistency-ref14x6.onnx")
res = {a: [], b: []}
for i in range(n):
    for binary in ([a, b] if i % 2 == 0 else [b, a]):
        out = os.path.join(tempfile.gettempdir(), f"bms-ab-{os.getpid()}-{i % 2}")
        shutil.rmtree(out, ignore_errors=True)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([binary, "predict", "-m", M, "-i", inp, "--out", out, *extra],
                       check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        res[binary].append((wall, cpu))
shutil.rmtree(out, ignore_errors=True)
for binary, rs in res.items():
    w = [r[0] for r in rs]; c = [r[1] for r in rs]
    print(f"{binary}: wall best {min(w):.3f} median {statistics.median(w):.3f}  cpu best {min(c):.3f} median {statistics.median(c):.3f}  (n={len(rs)})")
wa = statistics.median(r[0] for r in res[a]); wb = statistics.median(r[0] for r in res[b])
print(f"median wall {os.path.basename(b)}/{os.path.basename(a)} = {wb/wa:.3f}")

"""Our `Model::predict` against XGBoost's `inplace_predict` and onnxruntime, one thread each,
on the same rows of the reference-shaped bench model.

    export CARGO_TARGET_DIR=/work/target-perf   # or leave unset for ./target
    cargo build --release --example bench_model
    /work/venv-model/bin/python benches/compare_model.py [--rows 100000] [--single 2000] [--rounds 3]

Writes the rows (same distribution as `make_bench_model.py`, other seed, ~3 % NaN) to a
temporary raw f32 file, then, `--rounds` times and interleaved so that machine load hits
all three alike: XGBoost (nthread=1) `inplace_predict`, onnxruntime
(intra_op_num_threads=1, the same `xgb_ref.onnx`) and ours (the `bench_model` example,
a separate process reading the same file). Each round times `--single` one-row calls and
one bulk call on all rows; the table shows the best round of each. Python per-call
overhead is included in the XGBoost and onnxruntime single-row figures; ours is timed
inside Rust. Fails (exit 1) unless the three agree within 1e-6 on every probability.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_bench_model import WIDTH, synthetic  # noqa: E402

TOL = 1e-6


def our_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "examples", "bench_model")
    if not os.path.exists(path):
        sys.exit(f"{path} not found: cargo build --release --example bench_model")
    return path


def time_single(predict, x, n):
    predict(x[0:1])
    t = time.perf_counter()
    for i in range(n):
        predict(x[i:i + 1])
    return 1e6 * (time.perf_counter() - t) / n


def time_bulk(predict, x):
    t = time.perf_counter()
    p = predict(x)
    return x.shape[0] / (time.perf_counter() - t), np.asarray(p, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--single", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    onnx_path = os.path.join(HERE, "data", "xgb_ref.onnx")
    booster = xgb.Booster(model_file=os.path.join(HERE, "data", "xgb_ref.json"))
    booster.set_param({"nthread": 1})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def xgb_predict(x):
        return booster.inplace_predict(x)

    def ort_predict(x):
        return sess.run(["probabilities"], {in_name: x})[0][:, 1]

    x, _ = synthetic(args.rows, seed=7)
    x = np.ascontiguousarray(x, dtype=np.float32)
    binary = our_binary()
    results = {"xgboost": [], "onnxruntime": [], "ours": []}
    probs = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = os.path.join(tmp, "rows.f32")
        out_path = os.path.join(tmp, "ours.f32")
        x.astype("<f4").tofile(rows_path)
        for _ in range(args.rounds):
            for name, predict in [("xgboost", xgb_predict), ("onnxruntime", ort_predict)]:
                us = time_single(predict, x, args.single)
                rps, p = time_bulk(predict, x)
                results[name].append((us, rps))
                probs[name] = p
            env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
            run = subprocess.run([binary, onnx_path, rows_path, str(args.single), "1", out_path],
                                 check=True, capture_output=True, text=True, env=env)
            r = json.loads(run.stdout)
            results["ours"].append((r["single_mean_us"], r["bulk_rows_per_s"]))
            results.setdefault("ours_load_ms", []).append(1e3 * r["load_s"])
            results.setdefault("ours_median_us", []).append(r["single_median_us"])
            probs["ours"] = np.fromfile(out_path, dtype="<f4")

    best = {k: (min(u for u, _ in v), max(r for _, r in v))
            for k, v in results.items() if k in ("xgboost", "onnxruntime", "ours")}
    print(f"{args.rows} rows x {WIDTH}, 1 thread, best of {args.rounds} rounds "
          f"({args.single} single-row calls per round)")
    print(f"{'engine':<12} {'single µs/row':>14} {'bulk rows/s':>12}")
    for k in ("xgboost", "onnxruntime", "ours"):
        print(f"{k:<12} {best[k][0]:>14.2f} {best[k][1]:>12.0f}")
    for other in ("xgboost", "onnxruntime"):
        print(f"ours vs {other:<11}: single {best[other][0] / best['ours'][0]:.2f}x faster, "
              f"bulk {best['ours'][1] / best[other][1]:.2f}x the throughput")
    print(f"ours: load {min(results['ours_load_ms']):.1f} ms, single-row median "
          f"{min(results['ours_median_us']):.2f} µs (timed in Rust)")

    ok = True
    for a, b in [("ours", "xgboost"), ("ours", "onnxruntime"), ("xgboost", "onnxruntime")]:
        d = float(np.max(np.abs(probs[a].astype(np.float64) - probs[b])))
        print(f"max |{a} - {b}| = {d:.3g}")
        ok &= d <= TOL
    if not ok:
        sys.exit(f"probabilities disagree by more than {TOL}")


if __name__ == "__main__":
    main()

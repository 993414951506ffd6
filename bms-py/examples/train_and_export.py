"""Train, export and serve a consistency-alarm model end to end with the bms package.

    python bms-py/examples/train_and_export.py [--vehicles 60] [--days 180] [--out DIR]

1. simulate a fleet (bms.simulate: daily table + truth),
2. build 14-day windows of the six reference columns with labels (bms.windows),
3. split by vehicle (no vehicle in both parts), train XGBoost with the reference
   hyperparameters (AWS.md section 1),
4. export to ONNX with onnxmltools (plain convert_xgboost: no ZipMap for XGBoost),
5. attach the bms.* contract (bms.export.attach_contract),
6. load it with bms.Model and check it scores the held-out windows exactly as XGBoost's
   own predict_proba (within 1e-5), then score the daily table with predict_daily.

Exits non-zero if any check fails. Needs xgboost, onnxmltools and onnx (test extras).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

import bms
import bms.export

# Reference hyperparameters (AWS.md section 1), as models/train.py uses them.
PARAMS = dict(objective="binary:logistic", max_depth=7, learning_rate=0.1, gamma=4,
              min_child_weight=6, subsample=0.8, n_estimators=200)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vehicles", type=int, default=60)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", help="directory for the ONNX files (default: a temporary one)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bms-example-")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()

    sim = bms.simulate(vehicles=args.vehicles, days=args.days, seed=args.seed,
                       weak_fraction=0.2, interval_ms=30_000)
    print(f"simulated {args.vehicles} vehicles x {args.days} days: {len(sim.daily)} daily rows, "
          f"{int(sim.truth.weak.sum())} weak vehicles ({time.time() - t0:.1f} s)")

    x, y, keys = bms.windows(sim.daily, context=14, horizon=14)
    print(f"windows: X {x.shape} {x.dtype}, {int(y.sum())} positive labels")

    # Split by vehicle, stratified on the simulator's weak flag: 70 % train, 30 % held out.
    rng = np.random.default_rng(7)
    train_vins = set()
    for weak in (True, False):
        vins = sorted(sim.truth.vin[sim.truth.weak == weak])
        rng.shuffle(vins)
        train_vins.update(vins[: round(0.7 * len(vins))])
    is_train = keys.vin.isin(train_vins).to_numpy()
    assert not set(keys.vin[is_train]) & set(keys.vin[~is_train])
    clf = xgb.XGBClassifier(**PARAMS, n_jobs=2, random_state=0)
    clf.fit(x[is_train], y[is_train])
    print(f"trained on {is_train.sum()} windows of {len(train_vins)} vehicles "
          f"({time.time() - t0:.1f} s)")

    onx = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, x.shape[1]]))])
    plain = os.path.join(out, "plain.onnx")
    with open(plain, "wb") as f:
        f.write(onx.SerializeToString())
    model_path = os.path.join(out, "consistency-example.onnx")
    bms.export.attach_contract(plain, model_path, context=14, horizon=14,
                               features=bms.REFERENCE_COLUMNS, fill=-1.0, threshold=0.15,
                               model_id="consistency-example-v1")

    model = bms.Model(model_path)
    print(f"loaded {model!r}")
    held_out = x[~is_train]
    ours = model.predict(held_out)
    theirs = clf.predict_proba(held_out)[:, 1]
    diff = float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
    print(f"held-out windows: {len(ours)}, max |bms - xgboost| = {diff:.2e}")
    if not len(ours) or diff > 1e-5:
        sys.exit("FAIL: bms.Model disagrees with XGBoost on held-out rows")

    scores = model.predict_daily(sim.daily)
    if not np.array_equal(scores.predicted_prob.to_numpy(), model.predict(x)):
        sys.exit("FAIL: predict_daily differs from windows + predict")
    held = scores[~is_train]
    weak = set(sim.truth.vin[sim.truth.weak])
    top = held.groupby("vin").predicted_prob.max().sort_values(ascending=False)
    print(f"held-out vehicles alarmed (p >= {model.threshold}): "
          f"{int((top >= model.threshold).sum())} of {len(top)}; "
          f"weak among the top 5: {sum(v in weak for v in top.index[:5])}")
    print(f"OK ({time.time() - t0:.1f} s); model at {model_path}")


if __name__ == "__main__":
    main()

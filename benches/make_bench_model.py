"""The reference-shaped XGBoost model the model benches run on.

    /work/venv-model/bin/python benches/make_bench_model.py

Trains XGBoost with the reference hyper-parameters (binary:logistic, 200 trees,
max_depth 7, eta 0.1, gamma 4, min_child_weight 6, subsample 0.8) on 20k synthetic rows
of 84 features (fixed seed, a learnable non-linear signal, ~3 % NaN), and writes
`benches/data/xgb_ref.onnx` (plain onnxmltools export) and `benches/data/xgb_ref.json`
(XGBoost's own model file, for `compare_model.py`).
"""

import os

import numpy as np
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
WIDTH = 84
ROWS = 20_000
SEED = 20240917


def synthetic(n, seed):
    """`n` rows of `WIDTH` features and a binary label that depends on ~a dozen of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    logit = (
        1.2 * x[:, 0]
        - 0.9 * x[:, 3]
        + 0.7 * x[:, 10] * x[:, 11]
        + 0.5 * np.sin(2.0 * x[:, 20])
        + 0.6 * (x[:, 40] > 0.5)
        - 0.4 * np.abs(x[:, 55])
        + 0.3 * x[:, 70] * x[:, 71]
        + 0.2 * x[:, 83]
    )
    y = (logit + rng.normal(scale=1.0, size=n) > 0.0).astype(np.int64)
    x[rng.random(size=x.shape) < 0.03] = np.nan
    return x, y


def main():
    x, y = synthetic(ROWS, SEED)
    clf = xgb.XGBClassifier(
        objective="binary:logistic",
        n_estimators=200,
        max_depth=7,
        learning_rate=0.1,
        gamma=4,
        min_child_weight=6,
        subsample=0.8,
        random_state=0,
        n_jobs=1,
    )
    clf.fit(x, y)
    os.makedirs(DATA, exist_ok=True)
    clf.get_booster().save_model(os.path.join(DATA, "xgb_ref.json"))
    onx = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, WIDTH]))])
    path = os.path.join(DATA, "xgb_ref.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    tree = onx.graph.node
    n_nodes = sum(len(a.ints) for n in tree for a in n.attribute if a.name == "nodes_nodeids")
    print(f"{path}: {os.path.getsize(path)} bytes, ops {[n.op_type for n in tree]}, "
          f"{n_nodes} nodes; train accuracy {np.mean(clf.predict(x) == y):.3f}")


if __name__ == "__main__":
    main()

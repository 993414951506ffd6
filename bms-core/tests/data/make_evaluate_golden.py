"""Golden window metrics for bms_core::evaluate::window_metrics, from scikit-learn.

Run with the test venv (scikit-learn as pinned in bms-py/requirements-test.txt):

    python bms-core/tests/data/make_evaluate_golden.py > bms-core/tests/data/evaluate_golden.json

Cases: scores with many ties (rounded to 2 decimals), scores without ties, a case where
every alert is a positive, and a case with no alert at the threshold. Scores are float32
values (as the models give them), written as their exact float64 decimal.
"""

import json

import numpy as np
import sklearn
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


def case(name, scores, labels, threshold):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    s64 = scores.astype(np.float64)
    pred = (scores >= np.float32(threshold)).astype(np.int64)
    out = {
        "name": name,
        "threshold": float(np.float32(threshold)),
        "scores": [float(v) for v in s64],
        "labels": [int(v) for v in labels],
        "roc_auc": float(roc_auc_score(labels, s64)),
        "average_precision": float(average_precision_score(labels, s64)),
        "recall": float(recall_score(labels, pred, zero_division=np.nan)),
        "f1": float(f1_score(labels, pred, zero_division=np.nan)),
    }
    p = precision_score(labels, pred, zero_division=np.nan)
    out["precision"] = None if np.isnan(p) else float(p)
    if np.isnan(out["f1"]):
        out["f1"] = None
    return out


rng = np.random.default_rng(20261204)
n = 400
labels = (rng.random(n) < 0.2).astype(np.int64)
raw = np.clip(0.35 * labels + rng.normal(0.3, 0.2, n), 0, 1)
cases = [
    case("ties", np.round(raw, 2), labels, 0.5),
    case("no_ties", raw + rng.random(n) * 1e-4, labels, 0.4),
    case("all_alerts_positive", [0.9, 0.8, 0.3, 0.2, 0.8, 0.1], [1, 1, 1, 0, 1, 0], 0.75),
    case("no_alert", [0.1, 0.2, 0.3, 0.05], [0, 1, 0, 1], 0.5),
]
print(json.dumps({"sklearn": sklearn.__version__, "cases": cases}, indent=1))

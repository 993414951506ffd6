"""Parity with the Rust core: the Python package and the `bms` command line (same core,
different surface) give identical windows, and the model scores the committed golden rows
as XGBoost and onnxruntime did (daily tables: test_daily.py; simulations:
test_simulate.py)."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import FIXTURES, MODELS, run


def test_windows_equal_cli(bms_bin, tmp_path):
    daily = tmp_path / "daily.csv"
    run(bms_bin, "simulate", "--vehicles", 8, "--days", 90, "--seed", 2,
        "--weak-fraction", "0.5", "--daily", daily, "--truth", tmp_path / "t.csv")
    feats = ["spread_mean", "TotalVoltage", "MaxTemperature"]
    for extra, kw in (([], {}),
                      (["--context", "7", "--horizon", "5", "--features", ",".join(feats),
                        "--full-horizon"],
                       dict(context=7, horizon=5, features=feats, full_horizon=True))):
        batch = tmp_path / "batch.csv"
        run(bms_bin, "windows", "-i", daily, "-o", batch, "--labels", *extra)
        width = kw.get("context", 14) * len(kw.get("features", bms.REFERENCE_COLUMNS))
        want = bms.read_batch_csv(batch, strict=True, width=width, labels=True)
        x, y, keys = bms.windows(bms.read_daily_csv(daily), **kw)
        assert len(x) == want.accepted > 100
        np.testing.assert_array_equal(x, want.x)
        np.testing.assert_array_equal(y, want.labels)
        pd.testing.assert_frame_equal(keys, want.keys)
        assert y.sum() > 0


def golden(name):
    with open(os.path.join(MODELS, "golden", f"{name}.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["consistency-ref14x6", "consistency-ext"])
def test_shipped_models_score_golden_rows(name):
    g = golden(name)
    m = bms.Model(os.path.join(MODELS, f"{name}.onnx"))
    c = m.contract
    assert not c["defaulted"]
    assert c["width"] == g["width"] == len(g["rows"][0])
    for k in ("context", "horizon", "features", "model_id"):
        want = g["contract"].get(k, g["contract"].get(f"{k}_days"))
        if want is not None:
            assert c[k] == want, k
    x = np.array([[np.nan if v is None else v for v in r] for r in g["rows"]],
                 dtype=np.float32)
    p = m.predict(x)
    np.testing.assert_allclose(p, np.array(g["xgboost"], dtype=np.float32), atol=1e-5)
    np.testing.assert_allclose(p, np.array(g["onnxruntime"], dtype=np.float32), atol=1e-5)


def test_fixture_models_match_their_frameworks():
    """The committed fixtures (models/fixtures, made by make_fixtures.py): XGBoost,
    LightGBM, scikit-learn trees, MLP, regressor — probabilities from the training
    framework and from onnxruntime."""
    with open(os.path.join(FIXTURES, "inputs.json")) as f:
        inputs = json.load(f)
    checked = 0
    for fn in sorted(os.listdir(FIXTURES)):
        if not fn.endswith(".json") or fn == "inputs.json":
            continue
        with open(os.path.join(FIXTURES, fn)) as f:
            g = json.load(f)
        if "framework" not in g:
            continue
        width = g["width"]
        x = np.array([[np.nan if v is None else v for v in r[:width]]
                      for r in inputs[g["inputs"]]], dtype=np.float32)
        p = bms.Model(os.path.join(FIXTURES, fn[:-5] + ".onnx")).predict(x)
        for key in ("framework", "onnxruntime"):
            want = np.array([np.nan if v is None else v for v in g[key]], dtype=np.float32)
            np.testing.assert_allclose(p, want, atol=1e-5, err_msg=f"{fn} vs {key}")
        checked += 1
    assert checked >= 8

"""bms.Model against onnxruntime on the shipped models and against XGBoost's own
predict_proba on a model trained here, exported with onnxmltools and given a contract
with bms.export.attach_contract."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from onnxmltools import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

import bms
import bms.export
from conftest import MODELS


def ort_proba(path, x):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = s.run(None, {s.get_inputs()[0].name: x})
    return np.asarray(outs[1])[:, 1]


@pytest.mark.parametrize("name", ["consistency-ref14x6", "consistency-ext"])
def test_shipped_models_equal_onnxruntime_on_simulated_windows(sim_small, name):
    path = os.path.join(MODELS, f"{name}.onnx")
    m = bms.Model(path)
    c = m.contract
    x, _, keys = bms.windows(sim_small.daily, context=c["context"], horizon=c["horizon"],
                             features=c["features"], fill=c["fill"])
    p = m.predict(x)
    assert p.dtype == np.float32 and p.shape == (len(x),)
    np.testing.assert_allclose(p, ort_proba(path, x), atol=1e-5)
    # float64 input is converted to float32 like onnxruntime/XGBoost do.
    np.testing.assert_array_equal(m.predict(x.astype(np.float64)), p)
    # Non-contiguous views work (and equal the contiguous result).
    np.testing.assert_array_equal(m.predict(np.asfortranarray(x)), p)
    np.testing.assert_array_equal(m.predict(x[::2]), p[::2])
    s = m.predict_daily(sim_small.daily)
    assert list(s.columns) == ["event_id", "vin", "date", "predicted_prob", "alarm",
                               "model_id"]
    np.testing.assert_array_equal(s["predicted_prob"].to_numpy(), p)
    pd.testing.assert_frame_equal(s[["vin", "date"]], keys)
    assert (s["alarm"] == (s["predicted_prob"] >= np.float32(c["threshold"]))).all()
    assert (s["model_id"] == c["model_id"]).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sim_small):
    d = tmp_path_factory.mktemp("xgb")
    x, y, keys = bms.windows(sim_small.daily, context=7, horizon=7,
                             features=["CellMaxVoltage", "CellMinVoltage", "spread_max"])
    clf = xgb.XGBClassifier(objective="binary:logistic", max_depth=4, learning_rate=0.3,
                            n_estimators=30, n_jobs=1, random_state=0)
    clf.fit(x, y)
    onx = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, x.shape[1]]))])
    plain = str(d / "plain.onnx")
    with open(plain, "wb") as f:
        f.write(onx.SerializeToString())
    return clf, plain, x, d


def test_plain_export_gets_the_defaulted_contract(trained, sim_small):
    _, plain, _, d = trained
    with pytest.raises(bms.ModelError, match="84"):
        # 21 inputs vs. the reference default 14 × 6 = 84: refused, naming both numbers.
        bms.Model(plain)
    x, y, _ = bms.windows(sim_small.daily)
    clf = xgb.XGBClassifier(max_depth=3, n_estimators=10, n_jobs=1, random_state=0)
    clf.fit(x, y)
    onx = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, 84]))])
    path = str(d / "plain84.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    m = bms.Model(path)
    c = m.contract
    assert c["defaulted"] and c["width"] == 84 and c["threshold"] == 0.5
    assert c["features"] == list(bms.REFERENCE_COLUMNS) and c["model_id"].startswith("onnx-")
    np.testing.assert_allclose(m.predict(x), clf.predict_proba(x)[:, 1], atol=1e-5)


def test_attach_contract_then_predict_equals_xgboost(trained):
    clf, plain, x, d = trained
    out = str(d / "model.onnx")
    bms.export.attach_contract(plain, out, context=7, horizon=7,
                               features=["CellMaxVoltage", "CellMinVoltage", "spread_max"],
                               fill=-1.0, threshold=0.3, model_id="test-xgb-1")
    m = bms.Model(out)
    assert m.contract == {
        "context": 7, "horizon": 7,
        "features": ["CellMaxVoltage", "CellMinVoltage", "spread_max"],
        "fill": -1.0, "threshold": 0.3, "model_id": "test-xgb-1", "width": 21,
        "defaulted": False,
    }
    xn = x.copy()
    xn[::7, 3] = np.nan  # missing values take XGBoost's default branches
    want = clf.predict_proba(xn)[:, 1]
    np.testing.assert_allclose(m.predict(xn), want, atol=1e-5)
    # Metadata written is what onnx reads back; other metadata kept.
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["bms.features"] == "CellMaxVoltage,CellMinVoltage,spread_max"
    # Attaching again replaces, never duplicates, the bms.* keys.
    bms.export.attach_contract(out, out, context=7, horizon=7,
                               features=["CellMaxVoltage", "CellMinVoltage", "spread_max"],
                               threshold=0.5, model_id="test-xgb-2")
    keys = [p.key for p in onnx.load(out).metadata_props]
    assert keys.count("bms.threshold") == 1
    assert bms.Model(out).model_id == "test-xgb-2"


def test_attach_contract_refuses_a_wrong_width(trained):
    _, plain, _, d = trained
    out = d / "bad.onnx"
    with pytest.raises(bms.ModelError, match="21"):
        bms.export.attach_contract(plain, out, context=14, model_id="x")
    assert not out.exists()
    with pytest.raises(bms.InvalidInputError, match="nope"):
        bms.export.attach_contract(plain, out, context=7, features=["nope", "a", "b"],
                                   model_id="x")
    with pytest.raises(bms.InvalidInputError, match="threshold"):
        bms.export.attach_contract(plain, out, context=7,
                                   features=["CellMaxVoltage", "CellMinVoltage", "spread_max"],
                                   threshold=1.5, model_id="x")
    assert not out.exists()

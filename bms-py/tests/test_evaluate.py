"""bms.evaluate: the figures of `bms evaluate`, from files or DataFrames, and window
metrics that equal scikit-learn's on the same scores."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import MODELS, run

REF = os.path.join(MODELS, "consistency-ref14x6.onnx")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, bms_bin):
    d = tmp_path_factory.mktemp("eval")
    run(bms_bin, "simulate", "--vehicles", "16", "--days", "90", "--seed", "11",
        "--weak-fraction", "0.5", "--interval", "30s",
        "--daily", d / "daily.csv", "--truth", d / "truth.csv")
    run(bms_bin, "predict", "-m", REF, "-i", d / "daily.csv", "--out", d / "run")
    return d


def cli_json(bms_bin, *args):
    return json.loads(run(bms_bin, "evaluate", *args, "--json", "-").stdout)


def test_files_give_what_the_command_line_gives(fleet, bms_bin):
    for kind in ("daily", "truth"):
        label = fleet / f"{kind}.csv"
        got = bms.evaluate(fleet / "run", **{kind: label})
        assert got == cli_json(bms_bin, fleet / "run", f"--{kind}", label)
        assert got["labels"] == ("daily" if kind == "daily" else "first_alarms")
        assert got["threshold"] == pytest.approx(0.2)
        assert got["events"]["alarm_vehicles"] > 0
        assert len(got["vehicles"]) == 16
    # str paths and a Model for the threshold behave the same.
    got = bms.evaluate(str(fleet / "run"), truth=str(fleet / "truth.csv"), model=bms.Model(REF))
    assert got == bms.evaluate(fleet / "run", truth=fleet / "truth.csv")


def test_dataframes_give_what_the_files_give(fleet):
    model = bms.Model(REF)
    daily = bms.read_daily_csv(fleet / "daily.csv")
    preds = model.predict_daily(daily)
    truth = pd.read_csv(fleet / "truth.csv", dtype={"vin": str})
    for kind, labels in (("daily", daily), ("truth", truth)):
        mem = bms.evaluate(preds, **{kind: labels}, model=model)
        files = bms.evaluate(fleet / "run", **{kind: fleet / f"{kind}.csv"})
        assert mem == files, kind


def test_window_metrics_equal_scikit_learn(fleet):
    # Not in the oldest-dependencies venv (scripts/test-py.sh deselects this test there).
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    model = bms.Model(REF)
    daily = bms.read_daily_csv(fleet / "daily.csv")
    x, y, keys = bms.windows(daily)
    p = model.predict(x)
    preds = keys.assign(predicted_prob=p)
    got = bms.evaluate(preds, daily=daily, threshold=0.2)["window"]
    assert got["windows"] == len(y)
    assert got["positives"] == int(y.sum())
    p64 = p.astype(np.float64)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p64), abs=1e-12)
    assert got["average_precision"] == pytest.approx(average_precision_score(y, p64), abs=1e-12)
    assert got["f1"] == pytest.approx(f1_score(y, p >= np.float32(0.2)), abs=1e-12)
    # Labelled windows as a DataFrame: the same window metrics, no event metrics.
    w = bms.evaluate(preds, windows=keys.assign(label=y), threshold=0.2)
    assert w["window"] == got
    assert w["events"] is None and w["vehicles"] == []


def test_lead_times_of_a_hand_made_fleet():
    preds = pd.DataFrame({
        "vin": ["A"] * 5 + ["B"] * 5,
        "date": list(pd.date_range("2024-03-01", periods=5)) * 2,
        "predicted_prob": [0.1, 0.6, 0.2, 0.9, 0.9, 0.1, 0.1, 0.7, 0.1, 0.1],
    })
    truth = pd.DataFrame({"vin": ["A", "B"],
                          "first_alarm_date": [pd.Timestamp("2024-03-09"), pd.NaT]})
    e = bms.evaluate(preds, truth=truth, threshold=0.5)
    a, b = e["vehicles"]
    assert (a["vin"], a["first_alert"], a["lead_days"]) == ("A", "2024-03-02", 7)
    assert (b["first_alarm"], b["lead_days"], b["alerts"]) == (None, None, 1)
    ev = e["events"]
    assert (ev["detected_7d"], ev["detection_rate_7d"]) == (1, 1.0)
    assert ev["false_alarm_vehicles_per_100"] == 100.0
    assert ev["false_alarm_days_per_1000"] == 200.0


def test_bad_calls_raise_the_right_class(fleet):
    preds = pd.DataFrame({"vin": ["A"], "date": ["2024-03-01"], "predicted_prob": [0.5]})
    truth = pd.DataFrame({"vin": ["A"], "first_alarm_date": [pd.NaT]})
    with pytest.raises(bms.InvalidInputError, match="exactly one label source"):
        bms.evaluate(preds)
    with pytest.raises(bms.InvalidInputError, match="exactly one label source"):
        bms.evaluate(preds, truth=truth, daily=truth)
    with pytest.raises(TypeError, match="both be files"):
        bms.evaluate(fleet / "run", truth=truth)
    with pytest.raises(bms.InvalidInputError, match="threshold"):
        bms.evaluate(preds, truth=truth)
    with pytest.raises(bms.InvalidInputError, match="horizon"):
        bms.evaluate(preds, truth=truth, threshold=0.5, horizon=0)
    with pytest.raises(bms.InvalidInputError, match="no column 'predicted_prob'"):
        bms.evaluate(preds.drop(columns="predicted_prob"), truth=truth, threshold=0.5)
    with pytest.raises(bms.InvalidInputError, match="no prediction"):
        bms.evaluate(preds.assign(vin="Z"), truth=truth, threshold=0.5)
    with pytest.raises(bms.InvalidInputError, match="twice"):
        bms.evaluate(pd.concat([preds, preds]), truth=truth, threshold=0.5)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        bms.evaluate(fleet / "run", truth=fleet / "nope.csv")
    bad = fleet / "bad_truth.csv"
    bad.write_text("vin,first_alarm_date\nA,2024-02-30\n")
    with pytest.raises(bms.InvalidInputError, match="line 2"):
        bms.evaluate(fleet / "run", truth=bad)

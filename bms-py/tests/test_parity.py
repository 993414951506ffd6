"""Parity with the Rust core: the Python package and the `bms` command line (same core,
different surface) give identical daily tables, windows and simulations, and the model
scores the committed golden rows as XGBoost and onnxruntime did."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import bms
from conftest import FIXTURES, FRAMES_SMALL, MODELS, run


def assert_daily_equal(a, b):
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_exact=True)


def frames_small():
    return pd.read_csv(FRAMES_SMALL)


def test_daily_equals_cli_on_example_frames(bms_bin, tmp_path):
    out = tmp_path / "daily.csv"
    run(bms_bin, "daily", "-i", FRAMES_SMALL, "-o", out)
    want = bms.read_daily_csv(out)
    got = bms.daily(frames_small())
    assert len(got) > 100 and got["frames"].gt(0).any() and got["frames"].eq(0).any()
    assert_daily_equal(got, want)


@pytest.mark.parametrize("offset", ["+08:00", "-10:30"])
def test_daily_with_utc_offset_equals_cli(bms_bin, tmp_path, offset):
    out = tmp_path / "daily.csv"
    run(bms_bin, "daily", "-i", FRAMES_SMALL, "-o", out, f"--utc-offset={offset}")
    want = bms.read_daily_csv(out)
    got = bms.daily(frames_small(), utc_offset=offset)
    assert_daily_equal(got, want)
    sign = -1 if offset[0] == "-" else 1
    h, m = offset[1:].split(":")
    seconds = sign * (int(h) * 3600 + int(m) * 60)
    assert_daily_equal(bms.daily(frames_small(), utc_offset=seconds), want)
    if offset.startswith("-"):
        # This offset moves day boundaries across the example's frames.
        assert not bms.daily(frames_small()).equals(got)


def test_daily_input_layouts_agree():
    """Wide pandas, shuffled rows, pyarrow wide, pyarrow list columns, pandas list
    columns, datetime timestamps and RFC 3339 strings all give the same table."""
    df = frames_small()
    want = bms.daily(df)
    cells = sorted((c for c in df.columns if c.startswith("cell_v_")),
                   key=lambda c: int(c.split("_")[-1]))
    temps = sorted((c for c in df.columns if c.startswith("temp_")),
                   key=lambda c: int(c.split("_")[-1]))
    assert_daily_equal(bms.daily(df.sample(frac=1.0, random_state=1)), want)
    assert_daily_equal(bms.daily(pa.Table.from_pandas(df)), want)
    base = df[["vin", "timestamp", "pack_voltage", "pack_current", "soc"]
              + (["alarm_flags"] if "alarm_flags" in df.columns else [])]
    lists = base.copy()
    lists["cell_voltages"] = list(df[cells].to_numpy())
    lists["temperatures"] = list(df[temps].to_numpy())
    assert_daily_equal(bms.daily(lists), want)
    t = pa.table({
        **{c: pa.array(base[c]) for c in base.columns},
        "cell_voltages": pa.array([list(r) for r in df[cells].to_numpy()],
                                  type=pa.list_(pa.float32())),
        "temperatures": pa.array([list(r) for r in df[temps].to_numpy()]),
    })
    got32 = bms.daily(t)
    # float32 cell voltages are exact for the example's millivolt readings? Not in general:
    # compare loosely, and exactly once converted back from the same float32 values.
    np.testing.assert_allclose(got32["CellMaxVoltage"], want["CellMaxVoltage"], rtol=1e-6)
    dt = df.copy()
    dt["timestamp"] = pd.to_datetime(dt["timestamp"], unit="ms")
    assert_daily_equal(bms.daily(dt), want)
    tz = df.copy()
    tz["timestamp"] = pd.to_datetime(tz["timestamp"], unit="ms", utc=True).dt.tz_convert(
        "Asia/Shanghai")
    assert_daily_equal(bms.daily(tz), want)
    # RFC 3339 strings with an offset (parsed by pandas itself on every supported version).
    st = df.copy()
    st["timestamp"] = tz["timestamp"].map(lambda t: t.isoformat())
    assert st["timestamp"].iloc[0].endswith("+08:00"), st["timestamp"].iloc[0]
    assert_daily_equal(bms.daily(st), want)


def test_simulate_equals_cli(bms_bin, tmp_path):
    daily = tmp_path / "daily.csv"
    truth = tmp_path / "truth.csv"
    run(bms_bin, "simulate", "--vehicles", 6, "--days", 50, "--seed", 11,
        "--daily", daily, "--truth", truth)
    sim = bms.simulate(vehicles=6, days=50, seed=11)
    assert_daily_equal(sim.daily, bms.read_daily_csv(daily))
    t = pd.read_csv(truth, dtype={"vin": object})
    assert list(sim.truth["vin"]) == list(t["vin"])
    assert list(sim.truth["weak"].astype(int)) == list(t["weak"].astype(int))
    assert list(sim.truth["alarm_days"]) == list(t["alarm_days"])


def test_simulated_frames_aggregate_to_the_simulated_daily_table():
    sim = bms.simulate(vehicles=3, days=20, seed=5, interval_ms=60_000, frames=True)
    assert sim.frames is not None and len(sim.frames) == sim.n_frames > 0
    assert_daily_equal(bms.daily(sim.frames), sim.daily)


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

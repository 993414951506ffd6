"""Every bad input raises the right exception class with a message naming what is wrong;
nothing crashes the interpreter."""

import os

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import FIXTURES, FRAMES_SMALL, MODELS


def test_hierarchy():
    assert issubclass(bms.InvalidInputError, bms.BmsError)
    assert issubclass(bms.InvalidInputError, ValueError)
    assert issubclass(bms.ModelError, bms.BmsError)
    assert not issubclass(bms.ModelError, ValueError)
    assert issubclass(bms.BmsIOError, OSError) and issubclass(bms.BmsIOError, bms.BmsError)
    assert issubclass(bms.BmsFileNotFoundError, bms.BmsIOError)
    assert issubclass(bms.BmsFileNotFoundError, FileNotFoundError)
    assert issubclass(bms.BmsPermissionError, bms.BmsIOError)
    assert issubclass(bms.BmsPermissionError, PermissionError)


def test_io_errors_map_by_kind(tmp_path):
    for call in (lambda p: bms.Model(p), lambda p: bms.read_daily_csv(p)):
        with pytest.raises(FileNotFoundError, match="missing") as e:
            call(tmp_path / "missing.csv")
        assert isinstance(e.value, bms.BmsFileNotFoundError)
    if os.geteuid() == 0:
        # root reads files whatever their mode: the permission case cannot be made here;
        # a directory stands in for a file that is not readable as one.
        with pytest.raises(bms.BmsIOError, match="read failed") as e:
            bms.read_daily_csv(tmp_path)
        assert not isinstance(e.value, (FileNotFoundError, PermissionError))
    else:
        locked = tmp_path / "locked.csv"
        locked.write_text("VIN,Date\n")
        locked.chmod(0)
        with pytest.raises(PermissionError, match="locked.csv") as e:
            bms.read_daily_csv(locked)
        assert isinstance(e.value, bms.BmsPermissionError)


@pytest.fixture(scope="module")
def model():
    return bms.Model(os.path.join(MODELS, "consistency-ref14x6.onnx"))


@pytest.mark.parametrize("x, match", [
    (np.zeros((3, 83), np.float32), "expected 84, found 83"),
    (np.zeros(84, np.float32), "2-D"),
    (np.zeros((1, 84, 1), np.float32), "3-D"),
    (np.zeros((2, 84), np.int64), "int64"),
    (np.zeros((2, 84), np.float16), "float16"),
    ("not an array", "not numeric"),
])
def test_predict_bad_input(model, x, match):
    with pytest.raises(bms.InvalidInputError, match=match):
        model.predict(x)


def test_predict_accepts_empty_and_lists(model):
    assert model.predict(np.zeros((0, 84), np.float32)).shape == (0,)
    assert model.predict([[0.0] * 84]).shape == (1,)


def test_model_load_errors(tmp_path):
    with pytest.raises(bms.BmsIOError, match="nope.onnx"):
        bms.Model(tmp_path / "nope.onnx")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01not a model at all" * 10)
    with pytest.raises(bms.ModelError, match="garbage.onnx"):
        bms.Model(bad)
    for name, match in [("unsupported_op.onnx", "unsupported operator"),
                        ("bad_contract_width.onnx", "width"),
                        ("two_inputs.onnx", "input")]:
        with pytest.raises(bms.ModelError, match=match):
            bms.Model(os.path.join(FIXTURES, name))


def test_daily_bad_frames():
    df = pd.read_csv(FRAMES_SMALL)
    with pytest.raises(bms.InvalidInputError, match="soc"):
        bms.daily(df.drop(columns="soc"))
    with pytest.raises(bms.InvalidInputError, match="cell_v_"):
        bms.daily(df.drop(columns="cell_v_2"))
    with pytest.raises(bms.InvalidInputError, match="cell_voltages"):
        bms.daily(df[[c for c in df.columns if not c.startswith("cell_v_")]])
    dup = pd.concat([df.head(3), df.head(1)], ignore_index=True)
    with pytest.raises(bms.InvalidInputError, match="lines 1 and 4"):
        bms.daily(dup)
    bad = df.head(5).astype({"pack_voltage": object})
    bad.loc[2, "pack_voltage"] = "volts"
    with pytest.raises(bms.InvalidInputError, match="row 3, column pack_voltage: 'volts'"):
        bms.daily(bad)
    empty_vin = df.head(3).copy()
    empty_vin.loc[1, "vin"] = ""
    with pytest.raises(bms.InvalidInputError, match="empty VIN"):
        bms.daily(empty_vin)
    no_vin = df.head(3).astype({"vin": object})
    no_vin.loc[1, "vin"] = None
    with pytest.raises(bms.InvalidInputError, match="row 2"):
        bms.daily(no_vin)
    with pytest.raises(bms.InvalidInputError, match="UTC offset"):
        bms.daily(df, utc_offset="+25:00")
    with pytest.raises(bms.InvalidInputError, match="UTC offset"):
        bms.daily(df, utc_offset="Beijing")
    with pytest.raises(bms.InvalidInputError, match="DataFrame"):
        bms.daily([1, 2, 3])
    with pytest.raises(bms.InvalidInputError, match="chemistry|ocv|nope"):
        bms.daily(df.head(3), ocv="nope")
    flags = df.head(3).copy()
    flags["alarm_flags"] = [0, -5, 1]
    with pytest.raises(bms.InvalidInputError, match="alarm_flags"):
        bms.daily(flags)


def test_frame_features_bad_input():
    cells = np.full((4, 8), 3.7)
    temps = np.full((4, 2), 25.0)
    with pytest.raises(bms.InvalidInputError, match="temperatures: expected 4 rows"):
        bms.frame_features(cells, temps[:3])
    with pytest.raises(bms.InvalidInputError, match="cell_voltages.*2-D"):
        bms.frame_features(cells[0], temps)
    with pytest.raises(bms.InvalidInputError, match="int64"):
        bms.frame_features(cells.astype(np.int64), temps)
    with pytest.raises(bms.InvalidInputError, match="soc"):
        bms.frame_features(cells, temps, soc=np.zeros(3))
    with pytest.raises(bms.InvalidInputError, match="pack_current"):
        bms.frame_features(cells, temps, pack_current=np.zeros(5))
    with pytest.raises(bms.InvalidInputError, match="at least one cell"):
        bms.frame_features(np.zeros((4, 0)), temps)
    with pytest.raises(bms.InvalidInputError, match="OCV table.*increasing"):
        bms.frame_features(cells, temps, ocv=np.array([[0.0, 3.0], [50.0, 2.0]]))
    with pytest.raises(bms.InvalidInputError, match="ocv table"):
        bms.frame_features(cells, temps, ocv=np.zeros((3, 3)))


def test_windows_bad_input(sim_small):
    d = sim_small.daily
    with pytest.raises(bms.InvalidInputError, match="missing column 'spread_max'"):
        bms.windows(d.drop(columns="spread_max"), features=["spread_max"])
    with pytest.raises(bms.InvalidInputError, match="nope"):
        bms.windows(d.assign(nope=1.0), features=["nope"])
    with pytest.raises(bms.InvalidInputError, match="context"):
        bms.windows(d, context=0)
    with pytest.raises(bms.InvalidInputError, match="horizon"):
        bms.windows(d, horizon=-1)
    dup = pd.concat([d.head(20), d.iloc[[5]]], ignore_index=True)
    with pytest.raises(bms.InvalidInputError, match="duplicate row .* lines 6 and 21"):
        bms.windows(dup)
    bad_date = d.head(20).astype({"Date": object})
    bad_date.loc[3, "Date"] = "yesterday"
    with pytest.raises(bms.InvalidInputError, match="Date"):
        bms.windows(bad_date)
    with pytest.raises(bms.InvalidInputError, match="DataFrame"):
        bms.windows(np.zeros((3, 3)))


def test_simulate_bad_config():
    with pytest.raises(bms.InvalidInputError, match="vehicles"):
        bms.simulate(vehicles=0)
    with pytest.raises(bms.InvalidInputError, match="weak fraction"):
        bms.simulate(vehicles=2, days=2, weak_fraction=2.0)
    with pytest.raises(bms.InvalidInputError, match="start"):
        bms.simulate(vehicles=2, days=2, start="2024-13-01")
    with pytest.raises(bms.InvalidInputError, match="chemistry|xyz"):
        bms.simulate(vehicles=2, days=2, chemistry="xyz")
    with pytest.raises(bms.InvalidInputError, match="days"):
        bms.simulate(vehicles=2, days=-1)


def test_native_module_checks_its_own_arguments():
    """The native functions validate too (a caller may use bms._bms directly)."""
    from bms import _bms
    with pytest.raises(bms.InvalidInputError, match="VIN codes"):
        _bms.windows(["V"], np.zeros(3, np.int32), np.zeros(3, np.int64), [np.zeros(3)],
                     ["TotalVoltage"])
    with pytest.raises(bms.InvalidInputError, match="no VIN"):
        _bms.windows(["V"], np.array([0, 1], np.int64), np.zeros(2, np.int64),
                     [np.zeros(2)], ["TotalVoltage"])
    with pytest.raises(bms.InvalidInputError, match="offsets"):
        _bms.daily(["V"], np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1),
                   np.zeros(1), np.zeros(1), np.zeros(2), np.array([0, 5], np.int64),
                   np.zeros(1), np.array([0, 1], np.int64))

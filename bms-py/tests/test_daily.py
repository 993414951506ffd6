"""bms.daily: frames to the daily table, equal to `bms daily`."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import bms
from conftest import FRAMES_SMALL, assert_daily_equal, frames_small, run


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

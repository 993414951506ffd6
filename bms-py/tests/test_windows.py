"""bms.windows against a straight port of the reference notebook's pandas loop (SPEC §5)
on simulated data, for several specs."""

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import notebook_windows


@pytest.mark.parametrize("kw", [
    {},
    dict(context=7, horizon=3),
    dict(context=5, horizon=10, features=["spread_max", "TotalCurrent", "frames"], fill=0.0),
    dict(context=14, horizon=14, full_horizon=True),
])
def test_windows_equal_the_notebook_loop(sim_small, kw):
    daily = sim_small.daily
    x, y, keys = bms.windows(daily, **kw)
    wx, wy, wkeys = notebook_windows(daily, **kw)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == wx.shape and len(x) > 500
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
    pd.testing.assert_frame_equal(keys, wkeys, check_dtype=False)
    assert 0 < y.sum() < len(y)


def test_windows_sort_and_densify_unsorted_sparse_input(sim_small):
    """Rows in any order with the empty days dropped give the windows of the sorted dense
    table (the notebook's loop needs sorted dense data; the core does not)."""
    daily = sim_small.daily
    sparse = daily[daily["frames"] > 0].sample(frac=1.0, random_state=4)
    # The first appearance order of VINs decides vehicle order: restore it for comparison.
    order = {v: i for i, v in enumerate(sparse["VIN"].unique())}
    dense = daily.assign(_o=daily["VIN"].map(order)).sort_values(["_o", "Date"]).drop(columns="_o")
    x, y, keys = bms.windows(sparse)
    wx, wy, wkeys = bms.windows(dense.reset_index(drop=True))
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
    pd.testing.assert_frame_equal(keys, wkeys)


def test_windows_accept_string_dates_and_missing_label(sim_small):
    daily = sim_small.daily.copy()
    x, _, keys = bms.windows(daily)
    daily["Date"] = daily["Date"].dt.strftime("%Y-%m-%d")
    x2, y2, keys2 = bms.windows(daily.drop(columns="Label"))
    np.testing.assert_array_equal(x, x2)
    assert not y2.any()
    pd.testing.assert_frame_equal(keys, keys2)


def test_short_vehicles_and_empty_tables_give_no_windows(sim_small):
    x, y, keys = bms.windows(sim_small.daily.head(10))
    assert x.shape == (0, 84) and y.shape == (0,) and len(keys) == 0
    x, y, keys = bms.windows(sim_small.daily.head(0))
    assert x.shape == (0, 84) and len(keys) == 0


def test_empty_frames_and_arrow_daily():
    import pyarrow as pa
    from conftest import FRAMES_SMALL
    frames = pd.read_csv(FRAMES_SMALL)
    empty = bms.daily(frames.head(0))
    assert len(empty) == 0 and list(empty.columns) == bms.DAILY_FRAME_COLUMNS
    d = bms.daily(frames)
    x, y, keys = bms.windows(pa.Table.from_pandas(d))
    wx, wy, wkeys = bms.windows(d)
    assert len(x) > 0
    np.testing.assert_array_equal(x, wx)
    pd.testing.assert_frame_equal(keys, wkeys)

"""Tables from any Arrow producer (the Arrow PyCapsule interface, `__arrow_c_stream__`):
polars DataFrames and DuckDB results give what the same table as pandas gives.

Not run against the oldest declared versions (scripts/test-py.sh): importing through the
PyCapsule interface needs pyarrow >= 14, and polars and DuckDB are not installed there."""

import os

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

import bms
from conftest import FRAMES_SMALL


@pytest.fixture(scope="module")
def sim():
    return bms.simulate(vehicles=6, days=60, seed=5, weak_fraction=0.5).daily


def _same_windows(a, b):
    xa, ya, ka = a
    xb, yb, kb = b
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert list(ka["vin"]) == list(kb["vin"])
    assert list(pd.to_datetime(ka["date"])) == list(pd.to_datetime(kb["date"]))


def test_windows_of_polars_and_duckdb_tables_equal_pandas(sim, tmp_path):
    want = bms.windows(sim)
    _same_windows(bms.windows(pl.from_pandas(sim)), want)
    path = tmp_path / "daily.parquet"
    sim.to_parquet(path)
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{path}') ORDER BY VIN, Date")
    _same_windows(bms.windows(rel), want)


def test_daily_of_polars_and_duckdb_frames_equal_pandas(tmp_path):
    frames = pd.read_csv(FRAMES_SMALL)
    want = bms.daily(frames)
    pd.testing.assert_frame_equal(bms.daily(pl.read_csv(FRAMES_SMALL)), want)
    rel = duckdb.sql(f"SELECT * FROM read_csv('{FRAMES_SMALL}')")
    pd.testing.assert_frame_equal(bms.daily(rel), want)


def test_predict_daily_of_a_polars_table(sim):
    m = bms.Model(os.path.join(os.path.dirname(FRAMES_SMALL), "..", "..", "models",
                               "consistency-ref14x6.onnx"))
    a = m.predict_daily(pl.from_pandas(sim))
    b = m.predict_daily(sim)
    assert list(a["event_id"]) == list(b["event_id"])
    np.testing.assert_array_equal(a["predicted_prob"], b["predicted_prob"])


def test_something_that_is_not_a_table_is_refused():
    with pytest.raises(bms.InvalidInputError, match="__arrow_c_stream__"):
        bms.daily([1, 2, 3])
    with pytest.raises(bms.InvalidInputError, match="__arrow_c_stream__"):
        bms.windows("daily.csv")

"""bms.windows on the ways a daily table's VIN and Date columns can be held: every path the
package takes (Arrow strings numbered in the native module, categorical codes, object
strings through pandas, datetime64 columns of any unit, date strings) gives the windows of
the notebook loop, and the same keys with the same dtypes as a column of Python strings."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import bms
from conftest import ROOT, notebook_windows

STRINGS = pd.Series(np.array(["V"], dtype=object)).dtype  # what pandas makes of strings
# pandas before 3 (without future.infer_string) keeps strings as Python objects: then
# "str" is object too, and frames read from Arrow hold object columns.
ARROW_STRINGS = STRINGS != object
needs_arrow_strings = pytest.mark.skipif(
    not ARROW_STRINGS, reason=f"pandas {pd.__version__} makes strings Python objects"
)


@pytest.fixture(scope="module")
def sim():
    return bms.simulate(vehicles=8, days=70, seed=11, weak_fraction=0.5).daily


def vin_as(daily, kind):
    """`daily` with its VIN column held as `kind`."""
    v = daily["VIN"].astype(str).to_numpy(dtype=object)
    if kind == "object":
        col = pd.Series(v, dtype=object)
    elif kind == "str":
        col = pd.Series(v, dtype="str")
    elif kind == "string[python]":
        col = pd.Series(v, dtype="string[python]")
    elif kind == "string[pyarrow]":
        col = pd.Series(v, dtype="string[pyarrow]")
    elif kind == "arrow string":  # int32 offsets
        col = pd.Series(v, dtype=pd.ArrowDtype(pa.string()))
    elif kind == "arrow large_string":
        col = pd.Series(v, dtype=pd.ArrowDtype(pa.large_string()))
    elif kind == "categorical":
        # Categories in another order than the rows': codes are not first appearance.
        col = pd.Series(pd.Categorical(v, categories=sorted(set(v), reverse=True)))
    else:
        raise ValueError(kind)
    out = daily.assign(VIN=col.set_axis(daily.index))
    assert (out["VIN"].dtype == object) == (
        kind == "object" or (kind == "str" and not ARROW_STRINGS)
    )
    return out


KINDS = ["str", "object", "string[python]", "string[pyarrow]", "arrow string",
         "arrow large_string", "categorical"]


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.float32 and got[1].dtype == np.float32
    pd.testing.assert_frame_equal(got[2], want[2])  # dtypes included


@pytest.mark.parametrize("kind", KINDS)
def test_every_vin_dtype_gives_the_notebook_windows_and_the_same_keys(sim, kind):
    daily = vin_as(sim, kind)
    got = bms.windows(daily)
    x, y, keys = notebook_windows(sim)
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], y)
    pd.testing.assert_frame_equal(got[2], keys, check_dtype=False)
    assert got[2]["vin"].dtype == STRINGS
    assert got[2]["date"].dtype == np.dtype("datetime64[ns]")
    assert_same(got, bms.windows(vin_as(sim, "object")))


def interleaved(daily):
    """Rows of all vehicles mixed (day by day, vehicles in a shuffled order each day)."""
    rng = np.random.default_rng(5)
    return daily.assign(_k=rng.random(len(daily))).sort_values(["Date", "_k"]).drop(
        columns="_k").reset_index(drop=True)


@pytest.mark.parametrize("kind", ["str", "object", "categorical", "arrow string"])
def test_interleaved_vehicles_come_in_order_of_first_appearance(sim, kind):
    mixed = interleaved(sim)
    first = list(dict.fromkeys(mixed["VIN"]))
    assert first != list(dict.fromkeys(sim["VIN"]))  # the shuffle changed the order
    x, y, keys = bms.windows(vin_as(mixed, kind))
    assert list(dict.fromkeys(keys["vin"])) == first
    # The same windows as the table grouped in that order (the notebook loop's input).
    grouped = pd.concat([sim[sim["VIN"] == v] for v in first]).reset_index(drop=True)
    wx, wy, wkeys = notebook_windows(grouped)
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
    pd.testing.assert_frame_equal(keys, wkeys, check_dtype=False)


@needs_arrow_strings
def test_chunked_and_sliced_arrow_columns(sim):
    want = bms.windows(vin_as(sim, "object"))
    # pd.concat keeps one Arrow chunk per piece.
    parts = pd.concat([sim.iloc[:100], sim.iloc[100:333], sim.iloc[333:]])
    assert parts["VIN"].array.__arrow_array__().num_chunks == 3
    assert_same(bms.windows(parts.reset_index(drop=True)), want)
    # A table read in record batches: chunks of both string widths.
    for t in (pa.string(), pa.large_string()):
        table = pa.Table.from_pandas(sim, preserve_index=False)
        table = table.set_column(0, "VIN", table.column("VIN").cast(t))
        batched = pa.Table.from_batches(table.to_batches(max_chunksize=97))
        d = batched.to_pandas()
        assert d["VIN"].array.__arrow_array__().num_chunks > 5
        assert_same(bms.windows(d), want)
        assert_same(bms.windows(batched), want)
    # Slices: chunks that start inside their buffers.
    tail = sim.iloc[37:].reset_index(drop=True)
    assert tail["VIN"].array.__arrow_array__().chunk(0).offset == 37
    assert_same(bms.windows(tail), bms.windows(vin_as(tail, "object")))


@pytest.mark.parametrize("kind", ["str", "object", "categorical", "string[python]",
                                  "arrow string"])
def test_a_missing_vin_names_its_row(sim, kind):
    daily = vin_as(sim, kind)
    col = daily["VIN"].copy()
    col.iloc[41] = None
    with pytest.raises(bms.InvalidInputError, match=r"daily table: row 42 has no VIN"):
        bms.windows(daily.assign(VIN=col))


@needs_arrow_strings
def test_missing_vin_in_a_later_chunk_names_its_row_in_the_table(sim):
    vins = sim["VIN"].tolist()
    vins[150] = None
    table = pa.Table.from_pandas(sim, preserve_index=False)
    table = table.set_column(0, "VIN", pa.array(vins, type=pa.large_string()))
    d = pa.Table.from_batches(table.to_batches(max_chunksize=100)).to_pandas()
    assert d["VIN"].array.__arrow_array__().num_chunks > 2
    with pytest.raises(bms.InvalidInputError, match=r"row 151 has no VIN"):
        bms.windows(d)


def test_frames_vin_dtypes_agree_and_a_missing_vin_names_its_row():
    from conftest import FRAMES_SMALL
    frames = pd.read_csv(FRAMES_SMALL)
    want = bms.daily(frames.assign(vin=frames["vin"].astype(object)))
    for kind in ("str", "string[pyarrow]", "category"):
        got = bms.daily(frames.assign(vin=frames["vin"].astype(kind)))
        pd.testing.assert_frame_equal(got, want)
    bad = frames.assign(vin=frames["vin"].astype("str"))
    bad.loc[3, "vin"] = None
    with pytest.raises(bms.InvalidInputError, match=r"frames: row 4 has no VIN"):
        bms.daily(bad)


def shifted(daily, days):
    return daily.assign(Date=daily["Date"] - pd.Timedelta(days=days))


def test_dates_before_1970_and_times_of_day(sim):
    """A datetime64 column goes to the native module as integers, made days there with a
    floor division: the days of numpy's own datetime64[D] conversion, before 1970 too."""
    early = shifted(sim, 20_000)  # 1969 and before
    assert early["Date"].min() < pd.Timestamp("1970-01-01")
    x, y, keys = bms.windows(early)
    wx, wy, wkeys = notebook_windows(early)
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
    pd.testing.assert_frame_equal(keys, wkeys, check_dtype=False)
    # Times of day fall on their date, before 1970 too (a floor, as numpy's datetime64[D]
    # conversion; rounding toward zero would move 1969-12-31T13:00 to 1970-01-01).
    for offset in ("1ns", "13h", "23h59min59.999999999s"):
        later = early.assign(Date=early["Date"] + pd.Timedelta(offset))
        assert (later["Date"].to_numpy().astype("datetime64[D]")
                == early["Date"].to_numpy().astype("datetime64[D]")).all()
        assert_same(bms.windows(later), (x, y, keys))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_every_datetime_unit_and_date_strings_agree(sim, unit):
    early = shifted(sim, 25_000).assign(Date=lambda d: d["Date"] + pd.Timedelta("7h"))
    want = bms.windows(early.assign(Date=early["Date"].dt.strftime("%Y-%m-%d")))
    got = bms.windows(early.assign(Date=early["Date"].astype(f"datetime64[{unit}]")))
    assert_same(got, want)
    assert got[2]["date"].min() < pd.Timestamp("1970-01-01")


def test_a_missing_date_names_its_row(sim):
    d = sim.copy()
    d.loc[17, "Date"] = pd.NaT
    assert d["Date"].dtype == np.dtype("datetime64[ns]")
    with pytest.raises(bms.InvalidInputError, match=r"row 18, column Date: missing date"):
        bms.windows(d)


def test_large_tables_written_in_parallel_equal_vehicle_by_vehicle():
    """Above a few thousand windows the core plans and writes runs of vehicles on several
    threads; the result is that of each vehicle's own (small, one-thread) table."""
    daily = bms.simulate(vehicles=100, days=200, seed=2, weak_fraction=0.5).daily
    # Half the vehicles interleaved, unsorted and with gaps, so that both core paths run.
    mixed = pd.concat([daily.iloc[:10_000], interleaved(daily.iloc[10_000:]).sample(
        frac=0.9, random_state=1)]).reset_index(drop=True)
    for table in (daily, mixed):
        x, y, keys = bms.windows(table)
        assert len(x) > 4 * 4096
        parts = [bms.windows(table[table["VIN"] == v]) for v in dict.fromkeys(table["VIN"])]
        np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))
        pd.testing.assert_frame_equal(
            keys, pd.concat([p[2] for p in parts]).reset_index(drop=True))


def test_empty_results_keep_their_dtypes(sim):
    for kind in ("str", "object", "categorical"):
        x, y, keys = bms.windows(vin_as(sim, kind).head(5))
        assert x.shape == (0, 84) and y.shape == (0,)
        assert keys["vin"].dtype == object  # as pandas makes an empty object column
        assert keys["date"].dtype == np.dtype("datetime64[ns]")


FALLBACK = r"""
import sys
class NoPyarrow:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("pyarrow hidden for this test")
sys.meta_path.insert(0, NoPyarrow())
import numpy as np, pandas as pd
sys.path.insert(0, sys.argv[1])
import bms
from conftest import notebook_windows
assert "pyarrow" not in sys.modules
daily = bms.simulate(vehicles=5, days=60, seed=4, weak_fraction=0.6).daily
strings = pd.Series(np.array(["V"], dtype=object)).dtype
assert daily["VIN"].dtype == strings
for vin in (daily["VIN"], daily["VIN"].astype(object), daily["VIN"].astype("category")):
    x, y, keys = bms.windows(daily.assign(VIN=vin))
    wx, wy, wkeys = notebook_windows(daily)
    np.testing.assert_array_equal(x, wx)
    np.testing.assert_array_equal(y, wy)
    pd.testing.assert_frame_equal(keys, wkeys, check_dtype=False)
    assert keys["vin"].dtype == strings, keys["vin"].dtype
print("ok", strings)
"""


def test_without_pyarrow_the_generic_path_gives_the_same_windows():
    """pandas may come without pyarrow (or be older): VINs are then numbered by pandas and
    keys built from Python strings, as pandas makes of them."""
    p = subprocess.run([sys.executable, "-c", FALLBACK, os.path.dirname(__file__)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok")


def test_native_numbering_checks_arrow_buffers():
    """The native functions check the Arrow buffers they are handed (a caller may use
    bms._bms directly): offsets that decrease or point past the data are errors, not
    crashes; a valid column is numbered by first appearance."""
    from bms import _bms
    data = np.frombuffer(b"BBAABBCC", dtype=np.uint8)
    ok = np.array([0, 2, 4, 6, 8], np.int64)
    names, codes = _bms.factorize_strings([(ok, data), (ok[:3].astype(np.int32), data)])
    assert names == ["BB", "AA", "CC"] and codes.tolist() == [0, 1, 0, 2, 0, 1]
    for bad in (np.array([0, 4, 2, 8], np.int64), np.array([0, 2, 9], np.int64),
                np.array([-1, 2], np.int64), np.zeros(0, np.int64)):
        with pytest.raises(bms.InvalidInputError, match="offsets"):
            _bms.factorize_strings([(bad, data)])
        with pytest.raises(bms.InvalidInputError, match="offsets"):
            _bms.windows(None, [(bad, data)], np.zeros(max(len(bad) - 1, 0), np.int64),
                         [np.zeros(max(len(bad) - 1, 0))], ["TotalVoltage"])
    with pytest.raises(bms.InvalidInputError, match="Arrow"):
        _bms.windows(None, np.zeros(3, np.int64), np.zeros(3, np.int64), [np.zeros(3)],
                     ["TotalVoltage"])
    with pytest.raises(bms.InvalidInputError, match="not UTF-8"):
        _bms.factorize_strings([(np.array([0, 2], np.int64),
                                 np.frombuffer(b"\xff\xfe", dtype=np.uint8))])


@needs_arrow_strings
def test_keys_follow_the_string_options_of_the_moment(sim):
    """Keys' VINs get what pandas makes of strings when windows is called, also after the
    string storage option changes (and back)."""
    want = bms.windows(vin_as(sim, "object"))
    with pd.option_context("mode.string_storage", "python"):
        strings = pd.Series(np.array(["V"], dtype=object)).dtype
        assert strings != STRINGS
        x, y, keys = bms.windows(sim)
        assert keys["vin"].dtype == strings
        np.testing.assert_array_equal(x, want[0])
        assert keys["vin"].tolist() == want[2]["vin"].tolist()
    assert_same(bms.windows(sim), want)

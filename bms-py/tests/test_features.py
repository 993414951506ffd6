"""frame_features against SPEC §3 written directly in numpy."""

import numpy as np
import pandas as pd

import bms
from conftest import FRAMES_SMALL

OCV = np.array([[0.0, 3.0], [10.0, 3.45], [50.0, 3.7], [90.0, 4.05], [100.0, 4.2]])


def reference(cells, temps, soc, flags, spread_v=0.10):
    vmax = np.nanmax(cells, axis=1)
    vmin = np.nanmin(cells, axis=1)
    per_cell_soc = np.interp(cells, OCV[:, 1], OCV[:, 0])
    per_cell_soc[np.isnan(cells)] = np.nan
    spread = vmax - vmin
    return {
        "cell_v_max": vmax, "cell_v_min": vmin, "cell_v_spread": spread,
        "cell_v_mean": np.nanmean(cells, axis=1), "cell_v_std": np.nanstd(cells, axis=1),
        "cell_v_max_idx": np.nanargmax(cells, axis=1), "cell_v_min_idx": np.nanargmin(cells, axis=1),
        "temp_max": np.nanmax(temps, axis=1), "temp_min": np.nanmin(temps, axis=1),
        "temp_delta": np.nanmax(temps, axis=1) - np.nanmin(temps, axis=1),
        "temp_mean": np.nanmean(temps, axis=1),
        "soc_deviation": np.nanmax(per_cell_soc, axis=1) - np.nanmin(per_cell_soc, axis=1),
        "soc_bias": soc - np.nanmean(per_cell_soc, axis=1),
        "consistency_alarm": np.where(flags >= 0, (flags & 0x400) != 0, spread > spread_v),
    }


def test_frame_features_match_spec_in_numpy():
    df = pd.read_csv(FRAMES_SMALL)
    cells = df[[c for c in df.columns if c.startswith("cell_v_")]].to_numpy(np.float64)
    temps = df[[c for c in df.columns if c.startswith("temp_")]].to_numpy(np.float64)
    rng = np.random.default_rng(0)
    cells[rng.random(cells.shape) < 0.05] = np.nan
    flags = np.where(rng.random(len(df)) < 0.5, -1, rng.integers(0, 0x800, len(df)))
    soc = df["soc"].to_numpy()
    got = bms.frame_features(cells, temps, soc=soc, alarm_flags=pd.Series(
        np.where(flags < 0, np.nan, flags)), ocv=OCV)
    want = reference(cells, temps, soc, flags)
    assert list(got.columns) == list(bms.FRAME_FEATURE_NAMES)
    for k, v in want.items():
        g = got[k].to_numpy(dtype=np.float64 if k != "consistency_alarm" else bool)
        if k == "consistency_alarm":
            np.testing.assert_array_equal(g, v, err_msg=k)
        else:
            np.testing.assert_allclose(g, v, rtol=1e-9, atol=1e-9, err_msg=k)
    assert got["consistency_alarm"].any() and not got["consistency_alarm"].all()
    # float32 input: the same features of the float32 values.
    got32 = bms.frame_features(cells.astype(np.float32), temps.astype(np.float32), soc=soc,
                               ocv=OCV)
    want32 = reference(cells.astype(np.float32).astype(np.float64),
                       temps.astype(np.float32).astype(np.float64), soc, np.full(len(df), -1))
    np.testing.assert_allclose(got32["cell_v_std"], want32["cell_v_std"], rtol=1e-9, atol=1e-12)


def test_frame_with_no_valid_cell_has_missing_index_and_nan_stats():
    cells = np.array([[np.nan, np.nan], [3.6, 3.7]])
    temps = np.array([[20.0], [np.nan]])
    f = bms.frame_features(cells, temps)
    assert f["cell_v_max_idx"].isna().tolist() == [True, False]
    assert f["cell_v_max_idx"][1] == 1 and f["cell_v_min_idx"][1] == 0
    assert np.isnan(f["cell_v_max"][0]) and np.isnan(f["temp_max"][1])
    assert np.isnan(f["soc_bias"]).all()  # no soc given


def test_contiguous_float64_is_borrowed_and_not_modified():
    cells = np.ascontiguousarray(np.linspace(3.5, 3.9, 40).reshape(5, 8))
    before = cells.copy()
    cells.setflags(write=False)  # a read-only array is accepted (borrowed, not written)
    f = bms.frame_features(cells, np.ones((5, 1)))
    np.testing.assert_array_equal(cells, before)
    np.testing.assert_allclose(f["cell_v_spread"], cells.max(1) - cells.min(1))


def test_memory_layouts_agree():
    """C order (borrowed), Fortran order and strided views give the same features."""
    rng = np.random.default_rng(1)
    cells = 3.6 + 0.1 * rng.random((50, 12))
    temps = 20 + 5 * rng.random((50, 3))
    want = bms.frame_features(cells, temps)
    for c, t in [(np.asfortranarray(cells), np.asfortranarray(temps)),
                 (np.repeat(cells, 2, axis=1)[:, ::2], temps),
                 (cells.astype(np.float32).astype(np.float64), temps)]:
        got = bms.frame_features(c, t)
        pd.testing.assert_frame_equal(got, bms.frame_features(np.ascontiguousarray(c), t))
    pd.testing.assert_frame_equal(bms.frame_features(np.asfortranarray(cells), temps), want)

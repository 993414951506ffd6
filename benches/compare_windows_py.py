"""bms.windows against a vectorised numpy implementation and the reference notebook's pandas
loop, on the same simulated daily table; prints per-window times and ratios.

    maturin build --release -m bms-py/Cargo.toml -o /tmp/wheels   # release wheel
    pip install --force-reinstall --no-deps /tmp/wheels/bms_py-*.whl
    python benches/compare_windows_py.py [--vehicles 1000] [--days 365] [--loop-vehicles 20]

All three produce the 14 x 6 reference windows with labels (SPEC section 5) and are
checked equal before timing. numpy and bms run on the whole fleet, each --warmups untimed
calls (the first one's time reported apart) then the best of --rounds; the notebook loop,
far slower, runs once on the first --loop-vehicles vehicles.
Times are wall clock in one process. bms.windows works on all the machine's cores (rayon;
RAYON_NUM_THREADS=1 for one), numpy and the loop on one.
"""

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

import bms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bms-py", "tests"))
from conftest import notebook_windows  # noqa: E402  (the same port the tests check)

C, H = 14, 14
FEATURES = list(bms.REFERENCE_COLUMNS)


def numpy_windows(daily, context=C, horizon=H, features=FEATURES, fill=-1.0):
    """SPEC section 5 vectorised with numpy: group by VIN (first appearance order), sort by
    date, densify, fill NaN, cut windows with sliding_window_view, labels by prefix sums."""
    codes, uniques = pd.factorize(daily["VIN"], sort=False)
    days = daily["Date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    order = np.lexsort((days, codes))
    codes, days = codes[order], days[order]
    vals = daily[features].to_numpy(np.float64)[order]
    lab = daily["Label"].to_numpy(np.float64)[order] == 1.0
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    first = days[starts]
    last = np.r_[days[starts[1:] - 1], days[-1]]
    lengths = last - first + 1
    off = np.r_[0, np.cumsum(lengths)[:-1]]
    per_row_vehicle = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(codes)]))
    idx = off[per_row_vehicle] + (days - first[per_row_vehicle])
    total = int(lengths.sum())
    nf = len(features)
    dense = np.full((total, nf), fill, dtype=np.float32)
    dense[idx] = np.where(np.isnan(vals), fill, vals).astype(np.float32)
    alarm = np.zeros(total, dtype=np.int64)
    alarm[idx] = lab
    prefix = np.r_[0, np.cumsum(alarm)]
    nwin = np.maximum(lengths - context, 0)
    veh = np.repeat(np.arange(len(starts)), nwin)
    pos = np.arange(int(nwin.sum())) - np.repeat(np.r_[0, np.cumsum(nwin)[:-1]], nwin) + context
    g = off[veh] + pos
    sw = np.lib.stride_tricks.sliding_window_view(dense, (context, nf))[:, 0]
    x = sw[g - context].reshape(len(g), context * nf)
    end = off[veh] + np.minimum(pos + horizon, lengths[veh])
    y = ((prefix[end] - prefix[g]) > 0).astype(np.float32)
    # uniques is the VIN column's own kind of Index (pandas str, object, ...): take() keeps
    # its dtype without a Python object per window.
    keys = pd.DataFrame({"vin": uniques.take(veh),
                         "date": (np.datetime64("1970-01-01", "D")
                                  + (first[veh] + pos).astype("timedelta64[D]")
                                  ).astype("datetime64[ns]")})
    return x, y, keys


def best(f, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def warm_best(f, rounds, warmups):
    """`warmups` untimed calls (the first one's time is returned apart: the first calls of a
    process pay for its memory state, e.g. the kernel compacting memory into huge pages),
    then the best of `rounds`."""
    first, _ = timed(f)
    for _ in range(warmups - 1):
        f()
    t, out = best(f, rounds)
    return t, out, first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--loop-vehicles", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmups", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    t = time.perf_counter()
    daily = bms.simulate(vehicles=args.vehicles, days=args.days, seed=args.seed,
                         weak_fraction=0.2).daily
    print(f"simulated {args.vehicles} x {args.days}: {len(daily)} daily rows "
          f"({time.perf_counter() - t:.0f} s)")

    tb, (x, y, keys), fb = warm_best(lambda: bms.windows(daily), args.rounds, args.warmups)
    tn, (nx, ny, nkeys), fn = warm_best(lambda: numpy_windows(daily), args.rounds, args.warmups)
    np.testing.assert_array_equal(x, nx)
    np.testing.assert_array_equal(y, ny)
    pd.testing.assert_frame_equal(keys, nkeys)
    n = len(x)

    first = daily["VIN"].unique()[: args.loop_vehicles]
    small = daily[daily["VIN"].isin(first)].reset_index(drop=True)
    t = time.perf_counter()
    lx, ly, lkeys = notebook_windows(small)
    tl = time.perf_counter() - t
    sx, sy, skeys = bms.windows(small)
    np.testing.assert_array_equal(sx, lx)
    np.testing.assert_array_equal(sy, ly)
    tbs, _ = best(lambda: bms.windows(small), args.rounds)

    per = lambda secs, k: secs / k * 1e9  # ns per window
    print(f"windows: {n} on the full table, {len(lx)} on the loop's {args.loop_vehicles} vehicles")
    print(f"{'implementation':<34}{'windows':>9}{'time':>11}{'ns/window':>12}")
    print(f"{'bms.windows (full table)':<34}{n:>9}{tb * 1e3:>9.1f}ms{per(tb, n):>12.0f}")
    print(f"{'numpy vectorised (full table)':<34}{n:>9}{tn * 1e3:>9.1f}ms{per(tn, n):>12.0f}")
    print(f"{'bms.windows (loop subset)':<34}{len(sx):>9}{tbs * 1e3:>9.1f}ms{per(tbs, len(sx)):>12.0f}")
    print(f"{'notebook pandas loop (subset)':<34}{len(lx):>9}{tl * 1e3:>9.1f}ms{per(tl, len(lx)):>12.0f}")
    print(f"first calls (full table): bms.windows {fb * 1e3:.1f}ms, numpy {fn * 1e3:.1f}ms")
    print(f"ratio numpy / bms (per window, full table): {per(tn, n) / per(tb, n):.1f}x  (goal >= 5x)")
    print(f"ratio notebook loop / bms (per window):      {per(tl, len(lx)) / per(tb, n):.0f}x  (goal >= 100x)")


if __name__ == "__main__":
    main()

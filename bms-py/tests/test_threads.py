"""Several threads calling predict and windows at once get the answers of one thread:
the interpreter lock is released around the core's work, safely."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

import bms
from conftest import MODELS


def test_threads_equal_one_thread():
    sim = bms.simulate(vehicles=20, days=150, seed=9, weak_fraction=0.3)
    m = bms.Model(os.path.join(MODELS, "consistency-ref14x6.onnx"))
    x, y, keys = bms.windows(sim.daily)
    p = m.predict(x)
    dailies = [sim.daily, sim.daily.iloc[::-1].reset_index(drop=True)]

    def job(i):
        if i % 2:
            return ("p", i, m.predict(x[i % 7:]))
        return ("w", i, bms.windows(dailies[(i // 2) % 2]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(48)))
    for kind, i, r in results:
        if kind == "p":
            np.testing.assert_array_equal(r, p[i % 7:])
        else:
            rx, ry, rk = r
            if (i // 2) % 2 == 0:
                np.testing.assert_array_equal(rx, x)
                np.testing.assert_array_equal(ry, y)
                pd.testing.assert_frame_equal(rk, keys)
            else:
                # Reversed rows: vehicles come in the other order, same windows per vehicle.
                a = pd.DataFrame(rx).assign(vin=rk["vin"], date=rk["date"], y=ry)
                b = pd.DataFrame(x).assign(vin=keys["vin"], date=keys["date"], y=y)
                s = ["vin", "date"]
                pd.testing.assert_frame_equal(a.sort_values(s).reset_index(drop=True),
                                              b.sort_values(s).reset_index(drop=True))


def _child_windows(daily):
    x, y, keys = bms.windows(daily)
    sim = bms.simulate(vehicles=3, days=30, seed=5)
    return float(x.sum()), float(y.sum()), len(keys), len(sim.daily)


def test_a_forked_child_gets_threads_of_its_own():
    """Threads do not survive fork(): a child of a process that already used the thread
    pool (windows, simulate) makes its own instead of waiting forever for the parent's."""
    import multiprocessing as mp
    import sys
    import warnings

    if sys.platform != "linux":
        return
    daily = bms.simulate(vehicles=60, days=200, seed=8).daily
    x, y, keys = bms.windows(daily)  # parallel-size table: the pool is running
    assert len(x) > 2 * 4096
    want = (float(x.sum()), float(y.sum()), len(keys),
            len(bms.simulate(vehicles=3, days=30, seed=5).daily))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
        with mp.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_child_windows, (daily,)).get(timeout=120)
    assert got == want

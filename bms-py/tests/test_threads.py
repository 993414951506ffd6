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

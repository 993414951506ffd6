"""Shared fixtures of the bms-py tests.

The parity tests compare with the Rust command line (`bms`, built from the same core);
scripts/test-py.sh builds it and sets BMS_BIN. Without it those tests fail (they never skip).
"""

import os
import subprocess

import numpy as np
import pandas as pd
import pytest

import bms

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "models")
FIXTURES = os.path.join(MODELS, "fixtures")
FRAMES_SMALL = os.path.join(ROOT, "examples", "data", "frames-small.csv")


def _find_bms():
    cands = [os.environ.get("BMS_BIN")]
    for d in (os.environ.get("CARGO_TARGET_DIR"), os.path.join(ROOT, "target")):
        if d:
            cands += [os.path.join(d, "debug", "bms"), os.path.join(d, "release", "bms")]
    for c in cands:
        if c and os.path.exists(c):
            return c
    raise RuntimeError("no bms binary: build it (cargo build --bin bms) and set BMS_BIN")


def assert_daily_equal(a, b):
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_exact=True)


def frames_small():
    return pd.read_csv(FRAMES_SMALL)


@pytest.fixture(scope="session")
def bms_bin():
    return _find_bms()


def run(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def sim_small():
    """A small simulated fleet with an enriched share of weak vehicles (so labels of 1
    occur), reused by several tests."""
    return bms.simulate(vehicles=12, days=120, seed=3, weak_fraction=0.5)


def notebook_windows(daily, context=14, horizon=14, features=None, fill=-1.0,
                     full_horizon=False):
    """The reference notebook's loop, ported straight: `df.fillna(-1)`, per VIN in order of
    first appearance, `for i in range(C, len(v))` on the vehicle's rows (sorted, dense)."""
    features = list(bms.REFERENCE_COLUMNS) if features is None else list(features)
    df = daily.fillna(fill)
    xs, ys, vins, dates = [], [], [], []
    for vin in df.VIN.unique():
        v = df[df.VIN == vin].reset_index(drop=True)
        for i in range(context, len(v)):
            if full_horizon and i + horizon > len(v):
                continue
            x = v.loc[i - context:i - 1, features].values.flatten()
            y = 1.0 if (v.loc[i:i + horizon - 1, "Label"] == 1).any() else 0.0
            xs.append(x)
            ys.append(y)
            vins.append(vin)
            dates.append(v.loc[i, "Date"])
    width = context * len(features)
    x = np.array(xs, dtype=np.float32).reshape(len(xs), width)
    return x, np.array(ys, dtype=np.float32), pd.DataFrame({"vin": vins, "date": dates})

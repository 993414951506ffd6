"""bms.simulate: the fleet simulator, equal to `bms simulate`."""

import pandas as pd

import bms
from conftest import assert_daily_equal, run


def test_simulate_equals_cli(bms_bin, tmp_path):
    daily = tmp_path / "daily.csv"
    truth = tmp_path / "truth.csv"
    run(bms_bin, "simulate", "--vehicles", 6, "--days", 50, "--seed", 11,
        "--daily", daily, "--truth", truth)
    sim = bms.simulate(vehicles=6, days=50, seed=11)
    assert_daily_equal(sim.daily, bms.read_daily_csv(daily))
    t = pd.read_csv(truth, dtype={"vin": object})
    assert list(sim.truth["vin"]) == list(t["vin"])
    assert list(sim.truth["weak"].astype(int)) == list(t["weak"].astype(int))
    assert list(sim.truth["alarm_days"]) == list(t["alarm_days"])


def test_simulated_frames_aggregate_to_the_simulated_daily_table():
    sim = bms.simulate(vehicles=3, days=20, seed=5, interval_ms=60_000, frames=True)
    assert sim.frames is not None and len(sim.frames) == sim.n_frames > 0
    assert_daily_equal(bms.daily(sim.frames), sim.daily)

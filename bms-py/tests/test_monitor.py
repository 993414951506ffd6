"""bms.Monitor (bms-core's streaming monitor, the code of the C library's bms_monitor) against
the command line: a `bms simulate --frames` fleet streamed frame by frame gives exactly the
rows of `bms daily`, the windows of `bms windows` and the probabilities of `bms predict`;
bad input raises and changes nothing."""

import csv
import datetime as dt
import inspect
import os

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import MODELS, run

MODEL = os.path.join(MODELS, "consistency-ref14x6.onnx")
NUMERIC = [*bms.REFERENCE_COLUMNS, "Label", *bms.EXTENDED_COLUMNS]
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def fleet(bms_bin, tmp_path_factory):
    """Frames, daily table, batch windows and predictions of a small fleet, all written by
    the command line."""
    d = tmp_path_factory.mktemp("monitor")
    frames, daily, batch, preds = (d / n for n in ("frames.csv", "daily.csv", "batch.csv", "p.csv"))
    run(bms_bin, "simulate", "--vehicles", 4, "--days", 40, "--seed", 3, "--interval", "60s",
        "--weak-fraction", 0.5, "--frames", frames)
    run(bms_bin, "daily", "-i", frames, "-o", daily)
    run(bms_bin, "windows", "-i", daily, "-o", batch)
    with open(preds, "w") as out:
        out.write(run(bms_bin, "predict", "-m", MODEL, "-i", batch).stdout)
    return {
        "frames": _read_frames(frames),
        "daily": _read_daily(daily),
        "batch": bms.read_batch_csv(batch, strict=True),
        "preds": pd.read_csv(preds, dtype={"predicted_prob": str}),
    }


# The CSVs are parsed with Python's float(), correctly rounded as the command line's reader
# (pandas 1.5's default float parser is not; its exact one is deprecated in pandas 3).


def _read_frames(path):
    """{vin: [(timestamp_ms, pack_voltage, pack_current, soc, cells, temps, flags)]}, each
    vehicle's frames in file (time) order."""
    out = {}
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        cells = [i for i, c in enumerate(header) if c.startswith("cell_v_")]
        temps = [i for i, c in enumerate(header) if c.startswith("temp_")]
        flags = header.index("alarm_flags") if "alarm_flags" in header else None
        assert header[:5] == ["vin", "timestamp", "pack_voltage", "pack_current", "soc"]
        for row in r:
            fl = row[flags] if flags is not None else ""
            out.setdefault(row[0], []).append((
                int(row[1]), float(row[2]), float(row[3]), float(row[4]),
                np.array([float(row[i]) for i in cells]),
                np.array([float(row[i]) for i in temps]),
                int(fl, 0) if fl else None,
            ))
    return out


def _read_daily(path):
    """{vin: [row dict]} of a daily CSV, rows in file (date) order."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["VIN"], []).append(
                {k: (v if k in ("VIN", "Date") else float(v)) for k, v in row.items()}
            )
    return out


def _same(a, b):
    return a == b or (np.isnan(a) and np.isnan(b))


def test_streaming_equals_bms_daily_windows_and_predict(fleet):
    model = bms.Model(MODEL)
    f, daily, batch, preds = fleet["frames"], fleet["daily"], fleet["batch"], fleet["preds"]
    # Probabilities as bms predict printed them, parsed as float32 (their type).
    prob = {(v, d): np.float32(p) for v, d, p in zip(preds.vin, preds.date, preds.predicted_prob)}
    window = {(v, d.strftime("%Y-%m-%d")): batch.x[i]
              for i, (v, d) in enumerate(zip(batch.keys.vin, batch.keys.date))}
    rows_checked = probs_checked = 0
    assert sorted(f) == sorted(daily), "the same vehicles"
    for vin, frames in f.items():
        rows = daily[vin]
        mon = bms.Monitor(model)
        buf = np.full(mon.width, np.nan, dtype=np.float32)
        seen = 0

        def check_new_days():
            nonlocal seen, rows_checked
            new = mon.days_closed - seen
            assert new <= mon.days_held, "a gap longer than the ring (not in this fleet)"
            for age in range(new):
                got = mon.day(age)
                want = rows[mon.days_closed - 1 - age]
                assert got["Date"].isoformat() == want["Date"]
                for c in NUMERIC:
                    assert _same(got[c], want[c]), f"{vin} {want['Date']} {c}: {got[c]} vs {want[c]}"
                rows_checked += 1
            seen = mon.days_closed
            return new > 0

        scored = 0
        for frame in frames:
            mon.push_frame(*frame)
            if not check_new_days():
                continue
            key = (vin, mon.current_date.isoformat())
            if not mon.is_ready:
                assert key not in prob
                with pytest.raises(bms.InvalidInputError, match="not ready"):
                    mon.predict()
                continue
            assert mon.window(out=buf) is buf
            np.testing.assert_array_equal(buf, window[key], strict=True)
            np.testing.assert_array_equal(mon.window(), buf)
            p = np.float32(mon.predict())
            assert p == prob[key], f"{key}: monitor {p!r}, bms predict {prob[key]!r}"
            scored += 1
        # Close the last day at the next midnight: every daily row was closed and compared.
        last = dt.date.fromisoformat(rows[-1]["Date"])
        mon.advance_to(((last - dt.date(1970, 1, 1)).days + 1) * DAY_MS)
        check_new_days()
        assert mon.days_closed == len(rows)
        # Exactly the windows dated on days with frames were scored.
        with_frames = {r["Date"] for r in rows if r["frames"] > 0}
        assert scored == sum(1 for v, d in prob if v == vin and d in with_frames)
        probs_checked += scored
    assert rows_checked == sum(len(rows) for rows in daily.values())
    assert probs_checked > 4 * 10
    assert any(r["Label"] == 1.0 for rows in daily.values() for r in rows), "alarm days"


def _monitor_with_days(n, context_model=MODEL):
    mon = bms.Monitor(bms.Model(context_model))
    cells, temps = np.full(8, 3.7), np.array([25.0, 26.0])
    t0 = 19_700 * DAY_MS
    for k in range(n):
        mon.push_frame(t0 + k * DAY_MS, 300.0, 10.0, 50.0, cells, temps, 0)
    return mon, t0, cells, temps


def _state(mon):
    days = [tuple(np.float64(v).tobytes() for v in mon.day(a).values() if not isinstance(v, dt.date))
            for a in range(mon.days_held)]
    w = mon.window().tobytes() if mon.is_ready else None
    return mon.days_held, mon.days_closed, mon.current_date, days, w


def test_bad_frames_raise_and_change_nothing():
    mon, t0, cells, temps = _monitor_with_days(16)
    last = t0 + 15 * DAY_MS
    before = _state(mon)
    assert before[4] is not None
    with pytest.raises(bms.InvalidInputError, match="older than the latest frame"):
        mon.push_frame(last - 1, 300.0, 10.0, 50.0, cells, temps)
    with pytest.raises(bms.InvalidInputError, match="already pushed"):
        mon.push_frame(last, 1.0, 1.0, 1.0, cells, temps)
    with pytest.raises(bms.InvalidInputError, match="older"):
        mon.advance_to(last - 1)
    with pytest.raises(bms.InvalidInputError, match="no cell voltages"):
        mon.push_frame(last + 1, 300.0, 10.0, 50.0, [], temps)
    with pytest.raises(bms.InvalidInputError, match="no temperatures"):
        mon.push_frame(last + 1, 300.0, 10.0, 50.0, cells, np.array([]))
    with pytest.raises(bms.InvalidInputError, match="1-D"):
        mon.push_frame(last + 1, 300.0, 10.0, 50.0, np.ones((2, 4)), temps)
    with pytest.raises(bms.InvalidInputError, match="32-bit"):
        mon.push_frame(last + 1, 300.0, 10.0, 50.0, cells, temps, 1 << 40)
    with pytest.raises(bms.InvalidInputError, match="calendar"):
        mon.push_frame(2**62, 300.0, 10.0, 50.0, cells, temps)
    # Output buffers of the wrong length, type or mutability; nothing is written.
    short = np.full(83, 7.0, dtype=np.float32)
    with pytest.raises(bms.InvalidInputError, match="expected 84, found 83"):
        mon.window(out=short)
    assert (short == 7.0).all()
    with pytest.raises(bms.InvalidInputError, match="float32"):
        mon.window(out=np.zeros(84))
    ro = np.zeros(84, dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(bms.InvalidInputError, match="not writable"):
        mon.window(out=ro)
    with pytest.raises(IndexError, match="age 14"):
        mon.day(14)
    assert _state(mon) == before, "rejected input changed the monitor"
    # And the monitor goes on as if nothing had happened.
    mon.push_frame(last + DAY_MS, 300.0, 10.0, 50.0, cells, temps, 0)
    twin, *_ = _monitor_with_days(17)
    assert _state(mon) == _state(twin)


def test_not_ready_gaps_and_configuration():
    model = bms.Model(MODEL)
    mon = bms.Monitor(model, utc_offset="+08:00")
    assert (mon.days_held, mon.days_closed, mon.current_date, mon.is_ready) == (0, 0, None, False)
    assert (mon.context, mon.width, mon.model) == (14, 84, model)
    with pytest.raises(bms.InvalidInputError, match="0 of the model's 14 days"):
        mon.window()
    cells, temps = np.full(4, 3.7), np.array([25.0])
    # 2024-01-01 15:00 and 17:00 UTC: 23:00 and 01:00 in Beijing, so two days.
    t = 1_704_121_200_000
    mon.push_frame(t, 1.0, 1.0, 1.0, cells, temps)
    mon.push_frame(t + 2 * 3_600_000, 1.0, 1.0, 1.0, cells, temps)
    assert mon.days_closed == 1
    assert mon.current_date == dt.date(2024, 1, 2)
    assert mon.day(0)["Date"] == dt.date(2024, 1, 1)
    # 1000 days later: 999 empty days closed, 14 held, a window of the fill value only.
    mon.push_frame(t + 1000 * DAY_MS, 1.0, 1.0, 1.0, cells, temps)
    assert (mon.days_closed, mon.days_held) == (1000, 14)
    d = mon.days()
    assert list(d.columns) == ["Date", *NUMERIC] and len(d) == 14
    assert (d.frames == 0).all() and d.TotalVoltage.isna().all() and d.Label.isna().all()
    assert (mon.window() == -1.0).all()
    p = model.predict(np.full((1, 84), -1.0, dtype=np.float32))[0]
    assert np.float32(mon.predict()) == p
    with pytest.raises(bms.InvalidInputError, match="UTC offset"):
        bms.Monitor(model, utc_offset=90_000)
    with pytest.raises(bms.InvalidInputError, match="alarm spread"):
        bms.Monitor(model, alarm_spread_v=float("nan"))
    with pytest.raises(bms.InvalidInputError, match="expected a bms.Model"):
        bms.Monitor(MODEL)
    # The defaults are the core's (those of bms.daily and bms daily).
    d = inspect.signature(bms.Monitor).parameters
    assert d["ocv"].default == bms._bms.DEFAULTS["ocv"]
    assert d["alarm_spread_v"].default == bms._bms.DEFAULTS["alarm_spread_v"]
    assert d["utc_offset"].default is None
    lfp = bms.Monitor(model, ocv="lfp")
    lfp.push_frame(t, 1.0, 1.0, 50.0, cells, temps)
    assert "Monitor(context=14" in repr(lfp)

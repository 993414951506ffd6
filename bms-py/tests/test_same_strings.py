"""The core parses; Python converts types. The same strings given to the command line and
to Python are accepted or refused alike, and accepted ones mean the same."""

import subprocess

import pandas as pd
import pytest

import bms
from conftest import FRAMES_SMALL

OFFSETS = ["+08:00", "+8", "-0530", "UTC", "z", " +08:00 ", "+08:75", "+24:00", "08:00",
           "+8:5", "", "+", "-00:30", "+0800x", "-+8", "++8", "+08:+5"]
FLAGS = ["1024", "0x400", "0X400", " 7 ", "0b101", "-1", "4294967295", "4294967296", "1e3",
         "0o17", "+5", "x"]


def _cli(bms_bin, *args):
    p = subprocess.run([str(a) for a in [bms_bin, *args]], capture_output=True, text=True)
    return p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def frames():
    return pd.read_csv(FRAMES_SMALL)


@pytest.mark.parametrize("offset", OFFSETS)
def test_utc_offsets_mean_the_same_to_both(bms_bin, frames, tmp_path, offset):
    out = tmp_path / "d.csv"
    cli_ok, err = _cli(bms_bin, "daily", "-i", FRAMES_SMALL, "-o", out, f"--utc-offset={offset}")
    try:
        py = bms.daily(frames, utc_offset=offset)
        py_ok = True
    except bms.InvalidInputError as e:
        py_ok = False
        assert "UTC offset" in str(e)
    assert py_ok == cli_ok, f"{offset!r}: CLI {'accepts' if cli_ok else 'refuses'} it ({err})"
    if cli_ok:
        cli = bms.read_daily_csv(out)
        assert list(py["Date"]) == list(cli["Date"])
        assert list(py["VIN"]) == list(cli["VIN"])


@pytest.mark.parametrize("flag", FLAGS)
def test_alarm_flag_strings_mean_the_same_to_both(bms_bin, frames, tmp_path, flag):
    f = frames.copy()
    f["alarm_flags"] = ""
    f.loc[5, "alarm_flags"] = flag
    path = tmp_path / "frames.csv"
    # The CSV holds the string as given (quoted, so that blanks survive).
    f.to_csv(path, index=False, quoting=1)
    out = tmp_path / "d.csv"
    cli_ok, err = _cli(bms_bin, "daily", "-i", path, "-o", out)
    try:
        py = bms.daily(f.astype({"alarm_flags": object}))
        py_ok = True
    except bms.InvalidInputError as e:
        py_ok = False
        assert "alarm_flags" in str(e) and "row 6" in str(e), str(e)
    assert py_ok == cli_ok, f"{flag!r}: CLI {'accepts' if cli_ok else 'refuses'} it ({err})"
    if cli_ok:
        cli = bms.read_daily_csv(out)
        pd.testing.assert_series_equal(py["Label"], cli["Label"])


def test_the_parsers_are_the_cores():
    assert bms._bms.parse_utc_offset("+05:30") == 19800
    assert bms._bms.parse_alarm_flags("0x400") == 1024
    assert bms._bms.parse_alarm_flags("  ") is None
    with pytest.raises(bms.InvalidInputError, match="0b101"):
        bms._bms.parse_alarm_flags("0b101")

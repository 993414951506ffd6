"""The file readers: bms.read_daily_csv and bms.read_batch_csv."""

import numpy as np
import pytest

import bms


def test_read_daily_csv_errors_name_file_line_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text(
        "VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,"
        "MinTemperature,Label\n"
        "V1,2024-01-01,370,1,3.9,3.8,25,24,0.0\n"
        "V1,2024-01-02,370,abc,3.9,3.8,25,24,0.0\n")
    with pytest.raises(bms.InvalidInputError) as e:
        bms.read_daily_csv(p)
    msg = str(e.value)
    assert "d.csv" in msg and "line 3" in msg and "TotalCurrent" in msg and "abc" in msg
    with pytest.raises(bms.BmsIOError, match="missing.csv"):
        bms.read_daily_csv(tmp_path / "missing.csv")
    h = tmp_path / "h.csv"
    h.write_text("vin,date\n")
    with pytest.raises(bms.InvalidInputError, match="header"):
        bms.read_daily_csv(h)


def test_read_batch_csv_lenient_and_strict(tmp_path):
    p = tmp_path / "b.csv"
    good = "V1,2024-01-15," + ",".join(["1.5"] * 84)
    p.write_text("\n".join([
        good,
        "V1,2024-01-16," + ",".join(["1.5"] * 83),
        "V2,2024-01-16," + ",".join(["1.5"] * 83 + ["x"]),
        good.replace("V1", "V3"),
    ]) + "\n")
    r = bms.read_batch_csv(p)
    assert (r.read, r.accepted) == (4, 2)
    assert list(r.rejects["line"]) == [2, 3]
    assert "x" in r.rejects["reason"][1]
    assert list(r.keys["vin"]) == ["V1", "V3"] and list(r.lines) == [1, 4]
    assert r.x.shape == (2, 84) and r.x.dtype == np.float32 and (r.x == 1.5).all()
    with pytest.raises(bms.InvalidInputError, match="line 2"):
        bms.read_batch_csv(p, strict=True)
    with pytest.raises(bms.InvalidInputError, match="width"):
        bms.read_batch_csv(p, width=0)

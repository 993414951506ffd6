"""bms.score_file and Model.predict_daily run the same pipeline as `bms predict --out`:
the same stores, the same event ids, the same errors."""

import json
import os
import sqlite3
import subprocess

import numpy as np
import pandas as pd
import pytest

import bms
from conftest import MODELS, run

REF = os.path.join(MODELS, "consistency-ref14x6.onnx")


@pytest.fixture(scope="module")
def model():
    return bms.Model(REF)


@pytest.fixture(scope="module")
def daily_csv(tmp_path_factory, bms_bin):
    path = tmp_path_factory.mktemp("daily") / "daily.csv"
    run(bms_bin, "simulate", "--vehicles", "12", "--days", "120", "--seed", "3",
        "--weak-fraction", "0.5", "--daily", path)
    return path


def _events(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _store_rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT event_id, vin, date, model_id, predicted_prob, alarm FROM predictions "
            "ORDER BY event_id").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("partition_by", [None, "date"])
def test_score_file_writes_what_the_command_line_writes(bms_bin, model, daily_csv, tmp_path,
                                                        partition_by):
    py_out = tmp_path / "py"
    cli_out = tmp_path / "cli"
    s = bms.score_file(model, daily_csv, out=py_out, partition_by=partition_by)
    args = ["predict", "-m", REF, "-i", daily_csv, "--out", cli_out]
    if partition_by:
        args += ["--partition-by", partition_by]
    run(bms_bin, *args)

    assert isinstance(s, bms.Summary)
    assert s.format == "daily" and s.partitioned == (partition_by is not None)
    assert s.scored > 0 and s.rows_rejected == 0 and s.vehicles == 12
    # Byte for byte: events and rejects; row for row: SQLite and Parquet.
    for name in ["events.jsonl", "rejects.csv"]:
        assert (py_out / name).read_bytes() == (cli_out / name).read_bytes(), name
    assert _store_rows(py_out / "results.sqlite") == _store_rows(cli_out / "results.sqlite")
    pq = "predictions" if partition_by else "predictions.parquet"
    a = pd.read_parquet(py_out / pq).sort_values("event_id").reset_index(drop=True)
    b = pd.read_parquet(cli_out / pq).sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == s.scored

    cli_summary = json.loads((cli_out / "summary.json").read_text())
    mine = s.to_dict()
    for d in (mine, cli_summary):
        d.pop("seconds")
        d.pop("input")
    assert mine == cli_summary
    read = bms.Summary.read(os.fspath(py_out / "summary.json"))
    assert read.scored == s.scored and read.model_id == s.model_id


def test_predict_daily_gives_the_event_ids_of_the_stores(model, daily_csv, tmp_path):
    s = bms.score_file(model, daily_csv, out=tmp_path)
    events = _events(tmp_path / "events.jsonl")
    scores = model.predict_daily(bms.read_daily_csv(daily_csv))
    assert list(scores.columns) == ["event_id", "vin", "date", "predicted_prob", "alarm",
                                    "model_id"]
    assert len(scores) == s.scored
    assert list(scores["event_id"]) == [e["request_id"] for e in events]
    assert list(scores["vin"]) == [e["vin"] for e in events]
    np.testing.assert_array_equal(
        scores["predicted_prob"].to_numpy(),
        np.array([e["predicted_prob"] for e in events], dtype=np.float32))
    assert int(scores["alarm"].sum()) == s.alarms


def test_batch_rejects_are_counted_and_kept_with_their_text(model, tmp_path):
    values = ",".join(["0.5"] * model.width)
    path = tmp_path / "batch.csv"
    path.write_text(f"V1,2024-03-01,{values}\nV2,not-a-date,{values}\nV3,2024-03-02,{values}\n")
    s = bms.score_file(model, path, out=tmp_path / "o")
    assert (s.rows_read, s.scored, s.rows_rejected) == (3, 2, 1)
    rejects = pd.read_csv(tmp_path / "o" / "rejects.csv")
    assert list(rejects["line"]) == [2]
    assert rejects["source"][0].startswith("V2,not-a-date,")
    with pytest.raises(bms.InvalidInputError, match=r"batch\.csv, line 2"):
        bms.score_file(model, path, out=tmp_path / "strict", strict=True)


def test_errors_are_exceptions_of_the_right_class(bms_bin, model, daily_csv, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        bms.score_file(model, tmp_path / "missing.csv", out=tmp_path / "o")
    with pytest.raises(bms.InvalidInputError, match="'weekly'"):
        bms.score_file(model, daily_csv, out=tmp_path / "o", format="weekly")
    with pytest.raises(bms.InvalidInputError, match="'vin'"):
        bms.score_file(model, daily_csv, out=tmp_path / "o", partition_by="vin")
    with pytest.raises(bms.InvalidInputError, match="1.5"):
        bms.score_file(model, daily_csv, out=tmp_path / "o", threshold=1.5)
    # The same offsets as the command line: +08:75 is refused by both.
    with pytest.raises(bms.InvalidInputError, match=r"\+08:75"):
        bms.score_file(model, daily_csv, out=tmp_path / "o", utc_offset="+08:75")
    p = run_fail(bms_bin, "predict", "-m", REF, "-i", daily_csv, "--out", tmp_path / "c",
                 "--utc-offset", "+08:75")
    assert "+08:75" in p.stderr
    assert not (tmp_path / "o").exists()


def run_fail(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert p.returncode != 0, p.stdout
    return p

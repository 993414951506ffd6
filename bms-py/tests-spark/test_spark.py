"""bms.spark on local[2] against the single-machine pipeline (`bms daily`, `bms predict
--out`, bms.windows) on the same simulated fleet spread over shuffled files."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MODEL, MODEL_EXT, run

import bms
import bms.spark


def _sorted(df, keys):
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def test_daily_equals_bms_daily(spark, fleet):
    frames = spark.read.parquet(fleet["frames_parts"])
    assert frames.rdd.getNumPartitions() >= 2
    got = bms.spark.daily(frames).toPandas()
    want = pq.read_table(fleet["cli_daily"]).to_pandas()
    assert list(got.columns) == list(want.columns)
    assert got.groupby(["VIN", "Date"]).size().max() == 1, "a vehicle-day split over rows"
    pd.testing.assert_frame_equal(_sorted(got, ["VIN", "Date"]), _sorted(want, ["VIN", "Date"]),
                                  check_exact=True)


def test_daily_utc_offset_equals_bms_daily(spark, fleet, bms_bin, tmp_path):
    out = tmp_path / "d.parquet"
    run(bms_bin, "daily", "-i", fleet["frames"], "-o", out, "--utc-offset", "+08:00", "--ocv", "lfp")
    got = bms.spark.daily(spark.read.parquet(fleet["frames_parts"]), utc_offset="+08:00",
                          ocv="lfp").toPandas()
    want = pq.read_table(out).to_pandas()
    pd.testing.assert_frame_equal(_sorted(got, ["VIN", "Date"]), _sorted(want, ["VIN", "Date"]),
                                  check_exact=True)


@pytest.mark.parametrize("model_path", [MODEL, MODEL_EXT])
def test_score_equals_bms_predict_out(spark, fleet, bms_bin, tmp_path, model_path):
    out = tmp_path / "out"
    run(bms_bin, "predict", "-m", model_path, "-i", fleet["daily"], "--out", out)
    want = pq.read_table(out / "predictions.parquet")
    sdf = bms.spark.score(spark.read.parquet(fleet["daily_parts"]), model_path)
    got = pa.Table.from_pandas(sdf.toPandas(), preserve_index=False)
    # The same columns, in the same order, as predictions.parquet.
    assert got.column_names == want.column_names
    g, w = _sorted(got.to_pandas(), ["vin", "date"]), _sorted(want.to_pandas(), ["vin", "date"])
    assert len(g) == len(w) > 0
    assert (g["event_id"] == w["event_id"]).all()
    assert (g["vin"] == w["vin"]).all() and (g["date"] == w["date"]).all()
    np.testing.assert_allclose(g["predicted_prob"], w["predicted_prob"], rtol=0, atol=1e-6)
    assert (g["alarm"] == w["alarm"]).all() and (g["model_id"] == w["model_id"]).all()
    feats = want.column_names[6:]
    np.testing.assert_array_equal(g[feats].to_numpy(), w[feats].to_numpy())
    # events.jsonl: the same event ids (request_id) as the Spark rows.
    with open(out / "events.jsonl") as f:
        ids = sorted(json.loads(line)["request_id"] for line in f)
    assert ids == sorted(g["event_id"])


def test_score_from_frames_and_model_bytes(spark, fleet, bms_bin, tmp_path):
    """Frames in, the model given as bytes (no path the executors would read): the same
    predictions as bms predict on the frames file."""
    out = tmp_path / "out"
    run(bms_bin, "predict", "-m", MODEL, "-i", fleet["frames"], "--out", out)
    want = _sorted(pq.read_table(out / "predictions.parquet").to_pandas(), ["vin", "date"])
    with open(MODEL, "rb") as f:
        data = f.read()
    got = _sorted(bms.spark.score(spark.read.parquet(fleet["frames_parts"]), data).toPandas(),
                  ["vin", "date"])
    assert list(got["event_id"]) == list(want["event_id"])
    np.testing.assert_allclose(got["predicted_prob"], want["predicted_prob"], rtol=0, atol=1e-6)


def test_score_partitioned_write_matches_cli_layout(spark, fleet, bms_bin, tmp_path):
    """Written with partitionBy("date"), the rows read back per date= directory are those
    of bms predict --out --partition-by date."""
    out = tmp_path / "out"
    run(bms_bin, "predict", "-m", MODEL, "-i", fleet["daily"], "--out", out, "--partition-by", "date")
    spark_out = str(tmp_path / "spark-predictions")
    bms.spark.score(spark.read.parquet(fleet["daily_parts"]), bms.Model(MODEL)) \
        .write.partitionBy("date").parquet(spark_out)
    cli_dates = sorted(os.listdir(out / "predictions"))
    spark_dates = sorted(d for d in os.listdir(spark_out) if d.startswith("date="))
    assert spark_dates == cli_dates
    for d in cli_dates[:: max(1, len(cli_dates) // 5)]:
        a = pq.read_table(out / "predictions" / d).to_pandas()
        b = pq.read_table(os.path.join(spark_out, d)).to_pandas()
        assert sorted(a["event_id"]) == sorted(b["event_id"])


def test_windows_equal_bms_windows(spark, fleet):
    daily = pq.read_table(fleet["daily"]).to_pandas()
    x, y, keys = bms.windows(daily, context=5, horizon=3)
    got = _sorted(bms.spark.windows(spark.read.parquet(fleet["daily_parts"]), context=5,
                                    horizon=3).toPandas(), ["vin", "date"])
    want = keys.assign(date=keys["date"].dt.date, label=y)
    want["x"] = list(x)
    want = _sorted(want, ["vin", "date"])
    assert list(got["vin"]) == list(want["vin"]) and list(got["date"]) == list(want["date"])
    np.testing.assert_array_equal(got["label"].to_numpy(), want["label"].to_numpy())
    np.testing.assert_array_equal(np.stack(got["x"]).astype(np.float32), np.stack(want["x"]))


def test_bad_vehicle_fails_with_the_core_message(spark, fleet, tmp_path):
    """A vehicle with two frames at the same timestamp: the action fails on the driver
    with the core's message, naming the function and the vehicle."""
    t = pq.read_table(fleet["frames"])
    vin = t.column("vin")[0].as_py()
    first = t.slice(0, 1)
    bad = pa.concat_tables([t, first])
    pq.write_table(bad, tmp_path / "bad.parquet")
    df = spark.read.parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(Exception) as e:
        bms.spark.daily(df).collect()
    msg = str(e.value)
    assert f"bms.spark.daily: vehicle {vin}" in msg, msg
    assert "InvalidInputError" in msg and f"duplicate frame for VIN {vin}" in msg, msg
    with pytest.raises(Exception) as e:
        bms.spark.score(df, MODEL).collect()
    assert f"bms.spark.score: vehicle {vin}" in str(e.value)


def test_bad_arguments_fail_on_the_driver(spark, fleet):
    frames = spark.read.parquet(fleet["frames_parts"])
    with pytest.raises(bms.InvalidInputError):
        bms.spark.daily(frames, utc_offset="+25:99")
    with pytest.raises(bms.ModelError):
        bms.spark.score(frames, b"not an onnx model")

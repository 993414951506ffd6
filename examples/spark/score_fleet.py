"""Scores a fleet's frames on Apache Spark with bms.spark, locally.

Simulates a small fleet (bms.simulate), writes its frames as several Parquet files, then
with Spark: frames → daily table (one row per vehicle per day) → scores of a model, written
as Hive-partitioned Parquet (predictions/date=YYYY-MM-DD/), the layout of
``bms predict --out DIR --partition-by date``.

    PYSPARK_PYTHON=$(which python) python examples/spark/score_fleet.py \\
        --work /tmp/bms-spark --model models/consistency-ref14x6.onnx

On a cluster, point --frames at the fleet's frames (any number of Parquet files with the
columns of ``bms simulate --frames x.parquet``) and --master at the cluster (or drop it
under spark-submit).
"""

import argparse
import os

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

import bms
import bms.spark


def simulate_frames(out_dir: str, parts: int) -> str:
    sim = bms.simulate(vehicles=8, days=40, seed=5, cells=12, probes=4, interval_ms=300_000,
                       weak_fraction=0.5, frames=True)
    table = pa.Table.from_pandas(sim.frames, preserve_index=False)
    os.makedirs(out_dir, exist_ok=True)
    step = -(-table.num_rows // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), os.path.join(out_dir, f"part-{i:03d}.parquet"))
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="directory for the simulated frames and the outputs")
    ap.add_argument("--model", required=True, help="ONNX model (read on the driver, shipped as bytes)")
    ap.add_argument("--frames", help="frames Parquet (file or directory); default: simulate a fleet")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--utc-offset", default="+00:00")
    args = ap.parse_args()

    frames_path = args.frames or simulate_frames(os.path.join(args.work, "frames"), parts=4)
    spark = (SparkSession.builder.master(args.master).appName("bms-score-fleet")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        frames = spark.read.parquet(frames_path)
        daily = bms.spark.daily(frames, utc_offset=args.utc_offset).cache()
        scores = bms.spark.score(daily, bms.Model(args.model))
        out = os.path.join(args.work, "predictions")
        scores.write.mode("overwrite").partitionBy("date").parquet(out)
        written = spark.read.parquet(out)
        n, alarms = written.count(), written.filter("alarm").count()
        print(f"{daily.count()} daily rows, {n} scores, {alarms} alarms → {out}")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()

"""Fixtures of the bms.spark tests: one local[2] Spark session for the whole run, and a
small simulated fleet written by the `bms` command line (scripts/test-spark.sh builds it
and sets BMS_BIN; without it the tests fail, they never skip)."""

import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "consistency-ref14x6.onnx")
MODEL_EXT = os.path.join(ROOT, "models", "consistency-ext.onnx")


def _find_bms():
    cands = [os.environ.get("BMS_BIN")]
    for d in (os.environ.get("CARGO_TARGET_DIR"), os.path.join(ROOT, "target")):
        if d:
            cands += [os.path.join(d, "debug", "bms"), os.path.join(d, "release", "bms")]
    for c in cands:
        if c and os.path.exists(c):
            return c
    raise RuntimeError("no bms binary: build it (cargo build --bin bms) and set BMS_BIN")


def run(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def bms_bin():
    return _find_bms()


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("bms-spark-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def split_shuffled(table, out_dir, parts, seed):
    """Writes ``table``'s rows in a random order over ``parts`` Parquet files (so that each
    vehicle's rows, and each day's frames, are spread over several files)."""
    import numpy as np

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(table.num_rows)
    for i, chunk in enumerate(np.array_split(order, parts)):
        pq.write_table(table.take(pa.array(chunk)), os.path.join(out_dir, f"part-{i:03d}.parquet"))
    return out_dir


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, bms_bin):
    """A simulated fleet (frames and daily table from `bms simulate`), `bms daily` of the
    frames, and both spread over many shuffled files."""
    d = tmp_path_factory.mktemp("fleet")
    frames, daily = d / "frames.parquet", d / "daily.parquet"
    run(bms_bin, "simulate", "--vehicles", 10, "--days", 45, "--cells", 12, "--probes", 4,
        "--interval", "5m", "--seed", 7, "--weak-fraction", 0.5,
        "--frames", frames, "--daily", daily)
    cli_daily = d / "cli-daily.parquet"
    run(bms_bin, "daily", "-i", frames, "-o", cli_daily)
    return {
        "dir": d,
        "frames": frames,
        "daily": daily,
        "cli_daily": cli_daily,
        "frames_parts": split_shuffled(pq.read_table(frames), str(d / "frames-parts"), 9, 1),
        "daily_parts": split_shuffled(pq.read_table(daily), str(d / "daily-parts"), 7, 2),
    }

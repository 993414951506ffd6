"""Writes the generated part of the seed corpus (fuzz/corpus/*/gen-*): small Parquet
files of every layout the readers accept and a few hand-made ONNX edge cases. The other
seeds are copies of the repository's samples and hand-written text files.

Run once with the project's Python environment (pyarrow, onnx), from fuzz/:
    python make_seeds.py
"""

import pathlib

import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).parent / "corpus"


def frames_tables():
    base = {
        "vin": ["LSEED000000000001", "LSEED000000000001", " LSEED000000000002 "],
        "timestamp": [1704067200000, 1704067210000, 1704153600000],
        "pack_voltage": [370.1, None, 371.5],
        "pack_current": [-12.5, 0.0, 3.25],
        "soc": [55.0, 55.1, float("nan")],
        "cell_voltages": [[3.85, 3.86, 3.84], [3.85, None, 3.86], [3.9, 3.91, 3.9]],
        "temperatures": [[25.0, 26.0], [25.5, 26.5], [24.0, 24.5]],
        "alarm_flags": [None, 1024, 0],
    }
    ours = pa.schema(
        [
            ("vin", pa.utf8()),
            ("timestamp", pa.int64()),
            ("pack_voltage", pa.float64()),
            ("pack_current", pa.float64()),
            ("soc", pa.float64()),
            ("cell_voltages", pa.list_(pa.float64())),
            ("temperatures", pa.list_(pa.float64())),
            ("alarm_flags", pa.uint32()),
        ]
    )
    yield "ours", pa.table(base, schema=ours)
    f32 = pa.schema(
        [
            ("vin", pa.large_utf8()),
            ("timestamp", pa.timestamp("s", tz="UTC")),
            ("pack_voltage", pa.float32()),
            ("pack_current", pa.int32()),
            ("soc", pa.int64()),
            ("cell_voltages", pa.large_list(pa.float32())),
            ("temperatures", pa.list_(pa.float32())),
            ("alarm_flags", pa.int64()),
        ]
    )
    alt = dict(base)
    alt["timestamp"] = [1704067200, 1704067210, 1704153600]
    alt["pack_current"] = [-12, 0, 3]
    alt["soc"] = [55, 55, 56]
    alt["alarm_flags"] = [None, 4294967296, -1]
    yield "float32-timestamp-s", pa.table(alt, schema=f32)
    bad = dict(base)
    bad["vin"] = ["", None, "V"]
    bad["cell_voltages"] = [[], None, [3.9]]
    bad["temperatures"] = [[25.0], [25.0], []]
    yield "rejects", pa.table(bad, schema=ours)
    no_flags = {k: v for k, v in base.items() if k != "alarm_flags"}
    ns = pa.schema([f for f in ours if f.name != "alarm_flags"]).set(
        1, pa.field("timestamp", pa.timestamp("ns"))
    )
    no_flags["timestamp"] = [t * 1_000_000 for t in base["timestamp"]]
    yield "no-flags-timestamp-ns", pa.table(no_flags, schema=ns)


def daily_tables():
    ref = [
        "TotalVoltage",
        "TotalCurrent",
        "CellMaxVoltage",
        "CellMinVoltage",
        "MaxTemperature",
        "MinTemperature",
    ]
    ext = ["spread_mean", "spread_max", "temp_delta_max", "soc_deviation_mean", "frames"]
    import datetime

    days = [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2), datetime.date(2024, 1, 4)]
    cols = {"VIN": ["V1", "V1", "V2"], "Date": days}
    for i, c in enumerate(ref):
        cols[c] = [370.0 + i, None, float("nan")]
    full = dict(cols)
    full["Label"] = [0.0, 1.0, None]
    for c in ext:
        full[c] = [0.01, 0.02, 0.0]
    yield "ours", pa.table(full)
    yield "reference-only", pa.table(cols)
    strings = dict(full)
    strings["Date"] = ["2024-01-01", "2024-1-2", "2024-01-04"]
    yield "string-dates", pa.table(strings)
    f32 = pa.table(
        {k: (pa.array(v, pa.float32()) if k not in ("VIN", "Date") else v) for k, v in full.items()}
    )
    yield "float32", f32
    dup = dict(full)
    dup["VIN"] = ["V1", "V1", "V1"]
    dup["Date"] = [days[0], days[0], days[1]]
    yield "duplicate-day", pa.table(dup)


def models():
    def graph_model(width, metadata=(), op="Sigmoid"):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])
        node = helper.make_node(op, ["x"], ["y"])
        m = helper.make_model(helper.make_graph([node], "g", [x], [y]))
        for k, v in metadata:
            e = m.metadata_props.add()
            e.key, e.value = k, v
        return m

    yield "huge-width", graph_model(1 << 40)
    yield "width-1-sigmoid", graph_model(1)
    yield "huge-context", graph_model(
        84,
        [
            ("bms.context_days", "99999999999999999999"),
            ("bms.horizon_days", "14"),
            ("bms.features", "TotalVoltage"),
            ("bms.fill_value", "nan"),
            ("bms.threshold", "inf"),
            ("bms.model_id", "x" * 300),
        ],
    )


def main():
    for name, t in frames_tables():
        d = HERE / "frames_parquet"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"gen-{name}.parquet", compression="zstd")
    pq.write_table(next(frames_tables())[1], HERE / "frames_parquet" / "gen-ours-snappy.parquet")
    for name, t in daily_tables():
        d = HERE / "daily_parquet"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"gen-{name}.parquet", compression="zstd")
    for name, m in models():
        d = HERE / "model_onnx"
        d.mkdir(parents=True, exist_ok=True)
        onnx.save(m, d / f"gen-{name}.onnx")


if __name__ == "__main__":
    main()

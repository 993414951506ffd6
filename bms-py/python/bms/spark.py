"""bms on Apache Spark: the same frames → daily → windows → scores pipeline, with the Rust
core running in the executors (``pip install 'bms-py[spark]'``).

Every function is a grouped Arrow map (``df.groupBy(vin).applyInArrow``): Spark gathers
each vehicle's rows, in whatever files and partitions they arrived, into one Arrow table
and the core computes on it (no per-row Python). The results are those of the single
machine API and of the command line for the same data::

    from pyspark.sql import SparkSession
    import bms.spark

    spark = SparkSession.builder.getOrCreate()
    frames = spark.read.parquet("frames/")          # bms simulate --frames x.parquet layout
    daily = bms.spark.daily(frames, utc_offset="+08:00")
    scores = bms.spark.score(daily, "models/consistency-ref14x6.onnx")
    scores.write.partitionBy("date").parquet("predictions/")

The model is read once on the driver and its bytes travel with the task (executors do not
need the driver's file). Errors raised by the core in an executor (a bad value, two frames
with the same timestamp) reach the driver as the action's exception, whose message holds
the core's message prefixed with ``bms.spark.<function>: vehicle <VIN>:`` (row and line
numbers in it count within that vehicle's rows as Spark grouped them, not in a file).

Workers need ``bms`` and pyarrow in their interpreter (``PYSPARK_PYTHON``), and pyspark's
Arrow UDFs need pandas >= 2.2.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

import bms
from bms import _bms

__all__ = ["daily", "daily_schema", "score", "score_schema", "windows", "windows_schema"]

ModelSpec = Union["bms.Model", str, "os.PathLike[str]", bytes]
"""A model: a loaded :class:`bms.Model`, the path of an ONNX file on the driver, or its
bytes."""


# --------------------------------------------------------------------------------------
# Schemas (Spark types; imported lazily so that `import bms.spark` does not need pyspark
# until a function is called)


def daily_schema() -> Any:
    """The Spark schema of :func:`daily`'s result: ``VIN`` string, ``Date`` date, the
    reference columns, ``Label`` and the extended columns as doubles (the layout of
    ``bms daily --out x.parquet``)."""
    from pyspark.sql import types as T  # type: ignore[import-not-found, unused-ignore]

    fields = [T.StructField("VIN", T.StringType(), False), T.StructField("Date", T.DateType(), False)]
    for c in [*bms.REFERENCE_COLUMNS, "Label", *bms.EXTENDED_COLUMNS]:
        fields.append(T.StructField(c, T.DoubleType(), True))
    return T.StructType(fields)


def _feature_names(contract: "dict[str, Any]") -> "list[str]":
    """Column names of a window's values, as ``bms predict --out`` writes them: day-major,
    oldest first, ``<feature>_<days back>`` (``total_voltage_14`` … ``min_temperature_1``)."""
    ctx = int(contract["context"])
    return [f"{_snake(f)}_{ctx - i}" for i in range(ctx) for f in contract["features"]]


# The six reference columns' names in events (bms-batch's event_column_name); every other
# daily column keeps its name.
_EVENT_NAMES = {
    "TotalVoltage": "total_voltage",
    "TotalCurrent": "total_current",
    "CellMaxVoltage": "cell_max_voltage",
    "CellMinVoltage": "cell_min_voltage",
    "MaxTemperature": "max_temperature",
    "MinTemperature": "min_temperature",
}


def _snake(name: str) -> str:
    return _EVENT_NAMES.get(name, name)


def score_schema(model: ModelSpec) -> Any:
    """The Spark schema of :func:`score`'s result for ``model``: ``event_id, vin, date,
    predicted_prob, alarm, model_id`` and the window's values, as in the Parquet file
    ``bms predict --out`` writes."""
    from pyspark.sql import types as T  # type: ignore[import-not-found, unused-ignore]

    m, _ = _driver_model(model)
    fields = [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("vin", T.StringType(), False),
        T.StructField("date", T.DateType(), False),
        T.StructField("predicted_prob", T.FloatType(), False),
        T.StructField("alarm", T.BooleanType(), False),
        T.StructField("model_id", T.StringType(), False),
    ]
    fields += [T.StructField(n, T.FloatType(), True) for n in _feature_names(m.contract)]
    return T.StructType(fields)


def windows_schema() -> Any:
    """The Spark schema of :func:`windows`'s result: ``vin``, ``date``, ``label`` (float)
    and ``x`` (array of float, ``context × features`` values day-major, oldest first)."""
    from pyspark.sql import types as T  # type: ignore[import-not-found, unused-ignore]

    return T.StructType(
        [
            T.StructField("vin", T.StringType(), False),
            T.StructField("date", T.DateType(), False),
            T.StructField("label", T.FloatType(), False),
            T.StructField("x", T.ArrayType(T.FloatType(), False), False),
        ]
    )


# --------------------------------------------------------------------------------------
# Per-vehicle functions (run in the executors)


def _vin_of(table: Any, column: str) -> str:
    try:
        col = table.column(column)
        return str(col[0].as_py()) if len(col) else "?"
    except Exception:  # noqa: BLE001 - only for the error message
        return "?"


def _guard(what: str, table: Any, vin_column: str, fn: Callable[[], Any]) -> Any:
    """Runs ``fn``; a core error is raised again with the function and the vehicle named
    (the same class when it can be built from a message, so the driver sees e.g.
    ``InvalidInputError: bms.spark.daily: vehicle LB3…: row 3, column soc: …``)."""
    try:
        return fn()
    except bms.BmsError as e:
        msg = f"bms.spark.{what}: vehicle {_vin_of(table, vin_column)}: {e}"
        try:
            err: Exception = type(e)(msg)
        except Exception:  # noqa: BLE001
            err = RuntimeError(f"{type(e).__name__}: {msg}")
        raise err from None


def _daily_arrow(pdf: Any) -> Any:
    """A daily DataFrame of :func:`bms.daily` as an Arrow table of :func:`daily_schema`."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    arrays = [
        pa.array(pdf["VIN"].to_numpy(dtype=object), type=pa.string()),
        pa.array(pdf["Date"].to_numpy().astype("datetime64[D]"), type=pa.date32()),
    ]
    names = ["VIN", "Date"]
    for c in [*bms.REFERENCE_COLUMNS, "Label", *bms.EXTENDED_COLUMNS]:
        arrays.append(pa.array(pdf[c].to_numpy(dtype=np.float64), type=pa.float64()))
        names.append(c)
    return pa.Table.from_arrays(arrays, names=names)


def _frames_daily(table: Any, utc_offset: Any, ocv: Any, alarm_spread_v: float) -> Any:
    return bms.daily(table, utc_offset=utc_offset, ocv=ocv, alarm_spread_v=alarm_spread_v)


def _is_frames(columns: Sequence[str]) -> bool:
    return "vin" in columns and "timestamp" in columns and "VIN" not in columns


_MODELS: "dict[str, bms.Model]" = {}
_MODELS_LOCK = threading.Lock()


def _executor_model(data: bytes, digest: str) -> "bms.Model":
    """The model of these bytes, loaded once per worker process (the core reads models
    from files: the bytes go to a private temporary file first)."""
    with _MODELS_LOCK:
        m = _MODELS.get(digest)
        if m is None:
            d = tempfile.mkdtemp(prefix="bms-spark-model-")
            path = os.path.join(d, f"{digest[:16]}.onnx")
            with open(path, "wb") as f:
                f.write(data)
            m = bms.Model(path)
            _MODELS[digest] = m
        return m


def _driver_model(model: ModelSpec) -> "tuple[bms.Model, bytes]":
    """The model loaded on the driver (to check it and read its contract) and its bytes."""
    if isinstance(model, bms.Model):
        with open(model.path, "rb") as f:
            return model, f.read()
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return _executor_model(data, hashlib.sha256(data).hexdigest()), data
    with open(os.fspath(model), "rb") as f:
        data = f.read()
    return bms.Model(os.fspath(model)), data


# --------------------------------------------------------------------------------------
# Public API


def daily(
    frames_df: Any,
    *,
    utc_offset: Union[None, str, int, Any] = None,
    ocv: Any = "nmc",
    alarm_spread_v: Optional[float] = None,
) -> Any:
    """The daily table (SPEC §4) of a Spark DataFrame of frames, one row per vehicle per
    calendar day: :func:`bms.daily` applied to each vehicle's frames (grouped by ``vin``,
    in any order and from any number of files; a day's frames spread over several files
    make one row). The frames have the columns :func:`bms.daily` reads (``vin``,
    ``timestamp`` in ms, ``pack_voltage``, ``pack_current``, ``soc``, list columns
    ``cell_voltages``/``temperatures`` or wide ``cell_v_i``/``temp_j``, optionally
    ``alarm_flags``), e.g. the Parquet that ``bms simulate --frames`` writes.

    Returns a DataFrame of :func:`daily_schema`. ``utc_offset`` (``"+08:00"``, seconds or
    a timedelta), ``ocv`` and ``alarm_spread_v`` are those of :func:`bms.daily`. A vehicle
    whose frames the core refuses fails the action with the core's message.
    """
    spread = bms._D["alarm_spread_v"] if alarm_spread_v is None else float(alarm_spread_v)
    # Check the arguments on the driver, not in every task.
    bms._utc_offset_seconds(utc_offset)

    def per_vehicle(table: Any) -> Any:
        return _guard(
            "daily", table, "vin",
            lambda: _daily_arrow(_frames_daily(table, utc_offset, ocv, spread)),
        )

    return frames_df.groupBy("vin").applyInArrow(per_vehicle, daily_schema())


def windows(
    daily_df: Any,
    *,
    context: int = bms._D["context"],
    horizon: int = bms._D["horizon"],
    features: Optional[Sequence[str]] = None,
    fill: float = bms._D["fill"],
    full_horizon: bool = bms._D["full_horizon"],
) -> Any:
    """Training windows (SPEC §5) of a Spark daily DataFrame: :func:`bms.windows` on each
    vehicle's daily rows. Returns a DataFrame of :func:`windows_schema` (one row per
    window: ``vin``, ``date``, ``label`` and ``x``, the window's values)."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    feats = list(bms.REFERENCE_COLUMNS) if features is None else [str(f) for f in features]
    width = int(context) * len(feats)

    def per_vehicle(table: Any) -> Any:
        def run() -> Any:
            x, y, keys = bms.windows(
                table, context=context, horizon=horizon, features=feats, fill=fill,
                full_horizon=full_horizon,
            )
            n = len(y)
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width, type=pa.int32())
            xs = pa.ListArray.from_arrays(
                offsets, pa.array(x.reshape(-1), type=pa.float32()),
                type=pa.list_(pa.field("element", pa.float32(), nullable=False)),
            )
            return pa.Table.from_arrays(
                [
                    pa.array(keys["vin"].to_numpy(dtype=object), type=pa.string()),
                    pa.array(keys["date"].to_numpy().astype("datetime64[D]"), type=pa.date32()),
                    pa.array(y, type=pa.float32()),
                    xs,
                ],
                names=["vin", "date", "label", "x"],
            )

        return _guard("windows", table, "VIN", run)

    return daily_df.groupBy("VIN").applyInArrow(per_vehicle, windows_schema())


def score(
    daily_or_frames_df: Any,
    model: ModelSpec,
    *,
    threshold: Optional[float] = None,
    full_horizon: bool = False,
    utc_offset: Union[None, str, int, Any] = None,
    ocv: Any = "nmc",
    alarm_spread_v: Optional[float] = None,
) -> Any:
    """Scores a Spark DataFrame with ``model``, as ``bms predict --out`` does: one row per
    window the model's contract asks for, with ``event_id, vin, date, predicted_prob,
    alarm, model_id`` and the window's values (the columns and event ids of
    ``predictions.parquet``). The input is a daily table (columns ``VIN``, ``Date``, …) or
    frames (``vin``, ``timestamp``, …: aggregated per vehicle first, with ``utc_offset``,
    ``ocv`` and ``alarm_spread_v`` as in :func:`daily`).

    ``model`` is a :class:`bms.Model`, a path readable on the driver, or the ONNX bytes;
    the bytes are shipped to the executors with the task and loaded once per worker.
    ``threshold`` replaces the model's.
    """
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    m, data = _driver_model(model)
    digest = hashlib.sha256(data).hexdigest()
    c = m.contract
    thr = np.float32(c["threshold"] if threshold is None else threshold)
    names = _feature_names(c)
    schema = score_schema(m)
    frames = _is_frames(daily_or_frames_df.columns)
    spread = bms._D["alarm_spread_v"] if alarm_spread_v is None else float(alarm_spread_v)
    if frames:
        bms._utc_offset_seconds(utc_offset)

    def per_vehicle(table: Any) -> Any:
        def run() -> Any:
            em = _executor_model(data, digest)
            daily_tab = _frames_daily(table, utc_offset, ocv, spread) if frames else table
            x, _y, keys = bms.windows(
                daily_tab, context=c["context"], horizon=c["horizon"], features=c["features"],
                fill=c["fill"], full_horizon=full_horizon,
            )
            p = em.predict(x)
            days = keys["date"].to_numpy().astype("datetime64[D]")
            vins = keys["vin"].to_numpy(dtype=object)
            ids = _bms.event_ids(list(vins), days.astype(np.int64), c["model_id"])
            n = len(p)
            cols = [
                pa.array(ids, type=pa.string()),
                pa.array(vins, type=pa.string()),
                pa.array(days, type=pa.date32()),
                pa.array(p, type=pa.float32()),
                pa.array(p >= thr, type=pa.bool_()),
                pa.array([c["model_id"]] * n, type=pa.string()),
            ]
            x = np.asarray(x, dtype=np.float32).reshape(n, len(names))
            cols += [pa.array(x[:, j], type=pa.float32()) for j in range(len(names))]
            return pa.Table.from_arrays(cols, schema=pa.schema(
                [pa.field(f.name, t.type, f.nullable) for f, t in zip(schema.fields, cols)]
            ))

        return _guard("score", table, "vin" if frames else "VIN", run)

    key = "vin" if frames else "VIN"
    return daily_or_frames_df.groupBy(key).applyInArrow(per_vehicle, schema)

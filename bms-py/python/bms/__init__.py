"""bms: battery consistency-alarm prediction with the same code as production.

Every function here runs the Rust core (``bms-core``) that the ``bms`` command line, the
server and the C library use, so a notebook gets bit-for-bit the same frame features, daily
table, windows and model scores as the batch job and the vehicle::

    import bms
    sim = bms.simulate(vehicles=20, days=90, seed=1)
    X, y, keys = bms.windows(sim.daily)
    model = bms.Model("models/consistency-ref14x6.onnx")
    scores = model.predict_daily(sim.daily)

Tables may be pandas DataFrames, pyarrow Tables or any Arrow producer (the Arrow PyCapsule
interface: polars, DuckDB results; read through pyarrow >= 14).

Data layouts follow SPEC.md: frames (§2) as a pandas DataFrame or pyarrow Table with wide
``cell_v_1..N``/``temp_1..M`` columns or list columns ``cell_voltages``/``temperatures``;
the daily table (§4) as a DataFrame with ``VIN``, ``Date``, the six reference columns,
``Label`` and the extended columns; windows (§5) as float32 arrays.

Errors: :class:`BmsError` is the base; :class:`InvalidInputError` (also a ``ValueError``)
for bad data or arguments, :class:`ModelError` for models, :class:`BmsIOError` (also an
``OSError``) for files that cannot be read, by kind: :class:`BmsFileNotFoundError` (also
a ``FileNotFoundError``) and :class:`BmsPermissionError` (also a ``PermissionError``). Messages name the file, line, column and value.
The interpreter lock is released while the core computes.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import _bms
from ._bms import (
    DAILY_COLUMNS,
    EXTENDED_COLUMNS,
    FRAME_FEATURE_NAMES,
    REFERENCE_COLUMNS,
    BmsError,
    BmsFileNotFoundError,
    BmsIOError,
    BmsPermissionError,
    Evaluation,
    InvalidInputError,
    ModelError,
    Summary,
    __version__,
)

_D = _bms.DEFAULTS
"""Every default value, from the core (the command line's defaults)."""
_SIM = _D["simulate"]

__all__ = [
    "BatchFile",
    "BmsError",
    "BmsFileNotFoundError",
    "BmsIOError",
    "BmsPermissionError",
    "Capture",
    "DAILY_COLUMNS",
    "EXTENDED_COLUMNS",
    "Evaluation",
    "FRAME_FEATURE_NAMES",
    "Gbt32960Decoder",
    "InvalidInputError",
    "Model",
    "ModelError",
    "Monitor",
    "REFERENCE_COLUMNS",
    "Simulation",
    "Summary",
    "__version__",
    "daily",
    "evaluate",
    "frame_features",
    "read_batch_csv",
    "read_daily_csv",
    "read_gbt32960",
    "score_file",
    "simulate",
    "windows",
]

PathLike = Union[str, "os.PathLike[str]"]
"""A file path."""

OcvSpec = Union[str, "np.ndarray[Any, Any]", Sequence[Sequence[float]], pd.DataFrame]
"""An OCV curve: ``"nmc"``, ``"lfp"`` or a table of (soc %, volts) points."""

# Column order of a daily DataFrame: the reference file's header, then the extended columns.
DAILY_FRAME_COLUMNS = ["VIN", "Date", *REFERENCE_COLUMNS, "Label", *EXTENDED_COLUMNS]

_EPOCH = np.datetime64("1970-01-01", "D")
# pandas >= 2 parses dates strictly as ISO 8601 with format="ISO8601"; pandas 1.5 (the
# oldest supported) has no such format, and its default parser reads ISO 8601 itself.
_ISO8601: Any = {"format": "ISO8601"} if int(pd.__version__.split(".")[0]) >= 2 else {}


# --------------------------------------------------------------------------------------
# Helpers


def _float2(x: Any, what: str) -> Any:
    """A 2-D array for the core: numpy arrays pass through (the core checks the dtype and
    borrows C-contiguous float32/float64 data); DataFrames and nested lists are converted."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
        if x.dtype not in (np.float32, np.float64):
            x = _as_float(x, what)
        return x
    return _as_float(x, what)


def _as_float(x: Any, what: str) -> "np.ndarray[Any, Any]":
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what}: not numeric ({e})") from None


def _float_col(values: Any, what: str) -> "np.ndarray[Any, Any]":
    """A 1-D float64 column (NaN for missing), with an error naming the column and row."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
            return np.ascontiguousarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
        values = values.to_numpy(dtype=object)
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return np.ascontiguousarray(arr, dtype=np.float64)
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise InvalidInputError(f"row {i + 1}, column {what}: {v!r} is not a number") from None
    return out


def _vin_codes(values: Any, what: str) -> "tuple[list[str], np.ndarray[Any, Any]]":
    """Distinct VINs (as str, in order of first appearance, like ``pd.factorize``) and a
    code per row: uint32 from the native module for Arrow-held strings and categoricals
    (a missing VIN is an error naming the row of table ``what``), int64 from
    ``pd.factorize`` (-1 for a missing VIN, which the native module reports) otherwise."""
    if isinstance(values, pd.Series):
        arrow = _arrow_strings(values)
        if arrow is not None:
            return _arrow_vin_codes(arrow, what)
        if isinstance(values.dtype, pd.CategoricalDtype):
            cat: Any = values.array
            order, codes = _bms.first_appearance(
                np.asarray(cat.codes, dtype=np.int64), len(cat.categories), what
            )
            return [str(v) for v in cat.categories.take(order)], codes
    codes, uniques = pd.factorize(values, sort=False)
    return [str(v) for v in uniques], np.ascontiguousarray(codes, dtype=np.int64)


def _arrow_strings(values: pd.Series) -> Any:
    """The pyarrow ChunkedArray behind a string Series held by Arrow (pandas' ``str`` and
    ``string[pyarrow]`` dtypes, ``ArrowDtype(pa.string())``...), else None."""
    arr = values.array
    if type(arr).__module__.split(".")[0] != "pandas" or not hasattr(arr, "__arrow_array__"):
        return None
    if not isinstance(values.dtype, (pd.StringDtype, getattr(pd, "ArrowDtype", pd.StringDtype))):
        return None
    try:
        import pyarrow as pa  # type: ignore[import-untyped]

        chunked = arr.__arrow_array__()
    except Exception:  # an older pandas or pyarrow: the generic path works everywhere
        return None
    if not isinstance(chunked, pa.ChunkedArray) or not (
        pa.types.is_string(chunked.type) or pa.types.is_large_string(chunked.type)
    ):
        return None
    return chunked


def _arrow_chunks(chunked: Any, what: str) -> "list[tuple[Any, Any]]":
    """``(offsets, data)`` numpy views of every chunk of an Arrow string column (an error
    naming the row at the first null)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    if chunked.null_count:
        # ChunkedArray.to_numpy takes no arguments before pyarrow 13.
        row = int(np.flatnonzero(chunked.is_null().to_numpy())[0]) + 1
        raise InvalidInputError(f"{what}: row {row} has no VIN (missing VINs are not allowed)")
    offset_type = np.int64 if pa.types.is_large_string(chunked.type) else np.int32
    chunks = []
    for c in chunked.chunks:
        _validity, offsets, data = c.buffers()
        if offsets is None or len(c) == 0:
            o = np.zeros(1, dtype=offset_type)
        else:
            o = np.frombuffer(offsets, dtype=offset_type)[c.offset : c.offset + len(c) + 1]
            if not o.flags.aligned:  # Arrow aligns its buffers; a foreign one may not be
                o = o.copy()
        d = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
        chunks.append((o, d))
    return chunks


def _arrow_vin_codes(chunked: Any, what: str) -> "tuple[list[str], np.ndarray[Any, Any]]":
    return _bms.factorize_strings(_arrow_chunks(chunked, what))


def _days(values: Any, what: str) -> "np.ndarray[Any, Any]":
    """Dates (datetime64, date objects or ISO strings) as days since 1970-01-01."""
    try:
        if isinstance(values, pd.Series) and pd.api.types.is_datetime64_any_dtype(values.dtype):
            dt = values
        else:
            dt = pd.to_datetime(values, **_ISO8601) if len(values) else pd.Series(
                [], dtype="datetime64[ns]"
            )
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"column {what}: not a date ({e})") from None
    dt = pd.Series(dt)
    if getattr(dt.dt, "tz", None) is not None:
        dt = dt.dt.tz_localize(None)
    if dt.isna().any():
        row = int(np.flatnonzero(dt.isna().to_numpy())[0]) + 1
        raise InvalidInputError(f"row {row}, column {what}: missing date")
    return np.ascontiguousarray(
        dt.to_numpy().astype("datetime64[D]").astype(np.int64), dtype=np.int64
    )


# Parts of a day per datetime64 unit: a naive datetime64 column goes to the native module
# as its int64 view, which turns it into days (and finds NaT) itself.
_PER_DAY = {"D": 1, "h": 24, "m": 1440, "s": 86_400, "ms": 86_400_000, "us": 86_400_000_000,
            "ns": 86_400_000_000_000}


def _datetime_view(values: Any) -> "Optional[tuple[np.ndarray[Any, Any], int]]":
    """``(int64 view, parts per day)`` of a naive datetime64 Series, else None."""
    if not isinstance(values, pd.Series) or not isinstance(values.dtype, np.dtype):
        return None
    if values.dtype.kind != "M":
        return None
    dtype: Any = values.dtype
    unit, count = np.datetime_data(dtype)
    per_day = _PER_DAY.get(unit)
    if per_day is None or count != 1:
        return None
    return np.ascontiguousarray(values.to_numpy().view(np.int64)), per_day


def _dates(days: "np.ndarray[Any, Any]") -> "np.ndarray[Any, Any]":
    return (_EPOCH + days.astype("timedelta64[D]")).astype("datetime64[ns]")


def _timestamps_ms(values: pd.Series) -> "np.ndarray[Any, Any]":
    """Frame timestamps as ms since the epoch: integers are taken as ms; datetimes (naive =
    UTC) and RFC 3339 strings are converted."""
    if pd.api.types.is_integer_dtype(values.dtype):
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0]) + 1
            raise InvalidInputError(f"row {row}, column timestamp: missing timestamp")
        return np.ascontiguousarray(values.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(arr) | (arr != np.floor(arr))
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise InvalidInputError(
                f"row {row}, column timestamp: {arr[row - 1]!r} is not a whole number of ms"
            )
        return arr.astype(np.int64)
    try:
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            dt = values
        else:
            dt = pd.to_datetime(values, utc=True, **_ISO8601)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"column timestamp: not a timestamp ({e})") from None
    if getattr(dt.dt, "tz", None) is not None:
        dt = dt.dt.tz_convert("UTC").dt.tz_localize(None)
    if dt.isna().any():
        row = int(np.flatnonzero(dt.isna().to_numpy())[0]) + 1
        raise InvalidInputError(f"row {row}, column timestamp: missing timestamp")
    return np.ascontiguousarray(dt.to_numpy().astype("datetime64[ms]").astype(np.int64))


def _alarm_flags(values: Any) -> "np.ndarray[Any, Any]":
    """Alarm flags as int64, -1 where absent; accepts integers, floats with NaN and strings
    (decimal or 0x hex, read by the core as the frames CSV reader reads them)."""
    if isinstance(values, pd.Series) and pd.api.types.is_integer_dtype(values.dtype):
        if not values.isna().any():
            arr = values.to_numpy(dtype=np.int64)
            _check_flags(arr)
            return np.ascontiguousarray(arr)
    arr = np.asarray(values, dtype=object)
    out = np.empty(len(arr), dtype=np.int64)
    for i, v in enumerate(arr):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v == "":
            out[i] = -1
            continue
        if isinstance(v, str):
            # The core's parser: the same strings as the frames CSV reader.
            try:
                parsed = _bms.parse_alarm_flags(v)
            except InvalidInputError as e:
                raise InvalidInputError(f"row {i + 1}, column alarm_flags: {e}") from None
            out[i] = -1 if parsed is None else parsed
            continue
        try:
            fv = float(v)
            if fv != np.floor(fv):
                raise ValueError
            iv = int(fv)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"row {i + 1}, column alarm_flags: {v!r} is not a whole number"
            ) from None
        if not 0 <= iv <= 0xFFFFFFFF:
            raise InvalidInputError(
                f"row {i + 1}, column alarm_flags: {v!r} is not a 32-bit flag set"
            )
        out[i] = iv
    return out


def _check_flags(arr: "np.ndarray[Any, Any]") -> None:
    bad = (arr < 0) | (arr > 0xFFFFFFFF)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise InvalidInputError(
            f"row {row}, column alarm_flags: {arr[row - 1]} is not a 32-bit flag set"
        )


def _ocv(ocv: OcvSpec) -> Any:
    if isinstance(ocv, str):
        return ocv
    if isinstance(ocv, pd.DataFrame):
        ocv = ocv.to_numpy()
    return np.ascontiguousarray(_as_float(ocv, "ocv table"))


def _utc_offset_seconds(utc_offset: Union[None, str, int, _dt.timedelta]) -> int:
    if utc_offset is None:
        return 0
    if isinstance(utc_offset, _dt.timedelta):
        s = utc_offset.total_seconds()
        if s != int(s):
            raise InvalidInputError(f"invalid UTC offset: {utc_offset} is not whole seconds")
        return int(s)
    if isinstance(utc_offset, (int, np.integer)) and not isinstance(utc_offset, bool):
        return int(utc_offset)
    if isinstance(utc_offset, str):
        # The core's parser: the same strings as the command line's --utc-offset.
        return int(_bms.parse_utc_offset(utc_offset))
    raise InvalidInputError(
        f"invalid UTC offset: {utc_offset!r} (expected '+08:00', a timedelta or seconds)"
    )


def _daily_frame(d: "dict[str, Any]") -> pd.DataFrame:
    vins = np.asarray(d["vins"], dtype=object)
    cols: "dict[str, Any]" = {
        "VIN": vins[d["codes"]] if len(vins) else np.array([], dtype=object),
        "Date": _dates(d["days"]),
    }
    for c in REFERENCE_COLUMNS:
        cols[c] = d[c]
    cols["Label"] = d["Label"]
    for c in EXTENDED_COLUMNS:
        cols[c] = d[c]
    return pd.DataFrame(cols, columns=DAILY_FRAME_COLUMNS)


def _keys_frame(vins: "list[str]", codes: Any, days: Any) -> pd.DataFrame:
    v = np.asarray(vins, dtype=object)
    return pd.DataFrame(
        {
            "vin": v[codes] if len(v) else np.array([], dtype=object),
            "date": _dates(days),
        }
    )


def _rejects_frame(r: "dict[str, Any]") -> pd.DataFrame:
    return pd.DataFrame({"line": r["line"], "reason": pd.Series(r["reason"], dtype=object)})


# --------------------------------------------------------------------------------------
# Frame features


def frame_features(
    cell_voltages: Any,
    temperatures: Any,
    *,
    soc: Any = None,
    pack_current: Any = None,
    alarm_flags: Any = None,
    ocv: OcvSpec = _D["ocv"],
    alarm_spread_v: float = _D["alarm_spread_v"],
) -> pd.DataFrame:
    """Frame features (SPEC §3) of every frame.

    Args:
        cell_voltages: ``[frames, cells]`` volts, float32 or float64 (C-contiguous float64
            is borrowed, not copied); NaN marks an invalid reading.
        temperatures: ``[frames, probes]`` °C.
        soc: BMS pack SOC per frame (%), for ``soc_bias``; NaN bias without it.
        pack_current: pack current per frame; checked for length, not used by the SPEC §3
            features (accepted so a frame's columns can be passed as they are).
        alarm_flags: GB/T 32960 general alarm flags per frame (missing = absent): when
            present, ``consistency_alarm`` is bit 10; otherwise the spread rule decides.
        ocv: ``"nmc"``, ``"lfp"`` or a ``[k, 2]`` table of (soc %, volts) points.
        alarm_spread_v: the rule's spread threshold (V).

    Returns:
        A DataFrame with the columns of :data:`FRAME_FEATURE_NAMES`; the index columns are
        nullable integers (missing when a frame has no valid cell).
    """
    cells = _float2(cell_voltages, "cell_voltages")
    temps = _float2(temperatures, "temperatures")
    n = cells.shape[0] if hasattr(cells, "shape") and len(cells.shape) >= 1 else 0
    soc_arr = None if soc is None else _float_col(soc, "soc")
    if pack_current is not None:
        pc = _float_col(pack_current, "pack_current")
        if pc.ndim != 1 or len(pc) != n:
            raise InvalidInputError(
                f"pack_current: expected {n} values (one per frame), got shape {pc.shape}"
            )
    flags = None if alarm_flags is None else _alarm_flags(alarm_flags)
    d = _bms.frame_features(
        cells, temps, soc=soc_arr, alarm_flags=flags, ocv=_ocv(ocv), alarm_spread_v=alarm_spread_v
    )
    out: "dict[str, Any]" = {}
    for name in FRAME_FEATURE_NAMES:
        col: Any = d[name]
        if name.endswith("_idx"):
            col = pd.array(np.where(col < 0, 0, col), dtype="Int64")
            col[np.asarray(d[name]) < 0] = pd.NA
        out[name] = col
    return pd.DataFrame(out, columns=list(FRAME_FEATURE_NAMES))


# --------------------------------------------------------------------------------------
# Daily table


def _numbered(columns: Sequence[str], prefix: str) -> "list[str]":
    pat = re.compile(re.escape(prefix) + r"(\d+)$")
    found = sorted((int(m.group(1)), c) for c in columns if (m := pat.match(str(c))))
    for want, (got, c) in enumerate(found, start=1):
        if got != want:
            raise InvalidInputError(
                f"frames: columns {prefix}1..{prefix}{len(found)} expected, "
                f"found {c} where {prefix}{want} should be"
            )
    return [c for _, c in found]


def _list_column_pandas(col: pd.Series, what: str) -> "tuple[Any, Any]":
    lengths = np.empty(len(col), dtype=np.int64)
    parts = []
    for i, v in enumerate(col.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise InvalidInputError(f"row {i + 1}, column {what}: missing list")
        a = _float_col(np.asarray(v, dtype=object), what) if not isinstance(
            v, np.ndarray
        ) or v.dtype.kind not in "fiu" else np.asarray(v, dtype=np.float64)
        lengths[i] = len(a)
        parts.append(a)
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return np.ascontiguousarray(values, dtype=np.float64), offsets


def _list_column_arrow(col: Any, what: str) -> "tuple[Any, Any]":
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        raise InvalidInputError(f"row {row}, column {what}: missing list")
    if pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        values = arr.flatten()
        offsets = np.arange(len(arr) + 1, dtype=np.int64) * size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = arr.offsets.to_numpy().astype(np.int64)
        values = arr.flatten()
        offsets = offsets - offsets[0]
    else:
        raise InvalidInputError(f"column {what}: expected a list column, got {arr.type}")
    try:
        values = pc.fill_null(values.cast(pa.float64()), np.nan)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"column {what}: not numeric ({e})") from None
    return np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=np.float64), offsets


def _is_arrow_table(x: Any) -> bool:
    return type(x).__module__.startswith("pyarrow") and hasattr(x, "column_names")


def _tabular(x: Any, what: str) -> Any:
    """A pandas DataFrame or pyarrow Table as given; any other Arrow producer (the Arrow
    PyCapsule interface, ``__arrow_c_stream__``: polars, DuckDB results, ...) read into a
    pyarrow Table; anything else as given (the caller refuses it)."""
    if isinstance(x, pd.DataFrame) or _is_arrow_table(x) or not hasattr(x, "__arrow_c_stream__"):
        return x
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInputError(
            f"{what}: {type(x).__name__} is Arrow data; reading it needs pyarrow "
            "(pip install 'bms-py[arrow]')"
        ) from None
    try:
        return pa.table(x)
    except TypeError as e:  # pyarrow < 14 cannot import through the PyCapsule interface
        raise InvalidInputError(
            f"{what}: reading {type(x).__name__} through the Arrow PyCapsule interface needs "
            f"pyarrow >= 14, found {pa.__version__} ({e})"
        ) from None


def daily(
    frames: Any,
    *,
    utc_offset: Union[None, str, int, _dt.timedelta] = None,
    ocv: OcvSpec = _D["ocv"],
    alarm_spread_v: float = _D["alarm_spread_v"],
) -> pd.DataFrame:
    """The daily table (SPEC §4) of a set of frames.

    Args:
        frames: a pandas DataFrame or pyarrow Table with columns ``vin``, ``timestamp``
            (ms since the epoch, datetimes — naive means UTC — or RFC 3339 strings),
            ``pack_voltage``, ``pack_current``, ``soc``, cell voltages and temperatures
            either wide (``cell_v_1..cell_v_N``, ``temp_1..temp_M``) or as list columns
            (``cell_voltages``, ``temperatures``), and optionally ``alarm_flags``. Any row
            order; NaN marks an invalid reading.
        utc_offset: where calendar days start: ``"+08:00"``, a timedelta or seconds
            (default UTC).
        ocv: the OCV curve (``"nmc"``, ``"lfp"`` or a table) for ``soc_deviation_mean``.
        alarm_spread_v: spread rule threshold for frames without alarm flags.

    Returns:
        One row per vehicle per calendar day, sorted by VIN then date, dense between each
        vehicle's first and last day: ``VIN, Date`` (datetime64), the reference columns,
        ``Label``, then the extended columns.

    Raises:
        InvalidInputError: a missing column, a bad value, two frames of a vehicle with the
            same timestamp (naming both rows, 1-based, as "lines").
    """
    offset = _utc_offset_seconds(utc_offset)
    frames = _tabular(frames, "frames")
    if _is_arrow_table(frames):
        names = list(frames.column_names)

        def column(name: str) -> pd.Series:
            return frames.column(name).to_pandas()
    elif isinstance(frames, pd.DataFrame):
        names = [str(c) for c in frames.columns]

        def column(name: str) -> pd.Series:
            return frames[name].reset_index(drop=True)
    else:
        raise InvalidInputError(
            "frames: expected a pandas DataFrame, a pyarrow Table or another Arrow table "
            f"(__arrow_c_stream__), got {type(frames).__name__}"
        )
    for req in ("vin", "timestamp", "pack_voltage", "pack_current", "soc"):
        if req not in names:
            raise InvalidInputError(f"frames: missing column '{req}' (columns: {', '.join(names)})")
    n = len(column("vin"))
    vins, codes = _vin_codes(column("vin"), "frames")

    def lists(list_name: str, prefix: str) -> "tuple[Any, Any]":
        if list_name in names:
            if _is_arrow_table(frames):
                return _list_column_arrow(frames.column(list_name), list_name)
            return _list_column_pandas(column(list_name), list_name)
        wide = _numbered(names, prefix)
        if not wide:
            raise InvalidInputError(
                f"frames: no {list_name} (expected a list column '{list_name}' or "
                f"columns {prefix}1..{prefix}N)"
            )
        mat = np.empty((n, len(wide)), dtype=np.float64)
        for j, c in enumerate(wide):
            mat[:, j] = _float_col(column(c), c)
        return mat.reshape(-1), np.arange(n + 1, dtype=np.int64) * len(wide)

    cells, cell_offsets = lists("cell_voltages", "cell_v_")
    temps, temp_offsets = lists("temperatures", "temp_")
    flags = _alarm_flags(column("alarm_flags")) if "alarm_flags" in names else None
    d = _bms.daily(
        vins,
        codes,
        _timestamps_ms(column("timestamp")),
        _float_col(column("pack_voltage"), "pack_voltage"),
        _float_col(column("pack_current"), "pack_current"),
        _float_col(column("soc"), "soc"),
        cells,
        cell_offsets,
        temps,
        temp_offsets,
        alarm_flags=flags,
        utc_offset_seconds=offset,
        ocv=_ocv(ocv),
        alarm_spread_v=alarm_spread_v,
    )
    return _daily_frame(d)


# --------------------------------------------------------------------------------------
# Windows


def windows(
    daily: Any,
    context: int = _D["context"],
    horizon: int = _D["horizon"],
    features: Optional[Sequence[str]] = None,
    fill: float = _D["fill"],
    full_horizon: bool = _D["full_horizon"],
) -> "tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.float32]], pd.DataFrame]":
    """Windows and labels (SPEC §5) of a daily table.

    Per vehicle (in order of first appearance), rows are sorted by date and made dense;
    each window holds ``context`` days of ``features`` day-major (oldest first), NaN
    replaced by ``fill``; its label is 1.0 when a ``Label`` of 1.0 occurs in the
    ``horizon`` days starting at the window's date.

    Args:
        daily: a daily DataFrame (or pyarrow Table) with ``VIN``, ``Date``, the feature
            columns and optionally ``Label``.
        context: days of history per window.
        horizon: days ahead the label looks.
        features: daily column names (default the six reference columns).
        fill: value replacing NaN.
        full_horizon: emit only windows whose whole horizon lies inside the data.

    Returns:
        ``(X, y, keys)``: ``X`` float32 ``[n, context * len(features)]``, ``y`` float32
        ``[n]``, ``keys`` a DataFrame with columns ``vin`` (as pandas makes Python strings)
        and ``date`` (datetime64[ns]).

    The work runs on all cores (``RAYON_NUM_THREADS`` limits the threads). ``X`` has a
    buffer of its own; ``y`` and the keys' columns share one (it is freed when none of
    them is left).
    """
    daily = _tabular(daily, "daily")
    if _is_arrow_table(daily):
        daily = daily.to_pandas()
    if not isinstance(daily, pd.DataFrame):
        raise InvalidInputError(
            "daily: expected a pandas DataFrame, a pyarrow Table or another Arrow table "
            f"(__arrow_c_stream__), got {type(daily).__name__}"
        )
    feats = list(REFERENCE_COLUMNS) if features is None else [str(f) for f in features]
    if isinstance(features, str):
        raise InvalidInputError("features: expected a list of column names, got a string")
    for req in ("VIN", "Date", *feats):
        if req not in daily.columns:
            raise InvalidInputError(
                f"daily: missing column '{req}' (columns: {', '.join(map(str, daily.columns))})"
            )
    for name, v in (("context", context), ("horizon", horizon)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidInputError(f"invalid window spec: {name} must be a whole number ≥ 1, got {v!r}")
    # Key VINs as Arrow strings when that is what pandas makes of strings; then Arrow-held
    # VINs go to the native call as they are (it numbers them), without a list of VINs.
    arrow_keys = _str_is_arrow()
    arrow = _arrow_strings(daily["VIN"]) if arrow_keys is not None else None
    vins: Optional[list[str]]
    codes: Any
    if arrow is not None:
        vins, codes = None, _arrow_chunks(arrow, "daily table")
    else:
        vins, codes = _vin_codes(daily["VIN"], "daily table")
    view = _datetime_view(daily["Date"])
    days: Any
    day_unit: Optional[int]
    days, day_unit = view if view is not None else (_days(daily["Date"], "Date"), None)
    cols = [_float_col(daily[f], f) for f in feats]
    labels = _float_col(daily["Label"], "Label") if "Label" in daily.columns else None
    x, y, kv, kd = _bms.windows(
        vins,
        codes,
        days,
        cols,
        feats,
        labels=labels,
        context=int(context),
        horizon=int(horizon),
        fill=float(fill),
        full_horizon=bool(full_horizon),
        day_unit=day_unit,
        key_strings=arrow_keys is not None,
    )
    vin_col: Any
    if arrow_keys is not None and len(y):
        vin_col = _arrow_key_vins(arrow_keys, len(y), kv)
    elif arrow_keys is not None:
        vin_col = np.array([], dtype=object)
    else:
        names = np.asarray(vins, dtype=object)
        vin_col = names[kv] if len(y) else np.array([], dtype=object)
    return x, y, pd.DataFrame({"vin": vin_col, "date": kd.view("datetime64[ns]")}, copy=False)


def _str_is_arrow() -> Any:
    """The dtype pandas gives a column of Python strings (``pd.DataFrame({"vin": [...]})``)
    when that is an Arrow-backed string dtype (pandas 3's ``str`` with pyarrow installed),
    else None: window keys are then built from Arrow buffers, not one object per window."""
    key = _string_options()
    if key is not None and key in _STR_DTYPES:
        return _STR_DTYPES[key]
    dtype: Any = pd.Series(np.array(["V"], dtype=object)).dtype
    if not isinstance(dtype, pd.StringDtype) or not str(dtype.storage).startswith("pyarrow"):
        dtype = None
    if key is not None:
        _STR_DTYPES[key] = dtype
    return dtype


# What pandas makes of strings depends on two options (string inference, string storage):
# the answer is kept per pair of values (when this pandas tells the first without a
# deprecation warning; otherwise it is asked every time).
_STR_DTYPES: "dict[Any, Any]" = {}
try:
    from pandas._config import (  # type: ignore[attr-defined]
        using_string_dtype as _using_string_dtype,
    )
except ImportError:  # pandas < 2.1
    _using_string_dtype = None


def _string_options() -> Any:
    if _using_string_dtype is None:
        return None
    try:
        return (bool(_using_string_dtype()), str(pd.get_option("mode.string_storage")))
    except Exception:
        return None


def _arrow_key_vins(dtype: Any, n: int, buffers: Any) -> Any:
    """The window VINs, ``(offsets, data)`` of an Arrow large_string array, as a pandas
    array of ``dtype``."""
    import pyarrow as pa  # type: ignore[import-untyped]

    offsets, data = buffers
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    return dtype.__from_arrow__(arr)


# --------------------------------------------------------------------------------------
# Files


def read_daily_csv(path: PathLike) -> pd.DataFrame:
    """Reads a daily CSV file (SPEC §4: the reference header, optionally the extended
    columns). Raises :class:`InvalidInputError` naming file, line, column and value at the
    first bad line, :class:`BmsIOError` when the file cannot be read."""
    d, _rejects, _read, _accepted = _bms.read_daily_csv(os.fspath(path), strict=True)
    return _daily_frame(d)


class BatchFile(NamedTuple):
    """What :func:`read_batch_csv` read."""

    x: "np.ndarray[Any, np.dtype[np.float32]]"
    """Features, float32 ``[accepted lines, width]``."""
    keys: pd.DataFrame
    """``vin`` and ``date`` of each accepted line."""
    labels: "Optional[np.ndarray[Any, np.dtype[np.float32]]]"
    """Labels when read with ``labels=True``."""
    lines: "np.ndarray[Any, np.dtype[np.int64]]"
    """Source line (1-based) of each accepted row."""
    rejects: pd.DataFrame
    """``line`` and ``reason`` of every rejected line."""
    read: int
    """Lines read (blank lines excluded): ``read == accepted + len(rejects)``."""
    accepted: int


def read_batch_csv(
    path: PathLike, strict: bool = False, *, width: int = _D["batch_width"], labels: bool = False
) -> BatchFile:
    """Reads a batch scoring CSV (SPEC §6: no header, ``VIN,Date,f1..f<width>`` and a
    trailing label with ``labels=True``). Lenient by default: bad lines become rejects
    (line, reason) and the rest is read; ``strict=True`` raises at the first bad line."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InvalidInputError(f"invalid batch width: {width!r} (must be a whole number ≥ 1)")
    d, r, read, accepted = _bms.read_batch_csv(
        os.fspath(path), width=int(width), labels=bool(labels), strict=bool(strict)
    )
    return BatchFile(
        x=d["x"],
        keys=_keys_frame(d["vins"], d["codes"], d["days"]),
        labels=d["labels"],
        lines=d["lines"],
        rejects=_rejects_frame(r),
        read=int(read),
        accepted=int(accepted),
    )


# --------------------------------------------------------------------------------------
# Simulator


# --------------------------------------------------------------------------------------
# GB/T 32960 captures

_REFUSED_COLUMNS = ["offset", "length", "kind", "command", "vin", "reason"]


class Capture(NamedTuple):
    """What a GB/T 32960 stream decoded to (:func:`read_gbt32960`,
    :meth:`Gbt32960Decoder.push`)."""

    frames: pd.DataFrame
    """One row per frame in stream order: ``vin``, ``timestamp`` (ms since the epoch, UTC),
    ``pack_voltage``, ``pack_current``, ``soc``, list columns ``cell_voltages`` and
    ``temperatures`` (NaN = invalid reading), ``alarm_flags`` (nullable Int64), and where
    it came from: ``offset`` (stream byte offset of the packet), ``edition`` (2016 or
    2025), ``command`` (2 realtime, 3 reissue). :func:`daily` takes it as is."""
    refused: pd.DataFrame
    """One row per refused packet or run of bytes: ``offset``, ``length``, ``kind``
    (``checksum``, ``encrypted``, ``truncated``, ``layout``, ``time``, ``not-a-packet``),
    ``command``, ``vin`` (None when unreadable) and ``reason``."""
    counts: "dict[str, Any]"
    """The decoder's counts so far: ``bytes``, ``packets``, ``by_command``, ``frames``,
    ``no_frame``, ``replies``, ``errors``, ``errors_by_kind``, ``error_bytes`` and
    ``summary`` (the line ``bms ingest`` prints)."""


def _capture(d: "dict[str, Any]", refused: "list[tuple[Any, ...]]", counts: "dict[str, Any]") -> Capture:
    vins = np.asarray(d["vins"], dtype=object)
    codes = d["codes"]
    n = len(codes)
    flags = pd.array(d["alarm_flags"], dtype="Int64")
    flags[d["alarm_flags"] < 0] = pd.NA
    co, to = d["cell_offsets"], d["temp_offsets"]
    cells, temps = d["cells"], d["temps"]
    frames = pd.DataFrame(
        {
            "vin": vins[codes] if n else np.array([], dtype=object),
            "timestamp": d["timestamp_ms"],
            "pack_voltage": d["pack_voltage"],
            "pack_current": d["pack_current"],
            "soc": d["soc"],
            "cell_voltages": pd.Series([cells[co[i]:co[i + 1]] for i in range(n)], dtype=object),
            "temperatures": pd.Series([temps[to[i]:to[i + 1]] for i in range(n)], dtype=object),
            "alarm_flags": flags,
            "offset": d["offset"].astype(np.int64),
            "edition": d["edition"].astype(np.int64),
            "command": d["command"].astype(np.int64),
        }
    )
    refused_df = pd.DataFrame([r[:6] for r in refused], columns=_REFUSED_COLUMNS)
    if len(refused_df):
        refused_df["offset"] = refused_df["offset"].astype(np.int64)
        refused_df["length"] = refused_df["length"].astype(np.int64)
    return Capture(frames, refused_df, counts)


class Gbt32960Decoder:
    """The streaming GB/T 32960.3 decoder (both editions, told per packet; the code
    ``bms ingest`` and the C library's ``bms_gbt32960_decoder`` run): push the bytes of a
    stream as they arrive, in pieces of any size, and get the frames completed by each
    piece. Refused packets (wrong checksum, encrypted, truncated, bad layout, impossible
    time) are reported with their byte offset and skipped; decoding goes on. Memory is at
    most one packet beyond what each call returns.

    ::

        dec = bms.Gbt32960Decoder()
        for chunk in socket_chunks:
            got = dec.push(chunk)          # got.frames, got.refused
        last = dec.finish()                # a truncated final packet is reported here
    """

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d = _bms.Gbt32960Decoder()

    def push(self, data: "Union[bytes, bytearray, memoryview]") -> Capture:
        """Appends ``data`` to the stream; returns the frames and refusals it completed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected bytes, got {type(data).__name__}")
        self._d.push(bytes(data))
        return self._take()

    def finish(self) -> Capture:
        """Ends the stream: returns what is left (a truncated last packet is refused)."""
        self._d.finish()
        return self._take()

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a packet."""
        return self._d.pending()

    @property
    def counts(self) -> "dict[str, Any]":
        """The counts so far (see :attr:`Capture.counts`)."""
        return self._d.counts()

    def _take(self) -> Capture:
        d, refused = self._d.drain()
        return _capture(d, refused, self._d.counts())


def read_gbt32960(source: "Union[PathLike, bytes, bytearray, memoryview, Any]", *, strict: bool = False) -> Capture:
    """Decodes a GB/T 32960 capture: a file path, bytes, or a binary file object (read in
    chunks). Returns every frame and every refused packet (:class:`Capture`); with
    ``strict=True`` the first refused packet raises :class:`InvalidInputError` naming its
    byte offset, command, VIN and reason.

    Raises:
        BmsFileNotFoundError, BmsPermissionError, BmsIOError: the file cannot be read.
        InvalidInputError: with ``strict``, a refused packet.
        TypeError: ``source`` is none of the above, or a file object returns text.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        chunks: Any = [bytes(source)]
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            f = open(name, "rb")
        except FileNotFoundError as e:
            raise BmsFileNotFoundError(f"{name}: {e.strerror}") from e
        except PermissionError as e:
            raise BmsPermissionError(f"{name}: {e.strerror}") from e
        except OSError as e:
            raise BmsIOError(f"{name}: {e.strerror or e}") from e
        chunks = _chunks(f, close=True)
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "<stream>"))
        chunks = _chunks(source, close=False)
    else:
        raise TypeError(f"source: expected a path, bytes or a binary file, got {type(source).__name__}")
    dec = _bms.Gbt32960Decoder()
    frames: "list[dict[str, Any]]" = []
    refused: "list[tuple[Any, ...]]" = []

    def take() -> None:
        d, r = dec.drain()
        if len(d["codes"]):
            frames.append(d)
        if strict and r:
            raise InvalidInputError(f"{name}: {r[0][6]}")
        refused.extend(r)

    for chunk in chunks:
        if not isinstance(chunk, (bytes, bytearray)):
            raise TypeError(
                f"{name}: the file object returned {type(chunk).__name__}, not bytes "
                "(open it in binary mode)"
            )
        dec.push(bytes(chunk))
        take()
    dec.finish()
    take()
    return _capture(_merge_frames(frames), refused, dec.counts())


def _merge_frames(parts: "list[dict[str, Any]]") -> "dict[str, Any]":
    """One set of frame columns from several drains (codes and offsets shifted)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        d, _ = _bms.Gbt32960Decoder().drain()
        return d
    vins: "list[str]" = []
    codes, co, to = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    n_cells = n_temps = 0
    for p in parts:
        codes.append(p["codes"] + len(vins))
        vins.extend(p["vins"])
        co.append(p["cell_offsets"][1:] + n_cells)
        to.append(p["temp_offsets"][1:] + n_temps)
        n_cells += len(p["cells"])
        n_temps += len(p["temps"])
    out: "dict[str, Any]" = {
        "vins": vins,
        "codes": np.concatenate(codes),
        "cell_offsets": np.concatenate(co),
        "temp_offsets": np.concatenate(to),
    }
    for k in ("timestamp_ms", "pack_voltage", "pack_current", "soc", "cells", "temps",
              "alarm_flags", "offset", "edition", "command"):
        out[k] = np.concatenate([p[k] for p in parts])
    return out


def _chunks(f: Any, close: bool, size: int = 1 << 20) -> Any:
    try:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk
    finally:
        if close:
            f.close()


class Simulation(NamedTuple):
    """A simulated fleet (see :func:`simulate`)."""

    daily: pd.DataFrame
    """The daily table, sorted by VIN then date."""
    truth: pd.DataFrame
    """Per vehicle: ``vin, weak, weak_cell`` (0-based), ``mechanism, onset_date,
    first_alarm_date, repair_date, alarm_days``."""
    frames: Optional[pd.DataFrame]
    """The raw frames (wide layout, ``timestamp`` in ms) when asked for, else None."""
    n_frames: int
    """Number of frames simulated."""


def simulate(
    vehicles: int = _SIM["vehicles"],
    days: int = _SIM["days"],
    seed: int = _SIM["seed"],
    *,
    start: Union[str, _dt.date] = _SIM["start"],
    cells: int = _SIM["cells"],
    probes: int = _SIM["probes"],
    interval_ms: int = _SIM["interval_ms"],
    chemistry: str = _SIM["chemistry"],
    weak_fraction: float = _SIM["weak_fraction"],
    parked_fraction: float = _SIM["parked_fraction"],
    alarm_spread_v: float = _SIM["alarm_spread_v"],
    frames: bool = False,
) -> Simulation:
    """Simulates a fleet with the project's calibrated simulator (the same as
    ``bms simulate``; deterministic for a seed). ``frames=True`` also returns every frame
    (memory grows with vehicles × days × cells: keep fleets small)."""
    for name, v in (("vehicles", vehicles), ("days", days), ("seed", seed), ("cells", cells),
                    ("probes", probes), ("interval_ms", interval_ms)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InvalidInputError(f"invalid {name}: {v!r} (must be a whole number ≥ 0)")
    start_s = start.isoformat() if isinstance(start, _dt.date) else str(start)
    d, t, f, n = _bms.simulate(
        vehicles=int(vehicles),
        days=int(days),
        seed=int(seed),
        start=start_s,
        cells=int(cells),
        probes=int(probes),
        interval_ms=int(interval_ms),
        chemistry=chemistry,
        weak_fraction=float(weak_fraction),
        parked_fraction=float(parked_fraction),
        alarm_spread_v=float(alarm_spread_v),
        frames=bool(frames),
    )
    truth = pd.DataFrame({"vin": pd.Series(t["vin"], dtype=object), "weak": t["weak"]})
    truth["weak_cell"] = pd.array(np.where(t["weak_cell"] < 0, 0, t["weak_cell"]), dtype="Int64")
    truth.loc[t["weak_cell"] < 0, "weak_cell"] = pd.NA
    truth["mechanism"] = pd.Series([m or None for m in t["mechanism"]], dtype=object)
    nat = np.iinfo(np.int64).min
    for c in ("onset_date", "first_alarm_date", "repair_date"):
        v = t[c]
        dates = _dates(np.where(v == nat, 0, v))
        dates[v == nat] = np.datetime64("NaT")
        truth[c] = dates
    truth["alarm_days"] = t["alarm_days"]
    frames_df = None
    if f is not None:
        fv = np.asarray(f["vins"], dtype=object)
        cols: "dict[str, Any]" = {
            "vin": fv[f["codes"]] if len(fv) else np.array([], dtype=object),
            "timestamp": f["timestamp_ms"],
            "pack_voltage": f["pack_voltage"],
            "pack_current": f["pack_current"],
            "soc": f["soc"],
        }
        for j in range(f["cells"].shape[1]):
            cols[f"cell_v_{j + 1}"] = f["cells"][:, j]
        for j in range(f["temps"].shape[1]):
            cols[f"temp_{j + 1}"] = f["temps"][:, j]
        cols["alarm_flags"] = f["alarm_flags"]
        frames_df = pd.DataFrame(cols)
    return Simulation(daily=_daily_frame(d), truth=truth, frames=frames_df, n_frames=int(n))


# --------------------------------------------------------------------------------------
# Models


def score_file(
    model: "Model",
    input: PathLike,
    *,
    out: PathLike,
    format: Optional[str] = None,
    partition_by: Optional[str] = None,
    strict: bool = False,
    threshold: Optional[float] = None,
    utc_offset: Optional[str] = None,
    ocv: Optional[OcvSpec] = None,
) -> Summary:
    """Scores a file exactly as ``bms predict --out DIR`` does (the same Rust pipeline):
    reference batch CSV, a daily table (CSV or Parquet) or frames (CSV or Parquet), the
    format told from the extension and first line unless ``format`` (``"batch"``,
    ``"daily"``, ``"frames"``) says. Writes ``predictions.parquet`` (or, with
    ``partition_by="date"``, ``predictions/date=YYYY-MM-DD/part-0.parquet``),
    ``events.jsonl``, ``results.sqlite``, ``rejects.csv`` and ``summary.json`` into
    ``out``, replacing the previous outputs only once the whole input was read; a failed
    run leaves them as they were. Bad lines are set aside as rejects unless ``strict``.

    ``threshold`` replaces the model's; ``utc_offset`` (``"+08:00"``) and ``ocv`` (as in
    :func:`frame_features`) apply to frames input, with the command line's defaults
    (``+00:00``, ``"nmc"``) when ``None``. Returns the run's :class:`Summary`.
    A missing input raises ``FileNotFoundError``; bad data :class:`InvalidInputError`.
    """
    return _bms.score_file(
        model._m,
        os.fspath(input),
        out=os.fspath(out),
        format=format,
        partition_by=partition_by,
        strict=strict,
        threshold=threshold,
        utc_offset=utc_offset,
        ocv=None if ocv is None else _ocv(ocv),
    )


def _is_path(v: Any) -> bool:
    return isinstance(v, (str, os.PathLike))


def _column(df: Any, names: "Sequence[str]", what: str) -> Any:
    for n in names:
        if n in df.columns:
            return df[n]
    raise InvalidInputError(f"{what}: no column {' or '.join(repr(n) for n in names)}")


def _vin_list(col: Any, what: str) -> "list[str]":
    if col.isna().any():
        row = int(np.flatnonzero(col.isna().to_numpy())[0]) + 1
        raise InvalidInputError(f"{what}: row {row} has no VIN")
    return [str(v) for v in col]


def evaluate(
    predictions: Any,
    *,
    daily: Any = None,
    truth: Any = None,
    windows: Any = None,
    threshold: Optional[float] = None,
    horizon: Optional[int] = None,
    model: "Union[Model, PathLike, None]" = None,
) -> "dict[str, Any]":
    """Measures predictions against labels as ``bms evaluate`` does (SPEC §9, the same
    Rust code): window metrics (ROC AUC, average precision; precision, recall and F1 at
    the threshold) and, per vehicle, the lead time from the first alert to the first
    alarm day, detection rates at ≥ 1, 3 and 7 days, and false alarms on vehicles that
    never alarm. Returns the dict ``bms evaluate --json`` writes (keys ``window``,
    ``events``, ``vehicles``, …).

    Give ``predictions`` and exactly one label source, either all as files or all in
    memory:

    - files: ``predictions`` a ``bms predict --out`` directory or predictions CSV;
      ``daily`` a daily table (CSV/Parquet), ``truth`` a truth CSV (``bms simulate
      --truth``) or ``windows`` labelled windows (``bms windows --labels``);
    - DataFrames: ``predictions`` with ``vin``, ``date``, ``predicted_prob`` (what
      :meth:`Model.predict_daily` returns); ``daily`` with ``VIN``, ``Date``, ``Label``
      (:func:`daily`, ``Simulation.daily``), ``truth`` with ``vin``,
      ``first_alarm_date`` (``Simulation.truth``), or ``windows`` with ``vin``, ``date``,
      ``label``.

    ``threshold`` and ``horizon`` default to the run's (``summary.json``), else the
    ``model``'s contract, else (horizon) 14; in-memory predictions need ``threshold`` or
    ``model``. Bad data raises :class:`InvalidInputError`, a missing file
    ``FileNotFoundError``.
    """
    import json

    given = [(k, v) for k, v in (("daily", daily), ("truth", truth), ("windows", windows)) if v is not None]
    if len(given) != 1:
        raise InvalidInputError(
            "give exactly one label source: daily=, truth= or windows= "
            f"({len(given)} given)"
        )
    kind, labels = given[0]
    model_path = model.path if isinstance(model, Model) else model
    if _is_path(predictions) and _is_path(labels):
        text = _bms.evaluate_files(
            os.fspath(predictions),
            **{kind: os.fspath(labels)},
            threshold=threshold,
            horizon=horizon,
            model=None if model_path is None else os.fspath(model_path),
        )
        return json.loads(text)  # type: ignore[no-any-return]
    if _is_path(predictions) or _is_path(labels):
        raise TypeError(
            "predictions and labels must both be files or both be DataFrames "
            f"(got {type(predictions).__name__} and {type(labels).__name__})"
        )
    m: Optional[Model] = None
    if isinstance(model, Model):
        m = model
    elif model is not None:
        m = Model(model)
    if threshold is None:
        if m is None:
            raise InvalidInputError(
                "threshold: in-memory predictions do not say which threshold made their "
                "alarms; give threshold= or model="
            )
        threshold = m.threshold
    if horizon is None:
        horizon = int(m.contract["horizon"]) if m is not None else 14
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon < 0:
        raise InvalidInputError(f"horizon: {horizon!r} is not a number of days")
    p = pd.DataFrame(predictions)
    vins = _vin_list(_column(p, ["vin", "VIN"], "predictions"), "predictions")
    days = _days(_column(p, ["date", "Date"], "predictions"), "date")
    probs = np.ascontiguousarray(
        pd.to_numeric(_column(p, ["predicted_prob"], "predictions")), dtype=np.float32
    )
    lab = pd.DataFrame(labels)
    if kind == "daily":
        lvins = _vin_list(_column(lab, ["VIN", "vin"], "daily"), "daily")
        ldays = _days(_column(lab, ["Date", "date"], "daily"), "Date")
        lvalues = pd.to_numeric(_column(lab, ["Label", "label"], "daily")).to_numpy(np.float64)
        native_kind = "daily"
    elif kind == "truth":
        lvins = _vin_list(_column(lab, ["vin", "VIN"], "truth"), "truth")
        first = pd.to_datetime(_column(lab, ["first_alarm_date"], "truth"))
        ldays = np.where(
            first.isna().to_numpy(),
            np.iinfo(np.int64).min,
            first.fillna(pd.Timestamp(0)).to_numpy().astype("datetime64[D]").astype(np.int64),
        ).astype(np.int64)
        lvalues = np.zeros(len(lvins), dtype=np.float64)
        native_kind = "first_alarms"
    else:
        lvins = _vin_list(_column(lab, ["vin", "VIN"], "windows"), "windows")
        ldays = _days(_column(lab, ["date", "Date"], "windows"), "date")
        lvalues = pd.to_numeric(_column(lab, ["label", "Label"], "windows")).to_numpy(np.float64)
        native_kind = "windows"
    text = _bms.evaluate_arrays(
        vins,
        days,
        probs,
        kind=native_kind,
        label_vins=lvins,
        label_days=np.ascontiguousarray(ldays, dtype=np.int64),
        label_values=np.ascontiguousarray(lvalues, dtype=np.float64),
        threshold=float(threshold),
        horizon=int(horizon),
    )
    return json.loads(text)  # type: ignore[no-any-return]


class Model:
    """An ONNX model with its feature contract (SPEC §7), scored by the core (tract, with
    the project's own tree-ensemble path).

    Loading checks the model and its ``bms.*`` contract (a plain export gets the reference
    defaults and says so in :attr:`contract`); a corrupt, unsupported or inconsistent file
    raises :class:`ModelError`. A loaded model may be used from many threads at once.
    """

    __slots__ = ("_m",)

    def __init__(self, path: PathLike) -> None:
        self._m = _bms.Model(os.fspath(path))

    def predict(self, x: Any) -> "np.ndarray[Any, np.dtype[np.float32]]":
        """Positive-class probability of every row of ``x`` (``[n, width]``; float32 is
        borrowed, float64 converted to float32 as XGBoost and onnxruntime do)."""
        return self._m.predict(_float2(x, "x"))

    @property
    def contract(self) -> "dict[str, Any]":
        """The feature contract: ``context``, ``horizon``, ``features``, ``fill``,
        ``threshold``, ``model_id``, ``width`` and ``defaulted`` (True when the model
        carries no ``bms.*`` metadata and the reference defaults apply)."""
        return self._m.contract

    @property
    def width(self) -> int:
        """Values per input row."""
        return self._m.width

    @property
    def threshold(self) -> float:
        """Alarm when probability ≥ threshold."""
        return self._m.threshold

    @property
    def model_id(self) -> str:
        """Identifier stamped on predictions."""
        return self._m.model_id

    @property
    def path(self) -> str:
        """The file the model was loaded from."""
        return self._m.path

    @property
    def output_names(self) -> "list[str]":
        """Names of the model's outputs."""
        return self._m.output_names

    def predict_daily(self, daily: Any, *, full_horizon: bool = False) -> pd.DataFrame:
        """Builds the windows this model's contract asks for from a daily table and scores
        them: a DataFrame with ``event_id, vin, date, predicted_prob, alarm, model_id``
        (SPEC §8; the event ids are those of ``bms predict --out`` and :func:`score_file`
        for the same windows and model)."""
        c = self._m.contract
        x, _y, keys = windows(
            daily,
            context=c["context"],
            horizon=c["horizon"],
            features=c["features"],
            fill=c["fill"],
            full_horizon=full_horizon,
        )
        p = self._m.predict(x)
        days = keys["date"].to_numpy().astype("datetime64[D]").astype(np.int64)
        out = keys.copy()
        out.insert(0, "event_id", _bms.event_ids(list(keys["vin"]), days, c["model_id"]))
        out["predicted_prob"] = p
        out["alarm"] = p >= np.float32(c["threshold"])
        out["model_id"] = c["model_id"]
        return out

    def __repr__(self) -> str:
        return repr(self._m)


# --------------------------------------------------------------------------------------
# Streaming


class Monitor:
    """The streaming monitor of one vehicle, on the core code the C library's
    ``bms_monitor`` runs: push the vehicle's frames in time order, read the days it closed
    and score the window of the last ``context`` closed days.

    A frame on a later calendar day than the open one closes the open day, and adds an
    empty day (NaN, ``frames = 0``) for each day without frames in between; a closed day is
    exactly the row :func:`daily` (and ``bms daily``) gives. The window and
    :meth:`predict` score the open day: the window ``bms windows`` dates with that day.
    A frame older than (or as old as) the latest one raises :class:`InvalidInputError` and
    changes nothing. Memory is fixed when the monitor is made; it must not be used by two
    threads at once.
    """

    __slots__ = ("_m", "_model")

    def __init__(
        self,
        model: Model,
        *,
        utc_offset: Union[None, str, int, _dt.timedelta] = None,
        ocv: OcvSpec = _D["ocv"],
        alarm_spread_v: float = _D["alarm_spread_v"],
    ) -> None:
        """A monitor scored by ``model`` (its contract gives context, features and fill);
        ``utc_offset``, ``ocv`` and ``alarm_spread_v`` as for :func:`daily`."""
        if not isinstance(model, Model):
            raise InvalidInputError(f"model: expected a bms.Model, got {type(model).__name__}")
        self._model = model
        self._m = _bms.Monitor(
            model._m, _utc_offset_seconds(utc_offset), _ocv(ocv), alarm_spread_v
        )

    def push_frame(
        self,
        timestamp_ms: int,
        pack_voltage: float,
        pack_current: float,
        soc: float,
        cells: Any,
        temps: Any,
        alarm_flags: Optional[int] = None,
    ) -> None:
        """Adds one frame: ``timestamp_ms`` since the epoch (UTC), pack voltage (V) and
        current (A, the source's sign), BMS SOC (%), the cell voltages (V) and probe
        temperatures (°C) as 1-D sequences (NaN = invalid reading), and the GB/T 32960
        general alarm flags or None (the spread rule then decides the alarm)."""
        self._m.push_frame(
            int(timestamp_ms),
            float(pack_voltage),
            float(pack_current),
            float(soc),
            np.ascontiguousarray(cells, dtype=np.float64),
            np.ascontiguousarray(temps, dtype=np.float64),
            None if alarm_flags is None else int(alarm_flags),
        )

    def advance_to(self, timestamp_ms: int) -> None:
        """Moves the clock to ``timestamp_ms`` without a frame: a later calendar day closes
        the open day (a vehicle parked past midnight still gets its window). Later frames
        must not be older."""
        self._m.advance_to(int(timestamp_ms))

    def day(self, age: int = 0) -> "dict[str, Any]":
        """A held closed day (``age`` 0 is the most recent) as a dict: ``Date``
        (:class:`datetime.date`), the daily columns and ``Label``. :class:`IndexError`
        beyond ``days_held - 1``."""
        d = self._m.day(age)
        out: "dict[str, Any]" = {"Date": _dt.date(1970, 1, 1) + _dt.timedelta(days=d.pop("day"))}
        out.update(d)
        return out

    def days(self) -> pd.DataFrame:
        """The held closed days, oldest first, as daily-table rows without ``VIN``."""
        rows = [self.day(age) for age in reversed(range(self.days_held))]
        df = pd.DataFrame(rows, columns=DAILY_FRAME_COLUMNS[1:])
        df["Date"] = pd.to_datetime(df["Date"])
        return df

    @property
    def current_date(self) -> Optional[_dt.date]:
        """The open day, the date the current window scores; None before the first
        frame."""
        d = self._m.current_day
        return None if d is None else _dt.date(1970, 1, 1) + _dt.timedelta(days=d)

    @property
    def days_held(self) -> int:
        """Closed days held (at most :attr:`context`)."""
        return self._m.days_held

    @property
    def days_closed(self) -> int:
        """Days closed since the monitor was made, including those no longer held."""
        return self._m.days_closed

    @property
    def context(self) -> int:
        """Days per window (the model's context)."""
        return self._m.context

    @property
    def width(self) -> int:
        """Values per window."""
        return self._m.width

    @property
    def is_ready(self) -> bool:
        """Whether :attr:`context` days have closed, so that a window exists."""
        return self._m.is_ready

    @property
    def model(self) -> Model:
        """The model the monitor scores with."""
        return self._model

    def window(
        self, out: "Optional[np.ndarray[Any, np.dtype[np.float32]]]" = None
    ) -> "np.ndarray[Any, np.dtype[np.float32]]":
        """The current window (``width`` float32 values, day-major, oldest day first, NaN
        replaced by the contract's fill), written into ``out`` (a writable contiguous
        float32 array of ``width`` values) when given. :class:`InvalidInputError` before
        :attr:`context` days have closed."""
        if out is None:
            return self._m.window()
        self._m.window_into(out)
        return out

    def predict(self) -> float:
        """The model's probability for the current window (an alarm is
        ``predict() >= model.threshold``)."""
        return self._m.predict()

    def __repr__(self) -> str:
        return repr(self._m)

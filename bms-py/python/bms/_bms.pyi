"""Native module of the bms package (Rust, PyO3): plain arrays, lists and dicts in and out.
Use the wrappers in :mod:`bms`; these are their building blocks."""

from typing import Any, Optional

import numpy as np
import numpy.typing as npt
from typing_extensions import final

__all__ = [
    "BmsError",
    "Gbt32960Decoder",
    "BmsIOError",
    "BmsFileNotFoundError",
    "BmsPermissionError",
    "DAILY_COLUMNS",
    "DEFAULTS",
    "EXTENDED_COLUMNS",
    "Evaluation",
    "FRAME_FEATURE_NAMES",
    "InvalidInputError",
    "Model",
    "ModelError",
    "Monitor",
    "REFERENCE_COLUMNS",
    "Summary",
    "__version__",
    "daily",
    "evaluate_arrays",
    "evaluate_files",
    "event_ids",
    "factorize_strings",
    "first_appearance",
    "frame_features",
    "parse_alarm_flags",
    "parse_utc_offset",
    "read_batch_csv",
    "read_daily_csv",
    "score_file",
    "simulate",
    "windows",
]
__version__: str
FRAME_FEATURE_NAMES: list[str]
DAILY_COLUMNS: list[str]
REFERENCE_COLUMNS: list[str]
EXTENDED_COLUMNS: list[str]
DEFAULTS: dict[str, Any]

class BmsError(Exception): ...
class InvalidInputError(BmsError, ValueError): ...
class ModelError(BmsError): ...
class BmsIOError(BmsError, OSError): ...
class BmsFileNotFoundError(BmsIOError, FileNotFoundError): ...
class BmsPermissionError(BmsIOError, PermissionError): ...

def frame_features(
    cells: Any,
    temps: Any,
    soc: Optional[Any] = None,
    alarm_flags: Optional[Any] = None,
    ocv: Optional[Any] = None,
    alarm_spread_v: float = 0.1,
) -> dict[str, npt.NDArray[Any]]: ...
def daily(
    vins: list[str],
    codes: Any,
    timestamp_ms: Any,
    pack_voltage: Any,
    pack_current: Any,
    soc: Any,
    cells: Any,
    cell_offsets: Any,
    temps: Any,
    temp_offsets: Any,
    alarm_flags: Optional[Any] = None,
    utc_offset_seconds: int = 0,
    ocv: Optional[Any] = None,
    alarm_spread_v: float = 0.1,
) -> dict[str, Any]: ...
def windows(
    vins: Optional[list[str]],
    codes: Any,
    days: Any,
    columns: list[Any],
    features: list[str],
    labels: Optional[Any] = None,
    context: int = 14,
    horizon: int = 14,
    fill: float = ...,  # -1.0 (the runtime signature cannot show a negative default)
    full_horizon: bool = False,
    day_unit: Optional[int] = None,
    key_strings: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], Any, npt.NDArray[np.int64]]: ...
def factorize_strings(
    chunks: list[tuple[Any, Any]],
) -> tuple[list[str], npt.NDArray[np.uint32]]: ...
def first_appearance(
    codes: Any, n: int, what: str = "daily table"
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]: ...
def read_daily_csv(
    path: str, strict: bool = True
) -> tuple[dict[str, Any], dict[str, Any], int, int]: ...
def read_batch_csv(
    path: str, width: int = 84, labels: bool = False, strict: bool = False
) -> tuple[dict[str, Any], dict[str, Any], int, int]: ...
def simulate(
    vehicles: int = 200,
    days: int = 120,
    seed: int = 0,
    start: str = "2024-01-01",
    cells: int = 96,
    probes: int = 32,
    interval_ms: int = 10000,
    chemistry: str = "nmc",
    weak_fraction: float = 0.05,
    parked_fraction: float = 0.35,
    alarm_spread_v: float = 0.1,
    frames: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], Optional[dict[str, Any]], int]: ...

@final
class Model:
    def __new__(cls, path: str) -> "Model": ...
    def predict(self, x: Any) -> npt.NDArray[np.float32]: ...
    @property
    def contract(self) -> dict[str, Any]: ...
    @property
    def width(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    @property
    def model_id(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def output_names(self) -> list[str]: ...

@final
class Gbt32960Decoder:
    def __new__(cls) -> "Gbt32960Decoder": ...
    def push(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def pending(self) -> int: ...
    def drain(self) -> tuple[dict[str, Any], list[tuple[Any, ...]]]: ...
    def counts(self) -> dict[str, Any]: ...

@final
class Monitor:
    def __new__(
        cls,
        model: Model,
        utc_offset_seconds: int = 0,
        ocv: Optional[Any] = None,
        alarm_spread_v: float = 0.1,
    ) -> "Monitor": ...
    def push_frame(
        self,
        timestamp_ms: int,
        pack_voltage: float,
        pack_current: float,
        soc: float,
        cells: Any,
        temps: Any,
        alarm_flags: Optional[int] = None,
    ) -> None: ...
    def advance_to(self, timestamp_ms: int) -> None: ...
    def day(self, age: int) -> dict[str, Any]: ...
    @property
    def current_day(self) -> Optional[int]: ...
    @property
    def days_held(self) -> int: ...
    @property
    def days_closed(self) -> int: ...
    @property
    def context(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def is_ready(self) -> bool: ...
    def window_into(self, out: Any) -> None: ...
    def window(self) -> npt.NDArray[np.float32]: ...
    def predict(self) -> float: ...

@final
class Summary:
    @property
    def input(self) -> str: ...
    @property
    def format(self) -> Optional[str]: ...
    @property
    def model_id(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def rows_read(self) -> int: ...
    @property
    def rows_rejected(self) -> int: ...
    @property
    def scored(self) -> int: ...
    @property
    def alarms(self) -> int: ...
    @property
    def vehicles(self) -> int: ...
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def fill_value(self) -> float: ...
    @property
    def horizon_days(self) -> Optional[int]: ...
    @property
    def partitioned(self) -> bool: ...
    @property
    def seconds(self) -> float: ...
    @property
    def evaluation(self) -> Optional["Evaluation"]: ...
    @staticmethod
    def read(path: str) -> "Summary": ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Evaluation:
    @property
    def labelled(self) -> int: ...
    @property
    def positives(self) -> int: ...
    @property
    def roc_auc(self) -> Optional[float]: ...
    @property
    def average_precision(self) -> Optional[float]: ...
    @property
    def precision(self) -> Optional[float]: ...
    @property
    def recall(self) -> Optional[float]: ...
    @property
    def f1(self) -> Optional[float]: ...

def score_file(
    model: Model,
    input: str,
    *,
    out: str,
    format: Optional[str] = None,
    partition_by: Optional[str] = None,
    strict: bool = False,
    threshold: Optional[float] = None,
    utc_offset: Optional[str] = None,
    ocv: Any = None,
) -> Summary: ...
def parse_utc_offset(s: str) -> int: ...
def parse_alarm_flags(s: str) -> Optional[int]: ...
def event_ids(vins: list[str], days: npt.NDArray[np.int64], model_id: str) -> list[str]: ...

def evaluate_files(
    predictions: str,
    *,
    daily: Optional[str] = None,
    truth: Optional[str] = None,
    windows: Optional[str] = None,
    threshold: Optional[float] = None,
    horizon: Optional[int] = None,
    model: Optional[str] = None,
) -> str: ...
def evaluate_arrays(
    vins: list[str],
    days: "np.ndarray[Any, np.dtype[np.int64]]",
    probs: "np.ndarray[Any, np.dtype[np.float32]]",
    *,
    kind: str,
    label_vins: list[str],
    label_days: "np.ndarray[Any, np.dtype[np.int64]]",
    label_values: "np.ndarray[Any, np.dtype[np.float64]]",
    threshold: float,
    horizon: int,
) -> str: ...

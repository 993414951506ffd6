"""Attach the ``bms.*`` feature contract (SPEC §7) to an exported ONNX model.

Needs the ``onnx`` package (``pip install 'bms-py[export]'``)::

    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    onx = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, 84]))])
    open("plain.onnx", "wb").write(onx.SerializeToString())
    bms.export.attach_contract("plain.onnx", "model.onnx", context=14, horizon=14,
                               features=bms.REFERENCE_COLUMNS, fill=-1.0,
                               threshold=0.15, model_id="consistency-v1")
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Optional, Sequence, Union

from . import _bms
from ._bms import DAILY_COLUMNS, REFERENCE_COLUMNS, InvalidInputError, ModelError

__all__ = ["attach_contract", "CONTRACT_KEYS"]

CONTRACT_KEYS = (
    "bms.context_days",
    "bms.horizon_days",
    "bms.features",
    "bms.fill_value",
    "bms.threshold",
    "bms.model_id",
)
"""The ``metadata_props`` keys :func:`attach_contract` writes."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "bms.export needs the onnx package: pip install 'bms-py[export]' (or pip install onnx)"
        ) from None
    return onnx


def _input_width(model: Any) -> Optional[int]:
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"model: expected one input tensor, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value"):
        return int(dims[1].dim_value)
    return None


def attach_contract(
    onnx_in: Union[str, "os.PathLike[str]"],
    onnx_out: Union[str, "os.PathLike[str]"],
    *,
    context: int = 14,
    horizon: int = 14,
    features: Optional[Sequence[str]] = None,
    fill: float = -1.0,
    threshold: float = 0.5,
    model_id: str,
) -> None:
    """Writes ``onnx_in`` to ``onnx_out`` with the ``bms.*`` contract in its
    ``metadata_props`` (replacing any earlier ``bms.*`` entries, keeping the others).

    The contract is checked before anything is written: ``features`` must be daily column
    names (default the six reference columns), ``context × len(features)`` must equal the
    model's input width, ``threshold`` must lie in [0, 1] and ``model_id`` must be non-empty.
    The result is loaded back with :class:`bms.Model` before it replaces ``onnx_out``, so a
    file that bms cannot serve is never left behind.

    Raises:
        InvalidInputError: a bad argument.
        ModelError: the model cannot be read or its width disagrees with the contract.
        ImportError: the onnx package is missing.
    """
    onnx = _onnx()
    feats = list(REFERENCE_COLUMNS) if features is None else [str(f) for f in features]
    if isinstance(features, str):
        raise InvalidInputError("features: expected a list of column names, got a string")
    unknown = [f for f in feats if f not in DAILY_COLUMNS]
    if unknown or not feats:
        raise InvalidInputError(
            f"invalid features: {', '.join(unknown) or 'an empty list'} "
            f"(known columns: {', '.join(DAILY_COLUMNS)})"
        )
    for name, v in (("context", context), ("horizon", horizon)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"invalid {name}: {v!r} (must be a whole number ≥ 1)")
    if not math.isfinite(float(fill)):
        raise InvalidInputError(f"invalid fill: {fill!r} (must be a finite number)")
    if not 0.0 <= float(threshold) <= 1.0:
        raise InvalidInputError(f"invalid threshold: {threshold!r} (must be in [0, 1])")
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidInputError(f"invalid model_id: {model_id!r} (must be a non-empty string)")

    src = os.fspath(onnx_in)
    try:
        model = onnx.load(src)
    except FileNotFoundError:
        raise
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelError(f"{src}: model: not a readable ONNX model ({e})") from None
    width = _input_width(model)
    if width is not None and width != context * len(feats):
        raise ModelError(
            f"{src}: model input width {width} does not match the contract "
            f"({context} days × {len(feats)} features = {context * len(feats)})"
        )
    entries = {
        "bms.context_days": str(context),
        "bms.horizon_days": str(horizon),
        "bms.features": ",".join(feats),
        "bms.fill_value": repr(float(fill)),
        "bms.threshold": repr(float(threshold)),
        "bms.model_id": model_id.strip(),
    }
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("bms.")]
    del model.metadata_props[:]
    for k, v in kept + list(entries.items()):
        p = model.metadata_props.add()
        p.key, p.value = k, v

    dst = os.fspath(onnx_out)
    directory = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".bms-contract-", suffix=".onnx", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        _bms.Model(tmp)  # must load, with the contract just written
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

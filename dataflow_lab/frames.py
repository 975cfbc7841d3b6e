"""A pandas DataFrame's rows as dicts of native Python values, for the bulk nodes (rows.iter_records).

pandas is never imported here: a DataFrame is read through its own methods.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["frame_records"]


def frame_records(
    frame: Any, names: list[str], start: int, stop: int, fill: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A DataFrame slice -> dicts of native Python values; NaN, NaT and NA become ``fill`` or None."""
    part = frame.iloc[start:stop]
    columns = [_native_column(part[c], fill.get(n)) for c, n in zip(part.columns, names, strict=True)]
    return [dict(zip(names, values)) for values in zip(*columns)] if columns else []


def _native_column(series: Any, default: Any = None) -> list[Any]:
    """A column's native values; a missing one becomes ``default`` (a fresh copy of a dict or list)."""
    kind = str(series.dtype)
    missing = (lambda: copy.deepcopy(default)) if isinstance(default, dict | list) else (lambda: default)
    if kind.startswith("datetime64"):
        values = series.astype(object).tolist()
        return [missing() if v is None or v != v else v.to_pydatetime() for v in values]
    values = series.tolist()
    if kind in ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool"):
        return values  # these dtypes cannot hold a missing value
    return [missing() if _missing(v) else v for v in values]  # float, str, object, category, nullable


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")

"""Strict JSON results files: non-finite floats become null (``NaN`` is not JSON), and files are
written to a temporary name and renamed, so a reader never sees half a file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def strict(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None, tuples by lists, and any other
    non-JSON value by its ``str``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return strict(obj.item())
    return str(obj)


def write_json_atomic(path: str | Path, obj: Any, indent: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(strict(obj), indent=indent, allow_nan=False))
    tmp.replace(path)
    return path

"""Numbers in DICOMweb URLs and query parameters, parsed strictly.

Python's int() and float() take more than a URL should carry: Unicode digits (`١٢`, and
`²`, which isdigit() accepts but int() refuses), `nan`, `inf`, and integers too large for the
database. Each is refused here with a 400 naming the parameter, never passed on to fail later.
"""

from __future__ import annotations

import math
import re

from .errors import DicomwebError

_INTEGER = re.compile(r"[0-9]{1,18}", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?", re.ASCII)


def integer(text: str, name: str, low: int = 0, high: int | None = None) -> int:
    """`text` as an integer from `low` to `high`; 400 otherwise."""
    digits = text.strip()  # what is checked is what is parsed: strip() takes more than int()
    value = int(digits) if _INTEGER.fullmatch(digits) else None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise DicomwebError(400, f"{name} must be an integer {bounds}, not {text!r}")
    return value


def decimals(text: str, name: str, count: int) -> list[float]:
    """The first `count` comma-separated finite decimal numbers of `text`; 400 otherwise."""
    items = [item.strip() for item in text.split(",")[:count]]
    if len(items) != count or not all(_DECIMAL.fullmatch(item) for item in items):
        raise DicomwebError(400, f"{name} must be {count} comma-separated numbers, not {text!r}")
    values = [float(item) for item in items]
    if not all(math.isfinite(value) for value in values):
        raise DicomwebError(400, f"{name} is out of range: {text!r}")
    return values

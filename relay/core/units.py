"""Parsing of the human units operators write in routes.toml: durations and byte sizes."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string like "500ms", "5s", "10m", "10h", "7d"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5s', got {value!r}")
    if isinstance(value, int | float):
        # TOML has `inf` and `nan` floats; neither is a usable delay or timeout.
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration like '5s', '10m' or '10h', got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string like "512KiB", "1MiB", "2MB"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '1MiB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"a size must be positive, got {value!r}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            size = int(match.group(1)) * _SIZE_UNITS[unit]
            if size > 0:
                return size
    raise ValueError(f"expected a size in bytes or like '512KiB' or '1MiB', got {value!r}")


def format_duration(seconds: float) -> str:
    """The shortest exact unit form of a duration: 0.5 -> "500ms", 36000 -> "10h", 90 -> "90s"."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{_trim(seconds)}s"
    return f"{_trim(seconds * 1000)}ms"


def _trim(value: float) -> str:
    # Fixed notation: parse_duration takes no exponent, and 3 decimals is finer than anyone sets.
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_size(size: int) -> str:
    """A byte size in the largest binary unit that divides it: 1048576 -> "1MiB"."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"

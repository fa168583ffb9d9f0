"""Byte sizes and large counts as the command line spells them, and back.

Byte sizes (`parse_bytes`) follow SI for KB/MB/GB (powers of 1000) and IEC for KiB/MiB/GiB (powers
of 1024). SI is the safe reading of an ambiguous "4MB": 4,000,000 bytes fits a device whichever
convention its datasheet used, while 4 MiB might not.
"""

from __future__ import annotations

import math
import re

from edgecl.errors import EdgeclError
from edgecl.limits import shown

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
    "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int, option: str = "--memory-bytes") -> int:
    """Parse a byte size: `1000`, `512KB` (SI, x1000), `4MiB` (IEC, x1024), `1.5MB`, `2 GB`.

    Units are case-insensitive: B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB (powers of 1024).
    A fractional result rounds down (a budget is a ceiling). Raises EdgeclError naming `option`
    for anything else, and for a size below one byte.
    """
    if isinstance(text, bool):
        raise EdgeclError(f"{option}: expected a byte size like 512KB, 4MiB or 1000, got {text!r}")
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise EdgeclError(f"{option}: expected a byte size like 512KB, 4MiB or 1000 "
                              f"(units B, KB, MB, GB = x1000; KiB, MiB, GiB = x1024), got {text!r}")
        number = match.group(1)
        # Integers stay exact; decimals go through float (more than enough for byte budgets).
        scaled = float(number) * _UNITS[unit] if not number.isdigit() else None
        if scaled is not None and not math.isfinite(scaled):
            raise EdgeclError(f"{option}: expected a byte size within float range, "
                              f"got {shown(text)}")
        size = int(number) * _UNITS[unit] if scaled is None else math.floor(scaled)
    if size < 1:
        raise EdgeclError(f"{option}: expected at least 1 byte, got {text!r}")
    return size


_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)
_COUNT_SUFFIX = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}


def parse_count(text: str | int, option: str) -> int:
    """Parse a large positive count such as a MAC budget: `2000000`, `2e9`, `500M`, `3G` (SI)."""
    if isinstance(text, int) and not isinstance(text, bool):
        count = text
    else:
        match = _COUNT.match(str(text))
        if match is None:
            raise EdgeclError(f"{option}: expected a positive count like 500M, 2G or 2e9, "
                              f"got {text!r}")
        scaled = float(match.group(1)) * _COUNT_SUFFIX[match.group(2).lower()]
        if not math.isfinite(scaled):
            raise EdgeclError(f"{option}: expected a count within float range, got {shown(text)}")
        count = math.floor(scaled)
    if count < 1:
        raise EdgeclError(f"{option}: expected a positive count like 500M, 2G or 2e9, got {text!r}")
    return count


def format_bytes(size: int | float | None) -> str:
    """Human-readable size in SI units (the parse_bytes convention): `512 B`, `1.5 MB`."""
    if size is None:
        return "-"
    for unit, factor in (("GB", 1000 ** 3), ("MB", 1000 ** 2), ("KB", 1000)):
        if abs(size) >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{int(size)} B"

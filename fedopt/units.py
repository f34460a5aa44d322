"""Parse the units users write ("-174 dBm/Hz", "200 mW", "23 dBm", "20 MHz", "0 dB").

Every config value is stored in SI. A bare number is taken as SI; a string may carry a unit
suffix that matches the key's dimension.
"""

from __future__ import annotations

import math
import re

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

# dimension -> {unit suffix (lower case) -> function to SI}
_UNITS: dict[str, dict[str, callable]] = {
    "power": {
        "w": lambda v: v,
        "mw": lambda v: v * 1e-3,
        "uw": lambda v: v * 1e-6,
        "dbm": lambda v: 10 ** (v / 10) * 1e-3,
        "dbw": lambda v: 10 ** (v / 10),
    },
    "psd": {
        "w/hz": lambda v: v,
        "mw/hz": lambda v: v * 1e-3,
        "dbm/hz": lambda v: 10 ** (v / 10) * 1e-3,
        "dbw/hz": lambda v: 10 ** (v / 10),
    },
    "frequency": {
        "hz": lambda v: v,
        "khz": lambda v: v * 1e3,
        "mhz": lambda v: v * 1e6,
        "ghz": lambda v: v * 1e9,
    },
    "ratio": {"db": lambda v: 10 ** (v / 10), "": lambda v: v},
    "time": {"s": lambda v: v, "ms": lambda v: v * 1e-3},
    "length": {"m": lambda v: v, "km": lambda v: v * 1e3},
    "density": {"/m2": lambda v: v, "/km2": lambda v: v * 1e-6},
}


def parse_quantity(value: object, dimension: str | None) -> float:
    """Return ``value`` in SI. Raises ``ValueError`` with a short reason."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    m = re.fullmatch(_NUM + r"(.*)", text)
    if not m:
        if text.lower() in ("nan", "inf", "-inf", "+inf"):
            return float(text)
        raise ValueError(f"cannot read {value!r} as a number")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit == "":
        return number
    units = _UNITS.get(dimension or "", {})
    if unit not in units:
        known = ", ".join(u for u in units if u) or "none (plain SI numbers only)"
        raise ValueError(f"unit {m.group(2)!r} not accepted here; accepted units: {known}")
    out = units[unit](number)
    return out if math.isfinite(out) else float("nan")

"""Numbers read from flags, TOML and JSON alike: the one place that says what counts as a whole
number or a finite one (the callers say what range is allowed, in their own words)."""

from __future__ import annotations

import math
import re


def whole(value: object) -> int | None:
    """An int, or its decimal text (flags arrive as text; '_' separators and a sign allowed);
    None for anything else: a bool, a float, or digits past Python's int-from-text limit."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    if isinstance(value, int):
        return value
    text = value.strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return None


def finite(value: object) -> float | None:
    """A finite float, from a number or its text; None for anything else, a bool included."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        return None
    return number if math.isfinite(number) else None


def shown(value: object, limit: int = 40) -> str:
    """repr(value) for a message, its middle cut out when it is long: a 5,000-digit flag stays a
    readable line (repr of an int past the int-to-text limit would even raise)."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    text = repr(value)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"

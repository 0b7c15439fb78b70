"""CheckSpec: everything that defines one check, validated once when it is built.

Nothing here imports torch: specs are built (and bad input refused) before torch is loaded, and the
same plain object is pickled to a Slurm node.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from autograd_check.errors import BadInput

MAX_RANK = 8
DEFAULT_SEED = 0
DTYPES: dict[str, int] = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
"""Supported dtypes and their size in bytes."""

# The defaults torch.testing.assert_close uses for each dtype (rtol, atol).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}
LOSSES = ("mse-sum",)
_DEVICE_RE = re.compile(r"^(cpu|auto|cuda|cuda:(\d+))$")


@dataclass(frozen=True)
class CheckSpec:
    """One gradient check. Defaults reproduce the tutorial: 3x8, float32, MSE-sum, CPU."""

    shape: tuple[int, ...] = (3, 8)
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = DEFAULT_SEED
    rtol: float | None = None
    atol: float | None = None
    exact: bool = False
    loss: str = "mse-sum"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype]

    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol): the ones given, else torch.testing.assert_close's defaults for the dtype."""
        rtol, atol = DEFAULT_TOLERANCES[self.dtype]
        return (rtol if self.rtol is None else self.rtol, atol if self.atol is None else self.atol)

    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckSpec:
        return build_spec(data)


def parse_shape(value: object) -> tuple[int, ...]:
    """'3x8', '3,8', [3, 8] or 24 → a tuple of 1 to 8 positive dimensions."""
    allowed = f"1 to {MAX_RANK} positive integers separated by 'x' or ',' (e.g. 3x8)"
    if isinstance(value, int) and not isinstance(value, bool):
        parts: list[object] = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = [p.strip() for p in re.split(r"[x,]", text)] if text else []
    else:
        raise BadInput(f"shape {value!r} is not a shape; expected {allowed}")
    if not parts:
        raise BadInput(f"shape {value!r} is empty; expected {allowed}")
    if len(parts) > MAX_RANK:
        raise BadInput(f"shape {value!r} has {len(parts)} dimensions; at most {MAX_RANK} allowed")
    dims: list[int] = []
    for i, part in enumerate(parts, start=1):
        if isinstance(part, bool):
            raise BadInput(f"shape {value!r}: dimension {i} is {part!r}; expected {allowed}")
        if isinstance(part, int):
            dim = part
        elif isinstance(part, str) and re.fullmatch(r"[+-]?\d+", part):
            dim = int(part)
        elif part == "":
            raise BadInput(f"shape {value!r}: dimension {i} is missing; expected {allowed}")
        else:
            raise BadInput(
                f"shape {value!r}: dimension {i} is {part!r}, not an integer; expected {allowed}"
            )
        if dim <= 0:
            raise BadInput(f"shape {value!r}: dimension {i} is {dim}; dimensions must be >= 1")
        dims.append(dim)
    return tuple(dims)


def parse_dtype(value: object) -> str:
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        if name in DTYPES:
            return name
    raise BadInput(f"dtype {value!r} is not supported; choose one of {', '.join(DTYPES)}")


def parse_device(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if _DEVICE_RE.match(text):
        return text
    raise BadInput(f"device {value!r} is not known; choose cpu, cuda, cuda:N (N >= 0) or auto")


def parse_seed(value: object) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"\d+", text):
        raise BadInput(f"seed {value!r} is not a non-negative integer")
    seed = int(text)
    if seed >= 2**63:
        raise BadInput(f"seed {value!r} is too large; seeds go from 0 to 2**63 - 1")
    return seed


def parse_tolerance(name: str, value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise BadInput(f"{name} {value!r} is not allowed; expected a finite number >= 0 (e.g. 1e-5)")
    return number


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise BadInput(f"{name} {value!r} is not allowed; expected true or false")


def parse_loss(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in LOSSES:
        return value.strip().lower()
    raise BadInput(f"loss {value!r} is not known; choose one of {', '.join(LOSSES)}")


_PARSERS = {
    "shape": parse_shape,
    "dtype": parse_dtype,
    "device": parse_device,
    "seed": parse_seed,
    "rtol": lambda v: parse_tolerance("rtol", v),
    "atol": lambda v: parse_tolerance("atol", v),
    "exact": lambda v: parse_bool("exact", v),
    "loss": parse_loss,
}
SPEC_KEYS = tuple(f.name for f in fields(CheckSpec))


def build_spec(values: Mapping[str, Any]) -> CheckSpec:
    """Validate raw values (flags, TOML, JSON) into a CheckSpec; None means 'use the default'."""
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise BadInput(f"unknown check option {unknown[0]!r}; known: {', '.join(SPEC_KEYS)}")
    parsed: dict[str, Any] = {}
    for key in SPEC_KEYS:
        raw = values.get(key)
        if raw is not None:
            parsed[key] = _PARSERS[key](raw)
    return CheckSpec(**parsed)

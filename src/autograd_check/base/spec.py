"""CheckSpec: everything that defines one check, validated once when it is built.

Nothing here imports torch: specs are built (and bad input refused) before torch is loaded, and the
same plain object is pickled to a Slurm node.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from autograd_check.base.budget import ensure_affordable
from autograd_check.base.errors import BadInput
from autograd_check.base.numbers import finite, shown, whole

MAX_RANK = 8
DEFAULT_SEED = 0
LOSS_NAMES = ("mse-sum", "mse-mean", "l1", "huber", "bce-logits", "cross-entropy")
"""The built-in losses, by name (losses/builtin.py holds one loss for each, and checks so)."""
DEFAULT_DELTA = 1.0
"""Huber's δ when none is given."""
DTYPES: dict[str, int] = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
"""Supported dtypes and their size in bytes."""

# The defaults torch.testing.assert_close uses for each dtype (rtol, atol).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}
MODELS = ("linear", "mlp")
DEFAULT_HIDDEN = 16
MAX_HIDDEN = 1 << 16
REFERENCES = ("manual", "finite-diff", "projection", "forward")
"""What autograd is checked against: the hand-derived gradient (always, when there is one), and
with finite-diff also central differences in float64 (reference.py documents the step and the
tolerances); projection (directional finite differences along random directions) and forward
(forward-mode jvp against reverse-mode vjp) run through the Python API
(references/independent.py)."""
REFERENCE_ALIASES = {"autograd": "manual"}
"""The Python API's name for the default reference, accepted as the CLI's."""
DEFAULT_MAX_FD_ELEMENTS = 65536
"""--reference finite-diff perturbs every element twice: O(n²) work, refused past this many."""
MAX_REPEAT = 10_000
PARALLELS = ("ddp", "fsdp")
"""How --ranks wraps the model: DistributedDataParallel, or FSDP2 (fully_shard)."""
MAX_RANKS = 1024
MAX_ACCUMULATE = 1024
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
    delta: float | None = None
    """Huber's δ; set (default 1.0) exactly when loss is huber."""
    model: str | None = None
    """None: predicted is drawn directly. linear / mlp: predicted is a small model's output."""
    hidden: int | None = None
    """The mlp's hidden width; set (default 16) exactly when model is mlp."""
    target: str | None = None
    """A user's loss, 'FILE.py:NAME' (absolute path) or 'package.module:NAME', in place of loss."""
    reference: str = "manual"
    """manual: autograd against the manual gradient; finite-diff: central differences too."""
    order: int = 1
    """2: also the double backward (gradients of the gradient) against finite differences."""
    max_fd_elements: int = DEFAULT_MAX_FD_ELEMENTS
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True) and what CUDA needs for it, during the check."""
    repeat: int = 1
    """Compute the autograd gradient this many times on fresh graphs and compare them bitwise."""
    ranks: int | None = None
    """None: one process. N: the gradients of N ranks (DDP or FSDP2) against one process's
    full-batch gradient (distributed/)."""
    parallel: str | None = None
    """ddp or fsdp; set (default ddp) exactly when ranks is."""
    accumulate: int | None = None
    """Micro-batches per rank, accumulated under no_sync; set (default 1) exactly when ranks is."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype]

    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol): those given, else torch.testing.assert_close's defaults for the dtype."""
        rtol, atol = DEFAULT_TOLERANCES[self.dtype]
        return (rtol if self.rtol is None else self.rtol, atol if self.atol is None else self.atol)

    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data


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
        raise BadInput(f"shape {shown(value)} is not a shape; expected {allowed}")
    if not parts:
        raise BadInput(f"shape {shown(value)} is empty; expected {allowed}")
    if len(parts) > MAX_RANK:
        raise BadInput(
            f"shape {shown(value)} has {len(parts)} dimensions; at most {MAX_RANK} allowed"
        )
    dims: list[int] = []
    for i, part in enumerate(parts, start=1):
        if isinstance(part, bool):
            raise BadInput(
                f"shape {shown(value)}: dimension {i} is {shown(part)}; expected {allowed}"
            )
        if isinstance(part, int):
            dim = part
        elif isinstance(part, str) and re.fullmatch(r"[+-]?\d+", part):
            number = whole(part)
            if number is None:  # past Python's int-from-text limit: no tensor is that large
                raise BadInput(f"shape {shown(value)}: dimension {i} is {shown(part)}, far too "
                               "large")
            dim = number
        elif part == "":
            raise BadInput(f"shape {shown(value)}: dimension {i} is missing; expected {allowed}")
        else:
            raise BadInput(
                f"shape {shown(value)}: dimension {i} is {shown(part)}, not an integer; "
                f"expected {allowed}"
            )
        if dim <= 0:
            raise BadInput(f"shape {shown(value)}: dimension {i} is {dim}; dimensions must be >= 1")
        dims.append(dim)
    return tuple(dims)


def parse_dtype(value: object) -> str:
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        if name in DTYPES:
            return name
    raise BadInput(f"dtype {shown(value)} is not supported; choose one of {', '.join(DTYPES)}")


def parse_device(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if _DEVICE_RE.match(text):
        return text
    raise BadInput(f"device {shown(value)} is not known; choose cpu, cuda, cuda:N (N >= 0) or auto")


def parse_seed(value: object) -> int:
    seed = whole(value)
    if seed is None or seed < 0:
        raise BadInput(f"seed {shown(value)} is not a non-negative integer")
    if seed >= 2**64:  # what torch.manual_seed accepts
        raise BadInput(f"seed {shown(value)} is too large; seeds go from 0 to 2**64 - 1")
    return seed


def parse_tolerance(name: str, value: object) -> float | None:
    if value is None:
        return None
    number = finite(value)
    if number is None or number < 0:
        raise BadInput(
            f"{name} {shown(value)} is not allowed; expected a finite number >= 0 (e.g. 1e-5)"
        )
    return number


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise BadInput(f"{name} {shown(value)} is not allowed; expected true or false")


def parse_loss(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in LOSS_NAMES:
        return value.strip().lower()
    raise BadInput(f"loss {shown(value)} is not known; choose one of {', '.join(LOSS_NAMES)}")


def parse_delta(value: object) -> float:
    number = finite(value)
    if number is None or number <= 0:
        raise BadInput(f"delta {shown(value)} is not allowed; Huber's delta is a finite number > 0")
    return number


def parse_model(value: object) -> str | None:
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "none":
        return None
    if text in MODELS:
        return text
    raise BadInput(f"model {shown(value)} is not known; choose linear, mlp (or none)")


def parse_hidden(value: object) -> int:
    width = whole(value)
    if width is None or not 1 <= width <= MAX_HIDDEN:
        raise BadInput(
            f"hidden {shown(value)} is not allowed; expected an integer, 1 to {MAX_HIDDEN}"
        )
    return width


_IDENTIFIERS = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _is_utf8(text: str) -> bool:
    """False for text that holds bytes no UTF-8 decoding gave (a file name's, as os.fsdecode
    keeps them: lone surrogates), which cannot be written as UTF-8 or JSON text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_target(value: object) -> str:
    """'FILE.py:NAME' (the file must exist; stored as an absolute path, so that a Slurm node on
    the same filesystem finds it) or 'package.module:NAME'. The import itself waits for the run."""
    form = "FILE.py:NAME or package.module:NAME"
    text = value.strip() if isinstance(value, str) else ""
    where, colon, name = text.rpartition(":")
    if not colon:
        where, name = text, ""
    if not where or (colon and not _IDENTIFIERS.fullmatch(name)):
        raise BadInput(f"target {shown(value)} is not {form}")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        if path.is_dir():
            raise BadInput(f"target {shown(value)}: {where!r} is a folder, not a .py file; name "
                           f"a file in it ({where.rstrip('/')}/FILE.py:NAME)")
        if path.suffix != ".py":
            raise BadInput(f"target {shown(value)}: {where!r} is not a .py file; expected {form}")
        if not path.is_file():
            raise BadInput(f"target {shown(value)}: file {where!r} does not exist")
        where = str(path.resolve())
        if not _is_utf8(where):  # a byte-named file (or folder): a spec travels as JSON text
            raise BadInput(f"target {shown(value)}: the path {where!r} is not valid UTF-8; rename "
                           "the file (or its folder) to a UTF-8 name")
    elif not _IDENTIFIERS.fullmatch(where):
        raise BadInput(f"target {shown(value)}: {where!r} is neither a .py file nor a module; "
                       f"expected {form}")
    return f"{where}:{name}" if name else where


def parse_reference(value: object) -> str:
    text = value.strip().lower().replace("_", "-") if isinstance(value, str) else ""
    text = REFERENCE_ALIASES.get(text, text)
    if text in REFERENCES:
        return text
    raise BadInput(f"reference {shown(value)} is not known; choose one of {', '.join(REFERENCES)}")


def parse_parallel(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in PARALLELS:
        return text
    raise BadInput(f"parallel {shown(value)} is not known; choose one of {', '.join(PARALLELS)}")


def parse_count(name: str, value: object, low: int, high: int) -> int:
    """A whole number in [low, high], from an int or its decimal text."""
    number = whole(value)
    if number is None or not low <= number <= high:
        raise BadInput(
            f"{name} {shown(value)} is not allowed; expected an integer from {low} to {high}"
        )
    return number


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "shape": parse_shape,
    "dtype": parse_dtype,
    "device": parse_device,
    "seed": parse_seed,
    "rtol": lambda v: parse_tolerance("rtol", v),
    "atol": lambda v: parse_tolerance("atol", v),
    "exact": lambda v: parse_bool("exact", v),
    "loss": parse_loss,
    "delta": parse_delta,
    "model": parse_model,
    "hidden": parse_hidden,
    "target": parse_target,
    "reference": parse_reference,
    "order": lambda v: parse_count("order", v, 1, 2),
    "max_fd_elements": lambda v: parse_count("max_fd_elements", v, 1, 2**40),
    "deterministic": lambda v: parse_bool("deterministic", v),
    "repeat": lambda v: parse_count("repeat", v, 1, MAX_REPEAT),
    "ranks": lambda v: parse_count("ranks", v, 1, MAX_RANKS),
    "parallel": parse_parallel,
    "accumulate": lambda v: parse_count("accumulate", v, 1, MAX_ACCUMULATE),
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
    spec = CheckSpec(**_combine(parsed))
    if spec.reference == "finite-diff":
        ensure_affordable(spec)  # refuse a finite-difference check that would run for hours
    return spec


def _combine(parsed: dict[str, Any]) -> dict[str, Any]:
    """Options that only mean something together: refuse the meaningless, fill their defaults."""
    loss, model = parsed.get("loss", "mse-sum"), parsed.get("model")
    if "delta" in parsed and loss != "huber":
        raise BadInput(f"delta applies only to loss huber, not {loss!r}")
    if "hidden" in parsed and model != "mlp":
        raise BadInput(f"hidden applies only to model mlp, not {model or 'none'!r}")
    if "target" in parsed and loss != "mse-sum":
        raise BadInput(f"target replaces the loss: give target or loss {loss!r}, not both")
    if parsed.get("repeat", 1) > 1 and (
        parsed.get("reference") in ("projection", "forward") or parsed.get("order", 1) == 2
    ):
        raise BadInput("repeat applies to reference manual or finite-diff at order 1, not to "
                       f"reference {parsed.get('reference', 'manual')!r}, order "
                       f"{parsed.get('order', 1)}")
    _combine_ranks(parsed)
    if loss == "huber":
        parsed.setdefault("delta", DEFAULT_DELTA)
    if model == "mlp":
        parsed.setdefault("hidden", DEFAULT_HIDDEN)
    return parsed


def _combine_ranks(parsed: dict[str, Any]) -> None:
    """--ranks N: a model (--model or a --target module) split over N ranks, checked against one
    process; what it does not combine with is refused here, before anything starts."""
    ranks = parsed.get("ranks")
    if ranks is None:
        for key in ("parallel", "accumulate"):
            if key in parsed:
                raise BadInput(f"{key} applies only with ranks (e.g. --ranks 2)")
        return
    if parsed.get("model") is None and "target" not in parsed:
        raise BadInput("ranks needs a model to split over ranks: give --model linear|mlp or a "
                       "--target module with inputs(generator, dtype, device)")
    for key, allowed in (("reference", "manual"), ("order", 1), ("repeat", 1)):
        if parsed.get(key, allowed) != allowed:
            raise BadInput(f"{key} {parsed[key]!r} does not combine with ranks: the reference of "
                           "a check over ranks is one process's full-batch autograd gradient")
    parsed.setdefault("parallel", "ddp")
    parsed.setdefault("accumulate", 1)
    shards = ranks * parsed["accumulate"]
    if "shape" not in parsed and parsed.get("model") is not None and 3 % shards:
        # the tutorial's 3x8 does not split: the smallest batch of two rows per micro-batch
        parsed["shape"] = (shards * 2, 8)
    shape = parsed.get("shape", (3, 8))
    if parsed.get("model") is not None and (len(shape) < 2 or shape[0] % shards):
        raise BadInput(
            f"shape {'x'.join(map(str, shape))}: its first dimension (the batch) must split into "
            f"{ranks} ranks x {parsed['accumulate']} micro-batches of equal size and the last is "
            f"the features; choose e.g. {shards * 2}x{shape[-1]}"
        )


def nondet_tol(spec: CheckSpec) -> float:
    """How far two backwards of one graph may differ in a check's verdict: 0 with
    --deterministic, else any spread is information only (as --repeat reports it)."""
    return 0.0 if spec.deterministic else float("inf")

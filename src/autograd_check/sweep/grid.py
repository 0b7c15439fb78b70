"""Sweep grids: axes of values (--shapes 3x8,64x64 --seeds 0-9 ...) expanded into keyed cases.

Pure Python: every value is validated through `build_spec`, so a sweep accepts exactly what `run`
accepts, and nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.numbers import shown, whole
from autograd_check.base.spec import (
    MAX_ACCUMULATE,
    MAX_RANKS,
    SPEC_KEYS,
    CheckSpec,
    build_spec,
    parse_count,
    parse_parallel,
)
from autograd_check.losses.user import short_name

DEFAULT_MAX_CASES = 10_000
"""A grid with more cases than this is refused unless --max-cases says otherwise."""

AXES: dict[str, str] = {
    "shapes": "shape",
    "dtypes": "dtype",
    "devices": "device",
    "losses": "loss",
    "seeds": "seed",
}
"""Grid axis → the CheckSpec field it varies."""

AXIS_OF = {field: axis for axis, field in AXES.items()}
OPTIONAL_AXES: dict[str, str] = {"ranks": "ranks", "parallel": "parallel"}
"""Axes that exist only when given (--ranks 1,2,4, --parallel ddp,fsdp): a grid without them is
the grid it always was (same cases, keys, manifest and id). The flag is the check option's own."""
GRID_AXES: dict[str, str] = {**AXES, **OPTIONAL_AXES}
"""Every axis a grid can have → the CheckSpec field it varies."""
_AXIS_WORDS = {"ranks": ("rank count", "rank counts"), "parallel": ("wrapper", "wrappers")}
_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclass(frozen=True)
class Case:
    """One point of the grid: its key (file name in the store), position and spec."""

    key: str
    index: int
    spec: CheckSpec


@dataclass(frozen=True)
class Grid:
    """Values along each axis, plus the check options every case shares (rtol, atol, exact...)."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    common: tuple[tuple[str, Any], ...] = ()
    dropped: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    """Values given more than once and kept once ('--seeds: 1'), for the CLI to mention."""
    ranks: tuple[int, ...] = ()
    """Rank counts (--ranks 1,2,4); empty: no ranks axis (each case one process, as before)."""
    parallel: tuple[str, ...] = ()
    """ddp / fsdp (--parallel); empty: no parallel axis (the cases' default, ddp, with ranks)."""
    own_inputs: bool = False
    """The --target gives its own inputs (inputs(generator, dtype, device)): no shape axis, and
    its cases are named without one."""

    def spec_value(self, key: str) -> Any:
        """A check option every case shares (validated), or None."""
        return dict(self.common).get(key)

    def axis(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(self, name))

    @property
    def axes(self) -> list[str]:
        """The axes this grid has: the five always, then ranks and parallel when given."""
        return [*AXES, *(a for a in OPTIONAL_AXES if self.axis(a))]

    @property
    def size(self) -> int:
        return math.prod(len(self.axis(a)) for a in self.axes)

    def size_text(self) -> str:
        """'120 cases (3 shapes × 2 dtypes × 1 device × 2 losses × 10 seeds)'."""
        parts = []
        for axis in self.axes:
            n = len(self.axis(axis))
            one, many = _AXIS_WORDS.get(axis, (AXES.get(axis, axis), axis))
            parts.append(f"{n} {many if n != 1 else one}")
        return f"{self.size} case{'s' if self.size != 1 else ''} ({' × '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the manifest; `from_dict` reads it back. ranks and parallel appear
        only when the grid has them (so a grid without them keeps its id)."""
        data: dict[str, Any] = {
            "shapes": ["x".join(str(d) for d in s) for s in self.shapes],
            "dtypes": list(self.dtypes),
            "devices": list(self.devices),
            "losses": list(self.losses),
            "seeds": list(self.seeds),
        }
        for axis in OPTIONAL_AXES:
            if self.axis(axis):
                data[axis] = list(self.axis(axis))
        data["check"] = dict(self.common)
        if self.own_inputs:  # only then: every other grid keeps its id
            data["own_inputs"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grid:
        own_inputs = data.get("own_inputs") is True
        # a target with its own inputs has the default shape only, which was not given
        values = {axis: data.get(axis) for axis in GRID_AXES
                  if not (own_inputs and axis == "shapes")}
        values.update(data.get("check", {}))
        return build_grid(values, own_inputs=own_inputs)

    def rank_counts(self) -> list[int | None]:
        """The distinct rank counts of the cases, in the grid's order ([None] without ranks)."""
        return list(self.ranks) if self.ranks else [None]

    def grid_id(self) -> str:
        """A short hash of the grid: two sweeps are the same sweep when their ids are equal."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cases(self) -> Iterator[Case]:
        """Every case, shapes outermost and seeds innermost, so neighbours cost about the same."""
        common = dict(self.common)
        # ranks and parallel vary fastest, after seeds; a grid without them has one None each
        product = itertools.product(self.shapes, self.dtypes, self.devices, self.losses,
                                    self.seeds, self.ranks or (None,), self.parallel or (None,))
        for index, (shape, dtype, device, loss, seed, ranks, parallel) in enumerate(product):
            values = {**common, "shape": shape, "dtype": dtype, "device": device, "loss": loss,
                      "seed": seed, "ranks": ranks, "parallel": parallel}
            if loss != "huber":
                # --delta is Huber's: the grid's other losses leave it out.
                values.pop("delta", None)
            key = case_key(shape, dtype, device, loss, seed, ranks, parallel,
                           target=common.get("target"), own_inputs=self.own_inputs)
            try:
                spec = build_spec(values)
            except BadInput as e:
                raise BadInput(f"case {key}: {e}") from None
            yield Case(key, index, spec)


def case_key(shape: tuple[int, ...], dtype: str, device: str, loss: str, seed: int,
             ranks: int | None = None, parallel: str | None = None, *,
             target: str | None = None, own_inputs: bool = False) -> str:
    """A file-name-safe, readable key: 3x8_float32_cpu_mse-sum_seed0 (cuda:1 becomes cuda1);
    with the ranks and parallel axes, ..._seed0_ranks2_fsdp. A --target stands where the loss
    does (its file's name and NAME: traps.py-RMSNorm), and a target that gives its own inputs
    has no shape: float32_cpu_traps.py-RMSNorm_seed0."""
    shape_text = "x".join(str(d) for d in shape)
    what = loss if target is None else re.sub(r"[^\w.+-]", "-", short_name(target))
    key = f"{shape_text}_" if not own_inputs else ""
    key += f"{dtype}_{device.replace(':', '')}_{what}_seed{seed}"
    if ranks is not None:
        key += f"_ranks{ranks}"
    if parallel is not None:
        key += f"_{parallel}"
    return key


def _items(axis: str, raw: object) -> list[object]:
    """Split a flag value ('a,b'), or take a TOML list / a single TOML value, into raw items."""
    if isinstance(raw, str):
        if not raw.strip():
            raise BadInput(f"--{axis} is empty; give at least one value")
        items: list[object] = [p.strip() for p in raw.split(",")]
        for position, item in enumerate(items, start=1):
            if item == "":
                raise BadInput(f"--{axis} {raw!r}: item {position} is empty")
        return items
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise BadInput(f"{axis} is an empty list; give at least one value")
        return list(raw)
    return [raw]


def _seed_items(raw: object) -> list[object]:
    """Seeds also take inclusive ranges: '0-9', '0-4,10,20-21'."""
    out: list[object] = []
    for item in _items("seeds", raw):
        match = _RANGE_RE.match(item) if isinstance(item, str) else None
        if match is None:
            out.append(item)
            continue
        first, last = whole(match[1]), whole(match[2])
        if first is None or last is None or max(first, last) >= 2**64:  # as parse_seed refuses
            raise BadInput(f"seed range {shown(item)} goes past the largest seed, 2**64 - 1")
        if first > last:
            raise BadInput(
                f"seed range {item!r} runs backwards; write it lowest first ({last}-{first})"
            )
        if last - first >= DEFAULT_MAX_CASES * 100:
            raise BadInput(f"seed range {item!r} is too large ({last - first + 1} seeds)")
        out.extend(range(first, last + 1))
    return out


def _axis_values(axis: str, raw: object) -> tuple[tuple[Any, ...], list[str]]:
    """(the axis's values in order, once each; the values that were given again)."""
    spec_field = GRID_AXES[axis]
    items = _seed_items(raw) if axis == "seeds" else _items(axis, raw)
    # dicts keep the order of first appearance and look values up by hash: linear in the number
    # of values (a list's `in` made 0-999998 quadratic: minutes)
    values: dict[Any, None] = {}
    again: dict[str, None] = {}
    for item in items:
        try:
            value = _parse_value(spec_field, item)
        except BadInput as e:
            raise BadInput(f"--{axis}: {e}") from None
        if value not in values:  # '0-9,5' means seeds 0 to 9, once each
            values[value] = None
        else:
            again[_value_text(value)] = None
    return tuple(values), list(again)


def _parse_value(spec_field: str, item: object) -> Any:
    """One value of an axis, parsed as the check option is (ranks and parallel alone: a spec
    of them alone would be refused for want of a model, or of ranks)."""
    if spec_field == "ranks":
        return parse_count("ranks", item, 1, MAX_RANKS)
    if spec_field == "parallel":
        return parse_parallel(item)
    return getattr(build_spec({spec_field: item}), spec_field)


def _value_text(value: Any) -> str:
    return "x".join(str(d) for d in value) if isinstance(value, tuple) else str(value)


def build_grid(values: Mapping[str, Any], own_inputs: bool = False) -> Grid:
    """Validate raw values (flags, TOML; None = not given) into a Grid.

    Keys are the axes (shapes, dtypes, devices, losses, seeds), their singular check options
    (shape, dtype, ... meaning a one-value axis) and the other check options shared by every case.
    own_inputs: the --target gives its own inputs (found at the edge, where it is imported), so
    a shape would be ignored: refused.
    """
    shaped = [f"--{k}" for k in ("shapes", "shape") if values.get(k) is not None]
    if own_inputs and shaped:
        raise BadInput(f"target {values.get('target')!r} gives its own inputs (inputs(generator, "
                       f"dtype, device)), so {shaped[0]} would be ignored: it applies only to a "
                       "built-in loss or a target with loss(predicted, real)")
    axes: dict[str, tuple[Any, ...]] = {}
    dropped: list[str] = []
    common: dict[str, Any] = {}
    default = CheckSpec()
    for key, raw in values.items():
        if raw is None:
            continue
        if key in OPTIONAL_AXES:
            # --ranks 1,2,4 (or one value, or a TOML list): the flag and the axis are one name
            axes[key], again = _axis_values(key, raw)
            if again:
                dropped.append(f"--{key}: {', '.join(again)}")
        elif key in AXES:
            if values.get(AXES[key]) is not None:
                raise BadInput(f"give --{AXES[key]} or --{key}, not both")
            axes[key], again = _axis_values(key, raw)
            if again:
                dropped.append(f"--{key}: {', '.join(again)}")
        elif key in AXIS_OF:
            if values.get(AXIS_OF[key]) is None:
                axes[AXIS_OF[key]], _ = _axis_values(AXIS_OF[key], [raw])
        elif key in SPEC_KEYS:
            common[key] = raw
        else:
            raise BadInput(f"unknown sweep option {key!r}")
    if "parallel" in axes and "ranks" not in axes:
        raise BadInput("--parallel applies only with --ranks (e.g. --ranks 1,2 --parallel "
                       "ddp,fsdp)")
    # Validate the shared options once, and keep them in their parsed (canonical) form. --delta is
    # validated as Huber's, since the grid's other losses leave it out.
    probe = {**common, "loss": "huber"} if "delta" in common and "target" not in common else common
    if "ranks" in axes:
        probe = _ranks_probe(probe)
    shared = build_spec(probe)
    common = {k: getattr(shared, k) for k in sorted(common)}
    if "ranks" in axes and "shapes" not in axes and common.get("model") is not None:
        axes["shapes"] = (ranks_shape(axes["ranks"], common.get("accumulate") or 1),)
    for axis, field in AXES.items():
        axes.setdefault(axis, (getattr(default, field),))
    if "delta" in common and "huber" not in axes["losses"]:
        raise BadInput(
            "delta applies only to loss huber, and the grid's losses are "
            + ", ".join(axes["losses"])
        )
    return Grid(
        shapes=axes["shapes"],
        dtypes=axes["dtypes"],
        devices=axes["devices"],
        losses=axes["losses"],
        seeds=axes["seeds"],
        common=tuple(common.items()),
        dropped=tuple(dropped),
        ranks=axes.get("ranks", ()),
        parallel=axes.get("parallel", ()),
        own_inputs=own_inputs,
    )


def ranks_shape(ranks: tuple[Any, ...], accumulate: int) -> tuple[int, int]:
    """The shape of a --model sweep over rank counts with no --shape: the tutorial's 3x8 when
    its batch splits into every count's micro-batches, else two rows per micro-batch of the
    least common multiple (as `run --ranks N` picks for one count)."""
    shards = math.lcm(*(int(r) * accumulate for r in ranks))
    return (3, 8) if 3 % shards == 0 else (shards * 2, 8)


def _ranks_probe(common: dict[str, Any]) -> dict[str, Any]:
    """The shared options as one case of a ranks axis sees them: with one rank and a shape whose
    batch splits into its micro-batches (each case's own shape is judged with the case)."""
    accumulate = common.get("accumulate")
    micro = 1 if accumulate is None else parse_count("accumulate", accumulate, 1, MAX_ACCUMULATE)
    return {**common, "ranks": 1, "shape": (micro, 1)}


def check_size(grid: Grid, max_cases: int) -> None:
    if grid.size > max_cases:
        raise BadInput(
            f"the grid has {grid.size_text()}, above --max-cases {max_cases}; "
            "narrow the grid or raise --max-cases"
        )


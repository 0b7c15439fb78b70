"""What a sweep is asked to do: its flags over the [check] and [sweep] tables of --config.

The flags were checked by the command line already (`--max-cases` >= 1 and so on); the values of a
[sweep] table are checked here, each problem naming the file, the table and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.numbers import finite
from autograd_check.base.safety import script_value
from autograd_check.config import check_table, checked_table
from autograd_check.slurm.allocation import current_allocation
from autograd_check.slurm.commands import have
from autograd_check.sweep.grid import AXIS_OF, DEFAULT_MAX_CASES, GRID_AXES
from autograd_check.sweep.store import DEFAULT_OUT

DEFAULT_CASE_TIMEOUT_S = 600.0
"""--case-timeout when not given (sweep.runner uses it too)."""

MODES = ("local", "slurm")
SETTING_KEYS = ("out", "mode", "max_cases", "cases_per_task", "max_parallel", "case_timeout")
SWEEP_KEYS = (*GRID_AXES, *SETTING_KEYS)
"""Keys of a config file's [sweep] table: the grid's axes (ranks and parallel too), then how the
sweep runs."""


@dataclass(frozen=True)
class SweepFlags:
    """The sweep's own flags; None means not given (the [sweep] table, else the default, holds)."""

    out: Path | None = None
    mode: str | None = None
    max_cases: int | None = None
    cases_per_task: int | None = None
    max_parallel: int | None = None
    case_timeout: float | None = None


@dataclass(frozen=True)
class Settings:
    """How the sweep runs, flags over the [sweep] table over the defaults."""

    out: Path = Path(DEFAULT_OUT)
    mode: str | None = None
    """'local' or 'slurm'; None: decided by where the sweep starts (`default_mode`)."""
    max_cases: int = DEFAULT_MAX_CASES
    cases_per_task: int = 1
    max_parallel: int | None = None
    case_timeout: float = DEFAULT_CASE_TIMEOUT_S
    """Seconds one case may run before it is stopped and recorded as timed out; 0: no limit."""


@dataclass(frozen=True)
class SweepRequest:
    """The grid's raw values (for `build_grid`), the settings, and the --config file if any."""

    grid_values: dict[str, Any]
    settings: Settings
    config: Path | None


def _check_setting(key: str, value: Any) -> None:
    """One [sweep] setting's value, as the flag would have been checked."""
    if key == "out":
        if not isinstance(value, str) or not value:
            raise BadInput(f"out {value!r} is not a directory name")
        script_value("out", value, path=True)
    elif key == "mode":
        if value not in MODES:
            raise BadInput(f"mode {value!r} is not known; choose 'local' or 'slurm'")
    elif key == "case_timeout":
        parse_case_timeout(value)
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{key} {value!r} is not allowed; expected an integer >= 1")


def parse_case_timeout(value: object) -> float:
    """--case-timeout or [sweep] case_timeout: seconds >= 0 (0: no limit)."""
    number = finite(value)
    if number is None or number < 0:
        raise BadInput(f"case_timeout {value!r} is not allowed; expected seconds >= 0 (e.g. 600; "
                       "0 for no limit)")
    return number


def check_settings(table: Mapping[str, Any]) -> None:
    """Validate the settings of a [sweep] table (its axes are checked when the grid is built)."""
    for key, value in table.items():
        if key in SETTING_KEYS:
            _check_setting(key, value)


def read_request(
    check_values: Mapping[str, Any], axis_values: Mapping[str, Any], flags: SweepFlags
) -> SweepRequest:
    """Merge the check flags (`check_values`, with "config"), the axis flags (shapes, dtypes...;
    None when not given) and the sweep's flags over the --config file's [check] and [sweep]."""
    values = dict(check_values)
    path: Path | None = values.pop("config", None)
    check_file = check_table(path)
    sweep_file = checked_table(path, "sweep", SWEEP_KEYS, check_settings)
    file_values = {**check_file, **{k: v for k, v in sweep_file.items() if k in GRID_AXES}}
    flag_values = {**values, **axis_values}
    for axis, field in GRID_AXES.items():
        # A flag for an axis (plural or singular) replaces the file's values for that axis.
        if flag_values.get(axis) is not None or flag_values.get(field) is not None:
            file_values.pop(axis, None)
            file_values.pop(field, None)
    grid_values = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    for field in AXIS_OF:
        grid_values.setdefault(field, None)
    chosen = {k: v for k, v in sweep_file.items() if k in SETTING_KEYS}
    chosen.update({k: getattr(flags, k) for k in SETTING_KEYS if getattr(flags, k) is not None})
    if "out" in chosen:
        # --out (and the [sweep] out) reaches the job script as the folder of DIR/logs
        chosen["out"] = Path(script_value("--out", str(chosen["out"]), path=True))
    if "case_timeout" in chosen:
        chosen["case_timeout"] = parse_case_timeout(chosen["case_timeout"])
    return SweepRequest(grid_values, Settings(**chosen), path)


def default_mode() -> str:
    """Slurm where sbatch is on PATH, unless this is already a job step (srun inside salloc or
    sbatch: the work is already where it should run); else local."""
    alloc = current_allocation()
    return "slurm" if have("sbatch") and not (alloc is not None and alloc.in_step) else "local"

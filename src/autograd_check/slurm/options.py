"""Slurm options: SlurmOptions, validated once (flags or a [slurm] table) before anything is sent
to Slurm."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.numbers import finite, shown, whole
from autograd_check.base.safety import mask_secrets, script_value
from autograd_check.slurm.log_dir import resolve_log_dir

DEFAULT_JOB_NAME = "autograd-check"
DEFAULT_TIME_MIN = 10
DEFAULT_TIMEOUT_S = 3600.0

# Options that the layer writes itself: letting --sbatch-arg change them would break how results
# and logs are found (output, error, open-mode, array) or duplicate a dedicated option.
MANAGED_SBATCH_KEYS = {
    "output": "it is set by --log-dir",
    "error": "it is set by --log-dir",
    "open-mode": "logs are appended so that requeued jobs keep their history",
    "array": "arrays are what `sweep` is for",
    "wrap": "the job script is generated",
    "partition": "use --partition",
    "time": "use --time",
    "cpus-per-task": "use --cpus",
    "mem": "use --mem",
    "account": "use --account",
    "qos": "use --qos",
    "constraint": "use --constraint",
    "job-name": "use --job-name",
}
GPU_SBATCH_KEYS = frozenset({"gres", "gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"})

SBATCH_LONG_OPTIONS = frozenset("""
    account acctg-freq array batch bb bbf begin chdir cluster cluster-constraint clusters comment
    constraint container contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu
    cpus-per-task deadline delay-boot dependency distribution error exclude exclusive export
    export-file extra-node-info get-user-env gid gpu-bind gpu-freq gpus gpus-per-node
    gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs input job-name
    kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu
    mem-per-gpu mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks
    ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode output
    overcommit oversubscribe parsable partition power prefer priority profile propagate qos
    quiet reboot requeue reservation signal sockets-per-node spread-job switches tasks-per-node
    test-only thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose
    version wait wait-all-nodes wckey wrap
""".split())
"""sbatch's long options (Slurm 22.05: `man sbatch`, plus the aliases it accepts unlisted,
--cluster and --tasks-per-node). sbatch reads `--arr=0-1` as --array: getopt_long takes any
unique prefix of a long option, so keys are resolved against this list as sbatch resolves them."""
_SBATCH_ALIASES = {"cluster": "clusters", "tasks-per-node": "ntasks-per-node"}
_SBATCH_DIRECTIVE = re.compile(r"^#(SBATCH|PBS|BSUB)")
"""What sbatch reads as its own options in a script's leading comments (#PBS and #BSUB too)."""
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+(,[A-Za-z0-9_.@+-]+)*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.@+:-]{1,128}$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,&|*\[\]()!:=+-]+$")
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_MEM = re.compile(r"^(\d+)\s*([KMGT]?)B?$", re.IGNORECASE)
_JOB_ID = re.compile(r"^\d{1,10}(_\d{1,10})?$")
"""Slurm's job ids and array task ids are 32-bit numbers: at most 10 digits."""
_MEM_FACTOR_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass(frozen=True)
class SlurmOptions:
    """What Slurm is asked for, validated once, before anything is sent to Slurm."""

    partition: str | None = None
    time_min: int | None = None
    gpus: int | None = None
    nodes: int | None = None
    """--ranks over this many nodes (ranks / nodes tasks on each); default 1."""
    cpus: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = DEFAULT_JOB_NAME
    setup: tuple[str, ...] = ()
    sbatch_args: tuple[tuple[str, str], ...] = ()
    log_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def mem_mb(self) -> int | None:
        return None if self.mem is None else mem_to_mb(self.mem)

    def folder(self) -> Path:
        """The log folder: --log-dir, else $AUTOGRAD_CHECK_LOG_DIR, else DEFAULT_LOG_DIR."""
        return resolve_log_dir(self.log_dir)


SLURM_KEYS = (
    "partition", "time", "gpus", "nodes", "cpus", "mem", "account", "qos", "constraint", "job_name",
    "setup", "sbatch_args", "log_dir", "timeout",
)
"""Keys of the [slurm] table of a config file (the flags' names, with '_' for '-')."""


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{name} {value!r} is not allowed; expected a string")
    return script_value(name, value).strip()


def parse_time(value: object) -> int:
    """Minutes, or Slurm's MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS → minutes (rounded up)."""
    expected = "minutes (e.g. 10) or [D-]HH:MM:SS (e.g. 00:10:00, 1-00:00:00)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadInput(f"time {shown(value)} is not a time; expected {expected}")
    text = str(value).strip()
    days_text, dash, clock = text.partition("-")
    if not dash:
        days_text, clock = "", text
    parts = clock.split(":")
    if (dash and not days_text.isdigit()) or len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise BadInput(f"time {shown(value)} is not a time; expected {expected}")
    if any(len(p) > 9 for p in [days_text, *parts]):  # a billion minutes is 1,900 years
        raise BadInput(f"time {shown(value)} is far longer than any Slurm time limit")
    numbers = [int(p) for p in parts]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        hours += 24 * int(days_text)
    elif len(numbers) == 1:  # MM
        hours, minutes, seconds = 0, numbers[0], 0
    elif len(numbers) == 2:  # MM:SS
        hours, minutes, seconds = 0, numbers[0], numbers[1]
    else:  # HH:MM:SS
        hours, minutes, seconds = numbers
    if seconds > 59 or ((dash or len(numbers) == 3) and len(numbers) > 1 and minutes > 59):
        raise BadInput(f"time {shown(value)} has minutes or seconds above 59; expected {expected}")
    total = math.ceil((hours * 3600 + minutes * 60 + seconds) / 60)
    if total < 1:
        raise BadInput(f"time {shown(value)} is zero; give at least one minute")
    return total


def format_minutes(minutes: int) -> str:
    """Minutes as Slurm's [D-]HH:MM:SS."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def parse_count(name: str, value: object, minimum: int) -> int:
    number = whole(value)
    if number is None:
        raise BadInput(f"{name} {shown(value)} is not a whole number")
    if number < minimum:
        raise BadInput(f"{name} {shown(value)} is not allowed; it must be >= {minimum}")
    return number


def _mem_size(value: object) -> tuple[int, str]:
    """500M, 1G, 1gb, 2048 (MB, as sbatch reads a bare number) → (number, unit letter)."""
    match = _MEM.match(str(value).strip()) if isinstance(value, (int, str)) else None
    if isinstance(value, bool) or not match:
        raise BadInput(f"mem {shown(value)} is not a size; expected e.g. 500M, 1G or 2048 (MB)")
    if len(match.group(1)) > 15:  # beyond any node's memory in any unit (and int's text limit)
        raise BadInput(f"mem {shown(value)} is far more memory than any node has")
    return int(match.group(1)), (match.group(2) or "M").upper()


def mem_to_mb(value: object) -> int:
    number, unit = _mem_size(value)
    return math.ceil(number * _MEM_FACTOR_MB[unit])


def parse_mem(value: object) -> str:
    """A memory size → sbatch's form (500M, 1G, 2048M)."""
    number, unit = _mem_size(value)
    if number == 0:
        raise BadInput("mem 0 asks for all the memory of a node; give a size such as 1G")
    return f"{number}{unit}"


def parse_name(name: str, value: object) -> str:
    text = _text(name, value)
    if not _NAME.match(text):
        raise BadInput(
            f"{name} {value!r} is not a Slurm name; use letters, digits and _ . @ + - "
            "(commas between several)"
        )
    return text


def parse_job_name(value: object) -> str:
    text = _text("job name", value)
    if not _JOB_NAME.match(text):
        raise BadInput(
            f"job name {value!r} is not allowed; use 1 to 128 letters, digits and _ . @ + : - "
            "(no spaces or shell characters)"
        )
    return text


def parse_constraint(value: object) -> str:
    text = _text("constraint", value)
    if not _CONSTRAINT.match(text):
        raise BadInput(
            f"constraint {value!r} is not allowed; use feature names joined by & | , "
            "with [ ] ( ) * : as Slurm does (no spaces, quotes or shell characters)"
        )
    return text


def parse_setup(value: object) -> tuple[str, ...]:
    """Shell lines run before the check (module load, source .venv/bin/activate): one line each."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise BadInput(f"setup {value!r} is not allowed; expected a list of shell lines")
    lines: list[str] = []
    for line in value:
        if not isinstance(line, str):
            raise BadInput(f"setup line {line!r} is not allowed; expected a string")
        try:
            text = script_value("setup line", line).strip()
        except BadInput as e:  # said again with secrets masked: error lines end up in logs
            raise BadInput(str(e).replace(repr(line), repr(mask_secrets(line)))) from None
        if not text:
            raise BadInput("setup line '' is empty")
        if _SBATCH_DIRECTIVE.match(text):
            raise BadInput(f"setup line {mask_secrets(text)!r} is an sbatch directive, not a "
                           f"shell line (sbatch would read it as an option of the job); "
                           f"{_directive_pointer(text)}")
        lines.append(text)
    return tuple(lines)


def _directive_pointer(line: str) -> str:
    """Where an `#SBATCH --key=value` setup line belongs instead."""
    words = line.split(None, 2)
    option = words[1] if len(words) > 1 else ""
    key, _, value = option.removeprefix("--").partition("=")
    if option.startswith("--") and _SBATCH_KEY.match(key):
        with contextlib.suppress(BadInput):
            full = sbatch_option(key)
            if full in MANAGED_SBATCH_KEYS:
                return f"sbatch's --{full} is set by autograd-check: {MANAGED_SBATCH_KEYS[full]}"
            value = value or (words[2] if len(words) > 2 else "")
            return f"use --sbatch-arg {full}={mask_secrets(value)}"
    return ("use the option made for it (--time, --partition, --mem, --cpus, --gpus ...) or "
            "--sbatch-arg KEY=VALUE")


def sbatch_option(key: str) -> str:
    """The sbatch long option `key` means, as sbatch reads it: the option itself, the one option
    it is a unique prefix of, or (not one of SBATCH_LONG_OPTIONS: a newer Slurm's) `key` as it
    is; BadInput when it is a prefix of several."""
    if key in SBATCH_LONG_OPTIONS:
        return _SBATCH_ALIASES.get(key, key)
    matches = sorted({_SBATCH_ALIASES.get(o, o) for o in SBATCH_LONG_OPTIONS
                      if o.startswith(key)})
    if len(matches) > 1:
        raise BadInput(
            f"sbatch arg {key!r} is ambiguous: sbatch reads it as any of "
            f"{', '.join('--' + m for m in matches)}; give the whole option name"
        )
    return matches[0] if matches else key


def _sbatch_table_value(key: str, value: object) -> str:
    # str(True) would write `--exclusive=True` and str(["END"]) a Python list: neither is what
    # sbatch reads, so anything but a string or a whole number is refused.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "a boolean", list: "a list", dict: "a table", float: "a fractional number"}.get(
        type(value), f"a {type(value).__name__}"
    )
    raise BadInput(
        f"sbatch arg {key!r} = {value!r} is {kind}; expected a string (e.g. "
        f'{key} = "VALUE"), or "" for a flag without a value'
    )


def parse_sbatch_args(value: object) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE strings (or a TOML table) → (key, value) pairs for '#SBATCH --key=value' lines.

    An empty value (`exclusive=`, or `exclusive = ""` in a table) gives a flag without a value
    (`#SBATCH --exclusive`). Table values are strings, or whole numbers (`nice = 5`).
    """
    if isinstance(value, Mapping):
        items = [(str(k), _sbatch_table_value(str(k), v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            text = _text("sbatch arg", item)
            key, eq, val = text.partition("=")
            if not eq:
                raise BadInput(
                    f"sbatch arg {item!r} has no '='; expected KEY=VALUE (e.g. mail-type=END), "
                    "or KEY= for a flag"
                )
            items.append((key, val))
    else:
        raise BadInput(f"sbatch args {value!r} are not allowed; expected KEY=VALUE strings")
    pairs: list[tuple[str, str]] = []
    for raw_key, raw_val in items:
        key = raw_key.strip().removeprefix("--").replace("_", "-")
        if not _SBATCH_KEY.match(key):
            raise BadInput(
                f"sbatch arg key {raw_key!r} is not an sbatch option name "
                "(lowercase letters, digits and -)"
            )
        full = sbatch_option(key)
        if full in MANAGED_SBATCH_KEYS:
            meant = "" if full == key else f" (sbatch reads it as '--{full}')"
            raise BadInput(f"sbatch arg {key!r}{meant} cannot be set this way: "
                           f"{MANAGED_SBATCH_KEYS[full]}")
        key = full
        pairs.append((key, _text(f"sbatch arg {key!r} value", raw_val)))
    return tuple(pairs)


def parse_log_dir(value: object) -> Path:
    if not isinstance(value, (str, Path)):
        raise BadInput(f"log dir {value!r} is not a path")
    text = script_value("log dir", str(value), path=True).strip()
    if not text:
        raise BadInput("log dir '' is empty")
    return Path(text).expanduser()


def parse_timeout(value: object) -> float:
    number = finite(value)
    if number is None or number <= 0:
        raise BadInput(f"timeout {shown(value)} is not allowed; expected seconds > 0 (e.g. 600)")
    return number


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "partition": lambda v: parse_name("partition", v),
    "time": parse_time,
    "gpus": lambda v: parse_count("gpus", v, 0),
    "nodes": lambda v: parse_count("nodes", v, 1),
    "cpus": lambda v: parse_count("cpus", v, 1),
    "mem": parse_mem,
    "account": lambda v: parse_name("account", v),
    "qos": lambda v: parse_name("qos", v),
    "constraint": parse_constraint,
    "job_name": parse_job_name,
    "setup": parse_setup,
    "sbatch_args": parse_sbatch_args,
    "log_dir": parse_log_dir,
    "timeout": parse_timeout,
}
_FIELD_OF = {"time": "time_min"}


def build_slurm_options(values: Mapping[str, Any]) -> SlurmOptions:
    """Validate raw values (flags, a [slurm] table) into SlurmOptions; None means the default."""
    unknown = sorted(set(values) - set(SLURM_KEYS))
    if unknown:
        raise BadInput(f"unknown Slurm option {unknown[0]!r}; known: {', '.join(SLURM_KEYS)}")
    parsed = {
        _FIELD_OF.get(key, key): _PARSERS[key](values[key])
        for key in SLURM_KEYS
        if values.get(key) is not None
    }
    return SlurmOptions(**parsed)


def parse_job_id(value: str) -> str:
    text = value.strip()
    if not _JOB_ID.match(text):
        raise BadInput(f"job id {shown(value)} is not a Slurm job id (e.g. 1234 or 1234_5)")
    return text

"""The Slurm layer: one CheckSpec plus Slurm options in, one CheckResult (or a clear failure) out.

Three ways to run a check on Slurm, all of them ending in the same `execute(spec)` that `run` calls:

- a batch job: submitit pickles `run_job(spec)` into the log folder and submits an sbatch script
  that runs it on a node (`submit_job`); `wait_for_job` watches it and `collect` brings the result
  back, also later from another shell (`SlurmJob(folder, job_id)` re-attaches by id);
- a job step of the allocation this shell is in (salloc): `srun ... python -m autograd_check
  _step --spec JSON` runs the check on the allocated node and prints the result as one JSON line
  (`run_step`);
- `--new-job` from inside an allocation: a batch job again, submitted with the inherited SLURM_*
  variables hidden (`submitit.helpers.clean_env`, keeping SLURM_CONF).

Nothing here prints or exits: progress goes to a callback, failures are raised as BadInput (2),
EnvironmentProblem (3) or JobFailed (4). submitit is imported inside functions, so the CLI's
start-up (and `--help`) never pays for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from autograd_check.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    CheckError,
    EnvironmentProblem,
    JobFailed,
)
from autograd_check.result import CheckResult
from autograd_check.spec import CheckSpec, build_spec

LOG_DIR_ENV = "AUTOGRAD_CHECK_LOG_DIR"
DEFAULT_LOG_DIR = "~/.autograd-check/slurm"
"""Where job scripts, pickles and logs go unless --log-dir or $AUTOGRAD_CHECK_LOG_DIR say otherwise.

It must be on a filesystem the compute nodes share with this machine (home directories usually
are; /tmp is not): the node writes the result there and this machine reads it back.
"""
DEFAULT_JOB_NAME = "autograd-check"
DEFAULT_TIME_MIN = 10
DEFAULT_TIMEOUT_S = 3600.0
STEP_MARKER = "@@autograd-check-step@@"
"""Prefix of the one stdout line a job step answers with (setup lines may print too)."""

POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
"""Polls start fast (a small check on an idle cluster ends in seconds) and settle at one a second:
a finished job is seen within about a second of its end, for one cheap scontrol call a second."""
RESULT_GRACE_S = 10.0
"""How long a finished job's result file may lag behind its state (shared filesystems cache)."""
VANISH_GRACE_S = 15.0
"""How long a job may be unknown to every source before it counts as vanished."""
CALL_TIMEOUT_S = 15.0
"""The most any one Slurm command (scontrol, squeue, sacct, sinfo, scancel) may take."""
CALL_FLOOR_S = 1.0
"""The least a Slurm command run while waiting gets, even when the wait's --timeout is spent."""
LOG_TAIL_LINES = 15

ACTIVE_STATES = frozenset(
    {
        "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
        "SPECIAL_EXIT", "RESV_DEL_HOLD", "UNKNOWN",
    }
)
FAILED_STATES = frozenset(
    {
        "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
        "BOOT_FAIL", "DEADLINE", "REVOKED",
    }
)
NEVER_STARTS = {
    "PartitionTimeLimit": "--time is above the partition's limit (sinfo lists the limits)",
    "PartitionNodeLimit": "the request is above the partition's node limits",
    "BadConstraints": "no node has the --constraint features asked for",
    "InvalidAccount": "the --account is not valid here",
    "InvalidQOS": "the --qos is not valid here",
    "AccountNotAllowed": "the --account may not use this partition",
    "QOSNotAllowed": "the --qos may not be used in this partition",
    "QOSMaxWallDurationPerJobLimit": "--time is above the QOS's limit",
    "AssocMaxWallDurationPerJobLimit": "--time is above your association's limit",
}
"""Reasons a pending job gives when Slurm will never start it: waiting on them would hang."""
FIT_REASONS = frozenset({"PartitionConfig", "Resources", "ReqNodeNotAvail"})
"""Reasons a pending job gives both while it waits for a free node and when no node of its
partition could ever hold it (PartitionConfig is also a brief first reason of ordinary jobs):
for these the job's request is compared with the partition's nodes (never_starts)."""
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

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+(,[A-Za-z0-9_.@+-]+)*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.@+:-]{1,128}$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,&|*\[\]()!:=+-]+$")
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_MEM = re.compile(r"^(\d+)\s*([KMGT]?)B?$", re.IGNORECASE)
_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_MEM_FACTOR_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}

# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """What Slurm is asked for, validated once, before anything is sent to Slurm."""

    partition: str | None = None
    time_min: int | None = None
    gpus: int | None = None
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
    "partition", "time", "gpus", "cpus", "mem", "account", "qos", "constraint", "job_name",
    "setup", "sbatch_args", "log_dir", "timeout",
)
"""Keys of the [slurm] table of a config file (the flags' names, with '_' for '-')."""


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{name} {value!r} is not allowed; expected a string")
    if _CONTROL.search(value):
        raise BadInput(f"{name} {value!r} contains a newline or control character")
    return value.strip()


def parse_time(value: object) -> int:
    """Minutes, or Slurm's MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS → minutes (rounded up)."""
    expected = "minutes (e.g. 10) or [D-]HH:MM:SS (e.g. 00:10:00, 1-00:00:00)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadInput(f"time {value!r} is not a time; expected {expected}")
    text = str(value).strip()
    days_text, dash, clock = text.partition("-")
    if not dash:
        days_text, clock = "", text
    parts = clock.split(":")
    if (dash and not days_text.isdigit()) or len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise BadInput(f"time {value!r} is not a time; expected {expected}")
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
        raise BadInput(f"time {value!r} has minutes or seconds above 59; expected {expected}")
    total = math.ceil((hours * 3600 + minutes * 60 + seconds) / 60)
    if total < 1:
        raise BadInput(f"time {value!r} is zero; give at least one minute")
    return total


def format_minutes(minutes: int) -> str:
    """Minutes as Slurm's [D-]HH:MM:SS."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def parse_count(name: str, value: object, minimum: int) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(
        r"[+-]?\d+", text
    ):
        raise BadInput(f"{name} {value!r} is not a whole number")
    number = int(text)
    if number < minimum:
        raise BadInput(f"{name} {value!r} is not allowed; it must be >= {minimum}")
    return number


def _mem_size(value: object) -> tuple[int, str]:
    """500M, 1G, 1gb, 2048 (MB, as sbatch reads a bare number) → (number, unit letter)."""
    match = _MEM.match(str(value).strip()) if isinstance(value, (int, str)) else None
    if isinstance(value, bool) or not match:
        raise BadInput(f"mem {value!r} is not a size; expected e.g. 500M, 1G or 2048 (MB)")
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
        text = _text("setup line", line)
        if not text:
            raise BadInput("setup line '' is empty")
        lines.append(text)
    return tuple(lines)


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
        if key in MANAGED_SBATCH_KEYS:
            raise BadInput(f"sbatch arg {key!r} cannot be set this way: {MANAGED_SBATCH_KEYS[key]}")
        pairs.append((key, _text(f"sbatch arg {key!r} value", raw_val)))
    return tuple(pairs)


def parse_log_dir(value: object) -> Path:
    if not isinstance(value, (str, Path)):
        raise BadInput(f"log dir {value!r} is not a path")
    text = _text("log dir", str(value))
    if not text:
        raise BadInput("log dir '' is empty")
    if "%" in text:
        # Slurm expands %j, %u ... in --output paths; a literal % would point the logs elsewhere.
        raise BadInput(f"log dir {text!r} contains '%', which Slurm reads as a pattern")
    return Path(text).expanduser()


def parse_timeout(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise BadInput(f"timeout {value!r} is not allowed; expected seconds > 0 (e.g. 600)")
    return number


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "partition": lambda v: parse_name("partition", v),
    "time": parse_time,
    "gpus": lambda v: parse_count("gpus", v, 0),
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
        raise BadInput(f"job id {value!r} is not a Slurm job id (e.g. 1234 or 1234_5)")
    return text


# --------------------------------------------------------------------------------------------
# Where we are: tools, allocation, log folder
# --------------------------------------------------------------------------------------------


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require_slurm(*tools: str) -> None:
    missing = [t for t in tools if not have(t)]
    if missing:
        raise EnvironmentProblem(
            f"Slurm is not available here ({' and '.join(missing)} not found on PATH); "
            "run the check on this machine with `autograd-check run`"
        )


def expand_nodelist(text: str) -> list[str]:
    """vm, node[1-3,7] → host names (the syntax of SLURM_JOB_NODELIST)."""
    from submitit.slurm.slurm import SlurmParseException, _parse_node_list

    try:
        return list(_parse_node_list(text))
    except SlurmParseException:
        return [text]


@dataclass(frozen=True)
class Allocation:
    """The Slurm job this process runs in (salloc shell, batch script or job step), if any."""

    job_id: str
    step_id: str | None
    nodes: tuple[str, ...]
    host: str

    @property
    def in_step(self) -> bool:
        return self.step_id is not None

    @property
    def on_node(self) -> bool:
        short = self.host.split(".")[0]
        return not self.nodes or any(n.split(".")[0] == short for n in self.nodes)


def current_allocation(environ: Mapping[str, str] | None = None) -> Allocation | None:
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    return Allocation(
        job_id=job_id,
        step_id=env.get("SLURM_STEP_ID") or None,
        nodes=tuple(expand_nodelist(nodelist)) if nodelist else (),
        host=env.get("SLURMD_NODENAME") or socket.gethostname(),
    )


def run_outside_node_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """For `run`: one line when this shell holds an allocation but is not on its node(s)."""
    alloc = current_allocation(environ)
    if alloc is None or alloc.in_step or alloc.on_node:
        return None
    return (
        f"this shell is inside Slurm allocation {alloc.job_id} but runs on {alloc.host}, not on "
        f"its node {','.join(alloc.nodes)}; the check runs here. To run it on the allocated node "
        "use `srun autograd-check run ...` or `autograd-check submit ...`"
    )


def resolve_log_dir(log_dir: Path | None) -> Path:
    if log_dir is None:
        log_dir = Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)
    return Path(os.path.abspath(log_dir.expanduser()))


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:]


def ensure_private(path: Path, what: str) -> None:
    """Refuse a file or folder that another user owns or can write: results there are pickles,
    and loading a pickle runs whatever its writer put in it."""
    try:
        st = path.stat()
    except OSError as e:
        raise EnvironmentProblem(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    if st.st_uid != os.getuid():
        raise EnvironmentProblem(
            f"{what} {str(path)!r} belongs to another user (uid {st.st_uid}); results are pickles, "
            "so they are only loaded from a folder you own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EnvironmentProblem(
            f"{what} {str(path)!r} can be written by other users (mode {_mode(path)}); results "
            f"are pickles, so they are only loaded from a private folder: chmod 700 {path}"
        )


def prepare_log_dir(folder: Path) -> None:
    """Create the log folder readable by its owner only (0700), or check that an existing one is."""
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask
    except OSError as e:
        raise EnvironmentProblem(
            f"log dir {str(folder)!r} cannot be created: {e.strerror or e}"
        ) from None
    if not folder.is_dir():
        raise EnvironmentProblem(f"log dir {str(folder)!r} is not a folder")
    ensure_private(folder, "log dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"log dir {str(folder)!r} is not writable")


def job_paths(folder: Path, job_id: str) -> Any:
    """submitit's JobPaths for task 0 of a job in the (flat) log folder."""
    from submitit.core.utils import JobPaths

    return JobPaths(folder, job_id=job_id, task_id=0)


# --------------------------------------------------------------------------------------------
# The job itself (runs on the node)
# --------------------------------------------------------------------------------------------


def error_envelope(error: CheckError) -> dict[str, Any]:
    from autograd_check.environment import slurm_ids

    return {
        "outcome": "error",
        "kind": type(error).__name__,
        "exit_code": error.exit_code,
        "message": str(error),
        "host": socket.gethostname(),
        "slurm": slurm_ids(),
    }


def plain(result: CheckResult) -> dict[str, Any]:
    """The result document with plain types only, in its own key order.

    torch.__version__ is a torch class: pickled as is, loading the answer would import torch on
    the submitting side (seconds of waiting for nothing). JSON keeps str, not the subclass; no
    sort_keys, so the tensors keep the order the view shows them in (real, predicted, ...).
    """
    data: dict[str, Any] = json.loads(json.dumps(result.to_dict()))
    return data


def run_job(spec_data: dict[str, Any]) -> dict[str, Any]:
    """What submitit runs on the node: execute(spec), answered as plain data.

    Domain errors (a shape that does not fit the node's memory, no GPU on the node) come back as
    data with their exit code rather than as a traceback; the result is a plain dict, so reading
    it back needs no matching class versions.
    """
    from autograd_check.entry import execute

    try:
        result = execute(build_spec(spec_data))
    except CheckError as e:
        print(f"autograd-check: error: {e}", file=sys.stderr, flush=True)
        return error_envelope(e)
    verdict = "PASS" if result.passed else "FAIL"
    print(f"autograd-check: {verdict} on {result.environment.get('host')}", flush=True)
    return {"outcome": "result", "result": plain(result)}


def outcome_to_result(envelope: Mapping[str, Any], where: str) -> CheckResult:
    """The CheckResult of a job's answer, or its domain error raised again, here."""
    if envelope.get("outcome") == "result":
        return CheckResult.from_dict(envelope["result"])
    if envelope.get("outcome") == "error":
        kinds: dict[str, type[CheckError]] = {
            "BadInput": BadInput, "EnvironmentProblem": EnvironmentProblem, "JobFailed": JobFailed
        }
        error_class = kinds.get(str(envelope.get("kind")), CheckError)
        host = envelope.get("host") or "?"
        error = error_class(f"{envelope.get('message')} (on node {host}, {where})")
        if error_class is CheckError:
            error.exit_code = int(envelope.get("exit_code", EXIT_BAD_INPUT))
        raise error
    raise JobFailed(f"{where} answered something that is not a check result", state="FAILED")


# --------------------------------------------------------------------------------------------
# Batch jobs through submitit
# --------------------------------------------------------------------------------------------


def executor_parameters(spec: CheckSpec, opts: SlurmOptions) -> dict[str, Any]:
    """SlurmExecutor.update_parameters(...) for this check: sbatch's own option names."""
    params: dict[str, Any] = {
        "job_name": opts.job_name,
        "time": opts.time_min or DEFAULT_TIME_MIN,
        "nodes": 1,
        "ntasks_per_node": 1,
    }
    extra = dict(opts.sbatch_args)
    gpus = opts.gpus
    if gpus is None and spec.device.startswith("cuda") and not GPU_SBATCH_KEYS & set(extra):
        gpus = 1  # --device cuda asks for one GPU unless told otherwise
    if gpus:
        params["gpus_per_node"] = gpus
    for key, value in (
        ("cpus_per_task", opts.cpus),
        ("mem", opts.mem),
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("constraint", opts.constraint),
    ):
        if value is not None:
            params[key] = value
    if opts.setup:
        params["setup"] = list(opts.setup)
    if extra:
        params["additional_parameters"] = {k: (v if v != "" else True) for k, v in extra.items()}
    return params


def submitit_script(folder: Path, params: Mapping[str, Any], map_count: int | None = None) -> str:
    """The sbatch script submitit writes for these executor parameters (for --dry-run).

    submitit shows its script only by submitting it: this is what SlurmExecutor itself calls
    (`_make_submission_file_text`), with the command line of its `_submitit_command_str`. No
    executor is built here, because SlurmExecutor insists on srun being on PATH and --dry-run
    must work where there is no Slurm.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )
    given: dict[str, Any] = dict(params)
    if map_count is not None:
        given["map_count"] = map_count
    text: str = _make_sbatch_string(command=command, folder=folder, **given)
    return text


def sbatch_script(spec: CheckSpec, opts: SlurmOptions) -> str:
    """The sbatch script `submit` would send, written by submitit itself (for --dry-run)."""
    return submitit_script(opts.folder(), executor_parameters(spec, opts))


@dataclass
class Submitted:
    job_id: str
    folder: Path
    stdout: Path
    stderr: Path
    submission_file: Path


@contextlib.contextmanager
def _clean_slurm_env() -> Iterator[None]:
    """Hide the allocation's SLURM_* variables from a new job, but keep SLURM_CONF (which tells
    sbatch which cluster to talk to)."""
    from submitit.helpers import clean_env

    conf = os.environ.get("SLURM_CONF")
    with clean_env():
        if conf is not None:
            os.environ["SLURM_CONF"] = conf
        yield


def _sbatch_words(error: BaseException) -> str:
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) or type(error).__name__


_T = TypeVar("_T")


def submit_through_submitit(
    executor: Any, folder: Path, what: str, send: Callable[[], _T], *, clean: bool = False
) -> _T:
    """One submission through submitit (`send()` calls executor.submit or map_array).

    A request that no node of its partition can ever hold is refused first (EnvironmentProblem,
    nothing queued): sbatch would accept it and it would pend forever. Slurm refusing the job is
    EnvironmentProblem with sbatch's own words, said once: submitit prints them on stderr too,
    so its stderr is captured and dropped. `clean` hides an allocation's SLURM_* variables.
    """
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    problem = never_fits(executor.parameters)
    if problem is not None:
        raise EnvironmentProblem(f"Slurm would never start {what}: {problem}; nothing was queued")
    before = set(folder.glob(".submission_file_*.sh"))
    try:
        with tempfile.TemporaryFile(mode="w+") as captured, contextlib.redirect_stderr(
            captured
        ), (_clean_slurm_env() if clean else contextlib.nullcontext()):
            return send()
    except (FailedJobError, FailedSubmissionError) as e:
        raise EnvironmentProblem(f"Slurm refused {what}: {_sbatch_words(e)}") from None
    finally:
        # submitit leaves a .submission_file_<uuid>.sh link per submission next to the logs;
        # the script itself is kept as <job id>_submission.sh.
        for link in set(folder.glob(".submission_file_*.sh")) - before:
            with contextlib.suppress(OSError):
                link.unlink()


def submit_job(spec: CheckSpec, opts: SlurmOptions, *, clean: bool = False) -> Submitted:
    """Submit `run_job(spec)` as a batch job (see submit_through_submitit for refusals)."""
    require_slurm("sbatch")
    folder = opts.folder()
    prepare_log_dir(folder)
    from submitit.slurm.slurm import SlurmExecutor

    executor = SlurmExecutor(folder=folder)
    executor.update_parameters(**executor_parameters(spec, opts))
    job = submit_through_submitit(
        executor, folder, "the job", lambda: executor.submit(run_job, spec.to_dict()), clean=clean
    )
    paths = job.paths
    return Submitted(
        job_id=str(job.job_id),
        folder=folder,
        stdout=paths.stdout,
        stderr=paths.stderr,
        submission_file=paths.submission_file,
    )


# --------------------------------------------------------------------------------------------
# Watching: scontrol/squeue while Slurm remembers the job, sacct after, the log folder last
# --------------------------------------------------------------------------------------------


@dataclass
class JobInfo:
    job_id: str
    state: str
    source: str
    node: str | None = None
    reason: str | None = None
    elapsed: str | None = None
    exit_code: str | None = None
    partition: str | None = None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def _run(
    cmd: Sequence[str], timeout: float = CALL_TIMEOUT_S
) -> subprocess.CompletedProcess[str] | None:
    """A Slurm command's output, or None when it is missing, hangs, or fails."""
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done if done.returncode == 0 else None


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "(null)", "None", "N/A") else value


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`scontrol show ... -o` prints one record per line as Key=Value pairs."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=(\S*)", line))


def _state_word(text: str) -> str:
    # sacct writes "CANCELLED by 0"; scontrol may add flags after '+'.
    return text.split()[0].split("+")[0].upper() if text.strip() else "UNKNOWN"


def _budget(deadline: float | None) -> float:
    """A Slurm command's timeout: CALL_TIMEOUT_S, or what is left until `deadline` (monotonic
    time), but at least CALL_FLOOR_S so that a command started near the deadline can answer."""
    if deadline is None:
        return CALL_TIMEOUT_S
    return max(CALL_FLOOR_S, min(CALL_TIMEOUT_S, deadline - time.monotonic()))


def scontrol_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    done = _run(["scontrol", "show", "job", "-o", job_id], timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        rec = parse_scontrol_record(line)
        if rec.get("JobId") == job_id.split("_")[0] or _array_id(rec) == job_id:
            return JobInfo(
                job_id=job_id,
                state=_state_word(rec.get("JobState", "")),
                source="scontrol",
                node=_none(rec.get("NodeList")) or _none(rec.get("BatchHost")),
                reason=_none(rec.get("Reason")),
                elapsed=_none(rec.get("RunTime")),
                exit_code=_none(rec.get("ExitCode")),
                partition=_none(rec.get("Partition")),
            )
    return None


def _array_id(rec: Mapping[str, str]) -> str | None:
    if rec.get("ArrayJobId") and rec.get("ArrayTaskId"):
        return f"{rec['ArrayJobId']}_{rec['ArrayTaskId']}"
    return None


def squeue_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    done = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%N|%r|%M|%P"], timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 6 and parts[0] == job_id:
            return JobInfo(
                job_id=job_id,
                state=_state_word(parts[1]),
                source="squeue",
                node=_none(parts[2]),
                reason=_none(parts[3]),
                elapsed=_none(parts[4]),
                partition=_none(parts[5]),
            )
    return None


SACCT_FIELDS = "JobID,State,NodeList,Elapsed,ExitCode,Reason,Partition"


def sacct_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    """From accounting; None when accounting is off or does not (yet) know the job."""
    done = _run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", SACCT_FIELDS], timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 7 and parts[0] == job_id:
            return JobInfo(
                job_id=job_id,
                state=_state_word(parts[1]),
                source="sacct",
                node=_none(parts[2]) if parts[2] != "None assigned" else None,
                elapsed=_none(parts[3]),
                exit_code=_none(parts[4]),
                reason=_none(parts[5]),
                partition=_none(parts[6]),
            )
    return None


def job_info(job_id: str, deadline: float | None = None) -> JobInfo | None:
    """The job's state: the controller first (it knows at once when a job ends; squeue when
    scontrol is missing), then accounting (it remembers jobs the controller has forgotten).
    Each command gets at most what is left until `deadline` (see _budget)."""
    return (
        scontrol_info(job_id, _budget(deadline))
        or squeue_info(job_id, _budget(deadline))
        or sacct_info(job_id, _budget(deadline))
    )


def accounting_status() -> tuple[bool, str]:
    """(whether sacct answers, in a few words)."""
    if not have("sacct"):
        return False, "sacct not found"
    try:
        done = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1minutes"],
            capture_output=True, text=True, timeout=15, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"sacct did not answer ({e})"
    if done.returncode == 0:
        return True, "sacct works"
    return False, (done.stderr.strip().splitlines() or ["sacct failed"])[-1]


def log_tail(paths: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the job's stderr log, or of its stdout log when stderr is empty."""
    for path in (paths.stderr, paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            tail = text.rstrip().splitlines()[-lines:]
            return f"{path}:\n" + "\n".join(tail)
    return ""


ProgressFn = Callable[[JobInfo, float], None]


def wait_for_job(
    job_id: str,
    folder: Path,
    timeout: float,
    on_update: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobInfo:
    """Watch a job until it has a result or ends; every wait is bounded by `timeout` seconds.

    Every Slurm command run while waiting gets at most what is left of `timeout` (at least
    CALL_FLOOR_S), and so does the grace for the result file: the wait ends within a few seconds
    of `timeout` even when Slurm's commands hang. Returns the last state seen (COMPLETED when the
    result file is there). Raises EnvironmentProblem when the job can never start (it is then
    cancelled); JobFailed when it vanished, or when the wait ran out while the job was still
    queued or running (the job itself is left alone).
    """
    paths = job_paths(folder, job_id)
    start = time.monotonic()
    deadline = start + timeout
    interval = POLL_FIRST_S
    unknown_since: float | None = None
    checked_reason: str | None = None
    info = JobInfo(job_id, "PENDING", "submitted")
    while True:
        now = time.monotonic()
        if paths.result_pickle.exists():
            # The result is written (atomically, by a rename) when the check returns: no need
            # to wait for Slurm to finish tidying up the job.
            done = JobInfo(**{**vars(info), "state": "COMPLETED", "source": "result file"})
            if on_update:
                on_update(done, now - start)
            return done
        seen = job_info(job_id, deadline)
        now = time.monotonic()  # after asking: a slow controller must not stretch the bound
        if seen is not None:
            info, unknown_since = seen, None
            if info.state == "PENDING" and info.reason and info.reason != checked_reason:
                # Asked again only when the reason changes: most reasons are an ordinary wait.
                checked_reason = info.reason
                why = never_starts(info, deadline)
                if why is not None:
                    _run(["scancel", job_id], _budget(deadline))
                    raise EnvironmentProblem(
                        f"Slurm will never start job {job_id}: it is PENDING "
                        f"({reason_word(info.reason)}): {why}; the job was cancelled"
                    )
            if info.finished:
                if on_update:
                    on_update(info, now - start)
                return _settle(info, paths, sleep, deadline)
        elif unknown_since is None:
            unknown_since = now
        elif now - unknown_since > VANISH_GRACE_S:
            raise JobFailed(
                f"Slurm job {job_id} vanished: neither scontrol, squeue nor sacct knows it and it "
                f"left no result in {folder}",
                state="VANISHED",
                log_tail=log_tail(paths),
            )
        if on_update:
            on_update(info, now - start)
        if now >= deadline:
            raise JobFailed(
                f"gave up waiting after {timeout:g} s: Slurm job {job_id} is still {info.state}"
                + (f" ({info.reason})" if info.reason else "")
                + f"; it was left alone: see `autograd-check result {job_id}` later",
                state=info.state,
            )
        sleep(max(0.0, min(interval, deadline - now)))
        interval = min(interval * 1.5, POLL_MAX_S)


def _settle(
    info: JobInfo, paths: Any, sleep: Callable[[float], None], deadline: float | None = None
) -> JobInfo:
    """A job Slurm says has ended: give its result file a moment to show up (shared filesystems
    can lag), unless the job failed outright; RESULT_GRACE_S at most, and no later than
    `deadline` (or CALL_FLOOR_S from now, when that is later)."""
    if info.failed:
        return info
    now = time.monotonic()
    until = now + RESULT_GRACE_S
    if deadline is not None:
        until = min(until, max(deadline, now + CALL_FLOOR_S))
    while not paths.result_pickle.exists() and time.monotonic() < until:
        sleep(max(0.0, min(0.2, until - time.monotonic())))
    return info


def load_outcome(folder: Path, job_id: str) -> tuple[str, Any] | None:
    """submitit's ("success", answer) or ("error", traceback) for the job, or None if absent.

    Only from a folder and file that no other user can write.
    """
    paths = job_paths(folder, job_id)
    if not paths.result_pickle.exists():
        return None
    ensure_private(folder, "log dir")
    ensure_private(paths.result_pickle, "result file")
    with open(paths.result_pickle, "rb") as f:
        outcome: tuple[str, Any] = pickle.load(f)
    return outcome


def collect(job_id: str, folder: Path, info: JobInfo | None = None) -> CheckResult:
    """The job's CheckResult, its domain error raised here, or JobFailed with state and log."""
    paths = job_paths(folder, job_id)
    where = f"Slurm job {job_id}"
    outcome = load_outcome(folder, job_id)
    if outcome is None:
        info = info or job_info(job_id)
        state = info.state if info else "UNKNOWN"
        if info is not None and not info.finished:
            raise JobFailed(
                f"{where} is {state}" + (f" ({info.reason})" if info.reason else "")
                + ": no result yet; wait for it with `autograd-check result "
                + f"{job_id} --wait`",
                state=state,
                log_tail=log_tail(paths),
            )
        detail = {
            "COMPLETED": f"completed without leaving a result in {folder} (is that folder on "
            "a filesystem the node shares?)",
            "CANCELLED": "was cancelled",
            "TIMEOUT": "ran out of time (raise --time)",
            "OUT_OF_MEMORY": "ran out of memory (raise --mem, or choose a smaller --shape)",
            "NODE_FAIL": "lost its node",
            "PREEMPTED": "was preempted",
            "UNKNOWN": f"is unknown to Slurm and left no result in {folder}",
        }.get(state, "failed")
        exit_part = f", exit code {info.exit_code}" if info and info.exit_code else ""
        raise JobFailed(
            f"{where} {detail} (state {state}{exit_part})", state=state, log_tail=log_tail(paths)
        )
    status, answer = outcome
    if status != "success":
        last = [ln for ln in str(answer).strip().splitlines() if ln.strip()][-1:] or ["?"]
        raise JobFailed(
            f"{where} failed with an exception on the node: {last[0].strip()}",
            state="FAILED",
            log_tail=log_tail(paths) or str(answer)[-2000:],
        )
    return outcome_to_result(answer, where)


# --------------------------------------------------------------------------------------------
# Would Slurm ever start it? sbatch queues a request above every node of its partition (or above
# its time limit), and the job then pends forever: say so before queueing, or while waiting.
# --------------------------------------------------------------------------------------------

OTHER_CLUSTER_KEYS = frozenset({"clusters", "cluster"})
"""sbatch args that send the job to another cluster: the partitions seen here say nothing."""
MEM_SBATCH_KEYS = frozenset({"mem-per-cpu", "mem-per-gpu"})
_UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", "")


@dataclass(frozen=True)
class Request:
    """What a job asks of one node and of its partition. Every number is a lower bound of what
    Slurm will look for (other sbatch args can only ask for more), so a request above what a
    partition offers is certain never to start there."""

    partitions: tuple[str, ...] = ()
    """Empty: the cluster's default partition."""
    cpus: int = 1
    mem_mb: int | None = None
    """None: what the cluster gives a job without --mem (checked only when `default_mem`)."""
    mem_from: str = "--mem"
    default_mem: bool = False
    gpus: int = 0
    time_min: int | None = None
    """None: not checked (a --qos may lift the partition's time limit)."""


def _gpu_count(text: str, *, gres: bool) -> int:
    """GPUs in a --gres value (gpu:2, gpu:a100:2, gres/gpu:2) or a --gpus value (2, a100:2)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if gres:
            name = parts[0].split("/")[-1]
            if name != "gpu":
                continue
            parts = parts[1:] or ["1"]
        if parts and parts[-1].isdigit():
            total += int(parts[-1])
        elif gres:
            total += 1  # gpu:a100 is one GPU
    return total


def request_of_params(params: Mapping[str, Any]) -> Request | None:
    """The Request of SlurmExecutor parameters (executor_parameters, array_parameters), or None
    when the job goes to another cluster."""
    extra = {str(k): str(v) for k, v in (params.get("additional_parameters") or {}).items()}
    if OTHER_CLUSTER_KEYS & set(extra):
        return None
    gpus = int(params.get("gpus_per_node") or 0)
    for key in ("gpus", "gpus-per-node"):
        if key in extra:
            gpus = max(gpus, _gpu_count(extra[key], gres=False))
    if "gres" in extra:
        gpus = max(gpus, _gpu_count(extra["gres"], gres=True))
    mem = params.get("mem")
    return Request(
        partitions=tuple(p for p in str(params.get("partition") or "").split(",") if p),
        cpus=int(params.get("cpus_per_task") or 1),
        mem_mb=mem_to_mb(mem) if mem is not None else None,
        default_mem=mem is None and not MEM_SBATCH_KEYS & set(extra),
        gpus=gpus,
        # A QOS may carry the PartitionTimeLimit flag, which lifts the partition's limit.
        time_min=None if params.get("qos") else params.get("time"),
    )


def request_of_job(rec: Mapping[str, str]) -> Request:
    """The Request of a queued job (`scontrol show job -o`): its per-node CPUs, memory and
    GPUs. The time limit is left to Slurm, whose PartitionTimeLimit reason already says it."""
    cpus = int(rec["MinCPUsNode"]) if rec.get("MinCPUsNode", "").isdigit() else 1
    mem, mem_from = _mb(_none(rec.get("MinMemoryNode"))), "its --mem"
    per_cpu = _mb(_none(rec.get("MinMemoryCPU")))
    if mem is None and per_cpu is not None:
        mem, mem_from = per_cpu * cpus, f"{per_cpu} MB per CPU x {cpus} CPUs"
    tres = " ".join(rec.get(k, "") for k in ("TresPerNode", "TresPerJob"))
    gpus = max((int(n) for n in re.findall(r"gres[:/]gpu(?::[^:,=\s]+)?[:=](\d+)", tres)),
               default=0)
    return Request(
        partitions=tuple(p for p in rec.get("Partition", "").split(",") if p),
        cpus=cpus,
        mem_mb=mem or None,
        mem_from=mem_from,
        gpus=gpus,
    )


def _limit(text: str | None) -> int | None:
    """A partition's MaxCPUsPerNode, MaxMemPerNode ...: None when unlimited."""
    if text is None or text.upper() in _UNLIMITED or not text.isdigit():
        return None
    return int(text)


def _time_limit(text: str | None) -> int | None:
    if text is None or text.upper() in _UNLIMITED:
        return None
    try:
        return parse_time(text)
    except BadInput:
        return None


def _node_mem_mb(node: Mapping[str, str]) -> int:
    real = int(node.get("RealMemory", "0") or 0) if node.get("RealMemory", "").isdigit() else 0
    spec = node.get("MemSpecLimit", "")
    return real - int(spec) if spec.isdigit() else real


def _node_cpus(node: Mapping[str, str]) -> int:
    for key in ("CPUEfctv", "CPUTot"):  # CPUEfctv: without the cores kept for the system
        if node.get(key, "").isdigit():
            return int(node[key])
    return 0


def _default_mem_mb(request: Request, part: Mapping[str, str], config: Mapping[str, str]) -> (
    tuple[int, str] | None
):
    """(MB, how) a job without --mem gets, when the cluster says so and memory is consumable."""
    if "MEMORY" not in config.get("SelectTypeParameters", "").upper():
        return None  # memory is not a consumable resource here: a default never blocks a job
    for source in (part, config):  # the partition's default first, then the cluster's
        per_node = _limit(source.get("DefMemPerNode"))
        if per_node:
            return per_node, "DefMemPerNode"
        per_cpu = _limit(source.get("DefMemPerCPU"))
        if per_cpu:
            return per_cpu * request.cpus, f"{per_cpu} MB per CPU x {request.cpus} CPUs"
    return None


def _partition_problems(
    request: Request,
    part: Mapping[str, str],
    nodes: Sequence[Mapping[str, str]],
    config: Mapping[str, str],
) -> list[str]:
    """What in `request` partition `part` (with its `nodes`) can never offer; [] when it may."""
    name = part.get("PartitionName", "?")
    ours = [n for n in nodes if name in n.get("Partitions", "").split(",")]
    problems: list[str] = []
    if request.time_min is not None:
        limit = _time_limit(part.get("MaxTime"))
        if limit is not None and request.time_min > limit:
            problems.append(
                f"--time {format_minutes(request.time_min)} is above partition {name}'s time "
                f"limit {format_minutes(limit)}"
            )
    if not ours:
        return problems  # nodes unknown (hidden, or not listed here): no more to say for sure
    biggest = max(ours, key=_node_cpus)
    most_cpus = min(_node_cpus(biggest), _limit(part.get("MaxCPUsPerNode")) or 1 << 30)
    if request.cpus > most_cpus:
        problems.append(
            f"it asks for {request.cpus} CPUs and the largest node of partition {name} has "
            f"{most_cpus} ({biggest.get('NodeName', '?')})"
        )
    mem, how = request.mem_mb, request.mem_from
    if mem is None and request.default_mem:
        default = _default_mem_mb(request, part, config)
        if default is not None:
            mem, how = default[0], f"the default for a job without --mem: {default[1]}"
    if mem is not None:
        roomiest = max(ours, key=_node_mem_mb)
        most_mem = min(_node_mem_mb(roomiest), _limit(part.get("MaxMemPerNode")) or 1 << 40)
        if mem > most_mem:
            problems.append(
                f"it asks for {mem} MB of memory ({how}) and the largest node of partition "
                f"{name} has {most_mem} MB ({roomiest.get('NodeName', '?')})"
            )
    if request.gpus:
        most_gpus = max(_gpu_count(_none(n.get("Gres")) or "", gres=True) for n in ours)
        if request.gpus > most_gpus:
            offer = f"at most {most_gpus}" if most_gpus else "none"
            problems.append(
                f"it asks for {request.gpus} GPU(s) per node and the nodes of partition {name} "
                f"have {offer}"
            )
    return problems


def _chosen_partitions(
    request: Request, parts: Sequence[Mapping[str, str]]
) -> list[Mapping[str, str]] | None:
    """The records of the partitions the request names, else of the default one; None when one
    of them is not known here."""
    by_name = {p.get("PartitionName", ""): p for p in parts}
    if request.partitions:
        chosen = [by_name.get(name) for name in dict.fromkeys(request.partitions)]
    else:
        chosen = [next((p for p in parts if p.get("Default") == "YES"), None)]
    found = [p for p in chosen if p is not None]
    return found if found and len(found) == len(chosen) else None


def fit_problem(
    request: Request,
    parts: Sequence[Mapping[str, str]],
    nodes: Sequence[Mapping[str, str]],
    config: Mapping[str, str],
) -> str | None:
    """Why no partition the request names (else the default one) could ever start it, or None
    when one may, or when that is not certain (an unknown partition: sbatch says so itself)."""
    found = _chosen_partitions(request, parts)
    if found is None:
        return None
    said = [_partition_problems(request, p, nodes, config) for p in found]
    if not all(said):
        return None
    return "; ".join("; ".join(problems) for problems in said)


def _records(cmd: Sequence[str], timeout: float) -> list[dict[str, str]] | None:
    done = _run(cmd, timeout)
    if done is None:
        return None
    return [parse_scontrol_record(ln) for ln in done.stdout.splitlines() if ln.strip()]


def slurm_config(timeout: float = CALL_TIMEOUT_S) -> dict[str, str]:
    """`scontrol show config` as a dict ({} when it does not answer)."""
    done = _run(["scontrol", "show", "config"], timeout)
    config: dict[str, str] = {}
    for line in done.stdout.splitlines() if done is not None else []:
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def _request_problem(request: Request, deadline: float | None) -> str | None:
    parts = _records(["scontrol", "show", "partition", "-o"], _budget(deadline))
    chosen = _chosen_partitions(request, parts or [])
    if chosen is None:
        return None  # no answer, or a partition unknown here: nothing certain to say
    # Only the chosen partitions' nodes: a large cluster lists thousands.
    names = ",".join(n for p in chosen for n in [_none(p.get("Nodes"))] if n and n != "ALL")
    nodes = _records(["scontrol", "show", "node", "-o", *([names] if names else [])],
                     _budget(deadline))
    if nodes is None:
        return None
    config = slurm_config(_budget(deadline)) if request.default_mem else {}
    return fit_problem(request, chosen, nodes, config)


def never_fits(params: Mapping[str, Any]) -> str | None:
    """Why the job SlurmExecutor `params` describe could never start on this cluster, or None.

    Asks the controller (scontrol) about partitions and nodes; None when it does not answer.
    """
    if not have("scontrol"):
        return None
    request = request_of_params(params)
    return None if request is None else _request_problem(request, None)


def reason_word(reason: str) -> str:
    """'ReqNodeNotAvail, UnavailableNodes:vm' → 'ReqNodeNotAvail'."""
    return re.split(r"[,\s(]", reason.strip(), maxsplit=1)[0]


def never_starts(info: JobInfo, deadline: float | None = None) -> str | None:
    """Why a PENDING job will never start, when that is certain; None otherwise.

    Certain: a reason Slurm gives only then (NEVER_STARTS), or a reason of FIT_REASONS with a
    request above every node of the job's partition.
    """
    if info.state != "PENDING" or not info.reason:
        return None
    reason = reason_word(info.reason)
    if reason in NEVER_STARTS:
        return NEVER_STARTS[reason]
    if reason not in FIT_REASONS:
        return None
    records = _records(["scontrol", "show", "job", "-o", info.job_id], _budget(deadline))
    rec = next(
        (r for r in records or [] if info.job_id in (r.get("JobId"), _array_id(r))), None
    )
    if rec is None:
        return None
    return _request_problem(request_of_job(rec), deadline)


# --------------------------------------------------------------------------------------------
# A job step inside the current allocation
# --------------------------------------------------------------------------------------------


def step_command(spec: CheckSpec, opts: SlurmOptions) -> list[str]:
    """srun ... python -m autograd_check _step --spec JSON, as an argv list (no shell).

    Setup lines, when given, run in `bash -c` before the check, which gets its arguments as
    "$@": the only shell text is what the user wrote as setup lines.
    """
    cmd = ["srun", "--ntasks=1", "--nodes=1", f"--job-name={opts.job_name}", "--kill-on-bad-exit=1"]
    if opts.cpus:
        cmd.append(f"--cpus-per-task={opts.cpus}")
    if opts.mem:
        cmd.append(f"--mem={opts.mem}")
    if opts.time_min:
        cmd.append(f"--time={opts.time_min}")
    gpus = opts.gpus
    if gpus is None and spec.device.startswith("cuda"):
        gpus = 1
    if gpus:
        cmd.append(f"--gpus={gpus}")
    for key, value in opts.sbatch_args:
        if key in GPU_SBATCH_KEYS:
            cmd.append(f"--{key}={value}" if value else f"--{key}")
    check = [sys.executable, "-m", "autograd_check", "_step", "--spec", json.dumps(spec.to_dict())]
    if opts.setup:
        script = "\n".join([*opts.setup, 'exec "$@"'])
        return [*cmd, "bash", "-c", script, "autograd-check-step", *check]
    return [*cmd, *check]


def ignored_for_step(opts: SlurmOptions) -> list[str]:
    """Options that only mean something for a new job."""
    names = [
        name
        for name, value in (
            ("--partition", opts.partition),
            ("--account", opts.account),
            ("--qos", opts.qos),
            ("--constraint", opts.constraint),
        )
        if value is not None
    ]
    names += [f"--sbatch-arg {k}" for k, _ in opts.sbatch_args if k not in GPU_SBATCH_KEYS]
    return names


def step_answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(STEP_MARKER):
            answer: dict[str, Any] = json.loads(line[len(STEP_MARKER):])
            return answer
    return None


_STEP_REFUSED = re.compile(
    r"Unable to create step|Invalid generic resource|Invalid (job|step|argument)|"
    r"Requested node configuration is not available|More processors requested|"
    r"Memory required by task is not available|srun: fatal|unrecognized option|invalid option",
    re.IGNORECASE,
)
_STEP_STATE = (
    (re.compile(r"out of memory|oom", re.IGNORECASE), "OUT_OF_MEMORY"),
    (re.compile(r"CANCELLED", re.IGNORECASE), "CANCELLED"),
    (re.compile(r"TIME LIMIT|TIMEOUT", re.IGNORECASE), "TIMEOUT"),
)


def run_step(
    spec: CheckSpec,
    opts: SlurmOptions,
    alloc: Allocation,
    on_update: ProgressFn | None = None,
) -> CheckResult:
    """Run the check as a job step of the allocation this shell holds, bounded by opts.timeout."""
    require_slurm("srun")
    cmd = step_command(spec, opts)
    where = f"a step of Slurm job {alloc.job_id}"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise EnvironmentProblem(f"srun cannot be started: {e.strerror or e}") from None
        info = JobInfo(alloc.job_id, "RUNNING", "srun", node=",".join(alloc.nodes) or None)
        interval = POLL_FIRST_S
        while True:
            try:
                proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - start
            if on_update:
                on_update(info, elapsed)
            if elapsed >= opts.timeout:
                _stop(proc)
                raise JobFailed(
                    f"{where} did not finish within {opts.timeout:g} s; the step was cancelled",
                    state="TIMEOUT",
                    log_tail=_tail_of(err),
                )
            interval = min(interval * 1.5, POLL_MAX_S)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    try:
        answer = step_answer(stdout)
    except json.JSONDecodeError:
        answer = None
    if answer is not None:
        step = (answer.get("slurm") or {}).get("step_id")
        if step is not None:
            where = f"Slurm job {alloc.job_id} step {step}"
        result = outcome_to_result(answer, where)
        if on_update:
            on_update(replace(info, state="COMPLETED"), time.monotonic() - start)
        return result
    words = "; ".join(ln.strip() for ln in stderr.strip().splitlines() if ln.strip())[-800:]
    if _STEP_REFUSED.search(stderr):
        raise EnvironmentProblem(f"Slurm refused the job step: {words}")
    state = next((s for pattern, s in _STEP_STATE if pattern.search(stderr)), "FAILED")
    raise JobFailed(
        f"{where} ended without a result (state {state}, srun exit code {proc.returncode})",
        state=state,
        log_tail="\n".join(stderr.strip().splitlines()[-LOG_TAIL_LINES:]),
    )


def _tail_of(f: Any) -> str:
    f.seek(0)
    return "\n".join(f.read().strip().splitlines()[-LOG_TAIL_LINES:])


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop srun and with it the step: SIGTERM is forwarded to the step, then srun exits."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def step_main(spec_json: str) -> tuple[str, int]:
    """Inside the step: run the check, answer with one marked JSON line and an exit code."""
    try:
        spec = build_spec(json.loads(spec_json))
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        answer = error_envelope(BadInput(f"the step's spec is not valid JSON: {e}"))
        return STEP_MARKER + json.dumps(answer), EXIT_BAD_INPUT
    except CheckError as e:
        return STEP_MARKER + json.dumps(error_envelope(e)), e.exit_code
    from autograd_check.entry import execute

    try:
        result = execute(spec)
    except CheckError as e:
        return STEP_MARKER + json.dumps(error_envelope(e)), e.exit_code
    slurm = result.environment.get("slurm")
    answer = {"outcome": "result", "result": plain(result), "slurm": slurm}
    # json.dumps writes NaN and Infinity, which json.loads reads back on the other side.
    return STEP_MARKER + json.dumps(answer), result.exit_code


# --------------------------------------------------------------------------------------------
# A new job from inside an allocation: would it ever start?
# --------------------------------------------------------------------------------------------


def _mb(text: str | None) -> int | None:
    """Slurm's 500M, 7.81G, 8000 (MB) → MB."""
    if not text:
        return None
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)", text.strip())
    if not match:
        return None
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * factor)


def _tres(text: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (text or "").split(",") if "=" in item)


def default_job_mem_mb(node_real_mb: int, cpus: int) -> int:
    """What a job without --mem gets: DefMemPerNode, DefMemPerCPU x cpus, else the whole node."""
    config = slurm_config()
    if "MEMORY" not in config.get("SelectTypeParameters", "MEMORY").upper():
        return 0  # memory is not a consumable resource here: it never blocks a job
    per_node = config.get("DefMemPerNode", "UNLIMITED")
    per_cpu = config.get("DefMemPerCPU", "UNLIMITED")
    if per_node.isdigit() and int(per_node) > 0:
        return int(per_node)
    if per_cpu.isdigit() and int(per_cpu) > 0:
        return int(per_cpu) * cpus
    return node_real_mb


def allocation_blocks_new_job(opts: SlurmOptions, alloc: Allocation) -> str | None:
    """Why a new job could not start while this allocation lives, or None if it could.

    An salloc without --mem holds all the memory of its node, and a new job that needs that node
    would wait in the queue until the allocation ends: that is a hang, so say it up front.
    """
    nodes_out = _run(["scontrol", "show", "node", "-o"])
    job_out = _run(["scontrol", "show", "job", "-o", alloc.job_id])
    if nodes_out is None or job_out is None:
        return None
    job = parse_scontrol_record(job_out.stdout.splitlines()[0] if job_out.stdout else "")
    ours = _tres(job.get("TRES") or job.get("AllocTRES"))
    our_mem = _mb(ours.get("mem")) or 0
    our_cpus = int(ours.get("cpu", "0") or 0)
    our_nodes = set(expand_nodelist(job.get("NodeList", ""))) if job.get("NodeList") else set()
    per_node_mem = our_mem // max(len(our_nodes), 1)
    per_node_cpus = our_cpus // max(len(our_nodes), 1)
    cpus = opts.cpus or 1
    blocked: str | None = None
    for line in nodes_out.stdout.splitlines():
        node = parse_scontrol_record(line)
        name = node.get("NodeName", "")
        if opts.partition and opts.partition not in node.get("Partitions", "").split(","):
            continue
        if any(s in node.get("State", "") for s in ("DOWN", "DRAIN", "FAIL")):
            continue
        real = int(node.get("RealMemory", "0") or 0)
        total_cpus = int(node.get("CPUTot", "0") or 0)
        need_mem = opts.mem_mb if opts.mem_mb is not None else default_job_mem_mb(real, cpus)
        # What stays out of reach on this node for as long as the allocation lives; other
        # jobs end in time, so what they hold is an ordinary wait in the queue.
        held_mem, held_cpus = (per_node_mem, per_node_cpus) if name in our_nodes else (0, 0)
        short_mem = real - held_mem < need_mem
        short_cpus = total_cpus - held_cpus < cpus
        if not (short_mem or short_cpus):
            return None  # the job can start on this node, now or once other jobs end
        if name in our_nodes and real >= need_mem and total_cpus >= cpus:
            held = []
            if short_mem:
                held.append(
                    f"memory ({held_mem} of {real} MB; the new job needs {need_mem} MB)"
                )
            if short_cpus:
                held.append(f"CPUs ({held_cpus} of {total_cpus}; the new job needs {cpus})")
            blocked = (
                f"a new job would wait until allocation {alloc.job_id} ends: it holds node "
                f"{name}'s {' and '.join(held)}. Leave out --new-job to run the check as a step "
                "of this allocation, or give salloc a --mem (and --cpus-per-task) that leaves "
                "room for the job"
            )
    # None here: no node could ever take the job; never_fits says why when it is submitted.
    return blocked


# --------------------------------------------------------------------------------------------
# Facts for `autograd-check env`
# --------------------------------------------------------------------------------------------

SLURM_TOOLS = ("sbatch", "srun", "salloc", "squeue", "scontrol", "sacct", "sinfo", "scancel")


def partitions() -> list[dict[str, Any]]:
    done = _run(["sinfo", "-h", "-o", "%P|%a|%l|%D|%t|%G|%N|%c|%m"])
    rows: list[dict[str, Any]] = []
    if done is None:
        return rows
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 9:
            continue
        name = parts[0]
        rows.append(
            {
                "name": name.rstrip("*"),
                "default": name.endswith("*"),
                "available": parts[1],
                "time_limit": parts[2],
                "nodes": int(parts[3]) if parts[3].isdigit() else parts[3],
                "state": parts[4],
                "gres": _none(parts[5]),
                "node_list": parts[6],
                "cpus_per_node": parts[7],
                "memory_mb_per_node": parts[8],
            }
        )
    return rows


def submit_plan(alloc: Allocation | None, tools: Mapping[str, str | None], folder: Path) -> str:
    """What `submit` would do here, in one sentence."""
    if not tools.get("sbatch") or not tools.get("srun"):
        return "nothing: Slurm is not available here (exit 3); use `autograd-check run`"
    if alloc is not None and not alloc.in_step:
        return (
            f"run the check as a job step (srun) of allocation {alloc.job_id} on "
            f"{','.join(alloc.nodes) or 'its node'}; --new-job queues a separate batch job"
        )
    if alloc is not None:
        return (
            f"queue a new batch job (sbatch through submitit, SLURM_* of job {alloc.job_id} "
            f"step {alloc.step_id} hidden), logs in {folder}"
        )
    return f"queue a batch job (sbatch through submitit), logs in {folder}"


def slurm_facts() -> dict[str, Any]:
    tools = {tool: shutil.which(tool) for tool in SLURM_TOOLS}
    alloc = current_allocation()
    folder = resolve_log_dir(None)
    accounting_ok, accounting_detail = (
        accounting_status() if tools["sacct"] else (False, "sacct not found")
    )
    return {
        "tools": tools,
        "partitions": partitions() if tools["sinfo"] else [],
        "accounting": {"works": accounting_ok, "detail": accounting_detail},
        "allocation": None
        if alloc is None
        else {
            "job_id": alloc.job_id,
            "step_id": alloc.step_id,
            "nodes": list(alloc.nodes),
            "host": alloc.host,
            "on_allocated_node": alloc.on_node,
        },
        "log_dir": {
            "path": str(folder),
            "exists": folder.is_dir(),
            "from": "$" + LOG_DIR_ENV if os.environ.get(LOG_DIR_ENV) else "default",
        },
        "submit_would": submit_plan(alloc, tools, folder),
    }


# --------------------------------------------------------------------------------------------
# Job arrays (`sweep --slurm`): one array of tasks, each running several cases and writing their
# records itself (autograd_check.sweep.ArrayTask); the results store, not submitit's pickles,
# holds the outcome.
# --------------------------------------------------------------------------------------------

DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's own default MaxArraySize, used when `scontrol show config` does not answer."""
_TASK_RANGE = re.compile(r"^(\d+)_\[?([0-9,\-]+)(?:%\d+)?\]?$")
_NO_TASK = "4294967294"
"""Slurm's NO_VAL as an ArrayTaskId: the array's record for tasks that never got their own job."""


def max_array_size() -> int:
    """How many tasks one array may hold here (task ids 0 to MaxArraySize - 1)."""
    done = _run(["scontrol", "show", "config"])
    if done is not None:
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "MaxArraySize" and value.strip().isdigit():
                return max(1, int(value.strip()))
    return DEFAULT_MAX_ARRAY_SIZE


def array_parameters(
    opts: SlurmOptions, *, cuda: bool, tasks: int, max_parallel: int | None
) -> dict[str, Any]:
    """executor_parameters for an array task (one GPU when a case is on CUDA, unless told
    otherwise), plus the array's % limit."""
    params = executor_parameters(CheckSpec(device="cuda" if cuda else "cpu"), opts)
    params["array_parallelism"] = max(1, min(max_parallel or tasks, tasks))
    return params


def array_script(opts: SlurmOptions, params: Mapping[str, Any], folder: Path, tasks: int) -> str:
    """The sbatch script of an array of `tasks` tasks, written by submitit itself (--dry-run)."""
    if tasks == 1:  # submitit submits a single task as a plain job
        single = {k: v for k, v in params.items() if k != "array_parallelism"}
        return submitit_script(folder, single)
    return submitit_script(folder, params, map_count=tasks)


@dataclass
class SubmittedArray:
    """One submitted array: its id, and the job id of each task ('123_0', ...; '123' alone when
    submitit sent a single task as a plain job)."""

    job_id: str
    task_jobs: list[str]
    submission_file: Path


def submit_arrays(
    task: Callable[..., Any],
    task_args: Sequence[tuple[Any, ...]],
    opts: SlurmOptions,
    params: Mapping[str, Any],
    folder: Path,
    *,
    clean: bool = False,
    on_submitted: Callable[[SubmittedArray, int], None] | None = None,
) -> list[SubmittedArray]:
    """Submit `task(*args)` for every args in `task_args` as job arrays of at most MaxArraySize
    tasks each. `on_submitted(array, first)` runs after each array is accepted (first = index of
    its first task), so a caller records it before the next sbatch can fail."""
    require_slurm("sbatch")
    prepare_log_dir(folder)
    from submitit.slurm.slurm import SlurmExecutor

    limit = max_array_size()
    parallel = int(params.get("array_parallelism") or len(task_args))
    executor = SlurmExecutor(folder=folder)
    executor.update_parameters(**{k: v for k, v in params.items() if k != "array_parallelism"})
    arrays: list[SubmittedArray] = []
    for first in range(0, len(task_args), limit):
        group = list(task_args[first : first + limit])
        executor.update_parameters(array_parallelism=max(1, min(parallel, len(group))))
        done = f" ({len(arrays)} array(s) already submitted)" if arrays else ""
        send = functools.partial(executor.map_array, task, *zip(*group, strict=True))
        jobs = submit_through_submitit(executor, folder, f"the job array{done}", send, clean=clean)
        task_jobs = [str(job.job_id) for job in jobs]
        array_id = task_jobs[0].split("_")[0]
        array = SubmittedArray(array_id, task_jobs, folder / f"{array_id}_submission.sh")
        arrays.append(array)
        if on_submitted is not None:
            on_submitted(array, first)
    return arrays


def _expand_tasks(array_id: str, tasks: str) -> list[str]:
    """'3', '1-4%2', '1,3,5-6' → ['123_3', ...]."""
    ids: list[str] = []
    for part in tasks.split("%")[0].split(","):
        lo, dash, hi = part.partition("-")
        if lo.isdigit() and (not dash or hi.isdigit()):
            ids.extend(f"{array_id}_{i}" for i in range(int(lo), int(hi if dash else lo) + 1))
    return ids


def array_states(task_jobs: Sequence[str]) -> dict[str, str]:
    """The Slurm state of each task job id: accounting first (it remembers finished tasks),
    then the controller (current; scontrol, or squeue when scontrol is missing), so the freshest
    word wins. Tasks no source knows are absent.

    Tasks cancelled before they started have no record of their own: the array's record for its
    unstarted tasks ('403' in sacct and squeue, ArrayTaskId=4294967294 in scontrol) gives them
    its state; and a task missing from an array that the controller and accounting both still
    know was taken out of it before it started (`scancel 403_[2-5]` with task 1 still pending)."""
    wanted = set(task_jobs)
    array_ids = sorted({j.split("_")[0] for j in task_jobs})
    states: dict[str, str] = {}
    whole: dict[str, str] = {}  # array id → the state of its tasks that never had their own job
    if not array_ids:
        return states

    def take(job: str, state: str) -> None:
        if job in array_ids and job not in wanted:
            whole[job] = _state_word(state)
        else:
            states[job] = _state_word(state)

    done = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(array_ids), "-o", "JobID,State"])
    for line in done.stdout.splitlines() if done is not None else []:
        job, _, state = line.strip().partition("|")
        match = _TASK_RANGE.match(job)
        for task in _expand_tasks(match[1], match[2]) if match else [job]:
            take(task, state)
    # scontrol shows one job (with all its array tasks) per call.
    answers = [_run(["scontrol", "show", "job", "-o", array_id]) for array_id in array_ids]
    controller = [a for a in answers if a is not None]
    known_arrays: set[str] = set()
    if controller or not have("squeue"):
        for line in (ln for a in controller for ln in a.stdout.splitlines()):
            rec = parse_scontrol_record(line)
            state = _state_word(rec.get("JobState", ""))
            if rec.get("ArrayJobId") and rec.get("ArrayTaskId"):
                known_arrays.add(rec["ArrayJobId"])
                if rec["ArrayTaskId"] == _NO_TASK:
                    take(rec["ArrayJobId"], state)
                for task in _expand_tasks(rec["ArrayJobId"], rec["ArrayTaskId"]):
                    states[task] = state
            elif rec.get("JobId"):
                states[rec["JobId"]] = state
    else:
        queue = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(array_ids), "-o",
                      "%i|%T"])
        for line in queue.stdout.splitlines() if queue is not None else []:
            job, _, state = line.strip().partition("|")
            take(job, state)
    for job in wanted - states.keys():
        array_id = job.split("_")[0]
        if array_id in whole:
            states[job] = whole[array_id]
        elif array_id in known_arrays and done is not None and "_" in job:
            states[job] = "CANCELLED"
    return {job: state for job, state in states.items() if job in wanted}


@dataclass
class ArrayProgress:
    """What `sweep --wait` shows: tasks by state, records written, time spent."""

    pending: int
    running: int
    done: int
    failed: int
    recorded: int
    cases: int
    elapsed: float
    states: dict[str, str]

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.running == 0


def watch_arrays(
    task_jobs: Sequence[str],
    recorded: Callable[[], int],
    cases: int,
    timeout: float,
    on_update: Callable[[ArrayProgress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ArrayProgress:
    """Poll the tasks until every one has ended (or every case has its record), bounded by
    `timeout` seconds. A task no source has known for VANISH_GRACE_S counts as ended (VANISHED):
    without accounting, Slurm forgets finished tasks after MinJobAge."""
    start = time.monotonic()
    interval = POLL_FIRST_S
    last_known: dict[str, float] = {}
    while True:
        seen = array_states(task_jobs)
        now = time.monotonic()  # after asking: sacct and scontrol can take a moment
        states: dict[str, str] = {}
        for job in task_jobs:
            if job in seen:
                last_known[job] = now
                states[job] = seen[job]
            elif now - last_known.setdefault(job, start) > VANISH_GRACE_S:
                states[job] = "VANISHED"
            else:
                states[job] = "PENDING"  # just submitted, not yet visible anywhere
        written = recorded()
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        for state in states.values():
            if state == "PENDING" or state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
                counts["pending"] += 1
            elif state in ACTIVE_STATES:
                counts["running"] += 1
            elif state == "COMPLETED":
                counts["done"] += 1
            else:
                counts["failed"] += 1
        progress = ArrayProgress(**counts, recorded=written, cases=cases, elapsed=now - start,
                                 states=states)
        if on_update is not None:
            on_update(progress)
        if progress.finished or written >= cases or now - start >= timeout:
            return progress
        sleep(max(0.0, min(interval, timeout - (now - start))))
        interval = min(interval * 1.5, POLL_MAX_S)


def live_tasks(task_jobs: Sequence[str]) -> dict[str, str]:
    """The tasks among `task_jobs` that Slurm says are still pending or running (job → state);
    empty when neither scontrol nor sacct is here to ask."""
    if not task_jobs or not (have("scontrol") or have("sacct") or have("squeue")):
        return {}
    return {job: state for job, state in array_states(task_jobs).items()
            if state in ACTIVE_STATES and state != "UNKNOWN"}


CANCEL_WAIT_S = 120.0
"""How long `cancel_arrays` waits for cancelled tasks to end (Slurm's KillWait is 30 s)."""


def cancel_arrays(
    task_jobs: Sequence[str], timeout: float = CANCEL_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """scancel the arrays these tasks belong to, then wait until none of the tasks is active
    any more (a cancelled task may still be writing a record until it is gone)."""
    require_slurm("scancel")
    arrays = sorted({j.split("_")[0] for j in task_jobs}, key=int)
    try:
        done = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvironmentProblem(f"scancel {' '.join(arrays)} did not answer: {e}") from None
    if done.returncode != 0:
        words = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise EnvironmentProblem(f"scancel {' '.join(arrays)} failed: {words}")
    start = time.monotonic()
    while (alive := live_tasks(task_jobs)):
        if time.monotonic() - start > timeout:
            raise EnvironmentProblem(
                f"cancelled job array {', '.join(arrays)}, but {len(alive)} task(s) had not ended "
                f"after {timeout:g} s ({', '.join(sorted(alive)[:5])}); run the sweep again once "
                f"`squeue -j {','.join(arrays)}` lists none"
            )
        sleep(0.5)


def array_blocked(opts: SlurmOptions, alloc: Allocation) -> str | None:
    """For `sweep` inside an allocation: why its array could not start while the allocation
    lives (the reason of `allocation_blocks_new_job`, without its advice for `submit`)."""
    blocked = allocation_blocks_new_job(opts, alloc)
    if blocked is None:
        return None
    # The reason is the first sentence; the advice after it speaks of submit's --new-job.
    reason, marker, _ = blocked.partition(". Leave out --new-job")
    return reason if marker else blocked

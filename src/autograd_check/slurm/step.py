"""A job step inside the current allocation (salloc): `srun ... python -c <start> _step` (as
`python -m autograd_check _step`, without the working folder on sys.path) runs the check on the
allocated node and answers with one marked JSON line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from autograd_check.base.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    CheckError,
    EnvironmentProblem,
    JobFailed,
)
from autograd_check.base.result import CheckResult
from autograd_check.base.safety import PRIVATE_FILE, python_module_argv
from autograd_check.base.slurm_env import SlurmEnv
from autograd_check.base.spec import CheckSpec, build_spec
from autograd_check.distributed.rendezvous import RENDEZVOUS_ENV, job_environment
from autograd_check.execute import execute
from autograd_check.slurm.allocation import Allocation
from autograd_check.slurm.batch import rank_layout
from autograd_check.slurm.commands import JobInfo, require_slurm
from autograd_check.slurm.log_dir import prepare_log_dir
from autograd_check.slurm.node import error_envelope, outcome_to_result, plain
from autograd_check.slurm.options import GPU_SBATCH_KEYS, SlurmOptions
from autograd_check.slurm.tasks import TASK_LINES, ended_task, own_lines
from autograd_check.slurm.watch import LOG_TAIL_LINES, POLL_FIRST_S, POLL_MAX_S, ProgressFn

RANK_LOGS_PREFIX = "step-ranks-"
"""Each rank's output of a step over ranks: step-ranks-TOKEN-T.out and .err in the log folder."""
STEP_MARKER = "@@autograd-check-step@@"
"""Prefix of the one stdout line a job step answers with (setup lines may print too)."""


SETUP_PREFIX, SETUP_SUFFIX = ".step-setup.", ".sh"
"""The setup file's name in the log folder (--dry-run shows XXXXXXXX for its random part)."""


def step_command(spec: CheckSpec, opts: SlurmOptions, setup_file: str | None = None,
                 rank_logs: str | None = None) -> list[str]:
    """srun ... python -c <start> _step --spec JSON, as an argv list (no shell).

    Over ranks, each task's stdout and stderr go to files of their own, `rank_logs` + .out and
    .err (a pattern with srun's %t, the task), in the private log folder: task 0's stdout holds
    the answer, and a rank that dies is shown with its own last lines, as a local run's and a
    batch job's are; srun's own words stay on the pipe.
    The check's Python starts with no working folder on sys.path (safety.python_module_argv).
    Setup lines, when given, run in bash before the check, which gets its arguments as "$@";
    bash reads them from `setup_file` (run_step writes it, 0600, in the private log folder, see
    setup_script), never from the argv: any local user sees an argv in `ps`, and sacct keeps it.
    """
    nodes, per_node = rank_layout(spec, opts)
    cmd = ["srun", f"--ntasks={nodes * per_node}", f"--nodes={nodes}",
           f"--job-name={opts.job_name}", "--kill-on-bad-exit=1"]
    if spec.ranks is not None:
        logs = rank_logs or str(opts.folder() / f"{RANK_LOGS_PREFIX}XXXXXXXX-%t")
        cmd += [f"--output={logs}.out", f"--error={logs}.err"]
    if opts.cpus:
        cmd.append(f"--cpus-per-task={opts.cpus}")
    if opts.mem:
        cmd.append(f"--mem={opts.mem}")
    if opts.time_min:
        cmd.append(f"--time={opts.time_min}")
    gpus = opts.gpus
    if gpus is None and spec.device.startswith("cuda"):
        gpus = per_node  # one GPU per rank
    if gpus:
        cmd.append(f"--gpus-per-node={gpus}" if spec.ranks else f"--gpus={gpus}")
    for key, value in opts.sbatch_args:
        if key in GPU_SBATCH_KEYS:
            cmd.append(f"--{key}={value}" if value else f"--{key}")
    check = [*python_module_argv("autograd_check"), "_step", "--spec",
             json.dumps(spec.to_dict())]
    if opts.setup:
        shown = str(opts.folder() / f"{SETUP_PREFIX}XXXXXXXX{SETUP_SUFFIX}")
        return [*cmd, "bash", setup_file or shown, *check]
    return [*cmd, *check]


def setup_script(opts: SlurmOptions) -> str:
    """What bash runs in the step: the setup lines, then the check ("$@")."""
    return "\n".join([*opts.setup, 'exec "$@"', ""])


@contextlib.contextmanager
def setup_file(opts: SlurmOptions) -> Iterator[str | None]:
    """The setup lines in a file of the private log folder (0600: they may hold a secret, as the
    batch job's script does), for as long as the step runs; None without setup lines. The log
    folder is where the node can read it: it is on a filesystem the nodes share."""
    if not opts.setup:
        yield None
        return
    folder = opts.folder()
    prepare_log_dir(folder)
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=SETUP_PREFIX, suffix=SETUP_SUFFIX)
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot write the step's setup file in {folder}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp's 0600, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(setup_script(opts))
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


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
    tasks = SlurmEnv().ntasks
    if spec.ranks is not None and tasks and tasks.isdigit() and int(tasks) < spec.ranks:
        raise EnvironmentProblem(
            f"allocation {alloc.job_id} has {tasks} task(s), and --ranks {spec.ranks} runs one "
            f"task per rank: ask salloc for --ntasks={spec.ranks} (or give --new-job)")
    where = f"a step of Slurm job {alloc.job_id}"
    # no inherited MASTER_PORT, RANK, ... for the ranks
    env = job_environment(dict(os.environ), memory=False)
    rank_logs: Path | None = None
    if spec.ranks is not None:  # the ranks meet in the (private) log folder
        folder = opts.folder()
        prepare_log_dir(folder)
        env[RENDEZVOUS_ENV] = str(folder)
        rank_logs = folder / f"{RANK_LOGS_PREFIX}{secrets.token_hex(4)}-%t"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            setup_file(opts) as setup:
        cmd = step_command(spec, opts, setup, str(rank_logs) if rank_logs else None)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=env)
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
                    log_tail=_tail_of(err) + _rank_tail(rank_logs, 0),
                )
            interval = min(interval * 1.5, POLL_MAX_S)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if rank_logs is not None:  # the answer is task 0's
        stdout += _read(_rank_log(rank_logs, 0, "out"))
    try:
        answer = step_answer(stdout)
    except json.JSONDecodeError:
        answer = None
    if answer is not None:
        step = (answer.get("slurm") or {}).get("step_id")
        if step is not None:
            where = f"Slurm job {alloc.job_id} step {step}"
        result = outcome_to_result(answer, where)
        _remove_rank_logs(rank_logs, spec.ranks)
        if on_update:
            on_update(replace(info, state="COMPLETED"), time.monotonic() - start)
        return result
    words = "; ".join(ln.strip() for ln in stderr.strip().splitlines() if ln.strip())[-800:]
    if _STEP_REFUSED.search(stderr):
        raise EnvironmentProblem(f"Slurm refused the job step: {words}")
    # slurmstepd's words (cancelled, out of memory) land in the tasks' own stderr
    said = stderr + "".join(_read(_rank_log(rank_logs, task, "err"))
                            for task in range(spec.ranks or 0) if rank_logs is not None)
    state = next((s for pattern, s in _STEP_STATE if pattern.search(said)), "FAILED")
    message = f"{where} ended without a result (state {state}, srun exit code {proc.returncode})"
    tail = "\n".join(stderr.strip().splitlines()[-LOG_TAIL_LINES:])
    ended = ended_task(stderr) if spec.ranks is not None else None
    if ended is not None:  # the rank srun saw end first, with its own last lines
        task, how = ended
        message += f": rank {task} of {spec.ranks} ended first ({how})"
        tail += _rank_tail(rank_logs, task)
    elif rank_logs is not None:
        tail += _rank_tail(rank_logs, 0)
    raise JobFailed(message, state=state, log_tail=tail)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _rank_log(rank_logs: Path, task: int, suffix: str) -> Path:
    return Path(f"{str(rank_logs).replace('%t', str(task))}.{suffix}")


def _rank_tail(rank_logs: Path | None, task: int) -> str:
    """A rank's own last lines, of stderr then of stdout (the answer line left out), each file
    named and each line marked [rank T], as a batch job's are (slurm/tasks.py)."""
    out: list[str] = []
    if rank_logs is None:
        return ""
    for suffix in ("err", "out"):
        path = _rank_log(rank_logs, task, suffix)
        lines = [ln for ln in own_lines(path, TASK_LINES + 1) if STEP_MARKER not in ln]
        if lines:
            out.append(f"{path}:")
            out += [f"[rank {task}] {ln}" for ln in lines[-TASK_LINES:]]
    return "".join(f"\n{ln}" for ln in out)


def _remove_rank_logs(rank_logs: Path | None, ranks: int | None) -> None:
    """A finished step's rank logs say nothing the result does not."""
    if rank_logs is None:
        return
    for task in range(ranks or 0):
        for suffix in ("out", "err"):
            with contextlib.suppress(OSError):
                _rank_log(rank_logs, task, suffix).unlink()


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

    try:
        result = execute(spec)
    except CheckError as e:
        return STEP_MARKER + json.dumps(error_envelope(e)), e.exit_code
    if (SlurmEnv().procid or "0") != "0" and spec.ranks is not None:
        return "", result.exit_code  # rank 0 answers for every rank: one line, not interleaved
    slurm = result.environment.get("slurm")
    answer = {"outcome": "result", "result": plain(result), "slurm": slurm}
    # json.dumps writes NaN and Infinity, which json.loads reads back on the other side.
    return STEP_MARKER + json.dumps(answer), result.exit_code

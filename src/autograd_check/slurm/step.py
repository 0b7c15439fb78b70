"""A job step inside the current allocation (salloc): `srun ... python -c <start> _step` (as
`python -m autograd_check _step`, without the working folder on sys.path) runs the check on the
allocated node and answers with one marked JSON line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
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
from autograd_check.slurm.watch import LOG_TAIL_LINES, POLL_FIRST_S, POLL_MAX_S, ProgressFn

STEP_MARKER = "@@autograd-check-step@@"
"""Prefix of the one stdout line a job step answers with (setup lines may print too)."""


SETUP_PREFIX, SETUP_SUFFIX = ".step-setup.", ".sh"
"""The setup file's name in the log folder (--dry-run shows XXXXXXXX for its random part)."""


def step_command(spec: CheckSpec, opts: SlurmOptions, setup_file: str | None = None) -> list[str]:
    """srun ... python -c <start> _step --spec JSON, as an argv list (no shell).

    The check's Python starts with no working folder on sys.path (safety.python_module_argv).
    Setup lines, when given, run in bash before the check, which gets its arguments as "$@";
    bash reads them from `setup_file` (run_step writes it, 0600, in the private log folder, see
    setup_script), never from the argv: any local user sees an argv in `ps`, and sacct keeps it.
    """
    nodes, per_node = rank_layout(spec, opts)
    cmd = ["srun", f"--ntasks={nodes * per_node}", f"--nodes={nodes}",
           f"--job-name={opts.job_name}", "--kill-on-bad-exit=1"]
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
    if spec.ranks is not None:  # the ranks meet in the (private) log folder
        folder = opts.folder()
        prepare_log_dir(folder)
        env[RENDEZVOUS_ENV] = str(folder)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            setup_file(opts) as setup:
        cmd = step_command(spec, opts, setup)
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

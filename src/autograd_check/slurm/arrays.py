"""Job arrays (`sweep --slurm`): one array of tasks, each running several cases and writing their
records itself (autograd_check.sweep.runner.ArrayTask); the results store, not submitit's pickles,
holds the outcome. A sweep over rank counts (--ranks 1,2,4) sends one array per rank count: Slurm
gives every task of an array the same shape, so each task of the N-rank array is one job of N
Slurm tasks (N / --nodes per node)."""

from __future__ import annotations

import functools
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput, EnvironmentProblem
from autograd_check.base.spec import CheckSpec
from autograd_check.slurm.admission import allocation_blocks_new_job, slurm_config
from autograd_check.slurm.allocation import Allocation
from autograd_check.slurm.batch import (
    executor_parameters,
    rank_layout,
    submit_through_submitit,
    submitit_script,
)
from autograd_check.slurm.commands import (
    ACTIVE_STATES,
    have,
    parse_scontrol_record,
    require_slurm,
    run_command,
    state_word,
)
from autograd_check.slurm.guard import node_python
from autograd_check.slurm.log_dir import prepare_log_dir
from autograd_check.slurm.options import DEFAULT_TIME_MIN, SlurmOptions
from autograd_check.slurm.watch import POLL_FIRST_S, POLL_MAX_S, VANISH_GRACE_S

DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's own default MaxArraySize, used when `scontrol show config` does not answer."""
_TASK_RANGE = re.compile(r"^(\d+)_\[?([0-9,\-]+)(?:%\d+)?\]?$")
_NO_TASK = "4294967294"
"""Slurm's NO_VAL as an ArrayTaskId: the array's record for tasks that never got their own job."""


def max_array_size() -> int:
    """How many tasks one array may hold here (task ids 0 to MaxArraySize - 1)."""
    value = slurm_config().get("MaxArraySize", "")
    return max(1, int(value)) if value.isdigit() else DEFAULT_MAX_ARRAY_SIZE


def array_parameters(
    opts: SlurmOptions, *, cuda: bool, tasks: int, max_parallel: int | None,
    ranks: int | None = None,
) -> dict[str, Any]:
    """executor_parameters for an array task (one GPU when a case is on CUDA, unless told
    otherwise), plus the array's % limit. With `ranks`, each array task is one job of that many
    Slurm tasks (one per rank; a GPU each on CUDA), --nodes of them when given."""
    spec = CheckSpec(device="cuda" if cuda else "cpu", ranks=ranks)
    params = executor_parameters(spec, opts)
    params["array_parallelism"] = max(1, min(max_parallel or tasks, tasks))
    return params


SIGNAL_DELAY_S = 90
"""submitit's signal_delay_s (left at its default): Slurm sends an array task USR2 this long
before its time limit, and the task is then requeued (checkpointable)."""


def check_time_for_arrays(opts: SlurmOptions) -> None:
    """Refuse (BadInput) a --time no longer than the warning signal's delay: the signal would
    come as the task starts, and submitit would requeue it at once, three times, and give up."""
    minutes = opts.time_min or DEFAULT_TIME_MIN
    if minutes * 60 <= SIGNAL_DELAY_S:
        shortest = SIGNAL_DELAY_S // 60 + 1
        raise BadInput(
            f"time {minutes} min is too short for a sweep's array task: Slurm warns it "
            f"{SIGNAL_DELAY_S} s before its time limit (so that it can be requeued), which would "
            f"be as it starts, and it would be requeued at once, again and again; give --time "
            f"{shortest} or more")


def check_rank_layout(opts: SlurmOptions, rank_counts: Sequence[int | None]) -> None:
    """Refuse (BadInput), before anything is written, --nodes that the sweep's rank counts do not
    allow: --nodes needs a ranks axis and must divide every rank count."""
    for ranks in rank_counts:
        try:
            rank_layout(CheckSpec(ranks=ranks), opts)
        except BadInput:
            if ranks is None:
                raise BadInput("--nodes applies only with --ranks (e.g. --ranks 2,4 --nodes 2)"
                               ) from None
            raise BadInput(f"--ranks {ranks} does not split evenly over --nodes {opts.nodes}; "
                           "--nodes must divide every rank count of --ranks") from None


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
    # submitit loads only when Slurm is used
    from submitit.slurm.slurm import SlurmExecutor

    limit = max_array_size()
    parallel = int(params.get("array_parallelism") or len(task_args))
    executor = SlurmExecutor(folder=folder, python=node_python())  # guard.py checks, then runs
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
    know was taken out of it before it started (`scancel 403_[2-5]` with task 1 still pending),
    even while accounting still lists it as pending."""
    wanted = set(task_jobs)
    array_ids = sorted({j.split("_")[0] for j in task_jobs})
    states: dict[str, str] = {}
    whole: dict[str, str] = {}  # array id → the state of its tasks that never had their own job
    if not array_ids:
        return states

    def take(job: str, state: str) -> None:
        if job in array_ids and job not in wanted:
            # The bare array id is the record of the tasks that never had a job of their own,
            # until the last of them starts and takes it over (then it is that task, which may
            # have COMPLETED): only a cancellation can speak for the tasks that never ran.
            if state_word(state) == "CANCELLED":
                whole[job] = "CANCELLED"
        else:
            states[job] = state_word(state)

    done = run_command(["sacct", "-X", "-n", "-P", "-j", ",".join(array_ids), "-o", "JobID,State"])
    for line in done.stdout.splitlines() if done is not None else []:
        job, _, state = line.strip().partition("|")
        match = _TASK_RANGE.match(job)
        for task in _expand_tasks(match[1], match[2]) if match else [job]:
            take(task, state)
    # scontrol shows one job (with all its array tasks) per call.
    answers = [run_command(["scontrol", "show", "job", "-o", array_id]) for array_id in array_ids]
    controller = [a for a in answers if a is not None]
    known_arrays: set[str] = set()
    listed: set[str] = set()  # the tasks the controller names, alone or in a pending range
    if controller or not have("squeue"):
        for line in (ln for a in controller for ln in a.stdout.splitlines()):
            rec = parse_scontrol_record(line)
            state = state_word(rec.get("JobState", ""))
            if rec.get("ArrayJobId") and rec.get("ArrayTaskId"):
                known_arrays.add(rec["ArrayJobId"])
                if rec["ArrayTaskId"] == _NO_TASK:
                    take(rec["ArrayJobId"], state)
                for task in _expand_tasks(rec["ArrayJobId"], rec["ArrayTaskId"]):
                    states[task] = state
                    listed.add(task)
            elif rec.get("JobId"):
                states[rec["JobId"]] = state
    else:
        queue = run_command(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(array_ids), "-o",
                      "%i|%T"])
        for line in queue.stdout.splitlines() if queue is not None else []:
            job, _, state = line.strip().partition("|")
            take(job, state)
    for job in wanted - listed:
        array_id = job.split("_")[0]
        if job not in states:
            if array_id in whole:
                states[job] = whole[array_id]
            elif array_id in known_arrays and done is not None and "_" in job:
                states[job] = "CANCELLED"
        elif states[job] == "PENDING" and array_id in known_arrays and "_" in job:
            # Accounting lags the controller: it can still list the task in the array's pending
            # range ('403_[1-3]') after `scancel 403_3` took it out. A task leaves that range only
            # by starting (then the controller names it) or by being cancelled.
            states[job] = whole.get(array_id, "CANCELLED")
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


@dataclass(frozen=True)
class JobIdentity:
    """What the controller says a job is: its name and where its logs go (scontrol)."""

    job_id: str
    name: str | None
    stdout: str | None
    work_dir: str | None
    comment: str | None


def job_identities(job_ids: Sequence[str]) -> dict[str, JobIdentity]:
    """The controller's word on each job (an array's id or one of its tasks' ids, '123_4'): its
    name and log paths. Jobs the controller does not know (ended long ago, no scontrol) are
    absent."""
    found: dict[str, JobIdentity] = {}
    for job in dict.fromkeys(job_ids):
        done = run_command(["scontrol", "show", "job", "-o", job])
        for line in done.stdout.splitlines() if done is not None else []:
            rec = parse_scontrol_record(line)
            if not rec.get("JobId"):
                continue
            found[job] = JobIdentity(
                job, rec.get("JobName") or None, rec.get("StdOut") or None,
                rec.get("WorkDir") or None,
                rec.get("Comment") if rec.get("Comment") not in (None, "", "(null)") else None,
            )
            break
    return found


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

"""`submit` and `result`, decided here: a job step of the allocation this shell is in or a batch
job, the plan --dry-run shows, the refusals before anything is queued, whether to wait, and the
wait with its result (as sweep/launch.py decides for sweeps). The commands parse, call one
function of this module and show what it returns.

Nothing here prints: notes go to `on_note`, and a wait's progress to the view `watching(label)`
makes (render.progress.JobProgress). Ctrl-C while waiting for a batch job stops the wait, not
the job: WaitStopped says where the job is.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from autograd_check.base.errors import EnvironmentProblem, WaitStopped
from autograd_check.slurm import batch, commands, step, watch
from autograd_check.slurm.admission import allocation_blocks_new_job
from autograd_check.slurm.allocation import current_allocation, runs_as_step

if TYPE_CHECKING:
    from autograd_check.base.result import CheckResult
    from autograd_check.base.spec import CheckSpec
    from autograd_check.slurm.batch import Submitted
    from autograd_check.slurm.commands import JobInfo
    from autograd_check.slurm.options import SlurmOptions

Note = Callable[[str], None]


class Progress(Protocol):
    """A view of a wait: told each state seen, and how long the wait has lasted."""

    def update(self, info: JobInfo, elapsed: float) -> None: ...

    @property
    def elapsed(self) -> float | None: ...


Watching = Callable[[str], AbstractContextManager[Progress]]
"""Makes the view of one wait, given its label ('Slurm job 12')."""


def _quiet(message: str) -> None:
    """The default `on_note`: say nothing."""


@dataclass(frozen=True)
class SubmitPlan:
    """What `submit` would send (--dry-run): an srun line, or an sbatch script."""

    mode: str
    """job-step or batch-job"""
    srun_command: list[str] | None
    sbatch_script: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "srun_command": self.srun_command,
                "sbatch_script": self.sbatch_script}

    def text(self) -> str:
        """The srun line, or the script: what --dry-run prints without --json."""
        if self.srun_command is not None:
            return shlex.join(self.srun_command) + "\n"
        return self.sbatch_script or ""


def plan_submission(spec: CheckSpec, opts: SlurmOptions, *, new_job: bool) -> SubmitPlan:
    """What `submit` would do here, sending nothing (works where there is no Slurm)."""
    if runs_as_step(current_allocation(), new_job):
        return SubmitPlan("job-step", step.step_command(spec, opts), None)
    return SubmitPlan("batch-job", None, batch.sbatch_script(spec, opts))


@dataclass(frozen=True)
class Finished:
    """A check that ran on Slurm: its result, the job's last state and how long it was waited
    for (None for a job step)."""

    result: CheckResult
    state: str | None = None
    elapsed: float | None = None


def hint_flags(log_dir: Path | None) -> str:
    """What `status` and `result` need to find a job submitted with --log-dir."""
    return f" --log-dir {shlex.quote(str(log_dir))}" if log_dir is not None else ""


def stopped_waiting(job_id: str, log_dir: Path | None) -> WaitStopped:
    """Ctrl-C while waiting for a batch job: only the wait stops, so say where the job is."""
    flags = hint_flags(log_dir)
    return WaitStopped(
        f"stopped waiting; Slurm job {job_id} keeps running: `autograd-check status {job_id}"
        f"{flags}` shows its state, `autograd-check result {job_id}{flags} --wait` waits for "
        f"its result, `scancel {job_id}` cancels it"
    )


def submit_check(
    spec: CheckSpec,
    opts: SlurmOptions,
    *,
    new_job: bool,
    wait: bool | None,
    terminal: Callable[[], bool],
    watching: Watching,
    on_note: Note = _quiet,
) -> Submitted | Finished:
    """Run the check on Slurm. Inside an allocation (not in a step, no `new_job`): as a job step
    of it, waited for. Otherwise as a batch job, refused first when the allocation this shell
    holds would keep it from starting; waited for when `wait` says so, or, when it says nothing,
    when `terminal()` says stdout is a terminal (scripts get the job id at once). Returns the
    submitted job (not waited for) or the result; a failed job raises JobFailed (collect)."""
    alloc = current_allocation()
    if runs_as_step(alloc, new_job):
        assert alloc is not None
        ignored = step.ignored_for_step(opts)
        if ignored:
            on_note(f"{', '.join(ignored)} ignored: the check runs as a step of allocation "
                    f"{alloc.job_id} (--new-job queues a separate job)")
        if wait is False:
            on_note("--no-wait ignored: a job step runs while this command waits")
        with watching(f"step of Slurm job {alloc.job_id}") as progress:
            result = step.run_step(spec, opts, alloc, on_update=progress.update)
        return Finished(result)

    commands.require_slurm("sbatch", "srun")
    if alloc is not None:
        blocked = allocation_blocks_new_job(opts, alloc)
        if blocked:
            raise EnvironmentProblem(blocked)
    sub = batch.submit_job(spec, opts, clean=alloc is not None)
    if not (terminal() if wait is None else wait):
        return sub
    on_note(f"submitted Slurm job {sub.job_id}; logs in {sub.folder}")
    return wait_and_collect(sub.job_id, sub.folder, opts.timeout, watching, log_dir=opts.log_dir)


def wait_and_collect(
    job_id: str, folder: Path, timeout: float, watching: Watching, *, log_dir: Path | None
) -> Finished:
    """Wait for the job (bounded by `timeout`), then bring back its result; Ctrl-C while waiting
    raises WaitStopped (the job goes on)."""
    try:
        with watching(f"Slurm job {job_id}") as progress:
            info = watch.wait_for_job(job_id, folder, timeout, progress.update)
    except KeyboardInterrupt:
        raise stopped_waiting(job_id, log_dir) from None
    result = watch.collect(job_id, folder, info)  # a failed job: JobFailed
    return Finished(result, info.state, progress.elapsed)


def job_result(
    job_id: str, folder: Path, *, wait: bool, timeout: float, watching: Watching,
    log_dir: Path | None,
) -> Finished:
    """`result`: the result of a job `submit` queued, waited for first when `wait` says so;
    JobNotEnded (exit 5) for a job still queued or running without `wait`."""
    if not wait:
        return Finished(watch.collect(job_id, folder))
    try:
        watch.job_status(job_id, folder)  # a job Slurm and the folder never knew: JobFailed, now
    except EnvironmentProblem:
        pass  # Slurm slow to answer (or not here): the wait says what it sees, within bound
    waited = wait_and_collect(job_id, folder, timeout, watching, log_dir=log_dir)
    return Finished(waited.result, waited.state)

"""Starting a planned sweep, and seeing it through: the lock and the claim on DIR, an earlier
submission into DIR dealt with (sweep/earlier.py: refused while it runs, cancelled with --force,
tidied when killed, resumed from), the manifest's bookkeeping of every submission; then the
cases run here (`run_local`) or the arrays are watched (`watch_sweep`).

Nothing here prints or exits: notes and progress go to callbacks, failures are raised as BadInput
(2) or EnvironmentProblem (3), and an interrupted local sweep raises SweepInterrupted (130).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograd_check.base.document import envelope
from autograd_check.base.errors import EXIT_INTERRUPTED, CheckError, EnvironmentProblem
from autograd_check.base.safety import masked_parameters
from autograd_check.slurm.allocation import current_allocation
from autograd_check.slurm.arrays import (
    ArrayProgress,
    SubmittedArray,
    array_blocked,
    array_parameters,
    submit_arrays,
    watch_arrays,
)
from autograd_check.slurm.commands import require_slurm
from autograd_check.slurm.options import SlurmOptions
from autograd_check.sweep.claim import Claim, claim
from autograd_check.sweep.earlier import Note, quiet, resume, stop_earlier, tidy_after_killed
from autograd_check.sweep.grid import Case
from autograd_check.sweep.plan import Plan, any_cuda
from autograd_check.sweep.runner import ArrayTask, HangFn, Tally, chunks, run_cases
from autograd_check.sweep.store import Store, now, outcome_of


class SweepInterrupted(Exception):
    """A local sweep stopped by Ctrl-C or SIGTERM; every record written so far is kept."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, recorded: int, cases: int, root: Path) -> None:
        super().__init__(f"interrupted: {recorded} of {cases} cases have a record in {root}; "
                         "run the same command again to resume")
        self.recorded = recorded
        self.cases = cases


def check_slurm_here(opts: SlurmOptions) -> None:
    """sbatch must be here; inside an allocation that would hold back the array, say so now."""
    require_slurm("sbatch")
    alloc = current_allocation()
    if alloc is not None:
        blocked = array_blocked(opts, alloc)
        if blocked:
            raise EnvironmentProblem(
                f"{blocked.rstrip('.')}. Run the sweep on the allocated node instead: "
                "`srun autograd-check sweep --local ...`, or ask for less with --mem"
            )


# -- the manifest's bookkeeping ------------------------------------------------------------------
def add_local_submission(store: Store, cases: int) -> int:
    """Record a local run of `cases` cases by this process; returns its index in the manifest."""
    return store.add_submission({"mode": "local", "started": now(), "host": socket.gethostname(),
                                 "pid": os.getpid(), "cases": cases})


def end_local_submission(store: Store, index: int, *, status: str, ran: int) -> None:
    """Mark the local run at `index` as ended ('complete', 'interrupted' or 'failed')."""
    store.update_submission(index, ended=now(), status=status, ran=ran)


def submit(plan: Plan, todo: list[Case], *, on_note: Note = quiet) -> list[str]:
    """Submit the cases as job array(s), recording each array in the manifest as soon as Slurm
    accepts it (so that a failure of the next sbatch loses nothing); returns the task job ids.

    A grid with a ranks axis sends one array per rank count (Slurm gives every task of an array
    the same shape): each task of the N-rank array is one job of N Slurm tasks, which run its
    cases together as N ranks (runner.ArrayTask); the manifest's array says its `ranks`."""
    assert plan.slurm is not None, "a Slurm plan"
    store = plan.store
    folder = plan.log_dir()
    groups = [(ranks, chunks(cases, plan.cases_per_task), any_cuda(cases))
              for ranks, cases in plan.rank_groups(todo)]
    params = [array_parameters(plan.slurm, cuda=cuda, tasks=len(packed),
                               max_parallel=plan.max_parallel, ranks=ranks)
              for ranks, packed, cuda in groups]
    index = store.add_submission({
        "mode": "slurm", "started": now(), "host": socket.gethostname(), "cases": len(todo),
        "cases_per_task": plan.cases_per_task, "max_parallel": plan.max_parallel,
        "tasks": sum(len(packed) for _, packed, _ in groups), "log_dir": str(folder),
        "parameters": masked_parameters(params[0]),  # the manifest is no place for a token
        "arrays": [],
    })
    task_jobs: list[str] = []
    # submitit's Checkpointable.__new__ has no annotations.
    task = ArrayTask()  # type: ignore[no-untyped-call]
    out = str(store.root.resolve())
    for (ranks, packed, _), group_params in zip(groups, params, strict=True):

        def record(array: SubmittedArray, first: int, packed: list[Any] = packed,
                   ranks: int | None = ranks, group_params: dict[str, Any] = group_params
                   ) -> None:
            group = packed[first : first + len(array.task_jobs)]
            entry: dict[str, Any] = {
                "job_id": array.job_id, "task_jobs": array.task_jobs, "log_dir": str(folder),
                "submission_file": str(array.submission_file),
                "tasks": [[key for key, _, _ in chunk] for chunk in group],
            }
            if ranks is not None:
                entry["ranks"] = ranks
                entry["parameters"] = masked_parameters(group_params)
            store.add_array(index, entry)
            task_jobs.extend(array.task_jobs)
            each = "" if ranks is None else f" of {ranks} Slurm task(s) each (--ranks {ranks})"
            on_note(f"submitted job array {array.job_id}: {len(array.task_jobs)} task(s){each}, "
                    f"{sum(len(c) for c in group)} case(s)")

        args: list[tuple[Any, ...]] = [
            (out, plan.grid_id, chunk, plan.case_timeout) if ranks is None
            else (out, plan.grid_id, chunk, plan.case_timeout, ranks)
            for chunk in packed
        ]
        submit_arrays(task, args, plan.slurm, group_params, folder,
                      clean=current_allocation() is not None, on_submitted=record)
    return task_jobs


# -- starting ------------------------------------------------------------------------------------
@dataclass
class Submission:
    """Job arrays submitted for a sweep (what `sweep --slurm` without --wait prints)."""

    out: Path
    cases: int
    task_jobs: list[str]

    @property
    def arrays(self) -> list[str]:
        return sorted({j.split("_")[0] for j in self.task_jobs}, key=int)

    @property
    def report_command(self) -> str:
        return f"autograd-check report {shlex.quote(str(self.out))}"

    def to_dict(self) -> dict[str, Any]:
        return envelope("sweep-submitted", {
            "submitted": {"cases": self.cases, "arrays": self.arrays, "tasks": self.task_jobs},
            "out": str(self.out), "report_command": self.report_command,
        })


@dataclass
class Started:
    """A started sweep: the cases to run, and the local run or the arrays that run them."""

    todo: list[Case]
    skipped: int
    local_index: int | None = None
    """The local run's index among the manifest's submissions (for `run_local`)."""
    task_jobs: list[str] = field(default_factory=list)
    claim: Claim | None = None
    """DIR/.running, held by a local run until `run_local` ends it."""

    def submission(self, plan: Plan) -> Submission:
        return Submission(plan.store.root, len(self.todo), list(self.task_jobs))


def start_sweep(plan: Plan, *, rerun_failed: bool, force: bool, on_note: Note = quiet) -> Started:
    """Make DIR ready and start the sweep: refuse another grid (unless `force`) and an earlier
    submission still running, clear DIR on `force`, select the cases without a credited record
    (and failed ones on `rerun_failed`), move their unusable records aside, and record the new
    submission; for Slurm, submit the arrays. Nothing runs here yet for a local sweep."""
    store = plan.store
    if plan.slurm is not None:
        check_slurm_here(plan.slurm)
    store.check_safe()  # nobody else can plant records (or the manifest) on the way to them
    store.check_grid(plan.grid, force=force)  # another grid in --out: refused before anything
    # The lock is held from the look at earlier submissions until this one is in the manifest
    # (for Slurm: until its arrays are), so a second sweep into DIR sees it and refuses. DIR's
    # claim (sweep.claim: DIR/.running, seen from every host sharing DIR) is held as long:
    # for a local sweep, until its run ends.
    with store.locked(on_wait=lambda: on_note(
            f"waiting for another sweep into {store.root} to finish submitting")), \
            _claimed(store, "local" if plan.slurm is None else "slurm", on_note) as held:
        stop_earlier(store, force=force, on_note=on_note)
        tidy_after_killed(store, on_note)
        _manifest, removed = store.prepare(plan.grid, force=force)
        if force:
            gone = [f"{removed} record(s)"] + store.clear_old_files()
            if removed or len(gone) > 1:
                on_note(f"--force: removed {', '.join(gone)} from {store.root}")
        todo, skipped = resume(plan, rerun_failed=rerun_failed, on_note=on_note)
        started = Started(todo, skipped)
        if not todo:
            on_note(f"nothing to {'run' if plan.slurm is None else 'submit'}: every case has a "
                    "record")
        elif plan.slurm is None:
            started.local_index = add_local_submission(store, len(todo))
            started.claim = held
        else:
            started.task_jobs = submit(plan, todo, on_note=on_note)
        if started.claim is None:
            held.release()
    return started


@contextmanager
def _claimed(store: Store, mode: str, on_note: Note) -> Iterator[Claim]:
    """DIR's claim for this process (sweep.claim.claim), given back if starting fails."""
    held = claim(store.root, mode, on_note)
    try:
        yield held
    except BaseException:
        held.release()
        raise


# -- running here --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalRun:
    """What a local run did, and how long it took."""

    tally: Tally
    seconds: float


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill` (SIGTERM) ends a sweep as cleanly as Ctrl-C; the old handler is back afterwards."""

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local(
    plan: Plan, started: Started, *, on_done: Callable[[Case, Tally], None] | None = None,
    on_hang: HangFn | None = None,
) -> LocalRun:
    """Run the started sweep's cases here, one after another; `on_done(case, tally)` after each.
    Ctrl-C (or SIGTERM) keeps every record written, marks the run interrupted in the manifest
    and raises SweepInterrupted. Each case is bounded by the plan's --case-timeout; a case hung
    where Python cannot stop it ends the process (runner.CaseClock) after the run is marked
    'case hung' in the manifest, DIR's claim given back and `on_hang(case, record)` called."""
    assert started.local_index is not None, "start_sweep recorded a local run"
    store = plan.store
    tally = Tally()
    index = started.local_index

    def done(case: Case, doc: dict[str, Any]) -> None:
        tally.add(outcome_of(doc))
        if on_done is not None:
            on_done(case, tally)

    def hung(case: Case, doc: dict[str, Any]) -> None:
        # From the watchdog thread, just before the process ends (no finally runs after it).
        with contextlib.suppress(Exception):
            end_local_submission(store, index, status="case hung", ran=tally.ran + 1)
        if started.claim is not None:
            started.claim.release()
        if on_hang is not None:
            on_hang(case, doc)

    start = time.monotonic()
    try:
        with _sigterm_as_interrupt():
            run_cases(store, started.todo, plan.grid_id, on_done=done,
                      case_timeout=plan.case_timeout, on_hang=hung)
    except KeyboardInterrupt:
        end_local_submission(store, started.local_index, status="interrupted", ran=tally.ran)
        recorded = len(store.recorded_keys() & {c.key for c in plan.cases})
        raise SweepInterrupted(recorded, plan.grid.size, store.root) from None
    except CheckError:  # a full disk, say: close the run if the manifest can still be written
        with contextlib.suppress(CheckError):
            end_local_submission(store, started.local_index, status="failed", ran=tally.ran)
        raise
    finally:
        if started.claim is not None:
            started.claim.release()
    end_local_submission(store, started.local_index, status="complete", ran=tally.ran)
    return LocalRun(tally, time.monotonic() - start)


# -- watching the arrays -------------------------------------------------------------------------
def watch_sweep(
    plan: Plan,
    task_jobs: list[str],
    *,
    on_update: Callable[[ArrayProgress], None] | None = None,
    on_note: Note = quiet,
) -> dict[str, str]:
    """Watch the arrays until every task has ended or every case has its record, bounded by
    --timeout; returns Slurm's state of each task (for the report)."""
    assert plan.slurm is not None, "a Slurm plan"
    keys = {c.key for c in plan.cases}
    timeout = plan.slurm.timeout
    progress = watch_arrays(task_jobs, lambda: len(plan.store.recorded_keys() & keys), len(keys),
                            timeout, on_update=on_update)
    if not progress.finished and progress.recorded < progress.cases:
        on_note(f"gave up waiting after {timeout:g} s (--timeout); the array goes on: "
                f"run `autograd-check report {plan.store.root}` later")
    return progress.states

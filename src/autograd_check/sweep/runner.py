"""Running a sweep's cases: here, one after another in one process (torch imported once), or as
the body of a Slurm array task that runs its share of the cases and writes their records.

Nothing here prints: progress goes through callbacks, so the CLI decides how to show it.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from submitit.helpers import Checkpointable

from autograd_check.base.deadline import IMPORT_RETRY_S, importing
from autograd_check.base.environment import slurm_ids
from autograd_check.base.errors import EXIT_ENVIRONMENT, EXIT_JOB_FAILED, CheckError
from autograd_check.base.safety import make_private_dirs
from autograd_check.base.slurm_env import SlurmEnv
from autograd_check.base.spec import build_spec
from autograd_check.distributed.rendezvous import RENDEZVOUS_ENV
from autograd_check.execute import execute
from autograd_check.slurm.node import job_folder, stop_signal_escapes
from autograd_check.sweep.grid import Case
from autograd_check.sweep.settings import DEFAULT_CASE_TIMEOUT_S
from autograd_check.sweep.store import Store, case_record, error_record, outcome_of

HANG_GRACE_S = 30.0
"""How long a case may go on after its --case-timeout when Python cannot interrupt it (a hung C
call holds the only thread that could): then its record is written and the process ends."""
RANKS_GRACE_S = 5.0
"""A local case over ranks (--ranks) gives its ranks --case-timeout plus this long: the case's
own clock stops it first (a timed-out record), the ranks' bound is the backstop."""


@dataclass
class Tally:
    """What a run of cases did: counts by outcome, and the keys it skipped (already recorded)."""

    passed: int = 0
    failed: int = 0
    error: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.passed + self.failed + self.error

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class CaseTimedOut(BaseException):
    """A case ran past --case-timeout. Raised by SIGALRM's handler wherever the case is, it is no
    Exception and no SystemExit, so neither the user's code nor a target's SystemExit handling
    (losses.user) takes it for the check's own error."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out: still running after {seconds:g} s (--case-timeout)")
        self.seconds = seconds


def timed_out_record(case: Case, grid_id: str, message: str) -> dict[str, Any]:
    """The record of a case stopped by --case-timeout: an error (the check never finished), not
    a mismatch; `error.timed_out` tells it from the other errors."""
    doc = error_record(case, EXIT_ENVIRONMENT, message, grid_id)
    doc["error"]["timed_out"] = True
    doc["environment"] = {"slurm": slurm_ids()}
    return doc


HangFn = Callable[[Case, dict[str, Any]], None]


class CaseClock:
    """--case-timeout for the cases run in this (main) thread, one at a time.

    SIGALRM stops a case that runs Python (or waits in a call that a signal interrupts: sleep,
    I/O, most torch operations return between their kernels). A call that never returns to
    Python cannot be stopped from inside its thread: when it lets go of the GIL (torch kernels,
    ctypes, a blocked SIGALRM), a watchdog thread writes the case's timed-out record
    HANG_GRACE_S later, calls `on_hang(case, record)` and ends the process (exit 4, the sweep
    incomplete; run it again to go on, the hung case has its record). A C call that holds the
    GIL forever stops every thread: only a kill -9 (or Slurm's --time) ends it (docs/security.md).
    Costs two setitimer calls and an Event per case.
    """

    def __init__(self, seconds: float | None, store: Store, grid_id: str,
                 on_hang: HangFn | None = None, grace: float | None = None) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.limit = self.seconds
        """--case-timeout as asked (None: no limit), even where no signal can enforce it."""
        self.store = store
        self.grid_id = grid_id
        self.on_hang = on_hang
        self.grace = HANG_GRACE_S if grace is None else grace
        self._case: Case | None = None
        self._started = 0.0
        self._changed = threading.Event()
        self._stop = False

    @contextmanager
    def running(self) -> Iterator[CaseClock]:
        """Arm the clock for a run of cases (a no-op without a timeout, or off the main thread,
        where no signal handler can be set)."""
        if self.seconds is None or threading.current_thread() is not threading.main_thread():
            self.seconds = None
            yield self
            return
        previous = signal.signal(signal.SIGALRM, self._alarm)
        watchdog = threading.Thread(target=self._watch, name="case-timeout", daemon=True)
        watchdog.start()
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._stop = True
            self._changed.set()

    @contextmanager
    def case(self, case: Case) -> Iterator[None]:
        """Time one case."""
        if self.seconds is None:
            yield
            return
        self._case, self._started = case, time.monotonic()
        self._changed.set()
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._case = None
            self._changed.set()

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._case is None or self.seconds is None:  # it just ended
            return
        if importing(frame):
            # An import cut short leaves torch's C++ registrations half made (the next import
            # of that module fails, or crashes): let it finish, and look again a moment later.
            signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY_S)
            return
        raise CaseTimedOut(self.seconds)

    def _watch(self) -> None:
        assert self.seconds is not None
        while not self._stop:
            self._changed.wait()
            self._changed.clear()
            case, started = self._case, self._started
            if case is None:
                continue
            # Woken early when the case ends (or the next one starts): then look again.
            if self._changed.wait(started + self.seconds + self.grace - time.monotonic()):
                continue
            if self._case is case and self._started == started and not self._stop:
                self._hung(case)

    def _hung(self, case: Case) -> None:
        assert self.seconds is not None
        doc = timed_out_record(
            case, self.grid_id,
            f"timed out: still running {self.seconds + self.grace:g} s after it started "
            f"(--case-timeout {self.seconds:g} s), in code Python could not interrupt (a C "
            "call that never returned); the process running it was ended",
        )
        try:
            self.store.write_record(case.key, doc)
            if self.on_hang is not None:
                self.on_hang(case, doc)
        finally:
            os._exit(EXIT_JOB_FAILED)


def run_case(
    store: Store, case: Case, grid_id: str, clock: CaseClock | None = None
) -> dict[str, Any]:
    """Run one case through execute(spec) and write its record; returns the record.

    A case that cannot run (CUDA missing on that node, too big for its memory, an operation torch
    lacks for a dtype) gets an error record instead of ending the sweep, and so does a case that
    runs past the `clock`'s --case-timeout (`error.timed_out`). A target's sys.exit() fails its
    check (losses.user). Ctrl-C and Slurm stopping the job (slurm.node.JobStopping) are not
    caught: the case then simply has no record and runs again on resume.
    """

    try:
        if clock is None:
            result = execute(case.spec)
        else:
            with clock.case(case):
                result = execute(case.spec, ranks_timeout=_ranks_timeout(case, clock))
    except CaseTimedOut as e:
        doc = timed_out_record(case, grid_id, str(e))
    except CheckError as e:
        doc = error_record(case, e.exit_code, str(e), grid_id)
        doc["environment"] = {"slurm": slurm_ids()}
    except Exception as e:  # noqa: BLE001  (one case's crash must not cost the others theirs)
        doc = error_record(case, EXIT_ENVIRONMENT, f"{type(e).__name__}: {e}", grid_id)
        doc["environment"] = {"slurm": slurm_ids()}
    else:
        doc = case_record(case, result.to_dict(), grid_id)
    store.write_record(case.key, doc)
    return doc


def _ranks_timeout(case: Case, clock: CaseClock) -> float | None:
    """How long the ranks of a case that starts them here (--ranks, a local sweep) may run: its
    --case-timeout (no limit without one), a little longer where the clock's signal stops the
    case first. None for a case without ranks."""
    if case.spec.ranks is None:
        return None
    if clock.limit is None:
        return math.inf
    return clock.limit + (RANKS_GRACE_S if clock.seconds is not None else 0.0)


def run_cases(
    store: Store,
    cases: Iterable[Case],
    grid_id: str,
    *,
    on_start: Callable[[Case], None] | None = None,
    on_done: Callable[[Case, dict[str, Any]], None] | None = None,
    case_timeout: float | None = None,
    on_hang: HangFn | None = None,
) -> Tally:
    """Run cases one after another in this process; a case that already has a credited record
    (readable, of this grid) is skipped, so a requeued task goes on from its first case without
    one. Each case is bounded by `case_timeout` seconds (None or 0: no bound; see CaseClock for
    `on_hang`). Nothing here stops two processes that run the same case at once: the `sweep`
    command refuses to start while an earlier submission into the same DIR is still running."""
    tally = Tally()
    with CaseClock(case_timeout, store, grid_id, on_hang).running() as clock:
        for case in cases:
            if store.has_record(case.key, grid_id):
                tally.skipped.append(case.key)
                continue
            if on_start is not None:
                on_start(case)
            doc = run_case(store, case, grid_id, clock)
            tally.add(outcome_of(doc))
            if on_done is not None:
                on_done(case, doc)
    return tally


def _chunk_cases(chunk: Sequence[tuple[str, int, dict[str, Any]]]) -> list[Case]:
    return [Case(key, index, build_spec(spec)) for key, index, spec in chunk]


class _Discarded(Store):
    """The store as a rank other than 0 sees it: it reads the records (to skip the same cases as
    rank 0) and writes none (rank 0 writes each case's one record)."""

    def write_record(self, key: str, doc: Mapping[str, Any]) -> None:
        return None


def slurm_rank() -> int:
    """This process's rank among the Slurm tasks of its job (SLURM_PROCID; 0 outside Slurm)."""
    return int(SlurmEnv().procid or 0)


def rendezvous_root() -> Path:
    """The folder where the ranks of this array task meet, one subfolder per case: inside the
    job's (private) log folder, its own for this task and this start of it (a requeued task
    never meets a file of its earlier start)."""
    slurm = SlurmEnv()
    job = slurm.job_id or "job"
    restart = slurm.restart_count or "0"
    return job_folder() / "rendezvous" / f"{job}.{restart}"


def run_as_ranks(
    store: Store, cases: Sequence[Case], grid_id: str, *, rank: int, root: Path,
    case_timeout: float | None = DEFAULT_CASE_TIMEOUT_S,
) -> Tally:
    """Run the cases as one of the Slurm tasks (ranks) of an array task started with as many
    tasks as each case has ranks (`sweep --ranks N --slurm`): every task runs the same cases in
    the same order, each case's execute() acting as one rank (distributed.launch: the ranks meet
    in `root`/<case>). Only rank 0 writes records; the others compute and discard. Every rank
    skips the same cases: a case's record is written by rank 0 only after every rank took part
    in it."""

    def meet(case: Case) -> None:
        folder = root / case.key
        make_private_dirs(folder)
        os.environ[RENDEZVOUS_ENV] = str(folder)

    writer = store if rank == 0 else _Discarded(store.root)
    before = os.environ.get(RENDEZVOUS_ENV)
    try:
        return run_cases(writer, cases, grid_id, on_start=meet, case_timeout=case_timeout)
    finally:
        if before is None:
            os.environ.pop(RENDEZVOUS_ENV, None)
        else:
            os.environ[RENDEZVOUS_ENV] = before
        if rank == 0:  # every rank has met for every case that ran: the folders are done
            shutil.rmtree(root, ignore_errors=True)


class ArrayTask(Checkpointable):
    """The body of one array task: run its cases in order, skipping those with a credited record.

    It is submitit-Checkpointable: on preemption or time-out (SIGUSR2) submitit requeues the same
    call, which starts again from the first case without a record; nothing is kept in memory or in
    the pickle that the records do not already hold. The signal stops the case it interrupts
    without a record (slurm.node.stop_signal_escapes: never the case's error). Each case is
    bounded by `case_timeout` seconds (--case-timeout).

    With `ranks` (a sweep's ranks axis), the array task is one job of `ranks` Slurm tasks and
    submitit runs this on each of them: see `run_as_ranks`.
    """

    def __call__(
        self, out: str, grid_id: str, chunk: Sequence[tuple[str, int, dict[str, Any]]],
        case_timeout: float | None = DEFAULT_CASE_TIMEOUT_S, ranks: int | None = None,
    ) -> dict[str, Any]:
        store = Store(Path(out))
        with stop_signal_escapes():
            if ranks is None:
                tally = run_cases(store, _chunk_cases(chunk), grid_id, case_timeout=case_timeout)
            else:
                tally = run_as_ranks(store, _chunk_cases(chunk), grid_id, rank=slurm_rank(),
                                     root=rendezvous_root(), case_timeout=case_timeout)
        # A summary for submitit's result pickle and the log; the records are the truth.
        summary = {"passed": tally.passed, "failed": tally.failed, "error": tally.error,
                   "skipped": len(tally.skipped)}
        who = "" if ranks is None else (
            f" (rank {slurm_rank()} of {ranks}"
            + (": its results are discarded, rank 0 writes the records)" if slurm_rank() else ")"))
        print(f"autograd-check array task{who}: {summary}", flush=True)
        return summary


def chunks(cases: Sequence[Case], per_task: int) -> list[list[tuple[str, int, dict[str, Any]]]]:
    """Pack cases N per task, as plain data (key, index, spec dict) that pickles anywhere."""
    packed = [(c.key, c.index, c.spec.to_dict()) for c in cases]
    return [packed[i : i + per_task] for i in range(0, len(packed), per_task)]

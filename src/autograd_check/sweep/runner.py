"""Running a sweep's cases: here, one after another in one process (torch imported once), or as
the body of a Slurm array task that runs its share of the cases and writes their records.

Nothing here prints: progress goes through callbacks, so the CLI decides how to show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from autograd_check.check.execute import execute
from autograd_check.check.host import slurm_ids
from autograd_check.check.spec import build_spec
from autograd_check.errors import EXIT_ENVIRONMENT, CheckError
from autograd_check.sweep.grid import Case
from autograd_check.sweep.store import Store, case_record, error_record, outcome_of


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


def run_case(store: Store, case: Case, grid_id: str) -> dict[str, Any]:
    """Run one case through execute(spec) and write its record; returns the record.

    A case that cannot run (CUDA missing on that node, too big for its memory, an operation torch
    lacks for a dtype) gets an error record instead of ending the sweep. Ctrl-C and SystemExit are
    not caught: the case then simply has no record and runs again on resume.
    """

    try:
        result = execute(case.spec)
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


def run_cases(
    store: Store,
    cases: Iterable[Case],
    grid_id: str,
    *,
    on_start: Callable[[Case], None] | None = None,
    on_done: Callable[[Case, dict[str, Any]], None] | None = None,
) -> Tally:
    """Run cases one after another in this process; a case that already has a credited record
    (readable, of this grid) is skipped, so a requeued task goes on from its first case without
    one. Nothing here stops two processes that run the same case at once: the `sweep` command
    refuses to start while an earlier submission into the same DIR is still pending or running."""
    tally = Tally()
    for case in cases:
        if store.has_record(case.key, grid_id):
            tally.skipped.append(case.key)
            continue
        if on_start is not None:
            on_start(case)
        doc = run_case(store, case, grid_id)
        tally.add(outcome_of(doc))
        if on_done is not None:
            on_done(case, doc)
    return tally


def _chunk_cases(chunk: Sequence[tuple[str, int, dict[str, Any]]]) -> list[Case]:
    return [Case(key, index, build_spec(spec)) for key, index, spec in chunk]


class ArrayTask(Checkpointable):
    """The body of one array task: run its cases in order, skipping those with a credited record.

    It is submitit-Checkpointable: on preemption or time-out (SIGUSR2) submitit requeues the same
    call, which starts again from the first case without a record; nothing is kept in memory or in
    the pickle that the records do not already hold.
    """

    def __call__(
        self, out: str, grid_id: str, chunk: Sequence[tuple[str, int, dict[str, Any]]]
    ) -> dict[str, Any]:
        store = Store(Path(out))
        tally = run_cases(store, _chunk_cases(chunk), grid_id)
        # A summary for submitit's result pickle and the log; the records are the truth.
        summary = {"passed": tally.passed, "failed": tally.failed, "error": tally.error,
                   "skipped": len(tally.skipped)}
        print(f"autograd-check array task: {summary}", flush=True)
        return summary


def chunks(cases: Sequence[Case], per_task: int) -> list[list[tuple[str, int, dict[str, Any]]]]:
    """Pack cases N per task, as plain data (key, index, spec dict) that pickles anywhere."""
    packed = [(c.key, c.index, c.spec.to_dict()) for c in cases]
    return [packed[i : i + per_task] for i in range(0, len(packed), per_task)]

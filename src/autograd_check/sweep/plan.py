"""A sweep's plan: its grid and cases, where they run (here or as Slurm job arrays), its results
directory; refused (BadInput, EnvironmentProblem) before anything is written. `preview` is what
`--dry-run` shows: the cases that would run and, for Slurm, the sbatch script (one per array: a
sweep over rank counts sends one array of N-task jobs per rank count)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograd_check.base.device import resolve_device
from autograd_check.base.document import envelope
from autograd_check.base.safety import check_folder_chain
from autograd_check.base.torch_features import require_parallel
from autograd_check.config import slurm_from, slurm_table
from autograd_check.execute import check_memory
from autograd_check.losses.inputs import find_target
from autograd_check.slurm.arrays import (
    array_parameters,
    array_script,
    check_rank_layout,
    check_time_for_arrays,
    max_array_size,
)
from autograd_check.slurm.log_dir import resolve_log_dir
from autograd_check.slurm.options import SlurmOptions
from autograd_check.sweep.grid import Case, Grid, build_grid, check_size
from autograd_check.sweep.settings import (
    DEFAULT_CASE_TIMEOUT_S,
    SweepFlags,
    default_mode,
    read_request,
)
from autograd_check.sweep.store import Store, select


@dataclass(frozen=True)
class Plan:
    """Everything a sweep needs to run: the grid, its cases, the mode and the store."""

    grid: Grid
    cases: list[Case]
    mode: str
    """'local' (one case after another in this process) or 'slurm' (job arrays)."""
    store: Store
    cases_per_task: int = 1
    max_parallel: int | None = None
    slurm: SlurmOptions | None = None
    """The Slurm options; set exactly when the mode is 'slurm'."""
    case_timeout: float = DEFAULT_CASE_TIMEOUT_S
    """Seconds one case may run (--case-timeout); 0: no limit."""

    @property
    def grid_id(self) -> str:
        return self.grid.grid_id()

    def log_dir(self) -> Path:
        """--log-dir when given, else DIR/logs: the tasks' logs live with the sweep's records."""
        given = self.slurm.log_dir if self.slurm is not None else None
        return resolve_log_dir(given if given is not None else self.store.logs_dir)

    def tasks(self, cases: int) -> int:
        """How many array tasks `cases` cases take, `cases_per_task` to a task."""
        return -(-cases // self.cases_per_task)

    def rank_groups(self, todo: list[Case]) -> list[tuple[int | None, list[Case]]]:
        """The cases by rank count, in the grid's order of rank counts (one array each on
        Slurm); one group (None) for a grid without a ranks axis. Empty groups are left out."""
        groups: dict[int | None, list[Case]] = {r: [] for r in self.grid.rank_counts()}
        for case in todo:
            groups[case.spec.ranks if self.grid.ranks else None].append(case)
        return [(ranks, cases) for ranks, cases in groups.items() if cases]

    def task_count(self, todo: list[Case]) -> int:
        """How many array tasks the cases take, over every array (rank count)."""
        return sum(self.tasks(len(cases)) for _, cases in self.rank_groups(todo))


def any_cuda(cases: list[Case]) -> bool:
    return any(c.spec.device.startswith("cuda") for c in cases)


def check_local(cases: list[Case]) -> None:
    """A local sweep refuses, before anything runs, a shape that cannot fit on this host (exit 2)
    and a device that is not usable here (exit 3), instead of recording it case after case."""

    seen: set[tuple[tuple[int, ...], str]] = set()
    for case in cases:
        if (case.spec.shape, case.spec.dtype) not in seen:
            seen.add((case.spec.shape, case.spec.dtype))
            check_memory(case.spec)
    for device in sorted({case.spec.device for case in cases} - {"cpu"}):
        resolve_device(device)


def check_folders(store: Store, opts: SlurmOptions) -> None:
    """A Slurm sweep's --out and log folder, refused (BadInput) when another user could change
    them or the way to them: the array's tasks load their pickles from the log folder and write
    their records into --out (safety.check_folder_chain)."""
    check_folder_chain(store.root, "--out")
    given = opts.log_dir
    check_folder_chain(resolve_log_dir(given if given is not None else store.logs_dir), "log dir")


def plan_sweep(
    check_values: Mapping[str, Any],
    axis_values: Mapping[str, Any],
    flags: SweepFlags,
    slurm_values: Mapping[str, Any],
    *,
    on_note: Callable[[str], None] | None = None,
) -> Plan:
    """The plan from the flags and --config: the grid (at most max_cases cases), the mode, the
    Slurm options (for Slurm) or this host's memory and devices checked (for a local sweep).
    `on_note` hears of values given more than once."""
    request = read_request(check_values, axis_values, flags)
    settings = request.settings
    grid = build_grid(request.grid_values)
    target = grid.spec_value("target")
    # the target (its name checked above) is imported here, at the edge, as run does: does it
    # give its own inputs? Then its cases have no shape, and a shape given is refused.
    if target is not None and find_target(target):
        grid = build_grid(request.grid_values, own_inputs=True)
    check_size(grid, settings.max_cases)
    for dropped in grid.dropped:
        if on_note is not None:
            on_note(f"{dropped} given more than once; each value runs once")
    cases = list(grid.cases())
    for parallel, device in sorted({(c.spec.parallel, c.spec.device) for c in cases
                                    if c.spec.parallel}):
        require_parallel(parallel, device)  # refused once, not recorded case after case
    mode = settings.mode or default_mode()
    opts = None
    if mode == "slurm":
        opts = slurm_from(slurm_values, request.config)
        check_rank_layout(opts, grid.rank_counts())  # --nodes must divide every rank count
        check_time_for_arrays(opts)  # longer than the warning signal's delay
        check_folders(Store(settings.out), opts)
    else:
        slurm_table(request.config)  # unused here, but a misspelled key is still refused
        Store(settings.out).check_safe()  # a record is a verdict: only you may write them
        check_local(cases)
    return Plan(grid, cases, mode, Store(settings.out), settings.cases_per_task,
                settings.max_parallel, opts, case_timeout=settings.case_timeout)


@dataclass(frozen=True)
class ArrayPlan:
    """One array a Slurm sweep over rank counts would send: its rank count, cases, tasks (each a
    job of `ranks` Slurm tasks) and the sbatch script of its (first) array."""

    ranks: int
    cases: int
    tasks: int
    nodes: int
    tasks_per_node: int
    script: str

    def to_dict(self) -> dict[str, Any]:
        return {"ranks": self.ranks, "cases": self.cases, "tasks": self.tasks,
                "nodes": self.nodes, "tasks_per_node": self.tasks_per_node,
                "sbatch_script": self.script}


@dataclass(frozen=True)
class Preview:
    """What `--dry-run` shows: the cases that would run, and the sbatch script for Slurm."""

    plan: Plan
    todo: list[Case]
    skipped: int
    script: str | None
    arrays: list[ArrayPlan] = field(default_factory=list)
    """With a ranks axis on Slurm: one array per rank count (`script` is the first one's)."""

    @property
    def tasks(self) -> int:
        return self.plan.task_count(self.todo)

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        data: dict[str, Any] = {
            "grid": plan.grid.to_dict(), "grid_id": plan.grid_id, "mode": plan.mode,
            "out": str(plan.store.root), "skipped": self.skipped, "tasks": self.tasks,
            "cases_per_task": plan.cases_per_task, "sbatch_script": self.script,
        }
        if plan.grid.ranks and plan.mode == "slurm":
            data["arrays"] = [a.to_dict() for a in self.arrays]
        data["cases"] = [{"key": c.key, "index": c.index, "spec": c.spec.to_dict()}
                         for c in self.todo]
        return envelope("sweep-plan", data)


def preview(plan: Plan, *, rerun_failed: bool, force: bool) -> Preview:
    """The cases that would run (and, for Slurm, the sbatch script of each array); nothing is
    written."""
    plan.store.check_grid(plan.grid, force=force)  # raises: another grid lives there
    todo, skipped = (plan.cases, 0) if force else select(plan.cases, plan.store, plan.grid_id,
                                                         rerun_failed=rerun_failed)
    scripts: list[str] = []
    arrays: list[ArrayPlan] = []
    if plan.slurm is not None:
        for ranks, cases in plan.rank_groups(todo):
            tasks = plan.tasks(len(cases))
            first = min(tasks, max_array_size())
            params = array_parameters(plan.slurm, cuda=any_cuda(cases), tasks=first,
                                      max_parallel=plan.max_parallel, ranks=ranks)
            scripts.append(array_script(plan.slurm, params, plan.log_dir(), first))
            if ranks is not None:
                arrays.append(ArrayPlan(ranks, len(cases), tasks, int(params["nodes"]),
                                        int(params["ntasks_per_node"]), scripts[-1]))
    return Preview(plan, todo, skipped, scripts[0] if scripts else None, arrays)

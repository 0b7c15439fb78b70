"""A sweep's report, as plain data: counts by dtype, device, loss and shape (and by rank count and
parallel wrapper when the grid has those axes); the worst cases; the
failed, errored and missing cases with their Slurm job/task ids and log tails; an exit code.

Built from the store alone (records + manifest), plus optional Slurm states passed in by the
caller, so it can be computed anywhere the results directory is readable; `load_report` also asks
Slurm, when it is here, about the tasks that still owe records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autograd_check.base.document import envelope, unplain
from autograd_check.base.errors import (
    EXIT_ENVIRONMENT,
    EXIT_JOB_FAILED,
    EXIT_MISMATCH,
    EXIT_PASS,
    BadInput,
)
from autograd_check.slurm.arrays import array_states
from autograd_check.slurm.commands import have
from autograd_check.slurm.log_dir import job_paths
from autograd_check.sweep.grid import GRID_AXES, OPTIONAL_AXES, Grid
from autograd_check.sweep.store import Store, outcome_of

OUTCOMES = ("passed", "failed", "error", "missing")
GROUPS = ("dtype", "device", "loss", "shape")
OPTIONAL_GROUPS = tuple(OPTIONAL_AXES.values())
"""ranks, parallel: counted (and shown) only for a grid with those axes."""
WORST = 10
LOG_TAIL_LINES = 15
NO_CAUSE = "none"
"""The cause a failed case counts under when its record holds no diagnosis (a projection
failure, a record written before diagnoses)."""


@dataclass
class CaseRow:
    key: str
    index: int
    shape: str
    dtype: str
    device: str
    loss: str
    seed: int
    outcome: str
    numel: int
    max_rel_diff: float | None = None
    max_abs_diff: float | None = None
    mismatched: int | None = None
    bit_exact: bool | None = None
    rtol: float | None = None
    atol: float | None = None
    job: str | None = None
    """Slurm job (array_task) that ran it, or that was to run it when missing."""
    host: str | None = None
    message: str | None = None
    """An error's message; for a missing case whose file is not credited, why (unreadable...)."""
    ranks: int | None = None
    """The case's rank count, with a ranks axis (absent from the JSON without one)."""
    parallel: str | None = None
    """The case's wrapper (ddp, fsdp), with a ranks axis (absent from the JSON without one)."""
    causes: list[str] = field(default_factory=list)
    """A failed case's likely causes: the kinds of its record's diagnosis, once each, in order
    (kernel/diagnose.py; contract rules such as input-mutated too)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in OPTIONAL_GROUPS:
            if data[name] is None:
                del data[name]
        return data


@dataclass
class TaskRow:
    """An array task that owes records: its job id, Slurm state and the tail of its logs."""

    job: str
    state: str
    missing: list[str]
    log_paths: list[str]
    log_tail: str


@dataclass
class GroupRow:
    group: str
    value: str
    cases: int = 0
    passed: int = 0
    failed: int = 0
    error: int = 0
    missing: int = 0


@dataclass
class Report:
    out: str
    grid: dict[str, Any]
    grid_id: str
    total: int
    counts: dict[str, int]
    groups: list[GroupRow]
    worst: list[CaseRow]
    failed: list[CaseRow]
    errors: list[CaseRow]
    missing: list[CaseRow]
    tasks: list[TaskRow]
    cases: list[CaseRow]
    submissions: list[dict[str, Any]] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    """Record files that do not count (unreadable, half written, another grid's): key → why."""
    causes: dict[str, int] = field(default_factory=dict)
    """Failed cases by likely cause: kind → how many failed cases name it (a case naming two
    kinds counts under each; one whose record has no diagnosis under NO_CAUSE), most first."""

    @property
    def exit_code(self) -> int:
        """4 when cases are missing, else 3 when a check could not run, else 1 on a mismatch."""
        if self.counts["missing"]:
            return EXIT_JOB_FAILED
        if self.counts["error"]:
            return EXIT_ENVIRONMENT
        if self.counts["failed"]:
            return EXIT_MISMATCH
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "passed", EXIT_MISMATCH: "mismatch", EXIT_ENVIRONMENT: "error",
                EXIT_JOB_FAILED: "incomplete"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return envelope("report", {
            "out": self.out,
            "grid": self.grid,
            "grid_id": self.grid_id,
            "total": self.total,
            "counts": self.counts,
            "verdict": {"exit_code": self.exit_code, "summary": self.verdict},
            "groups": [asdict(g) for g in self.groups],
            "worst": [c.to_dict() for c in self.worst],
            "failed": [c.to_dict() for c in self.failed],
            "errors": [c.to_dict() for c in self.errors],
            "missing": [c.to_dict() for c in self.missing],
            "tasks": [asdict(t) for t in self.tasks],
            "submissions": self.submissions,
            "ignored_records": self.ignored,
            "causes": self.causes,
            "cases": [c.to_dict() for c in self.cases],
        })


def tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a (possibly large or absent) log file."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def task_log_paths(log_dir: str, job: str) -> list[Path]:
    """submitit's log files of array task `job` (ARRAY_TASK): stderr first, then stdout."""
    paths = job_paths(Path(log_dir), job)
    return [Path(paths.stderr), Path(paths.stdout)]


def task_of_case(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """key → (array job id with task, log folder), from the latest Slurm submission with it."""
    where: dict[str, tuple[str, str]] = {}
    for submission in manifest.get("submissions", []):
        for array in submission.get("arrays", []):
            jobs = array.get("task_jobs") or []
            for task, keys in enumerate(array.get("tasks", [])):
                job = jobs[task] if task < len(jobs) else f"{array['job_id']}_{task}"
                for key in keys:
                    where[key] = (job, array.get("log_dir", ""))
    return where


def _row(case_key: str, index: int, spec: Mapping[str, Any], doc: Mapping[str, Any] | None,
         where: tuple[str, str] | None) -> CaseRow:
    shape = [int(d) for d in spec["shape"]]
    row = CaseRow(
        key=case_key, index=index, shape="x".join(str(d) for d in shape), dtype=spec["dtype"],
        device=spec["device"], loss=spec["loss"], seed=int(spec["seed"]),
        outcome="missing" if doc is None else outcome_of(doc), numel=math.prod(shape),
        job=where[0] if where else None,
    )
    if spec.get("ranks") is not None:
        row.ranks, row.parallel = int(spec["ranks"]), str(spec.get("parallel"))
    if doc is None:
        return row
    env = doc.get("environment") or {}
    slurm = env.get("slurm") or {}
    if slurm.get("array_job_id"):
        row.job = f"{slurm['array_job_id']}_{slurm.get('array_task_id', '?')}"
    elif slurm.get("job_id"):
        row.job = str(slurm["job_id"])
    else:
        row.job = None
    row.host = env.get("host") or doc.get("case", {}).get("host")
    if row.outcome == "error":
        row.message = str(doc["error"].get("message", ""))
        return row
    stats = doc.get("statistics") or []
    if stats:
        worst = max(stats, key=lambda s: _sort_value(s.get("max_rel_diff")))
        row.max_rel_diff = _float(worst.get("max_rel_diff"))
        row.max_abs_diff = _float(worst.get("max_abs_diff"))
        row.mismatched = sum(int(s.get("mismatched", 0)) for s in stats)
        row.rtol = _float(worst.get("rtol"))
        row.atol = _float(worst.get("atol"))
    row.bit_exact = bool(doc.get("verdict", {}).get("bit_exact"))
    if row.outcome == "failed":
        row.causes = list(dict.fromkeys(
            str(d["kind"]) for d in doc.get("diagnosis") or [] if isinstance(d, dict)
            and d.get("kind")))
    return row


def count_causes(rows: list[CaseRow]) -> dict[str, int]:
    """Failed cases by likely cause, most first (then by name): a case under each of its kinds,
    or under NO_CAUSE."""
    counts: dict[str, int] = {}
    for row in rows:
        if row.outcome == "failed":
            for kind in row.causes or [NO_CAUSE]:
                counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _float(value: Any) -> float | None:
    """A record's number ("NaN" and "Infinity" as document.dumps writes them); None if absent."""
    number = unplain(value)
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None
    return float(number)


def _sort_value(value: Any) -> float:
    """NaN and infinity are the worst possible differences."""
    number = _float(value)
    if number is None:
        return -1.0
    return math.inf if math.isnan(number) else number


def build_report(
    store: Store,
    *,
    states: Mapping[str, str] | None = None,
    worst: int = WORST,
    log_lines: int = LOG_TAIL_LINES,
) -> Report:
    """Aggregate a sweep directory. `states` maps array task ids ('123_4') to Slurm states."""
    manifest = store.read_manifest()
    if manifest is None:
        raise BadInput(f"{str(store.root)!r} holds no sweep: {store.manifest_path} is missing")
    grid = Grid.from_dict(manifest["grid"])
    grid_id = str(manifest.get("grid_id", grid.grid_id()))
    # Only credited records count: a half-written file or another grid's record (left by a sweep
    # before --force) makes its case missing, with the reason, never a pass or a failure.
    records, ignored = store.credited_records(grid_id)
    where = task_of_case(manifest)
    states = dict(states or {})

    rows: list[CaseRow] = []
    for case in grid.cases():
        row = _row(case.key, case.index, case.spec.to_dict(), records.get(case.key),
                   where.get(case.key))
        row.message = ignored.get(case.key, row.message)
        rows.append(row)

    counts = dict.fromkeys(OUTCOMES, 0)
    groups: dict[tuple[str, str], GroupRow] = {}
    # ranks and parallel: only with those axes (a ranks axis alone counts its cases' parallel)
    shown = [*GROUPS, *(g for g in OPTIONAL_GROUPS if grid.ranks)]
    for group in shown:  # every value of the grid appears, in the grid's order, even at 0
        axis = next(a for a, f in GRID_AXES.items() if f == group)
        values = grid.to_dict().get(axis) or sorted({str(getattr(r, group)) for r in rows})
        for value in values:
            groups[(group, str(value))] = GroupRow(group, str(value))
    for row in rows:
        counts[row.outcome] += 1
        for group in shown:
            g = groups[(group, str(getattr(row, group)))]
            g.cases += 1
            setattr(g, row.outcome, getattr(g, row.outcome) + 1)

    measured = [r for r in rows if r.max_rel_diff is not None]
    measured.sort(key=lambda r: (-_sort_value(r.max_rel_diff), r.index))
    missing = [r for r in rows if r.outcome == "missing"]

    tasks: dict[str, TaskRow] = {}
    for row in missing:
        if row.job is None:
            continue
        if row.job not in tasks:
            log_dir = where[row.key][1]
            paths = task_log_paths(log_dir, row.job) if log_dir else []
            text = "\n".join(t for t in (tail(p, log_lines) for p in paths) if t)
            tasks[row.job] = TaskRow(row.job, states.get(row.job, "UNKNOWN"), [],
                                     [str(p) for p in paths], text)
        tasks[row.job].missing.append(row.key)

    return Report(
        out=str(store.root),
        grid=manifest["grid"],
        grid_id=grid_id,
        total=len(rows),
        counts=counts,
        groups=list(groups.values()),
        worst=measured[:worst],
        failed=[r for r in rows if r.outcome == "failed"],
        errors=[r for r in rows if r.outcome == "error"],
        missing=missing,
        tasks=list(tasks.values()),
        cases=rows,
        submissions=list(manifest.get("submissions", [])),
        ignored={k: v for k, v in ignored.items() if k in {r.key for r in rows}},
        causes=count_causes(rows),
    )


def slurm_states(store: Store) -> dict[str, str] | None:
    """Slurm's word on the array tasks that owe records (pending, running, failed...), when Slurm
    is here to ask; None otherwise (the report is the same without it, with states UNKNOWN)."""
    manifest = store.read_manifest()
    if manifest is None or not (have("scontrol") or have("sacct")):
        return None
    owed = set(task_of_case(manifest).items())
    recorded, _ = store.credited_records(str(manifest.get("grid_id", "")))
    jobs = sorted({job for key, (job, _) in owed if key not in recorded})
    return array_states(jobs) if jobs else None


def load_report(directory: Path) -> Report:
    """`report DIR`: the report of the sweep in `directory`, with Slurm's states of the tasks that
    still owe records; BadInput when it is not a directory or holds no sweep, or when another
    user could change it or the way to it (they could plant records: Store.check_safe)."""
    store = Store(directory)
    if not store.root.is_dir():
        raise BadInput(f"{str(directory)!r} is not a directory")
    store.check_safe("DIR")  # a record is a verdict: none that another user could have planted
    return build_report(store, states=slurm_states(store))

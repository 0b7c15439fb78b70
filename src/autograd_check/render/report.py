"""Views of a sweep: its plan (--dry-run), the arrays it submitted, and its report as Rich
(terminal), Markdown (papers, bug reports) or a matplotlib plot."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from autograd_check.base.document import dumps
from autograd_check.base.errors import BadInput, EnvironmentProblem
from autograd_check.base.safety import PRIVATE_FILE
from autograd_check.render.result import fmt
from autograd_check.sweep.report import GROUPS, NO_CAUSE, OPTIONAL_GROUPS, CaseRow, Report
from autograd_check.sweep.store import FOREIGN

if TYPE_CHECKING:
    from autograd_check.sweep.launch import Submission
    from autograd_check.sweep.plan import Preview

LIST_LIMIT = 20
"""At most this many failed / errored / missing cases are listed (all are in --json)."""
TASK_LIMIT = 5
PLOT_FLOOR = 1e-12
"""Bit-exact cases (difference 0) are drawn at this height on the log scale."""
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")
"""--plot's file formats, told by the name's extension: matplotlib's own (Agg, Pillow; pgf would
need LaTeX) are written as asked, anything else is refused before anything is written."""


def _num(x: float | None) -> str:
    return "–" if x is None else fmt(x)


def preview_text(preview: Preview) -> str:
    """`sweep --dry-run`: the count, where they would run, each case, and the sbatch script."""
    plan = preview.plan
    where = "here" if plan.mode == "local" else (
        f"on Slurm as {preview.tasks} array task(s) of up to {plan.cases_per_task} case(s)")
    if preview.arrays:
        where += " in one array of N-task jobs per rank count"
    skipped = f", {preview.skipped} already recorded" if preview.skipped else ""
    lines = [f"{plan.grid.size_text()}; {len(preview.todo)} to run {where}{skipped} → "
             f"{plan.store.root}"]
    for array in preview.arrays:
        per_node = (f", {array.tasks_per_node} per node on {array.nodes} nodes"
                    if array.nodes > 1 else "")
        lines.append(f"  --ranks {array.ranks}: {array.cases} case(s) in {array.tasks} array "
                     f"task(s), each one job of {array.ranks} Slurm task(s){per_node}")
    lines += [f"  {case.index:>5}  {case.key}" for case in preview.todo]
    if preview.arrays:
        for array in preview.arrays:
            lines += ["", f"sbatch script of the --ranks {array.ranks} array (nothing was "
                      "submitted):", "", array.script]
    elif preview.script is not None:
        lines += ["", "sbatch script (nothing was submitted):", "", preview.script]
    return "\n".join(lines) + "\n"


def submitted_text(submission: Submission) -> str:
    """`sweep --slurm` without --wait: the arrays, and how to watch them and read the report."""
    arrays = submission.arrays
    return (f"submitted {submission.cases} case(s) as Slurm job array {', '.join(arrays)} "
            f"({len(submission.task_jobs)} task(s)); records go to {submission.out}\n"
            f"watch it:   squeue -j {','.join(arrays)}\n"
            f"report:     {submission.report_command}\n")


def summary_line(report: Report) -> str:
    c = report.counts
    return (
        f"{report.total} cases: {c['passed']} passed, {c['failed']} failed, "
        f"{c['error']} error, {c['missing']} missing → {report.verdict} (exit {report.exit_code})"
    )


def ignored_note(report: Report) -> str:
    """Record files that exist but do not count, and why (the first few)."""
    reasons = list(report.ignored.values())
    shown = "; ".join(reasons[:3]) + (f"; … {len(reasons) - 3} more" if len(reasons) > 3 else "")
    foreign = sum(FOREIGN in why for why in reasons)
    whose = f" ({foreign} of them {FOREIGN}, never counted)" if foreign else ""
    return (f"{len(reasons)} record file(s) do not count{whose} and their cases are missing (they "
            f"run again on resume): {shown}")


def _state_text(state: str) -> str:
    return "UNKNOWN to Slurm now" if state == "UNKNOWN" else state


def _inexact(report: Report) -> list[CaseRow]:
    """The worst cases worth a row: those that differ at all (bit-exact ones rank nothing)."""
    return [r for r in report.worst if r.outcome != "passed" or r.bit_exact is False]


def groups_table(report: Report) -> Table:
    table = Table(title="Pass/fail by dimension", box=box.SIMPLE_HEAVY, title_justify="left")
    for name in ("dimension", "value", "cases", "passed", "failed", "error", "missing"):
        table.add_column(name, justify="left" if name in ("dimension", "value") else "right")
    previous = None
    for g in report.groups:
        if previous is not None and g.group != previous:
            table.add_section()
        table.add_row(g.group if g.group != previous else "", g.value, str(g.cases),
                      str(g.passed), str(g.failed), str(g.error), str(g.missing))
        previous = g.group
    return table


def causes_table(report: Report) -> Table:
    """Failed cases by likely cause (each record's diagnosis): which bug shapes a sweep found."""
    table = Table(title="Failures by likely cause", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("likely cause")
    table.add_column("failed cases", justify="right")
    table.add_column("first case", overflow="fold")
    for kind, count in report.causes.items():
        first = next(r.key for r in report.failed if kind in (r.causes or [NO_CAUSE]))
        table.add_row(kind, str(count), first)
    return table


def _causes_text(row: CaseRow) -> str:
    return ", ".join(row.causes) or NO_CAUSE


def worst_table(report: Report) -> Table:
    table = Table(title="Worst cases (greatest relative difference)", box=box.SIMPLE_HEAVY,
                  title_justify="left", pad_edge=False)
    # Numbers are never cut: the case key folds first when the terminal is narrow.
    for name in ("case", "rel diff", "rtol", "abs diff", "mismatch", "", "job"):
        table.add_column(name, justify="left" if name in ("case", "", "job") else "right",
                         no_wrap=name != "case", overflow="fold")
    for row in _inexact(report):
        table.add_row(row.key, _num(row.max_rel_diff), _num(row.rtol), _num(row.max_abs_diff),
                      str(row.mismatched), "FAIL" if row.outcome == "failed" else "pass",
                      row.job or "local")
    return table


def _listing(title: str, rows: list[CaseRow], detail: bool) -> Table:
    table = Table(title=f"{title} ({len(rows)})", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("case", overflow="fold")  # a key is copied: folded, never cut
    table.add_column("job")
    missing = bool(rows) and rows[0].outcome == "missing"
    failed = bool(rows) and rows[0].outcome == "failed"
    table.add_column("detail" if detail or missing else "max rel diff / mismatched")
    if failed:
        table.add_column("likely cause")
    for row in rows[:LIST_LIMIT]:
        if detail:
            info = row.message or ""
        elif row.outcome == "missing":
            info = row.message or "no record"
        else:
            info = f"{_num(row.max_rel_diff)} / {row.mismatched}"
        cells: list[str | Text] = [row.key, row.job or "local", Text(info)]
        table.add_row(*cells, *([_causes_text(row)] if failed else []))
    if len(rows) > LIST_LIMIT:
        table.add_row(f"… {len(rows) - LIST_LIMIT} more (see --json)", "", "",
                      *([""] if failed else []))
    return table


def report_renderable(report: Report) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"Sweep {report.out} (grid {report.grid_id})", style="bold"),
        groups_table(report),
    ]
    if _inexact(report):
        parts.append(worst_table(report))
    elif report.worst:
        parts.append(Text("Every case with a result is bit-exact (manual == autograd).\n"))
    if report.failed:
        parts.append(causes_table(report))
        parts.append(_listing("Failed cases (gradient mismatch)", report.failed, detail=False))
    if report.errors:
        parts.append(_listing("Cases that could not run", report.errors, detail=True))
    if report.missing:
        parts.append(_listing("Missing cases (no record)", report.missing, detail=False))
        for task in report.tasks[:TASK_LIMIT]:
            if task.log_tail:
                body = task.log_tail
            elif any(Path(p).exists() for p in task.log_paths):
                body = "(its logs are empty)"
            else:
                body = "(no log: the task never started)"
            parts.append(Panel(
                Text(body), box=box.ROUNDED, title_align="left",
                title=f"task {task.job} · {_state_text(task.state)} · {len(task.missing)} case(s) "
                "missing",
                subtitle=task.log_paths[0] if task.log_paths else None, subtitle_align="left",
            ))
        if len(report.tasks) > TASK_LIMIT:
            parts.append(Text(f"… {len(report.tasks) - TASK_LIMIT} more tasks (see --json)"))
    if report.ignored:
        parts.append(Text(ignored_note(report)))
    style = "bold green" if report.exit_code == 0 else "bold red"
    parts.append(Text(summary_line(report), style=style))
    return Group(*parts)


# -- Markdown ----------------------------------------------------------------------------------
def _md_table(headers: list[str], rows: Iterable[list[str]], right: Iterable[int] = ()) -> str:
    right = set(right)
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---:" if i in right else "---" for i in range(len(headers))) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    grid = report.grid
    out = [
        f"## autograd-check sweep: {report.verdict}",
        "",
        f"**{summary_line(report)}**",
        "",
        "Grid: " + "; ".join(f"{k} {', '.join(str(v) for v in grid.get(k, []))}"
                             for k in ("shapes", "dtypes", "devices", "losses", "seeds",
                                       *(a for a in ("ranks", "parallel") if a in grid)))
        + (f"; {', '.join(f'{k}={v}' for k, v in grid.get('check', {}).items())}"
           if grid.get("check") else ""),
        "",
        "### Pass/fail by dimension",
        "",
    ]
    out.append(_md_table(
        ["dimension", "value", "cases", "passed", "failed", "error", "missing"],
        ([g.group, g.value, str(g.cases), str(g.passed), str(g.failed), str(g.error),
          str(g.missing)] for g in report.groups if g.group in (*GROUPS, *OPTIONAL_GROUPS)),
        right=range(2, 7),
    ))
    if not _inexact(report) and report.worst:
        out += ["", "Every case with a result is bit-exact (manual == autograd)."]
    if _inexact(report):
        out += ["", "### Worst cases (greatest relative difference)", ""]
        out.append(_md_table(
            ["case", "max rel diff", "rtol", "max abs diff", "mismatched", "verdict", "job"],
            ([r.key, _num(r.max_rel_diff), _num(r.rtol), _num(r.max_abs_diff),
              str(r.mismatched), r.outcome, r.job or "local"] for r in _inexact(report)),
            right=range(1, 5),
        ))
    if report.causes:
        out += ["", "### Failures by likely cause", ""]
        out.append(_md_table(["likely cause", "failed cases"],
                             ([kind, str(count)] for kind, count in report.causes.items()),
                             right=[1]))
    for title, rows in (("Failed cases", report.failed), ("Cases that could not run",
                        report.errors), ("Missing cases", report.missing)):
        if not rows:
            continue
        out += ["", f"### {title} ({len(rows)})", ""]
        out.append(_md_table(
            ["case", "job", "detail"],
            ([r.key, r.job or "local", r.message or (
                "no record" if r.outcome == "missing" else
                f"max rel diff {_num(r.max_rel_diff)}, {r.mismatched} mismatched"
                + (f", likely cause {_causes_text(r)}" if r.outcome == "failed" else ""))]
             for r in rows[:LIST_LIMIT]),
        ))
        if len(rows) > LIST_LIMIT:
            out.append(f"\n… and {len(rows) - LIST_LIMIT} more.")
    if report.ignored:
        out += ["", ignored_note(report)]
    for task in report.tasks[:TASK_LIMIT]:
        out += ["", f"Log tail of task {task.job} ({_state_text(task.state)}):", "", "```",
                task.log_tail or "(no log output)", "```"]
    return "\n".join(out) + "\n"


# -- plot --------------------------------------------------------------------------------------
def check_plot_path(path: Path) -> str:
    """The format of `--plot FILE` (its extension); BadInput for a folder or another extension
    (matplotlib would write FILE.png beside a name it cannot read as a format)."""
    allowed = ", ".join(f".{f}" for f in PLOT_FORMATS)
    if path.is_dir():
        raise BadInput(f"--plot {str(path)!r} is a folder; give a file name, e.g. "
                       f"{str(path / 'report.png')!r}")
    kind = path.suffix.lower().removeprefix(".")
    if kind not in PLOT_FORMATS:
        what = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise BadInput(f"--plot {str(path)!r} has {what}; the plot is written as one of "
                       f"{allowed} (e.g. report.png)")
    return kind


def plot(report: Report, path: Path) -> None:
    """Greatest relative difference against element count, one line per dtype and device, with
    each line's rtol drawn dashed in the same colour."""
    try:
        # matplotlib (the [plot] extra) loads only for --plot
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display (compute nodes have none)
        # matplotlib (the [plot] extra) loads only for --plot
        import matplotlib.pyplot as plt
    except ImportError:
        raise EnvironmentProblem(
            "report --plot needs matplotlib, which is not installed; "
            "install it with: pip install 'autograd-check[plot]'"
        ) from None

    series: dict[tuple[str, str], dict[int, float]] = {}
    tolerance: dict[tuple[str, str], float] = {}
    for row in report.cases:
        if row.max_rel_diff is None:
            continue
        line = series.setdefault((row.dtype, row.device), {})
        value = row.max_rel_diff if math.isfinite(row.max_rel_diff) else math.inf
        line[row.numel] = max(line.get(row.numel, 0.0), value)
        if row.rtol is not None:
            tolerance[(row.dtype, row.device)] = row.rtol

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for (dtype, device), points in sorted(series.items()):
        xs = sorted(points)
        ys = [max(points[x], PLOT_FLOOR) if math.isfinite(points[x]) else float("nan") for x in xs]
        (drawn,) = ax.plot(xs, ys, marker="o", label=f"{dtype} on {device}")
        if (dtype, device) in tolerance:
            ax.axhline(max(tolerance[(dtype, device)], PLOT_FLOOR), color=drawn.get_color(),
                       linestyle="--", linewidth=1, label=f"rtol {dtype}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("elements per tensor")
    ax.set_ylabel("greatest relative difference (manual vs autograd)")
    ax.set_title(f"autograd-check sweep {report.grid_id}: {report.verdict}")
    ax.text(0.01, 0.01, f"bit-exact (0) drawn at {PLOT_FLOOR:g}", transform=ax.transAxes,
            fontsize=7, color="grey")
    if series:
        ax.legend(fontsize=8)
    try:
        _save_private(fig, path, check_plot_path(path))
    except OSError as e:
        raise BadInput(f"--plot {str(path)!r} cannot be written: {e.strerror or e}") \
            from None
    finally:
        plt.close(fig)


def _save_private(fig: Any, path: Path, kind: str) -> None:
    """Write the figure to `path` 0600 whatever the umask (a sweep's results are its user's only,
    docs/security.md), whole or not at all: a temporary file beside it, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, dpi=120, format=kind)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def print_report(report: Report, *, json_output: bool = False, as_markdown: bool = False) -> None:
    """The report on stdout: one plain JSON document, Markdown, or Rich tables."""
    if json_output:
        print(dumps(report.to_dict()))
    elif as_markdown:
        print(markdown(report), end="")
    else:
        Console(highlight=False).print(report_renderable(report))

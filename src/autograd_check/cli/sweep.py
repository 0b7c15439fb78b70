"""`autograd-check sweep`: a grid of checks, here or as Slurm job arrays (autograd_check.sweep
does the work; this module parses, calls it, shows its progress and its report, and exits)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autograd_check.base.document import dumps
from autograd_check.base.errors import EXIT_INTERRUPTED
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import CHECK_PARAMETERS, JsonOutput, option_group
from autograd_check.cli.slurm_options import slurm_options
from autograd_check.render.console import note
from autograd_check.render.progress import SweepBar, array_progress
from autograd_check.sweep.grid import DEFAULT_MAX_CASES
from autograd_check.sweep.plan import plan_sweep, preview
from autograd_check.sweep.report import build_report
from autograd_check.sweep.settings import DEFAULT_CASE_TIMEOUT_S, SweepFlags
from autograd_check.sweep.store import DEFAULT_OUT

if TYPE_CHECKING:
    from autograd_check.sweep.grid import Case
    from autograd_check.sweep.launch import Started, Submission
    from autograd_check.sweep.plan import Plan

GRID_PANEL = "Grid (comma-separated values)"
SWEEP_PANEL = "Sweep"


def _axis(help_text: str, default: str, metavar: str = "LIST") -> Any:
    return typer.Option(help=help_text, metavar=metavar, show_default=default,
                        rich_help_panel=GRID_PANEL)


Shapes = Annotated[str | None, _axis("Shapes, e.g. 3x8,64x64,1024x1024.", "--shape")]
Dtypes = Annotated[str | None, _axis("Dtypes, e.g. float32,float64,bfloat16.", "--dtype")]
Devices = Annotated[str | None, _axis("Devices, e.g. cpu,cuda.", "--device")]
Losses = Annotated[str | None, _axis("Losses, e.g. mse-sum,huber.", "--loss or mse-sum")]
Seeds = Annotated[str | None, _axis("Seeds and inclusive ranges, e.g. 0-9 or 0-4,10.", "--seed",
                                    "SEEDS")]
Out = Annotated[Path | None, typer.Option(
    "--out", help="Results directory: manifest.json, records/<case>.json, logs/.",
    metavar="DIR", show_default=f"./{DEFAULT_OUT}", rich_help_panel=SWEEP_PANEL)]
Local = Annotated[bool | None, typer.Option(
    "--local/--slurm",
    help="Run here, one case after another, or as a Slurm job array (default: --slurm where "
    "sbatch is on PATH, unless this is already a job step; else --local).",
    show_default=False, rich_help_panel=SWEEP_PANEL)]
RerunFailed = Annotated[bool, typer.Option(
    "--rerun-failed", help="Also run again the cases whose record is a mismatch or an error.",
    rich_help_panel=SWEEP_PANEL)]
Force = Annotated[bool, typer.Option(
    "--force", help="Cancel the arrays of an earlier sweep into --out that still run, delete its "
    "records (even another grid's), superseded/ and logs/, and run every case.",
    rich_help_panel=SWEEP_PANEL)]
MaxCases = Annotated[int | None, typer.Option(
    "--max-cases", help="Refuse a grid with more cases than this.", min=1,
    show_default=str(DEFAULT_MAX_CASES), rich_help_panel=SWEEP_PANEL)]
CasesPerTask = Annotated[int | None, typer.Option(
    "--cases-per-task", help="Slurm: run N cases in each array task (one Python start, one "
    "torch import).", min=1, metavar="N", show_default="1", rich_help_panel=SWEEP_PANEL)]
MaxParallel = Annotated[int | None, typer.Option(
    "--max-parallel", help="Slurm: at most N array tasks running at once (the array's %N).",
    min=1, metavar="N", show_default="no limit", rich_help_panel=SWEEP_PANEL)]
CaseTimeout = Annotated[float | None, typer.Option(
    "--case-timeout", help="Stop a case still running after this many seconds and record it as "
    "an error (timed out; not a mismatch); the sweep goes on. 0: no limit.", min=0,
    metavar="SECONDS", show_default=f"{DEFAULT_CASE_TIMEOUT_S:g}", rich_help_panel=SWEEP_PANEL)]
Wait = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Slurm: watch the array live, then print the report; without it, "
    "print the job ids and the report command.", rich_help_panel=SWEEP_PANEL)]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Print the cases (and the sbatch script); run and submit nothing.",
    rich_help_panel=SWEEP_PANEL)]

RANKS_HELP = (
    "Rank counts, e.g. 1,2,4: each case splits the batch over N ranks (torch.distributed) and "
    "checks their gradients against one process's (--model or a --target module). --local: "
    "each case starts its N ranks here. --slurm: each rank count is its own job array; each "
    "array task is one job of N tasks (N/--nodes per node), which run its cases as N ranks."
)
PARALLEL_HELP = "How --ranks wraps the model, e.g. ddp,fsdp (DistributedDataParallel, FSDP2)."


def _sweep_parameter(parameter: Any) -> Any:
    """--ranks and --parallel are grid axes here (comma-separated lists); the rest as in run."""
    helps = {"ranks": (RANKS_HELP, "LIST", "one process"),
             "parallel": (PARALLEL_HELP, "LIST", "ddp with --ranks")}
    if parameter.name not in helps:
        return parameter
    text, metavar, default = helps[parameter.name]
    return parameter.replace(annotation=Annotated[str | None, typer.Option(
        help=text, metavar=metavar, show_default=default, rich_help_panel=GRID_PANEL)])


sweep_check_options = option_group([_sweep_parameter(p) for p in CHECK_PARAMETERS],
                                   "check_values")
"""The check options, with --ranks and --parallel as the grid's axes."""


@app.command(epilog=EXIT_CODE_HELP.replace(
    "130 interrupted", "130 interrupted (Ctrl-C; run it again to resume)"))
@edge
@sweep_check_options
@slurm_options
def sweep(
    *,
    shapes: Shapes = None,
    dtypes: Dtypes = None,
    devices: Devices = None,
    losses: Losses = None,
    seeds: Seeds = None,
    out: Out = None,
    local: Local = None,
    rerun_failed: RerunFailed = False,
    force: Force = False,
    max_cases: MaxCases = None,
    cases_per_task: CasesPerTask = None,
    max_parallel: MaxParallel = None,
    case_timeout: CaseTimeout = None,
    wait: Wait = False,
    dry_run: DryRun = False,
    json_output: JsonOutput = False,
    check_values: dict[str, Any],
    slurm_values: dict[str, Any],
) -> None:
    """Check every combination of shapes, dtypes, devices, losses and seeds; one record per case.

    --ranks and --parallel add rank counts and wrappers to the grid (checks across ranks).

    Cases with a record in --out are skipped: the same command again resumes a sweep.
    Ends with the report (see `autograd-check report`).
    """

    axes = {"shapes": shapes, "dtypes": dtypes, "devices": devices, "losses": losses,
            "seeds": seeds}
    flags = SweepFlags(out=out, mode=None if local is None else ("local" if local else "slurm"),
                       max_cases=max_cases, cases_per_task=cases_per_task,
                       max_parallel=max_parallel, case_timeout=case_timeout)
    plan = plan_sweep(check_values, axes, flags, slurm_values, on_note=note)
    if dry_run:
        _show_preview(plan, rerun_failed=rerun_failed, force=force, json_output=json_output)
        return
    # rich loads only when this view is drawn: --help and --json never pay for it
    from autograd_check.render.report import print_report
    from autograd_check.sweep.launch import start_sweep

    started = start_sweep(plan, rerun_failed=rerun_failed, force=force, on_note=note)
    states: dict[str, str] | None = None
    if started.local_index is not None:
        _run_here(plan, started)
    elif started.task_jobs:
        if not wait:
            _show_submitted(started.submission(plan), json_output=json_output)
            return
        states = _watch(plan, started.task_jobs)
    report = build_report(plan.store, states=states)
    print_report(report, json_output=json_output)
    raise typer.Exit(report.exit_code)


def _show_preview(plan: Plan, *, rerun_failed: bool, force: bool, json_output: bool) -> None:
    """--dry-run: the cases that would run (and the sbatch script); nothing is written."""

    shown = preview(plan, rerun_failed=rerun_failed, force=force)
    if json_output:
        print(dumps(shown.to_dict()))
    else:
        # rich loads only when this view is drawn: --help and --json never pay for it
        from autograd_check.render.report import preview_text

        print(preview_text(shown), end="")


def _show_submitted(submission: Submission, *, json_output: bool) -> None:
    if json_output:
        print(dumps(submission.to_dict()))
    else:
        # rich loads only when this view is drawn: --help and --json never pay for it
        from autograd_check.render.report import submitted_text

        print(submitted_text(submission), end="")


def _run_here(plan: Plan, started: Started) -> None:
    """The cases, here, under a progress bar; Ctrl-C is exit 130 with every record kept."""
    # submitit loads only when Slurm is used
    from autograd_check.sweep.launch import SweepInterrupted, run_local

    def hung(case: Case, doc: dict[str, Any]) -> None:
        note(f"case {case.key}: {doc['error']['message']}. Its record says so; run the same "
             "command again to go on with the other cases")

    try:
        with SweepBar(len(started.todo)) as bar:
            ran = run_local(plan, started, on_done=bar.advance, on_hang=hung)
    except SweepInterrupted as e:
        note(str(e))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    bar.summary(ran)


def _watch(plan: Plan, task_jobs: list[str]) -> dict[str, str]:
    """--wait: the arrays' live line on stderr until they end; their tasks' states."""
    # submitit loads only when Slurm is used
    from autograd_check.sweep.launch import watch_sweep

    with array_progress() as on_update:
        return watch_sweep(plan, task_jobs, on_update=on_update, on_note=note)

"""`autograd-check sweep` (a grid of checks, here or as a Slurm job array) and `report DIR`."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autograd_check.cli.app import EXIT_CODE_HELP, app, edge
from autograd_check.cli.options import check_options
from autograd_check.cli.slurm_options import slurm_options
from autograd_check.errors import BadInput
from autograd_check.sweep.grid import DEFAULT_MAX_CASES
from autograd_check.sweep.store import DEFAULT_OUT

if TYPE_CHECKING:
    from autograd_check.slurm import SlurmOptions
    from autograd_check.sweep.grid import Case, Grid
    from autograd_check.sweep.report import Report
    from autograd_check.sweep.store import Store

GRID_PANEL = "Grid (comma-separated values)"
SWEEP_PANEL = "Sweep"
SWEEP_KEYS = ("shapes", "dtypes", "devices", "losses", "seeds", "out", "mode", "max_cases",
              "cases_per_task", "max_parallel")
"""Keys of a config file's [sweep] table."""
EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


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
Wait = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Slurm: watch the array live, then print the report; without it, "
    "print the job ids and the report command.", rich_help_panel=SWEEP_PANEL)]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Print the cases (and the sbatch script); run and submit nothing.",
    rich_help_panel=SWEEP_PANEL)]
JsonOutput = Annotated[bool, typer.Option(
    "--json", help="Print the report as one plain JSON document on stdout, nothing else.")]


# -- building the sweep from flags and --config --------------------------------------------------
def _sweep_values(
    check_values: dict[str, Any], axis_flags: dict[str, Any], sweep_flags: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """(grid values, sweep settings, the --config path), flags over the config file."""
    from autograd_check.check.spec import SPEC_KEYS, build_spec
    from autograd_check.config import section_values
    from autograd_check.sweep.grid import AXES, AXIS_OF

    flags = dict(check_values)
    path = flags.pop("config", None)
    check_file, _ = section_values(path, "check", SPEC_KEYS)
    sweep_file, _ = section_values(path, "sweep", SWEEP_KEYS)
    try:
        build_spec(check_file)
    except BadInput as e:
        raise BadInput(f"config {str(path)!r} [check]: {e}") from None
    file_values = {**check_file, **{k: v for k, v in sweep_file.items() if k in AXES}}
    flag_values = {**flags, **axis_flags}
    for axis, field in AXES.items():
        # A flag for an axis (plural or singular) replaces the file's values for that axis.
        if flag_values.get(axis) is not None or flag_values.get(field) is not None:
            file_values.pop(axis, None)
            file_values.pop(field, None)
    grid_values = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    for field in AXIS_OF:
        grid_values.setdefault(field, None)
    settings = {k: v for k, v in sweep_file.items() if k not in AXES}
    settings.update({k: v for k, v in sweep_flags.items() if v is not None})
    return grid_values, settings, path


def _int_setting(settings: dict[str, Any], key: str, default: int | None) -> int | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"[sweep] {key} {value!r} is not allowed; expected an integer >= 1")
    return value


def _mode(settings: dict[str, Any]) -> str:
    """'local' or 'slurm': as asked; else Slurm where sbatch is, unless this is a job step."""
    mode = settings.get("mode")
    if mode is None:
        from autograd_check.slurm import current_allocation, have

        # A job step (srun inside salloc or sbatch) is already where the work should run.
        alloc = current_allocation()
        return "slurm" if have("sbatch") and not (alloc is not None and alloc.in_step) else "local"
    if mode not in ("local", "slurm"):
        raise BadInput(f"[sweep] mode {mode!r} is not known; choose 'local' or 'slurm'")
    return str(mode)


def _check_local(cases: list[Case]) -> None:
    """A local sweep refuses, before anything runs, a shape that cannot fit on this host (exit 2)
    and a device that is not usable here (exit 3), instead of recording it case after case."""
    from autograd_check.check.execute import check_memory

    seen: set[tuple[tuple[int, ...], str]] = set()
    for case in cases:
        if (case.spec.shape, case.spec.dtype) not in seen:
            seen.add((case.spec.shape, case.spec.dtype))
            check_memory(case.spec)
    devices = {case.spec.device for case in cases} - {"cpu"}
    if devices:
        from autograd_check.check.device import resolve_device

        for device in sorted(devices):
            resolve_device(device)


def _progress_line(message: str) -> None:
    print(f"autograd-check: {message}", file=sys.stderr, flush=True)


# -- the commands ------------------------------------------------------------------------------
@app.command(epilog=EXIT_CODE_HELP + " · 130 interrupted (Ctrl-C; run it again to resume)")
@edge
@check_options
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
    wait: Wait = False,
    dry_run: DryRun = False,
    json_output: JsonOutput = False,
    check_values: dict[str, Any],
    slurm_values: dict[str, Any],
) -> None:
    """Check every combination of shapes, dtypes, devices, losses and seeds; one record per case.

    Cases with a record in --out are skipped: the same command again resumes a sweep.
    Ends with the report (see `autograd-check report`).
    """
    from autograd_check.sweep.grid import build_grid, check_size
    from autograd_check.sweep.store import Store

    axis_flags = {"shapes": shapes, "dtypes": dtypes, "devices": devices, "losses": losses,
                  "seeds": seeds}
    sweep_flags = {"out": str(out) if out is not None else None,
                   "mode": None if local is None else ("local" if local else "slurm"),
                   "max_cases": max_cases, "cases_per_task": cases_per_task,
                   "max_parallel": max_parallel}
    grid_values, settings, config_path = _sweep_values(check_values, axis_flags, sweep_flags)
    grid = build_grid(grid_values)
    check_size(grid, _int_setting(settings, "max_cases", DEFAULT_MAX_CASES) or DEFAULT_MAX_CASES)
    for dropped in grid.dropped:
        _progress_line(f"{dropped} given more than once; each value runs once")
    cases = list(grid.cases())
    mode = _mode(settings)
    per_task = _int_setting(settings, "cases_per_task", 1) or 1
    parallel = _int_setting(settings, "max_parallel", None)
    out_dir = settings.get("out", DEFAULT_OUT)
    if not isinstance(out_dir, str) or not out_dir:
        raise BadInput(f"[sweep] out {out_dir!r} is not a directory name")
    store = Store(Path(out_dir))
    opts: SlurmOptions | None = None
    if mode == "slurm":
        from autograd_check.config import slurm_from

        opts = slurm_from(slurm_values, config_path)
    else:
        _check_local(cases)

    if dry_run:
        _dry_run(store, grid, cases, mode, per_task, parallel, opts, rerun_failed, force,
                 json_output)
        return
    if opts is not None:
        _check_slurm_here(opts)
    store.check_grid(grid, force=force)  # another grid in --out: exit 2 before anything else
    from autograd_check.sweep.store import select

    # The lock is held from the look at earlier submissions until this one is in the manifest
    # (for Slurm: until its arrays are), so a second sweep into DIR sees it and refuses.
    with store.locked(on_wait=lambda: _progress_line(
            f"waiting for another sweep into {store.root} to finish submitting")):
        _stop_earlier(store, force)
        _manifest, removed = store.prepare(grid, force=force)
        if force:
            gone = [f"{removed} record(s)"] + store.clear_old_files()
            if removed or len(gone) > 1:
                _progress_line(f"--force: removed {', '.join(gone)} from {store.root}")
        todo, skipped = select(cases, store, grid.grid_id(), rerun_failed=rerun_failed)
        recorded = store.recorded_keys()
        again = [c.key for c in todo if c.key in recorded]
        for key in again:  # a failed record (--rerun-failed), a half or another grid's one
            store.supersede(key)
        if again:
            what = ("--rerun-failed: {} failed" if rerun_failed else
                    "{} unusable (unreadable, or another grid's)").format(len(again))
            _progress_line(f"{what} record(s) moved to {store.root / 'superseded'}; "
                           "running them again")
        if skipped:
            _progress_line(f"resuming: {skipped} of {len(cases)} cases already have a record "
                           f"in {store.root}; running {len(todo)}")
        states: dict[str, str] | None = None
        task_jobs: list[str] = []
        local_index: int | None = None
        if not todo:
            _progress_line(f"nothing to {'run' if opts is None else 'submit'}: every case has a "
                           "record")
        elif opts is None:
            local_index = _add_local_submission(store, len(todo))
        else:
            task_jobs = _submit(store, grid, todo, opts, per_task, parallel)
    if local_index is not None:
        _sweep_local(store, grid, todo, local_index)
    elif task_jobs:
        if not wait:
            _submitted_message(store, task_jobs, len(todo), json_output)
            return
        assert opts is not None
        states = _watch(store, grid, task_jobs, opts.timeout)
    report = _report_of(store, states)
    _show_report(report, json_output=json_output, markdown=False)
    raise typer.Exit(report.exit_code)


def _dry_run(store: Store, grid: Grid, cases: list[Case], mode: str, per_task: int,
             parallel: int | None, opts: SlurmOptions | None, rerun_failed: bool, force: bool,
             json_output: bool) -> None:
    """The cases that would run (and, for Slurm, the sbatch script); nothing is written."""
    from autograd_check.document import dumps
    from autograd_check.sweep.store import select

    store.check_grid(grid, force=force)  # raises: another grid lives there
    todo, skipped = (cases, 0) if force else select(cases, store, grid.grid_id(),
                                                    rerun_failed=rerun_failed)
    script = None
    tasks = -(-len(todo) // per_task)
    if opts is not None and todo:
        from autograd_check.slurm import array_parameters, array_script, max_array_size

        first = min(tasks, max_array_size())
        params = array_parameters(opts, cuda=_any_cuda(todo), tasks=first, max_parallel=parallel)
        script = array_script(opts, params, _log_dir(store, opts), first)
    if json_output:
        print(dumps({"grid": grid.to_dict(), "grid_id": grid.grid_id(), "mode": mode,
                     "out": str(store.root), "skipped": skipped, "tasks": tasks,
                     "cases_per_task": per_task, "sbatch_script": script,
                     "cases": [{"key": c.key, "index": c.index, "spec": c.spec.to_dict()}
                               for c in todo]}))
        return
    where = "here" if mode == "local" else (
        f"on Slurm as {tasks} array task(s) of up to {per_task} case(s)")
    print(f"{grid.size_text()}; {len(todo)} to run {where}"
          f"{f', {skipped} already recorded' if skipped else ''} → {store.root}")
    for case in todo:
        print(f"  {case.index:>5}  {case.key}")
    if script is not None:
        print("\nsbatch script (nothing was submitted):\n")
        print(script)


# -- Slurm -----------------------------------------------------------------------------------
def _any_cuda(cases: list[Case]) -> bool:
    return any(c.spec.device.startswith("cuda") for c in cases)


def _log_dir(store: Store, opts: SlurmOptions) -> Path:
    """--log-dir when given, else DIR/logs: the tasks' logs live with the sweep's records."""
    from autograd_check.slurm import resolve_log_dir

    return resolve_log_dir(opts.log_dir if opts.log_dir is not None else store.logs_dir)


def _check_slurm_here(opts: SlurmOptions) -> None:
    """sbatch must be here; inside an allocation that would hold back the array, say so now."""
    from autograd_check.errors import EnvironmentProblem
    from autograd_check.slurm import array_blocked, current_allocation, require_slurm

    require_slurm("sbatch")
    alloc = current_allocation()
    if alloc is not None:
        blocked = array_blocked(opts, alloc)
        if blocked:
            raise EnvironmentProblem(
                f"{blocked.rstrip('.')}. Run the sweep on the allocated node instead: "
                "`srun autograd-check sweep --local ...`, or ask for less with --mem"
            )


def _stop_earlier(store: Store, force: bool) -> None:
    """Refuse (exit 2) while an earlier submission into DIR still runs: its tasks would write
    records beside this sweep's and cases would run twice. --force cancels its arrays first."""
    import shlex

    from autograd_check.slurm import cancel_arrays, live_tasks

    manifest = store.read_manifest() if store.root.exists() else None
    if manifest is None:
        return
    local = _live_local(manifest)
    if local is not None:
        raise BadInput(
            f"a local sweep into --out {str(store.root)!r} is still running ({local}); wait for "
            "it to end or stop it first (Ctrl-C there, or kill its pid)"
        )
    jobs = [job for submission in manifest.get("submissions", [])
            for array in submission.get("arrays", []) for job in array.get("task_jobs", [])]
    alive = live_tasks(jobs)
    if not alive:
        return
    arrays = sorted({j.split("_")[0] for j in alive}, key=int)
    listed = ", ".join(sorted(alive)[:5]) + (", ..." if len(alive) > 5 else "")
    what = (f"job array {', '.join(arrays)} of an earlier sweep into --out {str(store.root)!r} "
            f"still has {len(alive)} task(s) pending or running ({listed})")
    if not force:
        raise BadInput(
            f"{what}. Wait for it to end (`autograd-check report {shlex.quote(str(store.root))}` "
            f"shows what is done), cancel it (`scancel {' '.join(arrays)}`), or run with --force "
            "to cancel it and start over"
        )
    _progress_line(f"--force: {what}; cancelling it")
    cancel_arrays(list(alive))


def _live_local(manifest: dict[str, Any]) -> str | None:
    """'pid 123 on host' of a local sweep into this DIR whose process still lives, if any."""
    import os
    import socket

    host = socket.gethostname()
    for submission in manifest.get("submissions", []):
        if submission.get("mode") != "local" or "ended" in submission:
            continue
        pid = submission.get("pid")
        if submission.get("host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue  # killed without a word (SIGKILL, a crash): it runs no more
        except PermissionError:
            pass  # alive, someone else's
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"autograd" not in f.read():
                    continue  # the pid was reused by another program
        except OSError:
            pass
        return f"pid {pid} on {host}"
    return None


def _submit(store: Store, grid: Grid, todo: list[Case], opts: SlurmOptions, per_task: int,
            parallel: int | None) -> list[str]:
    """Submit the cases as job array(s), recording each array in the manifest as soon as Slurm
    accepts it; returns the task job ids."""
    import socket

    from autograd_check.slurm import (
        SubmittedArray,
        array_parameters,
        current_allocation,
        submit_arrays,
    )
    from autograd_check.sweep.runner import ArrayTask, chunks
    from autograd_check.sweep.store import now

    packed = chunks(todo, per_task)
    folder = _log_dir(store, opts)
    params = array_parameters(opts, cuda=_any_cuda(todo), tasks=len(packed),
                              max_parallel=parallel)
    out = str(store.root.resolve())
    index = store.add_submission({
        "mode": "slurm", "started": now(), "host": socket.gethostname(), "cases": len(todo),
        "cases_per_task": per_task, "max_parallel": parallel, "tasks": len(packed),
        "log_dir": str(folder), "parameters": params, "arrays": [],
    })
    task_jobs: list[str] = []

    def record(array: SubmittedArray, first: int) -> None:
        group = packed[first : first + len(array.task_jobs)]
        store.add_array(index, {
            "job_id": array.job_id, "task_jobs": array.task_jobs, "log_dir": str(folder),
            "submission_file": str(array.submission_file),
            "tasks": [[key for key, _, _ in chunk] for chunk in group],
        })
        task_jobs.extend(array.task_jobs)
        _progress_line(f"submitted job array {array.job_id}: {len(array.task_jobs)} task(s), "
                       f"{sum(len(c) for c in group)} case(s)")

    # submitit's Checkpointable.__new__ has no annotations.
    task = ArrayTask()  # type: ignore[no-untyped-call]
    submit_arrays(task, [(out, grid.grid_id(), chunk) for chunk in packed], opts, params,
                  folder, clean=current_allocation() is not None, on_submitted=record)
    return task_jobs


def _submitted_message(store: Store, task_jobs: list[str], cases: int, json_output: bool) -> None:
    import shlex

    arrays = sorted({j.split("_")[0] for j in task_jobs}, key=int)
    command = f"autograd-check report {shlex.quote(str(store.root))}"
    if json_output:
        from autograd_check.document import dumps

        print(dumps({"submitted": {"cases": cases, "arrays": arrays, "tasks": task_jobs},
                     "out": str(store.root), "report_command": command}))
        return
    print(f"submitted {cases} case(s) as Slurm job array {', '.join(arrays)} "
          f"({len(task_jobs)} task(s)); records go to {store.root}")
    print(f"watch it:   squeue -j {','.join(arrays)}")
    print(f"report:     {command}")


def _watch(store: Store, grid: Grid, task_jobs: list[str], timeout: float) -> dict[str, str]:
    """--wait: a live line on stderr (tasks pending/running/done/failed, records, elapsed)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from autograd_check.slurm import ArrayProgress, watch_arrays

    keys = {c.key for c in grid.cases()}

    def line(p: ArrayProgress) -> Text:
        minutes, seconds = divmod(int(p.elapsed), 60)
        return Text(f"array: {p.pending} pending · {p.running} running · {p.done} done · "
                    f"{p.failed} failed · records {p.recorded}/{p.cases} · "
                    f"{minutes}:{seconds:02d} elapsed")

    console = Console(stderr=True, highlight=False)
    recorded = lambda: len(store.recorded_keys() & keys)  # noqa: E731
    if console.is_terminal:
        with Live(Text("array: submitted"), console=console, refresh_per_second=4) as live:
            progress = watch_arrays(task_jobs, recorded, len(keys), timeout,
                                    on_update=lambda p: live.update(line(p)))
            live.update(line(progress))
    else:
        # A log file gets one line per change, not a redrawn screen.
        last: list[str] = []

        def changed(p: ArrayProgress) -> None:
            text = line(p).plain.rsplit(" · ", 1)[0]
            if text not in last:
                last.append(text)
                console.print(line(p))

        progress = watch_arrays(task_jobs, recorded, len(keys), timeout, on_update=changed)
    if not progress.finished and progress.recorded < progress.cases:
        _progress_line(f"gave up waiting after {timeout:g} s (--timeout); the array goes on: "
                       f"run `autograd-check report {store.root}` later")
    return progress.states


def _add_local_submission(store: Store, cases: int) -> int:
    import os
    import socket

    from autograd_check.sweep.store import now

    return store.add_submission({"mode": "local", "started": now(), "host": socket.gethostname(),
                                 "pid": os.getpid(), "cases": cases})


def _sweep_local(store: Store, grid: Grid, todo: list[Case], index: int) -> None:
    """Run the cases here with a progress bar on stderr; Ctrl-C keeps every record written."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from autograd_check.sweep.runner import Tally, run_cases
    from autograd_check.sweep.store import now

    tally = Tally()
    console = Console(stderr=True, highlight=False)
    progress = Progress(
        TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
        console=console, transient=False, disable=not console.is_terminal,
    )
    task = progress.add_task("sweep", total=len(todo), status="")

    def done(case: Case, doc: dict[str, Any]) -> None:
        from autograd_check.sweep.store import outcome_of

        tally.add(outcome_of(doc))
        progress.update(task, advance=1, status=f"{tally.passed} passed, {tally.failed} failed, "
                        f"{tally.error} error · {case.key}")

    start = time.monotonic()

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # `kill` (SIGTERM) ends a sweep as cleanly as Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with progress:
            run_cases(store, todo, grid.grid_id(), on_done=done)
    except KeyboardInterrupt:
        recorded = len(store.recorded_keys() & {c.key for c in grid.cases()})
        store.update_submission(index, ended=now(), status="interrupted", ran=tally.ran)
        _progress_line(
            f"interrupted: {recorded} of {grid.size} cases have a record in {store.root}; "
            "run the same command again to resume"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    store.update_submission(index, ended=now(), status="complete", ran=tally.ran)
    if not console.is_terminal:  # no bar was drawn: say what happened in one line
        _progress_line(f"ran {tally.ran} case(s) here in {time.monotonic() - start:.1f} s: "
                       f"{tally.passed} passed, {tally.failed} failed, {tally.error} error")


def _task_states(store: Store) -> dict[str, str] | None:
    """Slurm's word on the tasks that owe records (pending, running, failed...), when Slurm is
    here to ask; the report is the same without it, with states UNKNOWN."""
    from autograd_check.slurm import array_states, have
    from autograd_check.sweep.report import task_of_case

    manifest = store.read_manifest()
    if manifest is None or not (have("scontrol") or have("sacct")):
        return None
    owed = set(task_of_case(manifest).items())
    recorded, _ = store.credited_records(str(manifest.get("grid_id", "")))
    jobs = sorted({job for key, (job, _) in owed if key not in recorded})
    return array_states(jobs) if jobs else None


def _report_of(store: Store, states: dict[str, str] | None = None) -> Report:
    from autograd_check.sweep.report import build_report

    return build_report(store, states=states)


def _show_report(report: Report, *, json_output: bool, markdown: bool) -> None:
    if json_output:
        from autograd_check.document import dumps

        print(dumps(report.to_dict()))
        return
    if markdown:
        from autograd_check.render.report import markdown as to_markdown

        print(to_markdown(report), end="")
        return
    from rich.console import Console

    from autograd_check.render.report import report_renderable

    Console(highlight=False).print(report_renderable(report))


ReportDir = Annotated[Path, typer.Argument(help="The sweep's --out directory.", metavar="DIR",
                                           show_default=False)]
Markdown = Annotated[bool, typer.Option("--markdown", help="Print the report as Markdown.")]
Plot = Annotated[Path | None, typer.Option(
    "--plot", help="Also draw greatest relative difference against element count to FILE.png "
    "(needs the [plot] extra: matplotlib).", metavar="FILE.png")]


@app.command(epilog=EXIT_CODE_HELP.replace("1 gradient mismatch", "1 any mismatch")
             + " (report: 4 when cases are missing or their jobs failed)")
@edge
def report(
    directory: ReportDir,
    *,
    json_output: JsonOutput = False,
    markdown: Markdown = False,
    plot: Plot = None,
) -> None:
    """Summarise a sweep: pass/fail by dtype, device, loss and shape; the worst cases; the failed
    and missing ones with their job ids and log tails."""
    from autograd_check.sweep.store import Store

    if json_output and markdown:
        raise BadInput("choose one of --json and --markdown")
    store = Store(directory)
    if not store.root.is_dir():
        raise BadInput(f"{str(directory)!r} is not a directory")
    result = _report_of(store, _task_states(store))
    if plot is not None:
        from autograd_check.render.report import plot as draw

        draw(result, plot)
        if not json_output:
            _progress_line(f"plot written to {plot}")
    _show_report(result, json_output=json_output, markdown=markdown)
    raise typer.Exit(result.exit_code)

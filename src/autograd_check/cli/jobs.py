"""`status` and `result`: re-attaching to a job `submit` queued, by its id; the hidden `_step`;
and how a job's result and an interrupted wait are shown (also by `submit`). A failed job
(JobFailed) is shown by the edge (cli/app.py): its error line, log tail and state.

Thin commands over autograd_check.slurm: the job's state (slurm.watch.job_status), waiting and
collecting (slurm.watch) are there; this module parses, shows and exits.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from autograd_check.cli.app import EXIT_CODE_HELP, app, edge
from autograd_check.cli.options import JsonOutput, ShowTensors
from autograd_check.cli.output import print_document, show_result
from autograd_check.errors import EXIT_INTERRUPTED, EnvironmentProblem
from autograd_check.render.console import note
from autograd_check.render.progress import JobProgress
from autograd_check.slurm import watch
from autograd_check.slurm.log_dir import DEFAULT_LOG_DIR, LOG_DIR_ENV, resolve_log_dir
from autograd_check.slurm.options import (
    DEFAULT_TIMEOUT_S,
    parse_job_id,
    parse_log_dir,
    parse_timeout,
)
from autograd_check.slurm.step import step_main
from autograd_check.slurm.watch import job_status

if TYPE_CHECKING:
    from autograd_check.engine.result import CheckResult
    from autograd_check.slurm.watch import JobStatus

JobId = Annotated[str, typer.Argument(help="The job id `submit` printed.", show_default=False)]
LogDir = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        metavar="DIR",
        envvar=LOG_DIR_ENV,
        help="The log folder the job was submitted with.",
        show_default=DEFAULT_LOG_DIR,
    ),
]
Timeout = Annotated[
    str | None,
    typer.Option(help="Bound on the wait, in seconds.", metavar="SECONDS", show_default="3600"),
]


def job_header(result: CheckResult, state: str | None, elapsed: float | None) -> str:
    slurm = result.environment.get("slurm") or {}
    parts = [f"Slurm job {slurm.get('job_id', '?')}"]
    if slurm.get("step_id"):
        parts[0] += f" step {slurm['step_id']}"
    parts.append(f"node {slurm.get('node') or result.environment.get('host', '?')}")
    if slurm.get("partition"):
        parts.append(f"partition {slurm['partition']}")
    if state:
        parts.append(state)
    if elapsed is not None:
        parts.append(f"waited {elapsed:.1f} s")
    return " · ".join(parts)


def show_job_result(
    result: CheckResult,
    *,
    json_output: bool,
    show_tensors: bool | None,
    state: str | None = None,
    elapsed: float | None = None,
) -> None:
    """The view of `run` under a line naming the job; with --json, the same document as `run`."""

    if not json_output:
        print(job_header(result, state, elapsed), flush=True)
    show_result(result, json_output=json_output, show_tensors=show_tensors)


def hint_flags(log_dir: Path | None) -> str:
    return f" --log-dir {shlex.quote(str(log_dir))}" if log_dir is not None else ""


def stopped_waiting(job_id: str, log_dir: Path | None) -> NoReturn:
    """Ctrl-C while waiting for a batch job: only the wait stops, so say where the job is."""

    flags = hint_flags(log_dir)
    note(
        f"stopped waiting; Slurm job {job_id} keeps running: `autograd-check status {job_id}"
        f"{flags}` shows its state, `autograd-check result {job_id}{flags} --wait` waits for "
        f"its result, `scancel {job_id}` cancels it"
    )
    raise typer.Exit(EXIT_INTERRUPTED)


def _folder(log_dir: Path | None) -> Path:
    return resolve_log_dir(parse_log_dir(log_dir) if log_dir else None)


@app.command(epilog=EXIT_CODE_HELP)
@edge
def status(
    job_id: JobId,
    *,
    log_dir: LogDir = None,
    json_output: JsonOutput = False,
) -> None:
    """State, node, elapsed time and log paths of a job `submit` queued."""

    job_id = parse_job_id(job_id)
    found = job_status(job_id, _folder(log_dir))
    if json_output:
        print_document("job", {"job": found.to_dict()})
        return
    print_status(found, log_dir)


def print_status(found: JobStatus, log_dir: Path | None) -> None:
    job_id = found.job_id
    print(f"Slurm job {job_id}: {found.state}  (from {found.source})")
    for label, value, shown in (
        ("node", found.node, True),
        ("partition", found.partition, True),
        ("elapsed", found.elapsed, True),
        ("reason", found.reason, True),
        ("exit code", found.exit_code, found.finished),
    ):
        if value and shown:
            print(f"  {label:<10}{value}")
    if found.never_starts:
        print(f"  {'hint':<10}Slurm will never start it: {found.never_starts}; cancel it: "
              f"scancel {job_id}")
    ready = f"ready: autograd-check result {job_id}{hint_flags(log_dir)}"
    print(f"  {'result':<10}{ready if found.result_available else 'none yet'}")
    for label, path in found.logs.items():
        print(f"  {label:<10}{path or '(not written yet)'}")


@app.command(epilog=EXIT_CODE_HELP)
@edge
def result(
    job_id: JobId,
    *,
    log_dir: LogDir = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a job that has not ended yet.")
    ] = False,
    timeout: Timeout = None,
    show_tensors: ShowTensors = None,
    json_output: JsonOutput = False,
) -> None:
    """The result of a job `submit` queued (the view of `run`), or its state and log tail."""

    job_id = parse_job_id(job_id)
    folder = _folder(log_dir)
    bound = parse_timeout(timeout) if timeout is not None else DEFAULT_TIMEOUT_S
    info = None
    if wait:
        try:
            job_status(job_id, folder)  # a job Slurm and the folder never knew: JobFailed, at once
        except EnvironmentProblem:
            pass  # Slurm slow to answer (or not here): the wait says what it sees, within bound
        try:
            with JobProgress(f"Slurm job {job_id}") as progress:
                info = watch.wait_for_job(job_id, folder, bound, progress.update)
        except KeyboardInterrupt:
            stopped_waiting(job_id, log_dir)
    checked = watch.collect(job_id, folder, info)  # a failed job: JobFailed, shown by edge
    show_job_result(
        checked, json_output=json_output, show_tensors=show_tensors,
        state=info.state if info else None,
    )
    raise typer.Exit(checked.exit_code)


@app.command("_step", hidden=True)
def step(spec: Annotated[str, typer.Option("--spec", help="The CheckSpec as JSON.")]) -> None:
    """Inside a job step: run the check, answer with one marked JSON line (see slurm.run_step)."""

    line, code = step_main(spec)
    if line:  # the ranks of a --ranks step all hold the result: rank 0 answers for them
        print(line, flush=True)
    raise typer.Exit(code)

"""`status` and `result`: re-attaching to a job `submit` queued, by its id; the hidden `_step`;
and how a job's result is shown (also by `submit`). A failed job (JobFailed) is shown by the edge
(cli/edge.py): its error line, log tail and state; an interrupted wait (WaitStopped) too.

Thin commands over autograd_check.slurm: the job's state (slurm.watch.job_status), waiting and
collecting (slurm.submission.job_result) are there, and the views in render/job.py; this module
parses, calls, shows and exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import JsonOutput, ShowTensors
from autograd_check.cli.output import print_document, show_result
from autograd_check.render.job import job_header, print_status
from autograd_check.render.progress import JobProgress
from autograd_check.slurm.log_dir import DEFAULT_LOG_DIR, LOG_DIR_ENV, resolve_log_dir
from autograd_check.slurm.options import (
    DEFAULT_TIMEOUT_S,
    parse_job_id,
    parse_log_dir,
    parse_timeout,
)
from autograd_check.slurm.step import step_main
from autograd_check.slurm.submission import job_result
from autograd_check.slurm.watch import job_status

if TYPE_CHECKING:
    from autograd_check.base.result import CheckResult

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
    bound = parse_timeout(timeout) if timeout is not None else DEFAULT_TIMEOUT_S
    done = job_result(job_id, _folder(log_dir), wait=wait, timeout=bound, watching=JobProgress,
                      log_dir=log_dir)  # a failed job: JobFailed, shown by edge
    show_job_result(done.result, json_output=json_output, show_tensors=show_tensors,
                    state=done.state)
    raise typer.Exit(done.result.exit_code)


@app.command("_step", hidden=True)
def step(spec: Annotated[str, typer.Option("--spec", help="The CheckSpec as JSON.")]) -> None:
    """Inside a job step: run the check, answer with one marked JSON line (see slurm.run_step)."""

    line, code = step_main(spec)
    if line:  # the ranks of a --ranks step all hold the result: rank 0 answers for them
        print(line, flush=True)
    raise typer.Exit(code)

"""`autograd-check run`: the tutorial's check, here and now."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any

import typer

from autograd_check.base.deadline import TimedOut, time_limit
from autograd_check.base.errors import EXIT_JOB_FAILED, JobFailed
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import RANKS_PANEL, JsonOutput, ShowTensors, check_options
from autograd_check.cli.output import show_result
from autograd_check.config import spec_from
from autograd_check.distributed.launch import DEFAULT_RANKS_TIMEOUT_S
from autograd_check.execute import execute
from autograd_check.render.console import error, warning
from autograd_check.render.progress import fd_progress
from autograd_check.slurm.allocation import run_outside_node_warning
from autograd_check.slurm.options import parse_timeout

RunTimeout = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        help="Seconds before the check is stopped where it is (a --target that hangs): exit 4, "
        "saying where it was. With --ranks: before the ranks still running are stopped (exit 4, "
        f"with the rank's log tail; {DEFAULT_RANKS_TIMEOUT_S:g} unless given).",
        metavar="SECONDS", show_default="no limit",
        rich_help_panel=RANKS_PANEL,
    ),
]


def _hung(seconds: float) -> None:
    """The check did not come back to Python HANG_GRACE_S after --timeout (a C call that never
    returns, signals blocked): say so and end the process, as a sweep's hung case does."""
    error(f"the check did not finish within {seconds:g} s (--timeout) and is stuck where "
          "Python cannot stop it (a call into C that does not return); the process was ended")
    sys.stdout.flush()
    os._exit(EXIT_JOB_FAILED)


@app.command(epilog=EXIT_CODE_HELP)
@edge
@check_options
def run(
    *,
    timeout: RunTimeout = None,
    show_tensors: ShowTensors = None,
    json_output: JsonOutput = False,
    check_values: dict[str, Any],
) -> None:
    """Run the real-vs-predicted gradient check here: manual gradient against autograd."""

    # With --json, stdout holds the document only: what a user's --target prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext():
        spec = spec_from(check_values)
        seconds = parse_timeout(timeout) if timeout is not None else None
        outside = run_outside_node_warning()
        if outside:  # warn and go on: a login node may be exactly where the user wants it
            warning(outside)
        here = seconds if spec.ranks is None else None  # the ranks have their own clock
        try:
            with fd_progress(spec) as progress, time_limit(here, _hung):
                result = execute(spec, progress, ranks_timeout=seconds)
        except TimedOut as e:
            where = e.where()
            raise JobFailed(f"the check {e} and was stopped"
                            + (f" in {where}" if where else ""), state="TIMEOUT") from None
    show_result(result, json_output=json_output, show_tensors=show_tensors)
    raise typer.Exit(result.exit_code)

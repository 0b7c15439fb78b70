"""`autograd-check run`: the tutorial's check, here and now."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any

import typer

from autograd_check.cli.app import EXIT_CODE_HELP, app, edge
from autograd_check.cli.options import RANKS_PANEL, JsonOutput, ShowTensors, check_options
from autograd_check.cli.output import show_result
from autograd_check.config import spec_from
from autograd_check.distributed.launch import DEFAULT_RANKS_TIMEOUT_S
from autograd_check.engine.execute import execute
from autograd_check.errors import BadInput
from autograd_check.render.console import warning
from autograd_check.render.progress import fd_progress
from autograd_check.slurm.options import parse_timeout
from autograd_check.slurm.where import run_outside_node_warning

RanksTimeout = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        help="With --ranks: seconds before the ranks still running are stopped (exit 4, with "
        "the rank's log tail).",
        metavar="SECONDS", show_default=f"{DEFAULT_RANKS_TIMEOUT_S:g}",
        rich_help_panel=RANKS_PANEL,
    ),
]


@app.command(epilog=EXIT_CODE_HELP)
@edge
@check_options
def run(
    *,
    timeout: RanksTimeout = None,
    show_tensors: ShowTensors = None,
    json_output: JsonOutput = False,
    check_values: dict[str, Any],
) -> None:
    """Run the real-vs-predicted gradient check here: manual gradient against autograd."""

    # With --json, stdout holds the document only: what a user's --target prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext():
        spec = spec_from(check_values)
        if timeout is not None and spec.ranks is None:
            raise BadInput("timeout applies to run only with --ranks (a Slurm job's is submit's)")
        ranks_timeout = parse_timeout(timeout) if timeout is not None else None
        outside = run_outside_node_warning()
        if outside:  # warn and go on: a login node may be exactly where the user wants it
            warning(outside)
        with fd_progress(spec) as progress:
            result = execute(spec, progress, ranks_timeout=ranks_timeout)
    show_result(result, json_output=json_output, show_tensors=show_tensors)
    raise typer.Exit(result.exit_code)

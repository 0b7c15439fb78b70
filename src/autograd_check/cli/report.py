"""`autograd-check report DIR`: a sweep's summary as Rich tables, Markdown or JSON, and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autograd_check.base.errors import BadInput
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import JsonOutput
from autograd_check.render.console import note
from autograd_check.sweep.report import load_report

ReportDir = Annotated[Path, typer.Argument(help="The sweep's --out directory.", metavar="DIR",
                                           show_default=False)]
Markdown = Annotated[bool, typer.Option("--markdown", help="Print the report as Markdown.")]
Plot = Annotated[Path | None, typer.Option(
    "--plot", help="Also draw greatest relative difference against element count to FILE.png "
    "(needs the [plot] extra: matplotlib).", metavar="FILE.png")]


@app.command(epilog=EXIT_CODE_HELP + " (report: 1 when any case mismatched, 3 when a case could "
             "not run, 4 when cases are missing or their jobs failed)")
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
    # rich loads only when this view is drawn: --help and --json never pay for it
    from autograd_check.render.report import check_plot_path, print_report

    if json_output and markdown:
        raise BadInput("choose one of --json and --markdown")
    if plot is not None:
        check_plot_path(plot)  # before anything is read or written
    result = load_report(directory)
    if plot is not None:
        # rich loads only when this view is drawn: --help and --json never pay for it
        from autograd_check.render.report import plot as draw

        draw(result, plot)
        if not json_output:
            note(f"plot written to {plot}")
    print_report(result, json_output=json_output, as_markdown=markdown)
    raise typer.Exit(result.exit_code)

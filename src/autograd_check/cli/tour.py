"""`autograd-check tour`: the tutorial's ideas, step by step, each with a claim checked live."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from autograd_check.base.document import dumps
from autograd_check.base.spec import DEFAULT_SEED, parse_seed
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import JsonOutput
from autograd_check.cli.output import print_document
from autograd_check.tour import steps as tour_steps
from autograd_check.tour.runner import run_tour

if TYPE_CHECKING:
    from autograd_check.tour.steps import Step

StepNames = Annotated[
    list[str] | None,
    typer.Option(
        "--step",
        help="Run only this step (repeat for several, in that order); see --list.",
        metavar="NAME",
        show_default=False,
    ),
]
ListSteps = Annotated[
    bool, typer.Option("--list", help="List the steps (name and what each shows) and exit.")
]
Seed = Annotated[
    str | None,
    typer.Option(
        help="torch.manual_seed(SEED) before each step.",
        metavar="INTEGER",
        show_default=str(DEFAULT_SEED),
    ),
]


@app.command(epilog=EXIT_CODE_HELP)
@edge
def tour(
    *,
    step: StepNames = None,
    list_steps: ListSteps = False,
    seed: Seed = None,
    json_output: JsonOutput = False,
) -> None:
    """Walk the tutorial's autograd ideas on live tensors; each step's claim is checked (PASS/FAIL).

    Exit 1 when a claim does not hold on this torch build: a finding worth reporting.
    """

    chosen = tour_steps.select_steps(step)  # unknown names: exit 2 before torch is loaded
    seed_value = DEFAULT_SEED if seed is None else parse_seed(seed)
    if list_steps:
        _list(chosen, json_output)
        return
    result = run_tour([s.name for s in chosen], seed=seed_value, steps=chosen)
    if json_output:
        print(dumps(result.to_dict()))
    else:
        # rich loads only when this view is drawn: --help and --json never pay for it
        from rich.console import Console

        # rich loads only when this view is drawn: --help and --json never pay for it
        from autograd_check.render.tour import print_tour

        print_tour(result, Console(highlight=False))
    raise typer.Exit(result.exit_code)


def _list(steps: Sequence[Step], json_output: bool) -> None:
    if json_output:
        steps_doc = [{"name": s.name, "title": s.title, "claim": s.claim} for s in steps]
        print_document("tour-steps", {"steps": steps_doc})
        return
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.console import Console

    # rich loads only when this view is drawn: --help and --json never pay for it
    from autograd_check.render.tour import steps_table

    Console(highlight=False).print(steps_table(steps))

"""Rich views of the tour: each step's code, what it produced, and its checked claim."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from autograd_check.tour.runner import StepResult, TourResult
from autograd_check.tour.steps import Step


def _verdict(passed: bool) -> Text:
    return Text("PASS", style="bold green") if passed else Text("FAIL", style="bold red")


def step_renderable(step: StepResult, number: int, total: int) -> Panel:
    """One step: the code as run, its output (prints, warnings, the error that is the lesson),
    then the claim with each of its checks."""
    parts: list[RenderableType] = [
        Text(step.title, style="bold"),
        Text(""),
        Syntax(step.code, "python", theme="ansi_dark", background_color="default", word_wrap=True),
        Text(""),
        Text("output", style="bold"),
        Text(step.output or "(nothing printed)", style="dim" if not step.output else ""),
        Text(""),
    ]
    claim = Text.assemble(_verdict(step.passed), "  ", (step.claim, "bold"))
    parts.append(claim)
    for check in step.checks:
        mark = Text("  ✓ ", style="green") if check.passed else Text("  ✗ ", style="bold red")
        parts.append(Text.assemble(mark, check.what))
    return Panel(
        Group(*parts),
        title=Text.assemble(f"{number}/{total} ", (step.name, "bold")),
        title_align="left",
        box=box.ROUNDED,
        border_style="green" if step.passed else "red",
    )


def tour_renderable(tour: TourResult) -> RenderableType:
    header = Text.assemble(
        ("autograd tour", "bold"),
        f" on torch {tour.torch_version}: each step runs in a fresh namespace after ",
        (tour.preamble.replace("\n", "; "), "bold"),
    )
    total = len(tour.steps)
    held = sum(s.passed for s in tour.steps)
    summary = Text.assemble(
        Text(" PASS ", style="bold white on green") if tour.passed
        else Text(" FAIL ", style="bold white on red"),
        f"  {held} of {total} claims hold on torch {tour.torch_version}",
    )
    if not tour.passed:
        failed = ", ".join(s.name for s in tour.steps if not s.passed)
        summary.append(f"; failed: {failed} (a finding about this torch build)")
    steps = [step_renderable(s, i, total) for i, s in enumerate(tour.steps, 1)]
    return Group(header, *steps, summary)


def steps_table(steps: Sequence[Step]) -> Table:
    """The step names (for --step) with what each shows."""
    table = Table(box=box.SIMPLE_HEAVY, title="tour steps", title_justify="left")
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("what it shows")
    for step in steps:
        table.add_row(step.name, step.title)
    return table


def print_tour(tour: TourResult, console: Console) -> None:
    console.print(tour_renderable(tour))

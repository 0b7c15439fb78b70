"""Rich views of a CheckResult (for people) and the JSON view (for programs)."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from autograd_check.result import CheckResult, Comparison, TensorView

SHOW_WHOLE_UP_TO = 256
"""By default, tensors with at most this many elements are shown whole; larger ones summarised."""

TENSOR_TITLES = {
    "real": "real",
    "predicted": "predicted (requires_grad=True)",
    "manual_grad": "manual gradient",
    "autograd_grad": "autograd gradient (predicted.grad)",
    "difference": "difference (manual − autograd)",
}


def fmt(x: float) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.4g}" if abs(x) < 1e-3 or abs(x) >= 1e5 else f"{x:.4f}"


def _nested(data: Any, depth: int = 0) -> str:
    if not isinstance(data, list):
        return fmt(data)
    if data and not isinstance(data[0], list):
        return "[" + ", ".join(fmt(v) for v in data) + "]"
    sep = ",\n" + " " * (depth + 1)
    return "[" + sep.join(_nested(row, depth + 1) for row in data) + "]"


def shape_text(shape: list[int]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def summary_text(view: TensorView) -> str:
    head = ", ".join(fmt(v) for v in view.head)
    more = ", …" if view.numel > len(view.head) else ""
    return (
        f"min {fmt(view.min)}  max {fmt(view.max)}  mean {fmt(view.mean)}\n"
        f"first values [{head}{more}]"
    )


def tensor_panel(view: TensorView, whole: bool) -> Panel:
    title = f"{TENSOR_TITLES.get(view.name, view.name)}  {shape_text(view.shape)} {view.dtype}"
    body = _nested(view.data) if whole and view.data is not None else summary_text(view)
    return Panel(Text(body), title=title, title_align="left", box=box.ROUNDED, expand=False)


def _index(index: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def environment_line(env: dict[str, Any]) -> str:
    parts = [f"torch {env.get('torch', '?')}", f"{env.get('device', '?')} ({env.get('device_name')})"]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    parts.append(f"host {env.get('host', '?')}")
    slurm = env.get("slurm")
    if slurm:
        job = slurm.get("job_id")
        if slurm.get("array_job_id"):
            job = f"{slurm['array_job_id']}_{slurm.get('array_task_id', '?')}"
        step = f" step {slurm['step_id']}" if slurm.get("step_id") else ""
        parts.append(f"Slurm job {job}{step}")
    return " · ".join(parts)


def comparison_rows(c: Comparison) -> list[tuple[str, str]]:
    return [
        ("bit-exact (eq().all())", "yes" if c.bit_exact else "no"),
        ("mismatched elements", f"{c.mismatched} of {c.numel}"),
        ("greatest absolute difference", f"{fmt(c.max_abs_diff)} at {_index(c.max_abs_index)}"),
        ("greatest relative difference", f"{fmt(c.max_rel_diff)} at {_index(c.max_rel_index)}"),
    ]


def parameters_table(result: CheckResult) -> Table:
    table = Table(title="per-parameter comparison", box=box.SIMPLE_HEAVY, title_justify="left")
    for column in ("parameter", "shape", "bit-exact", "mismatched", "max abs", "max rel", "verdict"):
        table.add_column(column)
    for c in result.comparisons:
        table.add_row(
            c.name,
            shape_text(c.shape),
            "yes" if c.bit_exact else "no",
            f"{c.mismatched} of {c.numel}",
            fmt(c.max_abs_diff),
            fmt(c.max_rel_diff),
            Text("PASS", style="bold green") if c.passed else Text("FAIL", style="bold red"),
        )
    return table


def verdict_panel(result: CheckResult) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if len(result.comparisons) == 1:
        for label, value in comparison_rows(result.comparisons[0]):
            grid.add_row(label, value)
    else:
        total = sum(c.numel for c in result.comparisons)
        bad = sum(c.mismatched for c in result.comparisons)
        grid.add_row("bit-exact (eq().all())", "yes" if result.bit_exact else "no")
        grid.add_row("mismatched elements", f"{bad} of {total}")
    first = result.comparisons[0]
    criterion = (
        "exact: bit-exact equality"
        if result.criterion == "exact"
        else "tolerance: |manual − autograd| ≤ atol + rtol·|autograd|"
    )
    grid.add_row("tolerances", f"rtol={first.rtol:g} atol={first.atol:g}")
    grid.add_row("verdict by", criterion)
    grid.add_row("environment", environment_line(result.environment))
    label = Text(" PASS ", style="bold white on green") if result.passed else Text(
        " FAIL ", style="bold white on red"
    )
    return Panel(grid, title=label, title_align="left", border_style="green" if result.passed else "red")


def result_renderable(result: CheckResult, show_tensors: bool | None = None) -> RenderableType:
    """Tensors (whole when small, or as asked), loss and grad_fn chain, then the verdict panel."""
    parts: list[RenderableType] = []
    if show_tensors is not False:
        for view in result.tensors.values():
            whole = bool(show_tensors) or view.numel <= SHOW_WHOLE_UP_TO
            parts.append(tensor_panel(view, whole))
    loss = Table.grid(padding=(0, 2))
    loss.add_column(style="bold")
    loss.add_column()
    loss.add_row("loss", f"{result.loss_formula} = {fmt(result.loss_value)}  ({result.loss_name})")
    loss.add_row("loss.grad_fn", " ← ".join(result.grad_fn_chain))
    loss.add_row("manual gradient", f"{result.gradient_formula}, under torch.no_grad()")
    loss.add_row("autograd gradient", "loss.backward(), then predicted.grad")
    for note in result.notes:
        loss.add_row("note", note)
    parts.append(loss)
    if len(result.comparisons) > 1:
        parts.append(parameters_table(result))
    parts.append(verdict_panel(result))
    return Group(*parts)


def print_result(result: CheckResult, console: Console, show_tensors: bool | None = None) -> None:
    console.print(result_renderable(result, show_tensors))

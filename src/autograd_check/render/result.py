"""Rich views of a CheckResult (for people) and the JSON view (for programs)."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from autograd_check.base.result import (
    TENSOR_DATA_LIMIT,
    CheckResult,
    Comparison,
    TensorView,
    located_summary,
)

SHOW_WHOLE_UP_TO = 256
"""By default, tensors with at most this many elements are shown whole; larger ones summarised."""

TENSOR_TITLES = {
    "real": "real",
    "input": "input x (requires_grad=True)",
    "predicted": "predicted (requires_grad=True)",
    "manual_grad": "manual gradient",
    "autograd_grad": "autograd gradient (predicted.grad)",
    "difference": "difference (manual − autograd)",
}
MODEL_TITLES = {**TENSOR_TITLES, "predicted": "predicted = model(x)"}


def fmt(x: float) -> str:
    if isinstance(x, int):  # class indices (cross-entropy's real) stay integers
        return str(x)
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


def tensor_panel(view: TensorView, whole: bool, titles: dict[str, str] = TENSOR_TITLES) -> Panel:
    title = f"{titles.get(view.name, view.name)}  {shape_text(view.shape)} {view.dtype}"
    if whole and view.data is None:
        title += f"  (summary: values are kept up to {TENSOR_DATA_LIMIT} elements)"
    body = _nested(view.data) if whole and view.data is not None else summary_text(view)
    return Panel(Text(body), title=title, title_align="left", box=box.ROUNDED, expand=False)


def _index(index: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def environment_line(env: dict[str, Any]) -> str:
    """torch, device and CUDA: what computed the gradients."""
    parts = [
        f"torch {env.get('torch', '?')}",
        f"{env.get('device', '?')} ({env.get('device_name')})",
    ]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    return " · ".join(parts)


def host_line(env: dict[str, Any]) -> str:
    """The host, and the Slurm job and step when there is one (a row of its own, so that a long
    job id or host name does not fold the environment row)."""
    parts = [str(env.get("host", "?"))]
    slurm = env.get("slurm")
    if slurm:
        job = slurm.get("job_id")
        if slurm.get("array_job_id"):
            job = f"{slurm['array_job_id']}_{slurm.get('array_task_id', '?')}"
        step = f" step {slurm['step_id']}" if slurm.get("step_id") else ""
        parts.append(f"Slurm job {job}{step}")
    return " · ".join(parts)


def environment_rows(grid: Table, env: dict[str, Any]) -> None:
    """The rows that say where the check ran: environment, host and determinism."""
    grid.add_row("environment", environment_line(env))
    grid.add_row("host", host_line(env))
    if env:
        grid.add_row("determinism", determinism_line(env))


def comparison_rows(c: Comparison) -> list[tuple[str, str]]:
    return [
        ("bit-exact (eq().all())", "yes" if c.bit_exact else "no"),
        ("mismatched elements", f"{c.mismatched} of {c.numel}"),
        ("greatest absolute difference", f"{fmt(c.max_abs_diff)} at {_index(c.max_abs_index)}"),
        ("greatest relative difference", f"{fmt(c.max_rel_diff)} at {_index(c.max_rel_index)}"),
    ]


def parameters_table(result: CheckResult) -> Table:
    """One row per compared tensor (each parameter of a --model, its input and output)."""
    table = Table(title="per-parameter comparison", box=box.SIMPLE_HEAVY, title_justify="left",
                  show_edge=False)
    # Fold rather than cut: a truncated number or parameter name would be worse than a tall row.
    table.add_column("parameter", overflow="fold")
    table.add_column("shape", overflow="fold")
    table.add_column("bit-exact", overflow="fold")
    table.add_column("mismatched", justify="right", overflow="fold", min_width=10)
    table.add_column("greatest abs diff", justify="right", overflow="fold", min_width=9)
    table.add_column("greatest rel diff", justify="right", overflow="fold", min_width=9)
    table.add_column("verdict", min_width=7, no_wrap=True)
    for c in [c for c in result.comparisons if not is_reference(c)]:
        table.add_row(
            c.name,
            shape_text(c.shape),
            "yes" if c.bit_exact else "no",
            f"{c.mismatched} of {c.numel}",
            fmt(c.max_abs_diff),  # where: in --json (statistics[].max_abs_index)
            fmt(c.max_rel_diff),
            Text("PASS", style="bold green") if c.passed else Text("FAIL", style="bold red"),
        )
    return table


FD_SUFFIX = "vs finite-diff"
"""Comparisons with central differences (--reference finite-diff) are named '… vs finite-diff'."""
REFERENCE_TITLES = {
    "finite-diff": "against finite differences",
    "projection": "against projection (central differences along random directions)",
    "forward": "against forward mode (jvp against vjp along random directions)",
    "float64": "against the gradient in float64 (your backward, in half precision)",
}
"""A comparison with a reference is named '… vs REFERENCE'; its table's title, by reference."""


def reference_of(c: Comparison) -> str | None:
    """The reference a comparison belongs to ('finite-diff', 'projection', 'forward'), or None
    for the manual gradient against autograd's."""
    return next((r for r in REFERENCE_TITLES if c.name.endswith(f"vs {r}")), None)


def is_reference(c: Comparison) -> bool:
    return reference_of(c) is not None


def is_fd(c: Comparison) -> bool:
    return c.name.endswith(FD_SUFFIX)


def by_reference(comparisons: list[Comparison]) -> dict[str, list[Comparison]]:
    """The reference rows, grouped by their reference, in the order they came."""
    groups: dict[str, list[Comparison]] = {}
    for c in comparisons:
        ref = reference_of(c)
        if ref is not None:
            groups.setdefault(ref, []).append(c)
    return groups


def finite_diff_table(comparisons: list[Comparison], reference: str = "finite-diff") -> Table:
    """One row per gradient checked against a reference (central differences by default)."""
    table = Table(title=REFERENCE_TITLES[reference], box=box.SIMPLE_HEAVY, title_justify="left",
                  show_edge=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("gradient")
    # projection and forward compare one number per random direction
    table.add_column("shape" if reference in ("finite-diff", "float64") else "directions",
                     overflow="fold")
    table.add_column("mismatched", justify="right", overflow="fold", min_width=10)
    table.add_column("greatest abs diff", justify="right", overflow="fold", min_width=9)
    table.add_column("greatest rel diff", justify="right", overflow="fold", min_width=9)
    table.add_column("verdict", min_width=7, no_wrap=True)
    for c in comparisons:
        tensor, _, label = c.name.removesuffix(f"vs {reference}").strip().rpartition(": ")
        table.add_row(
            tensor or "predicted",
            label,
            shape_text(c.shape),
            f"{c.mismatched} of {c.numel}",
            _difference(c.max_abs_diff, c.max_abs_index, c),
            _difference(c.max_rel_diff, c.max_rel_index, c),
            Text("PASS", style="bold green") if c.passed else Text("FAIL", style="bold red"),
        )
    return table


def _difference(value: float, index: list[int], c: Comparison) -> str:
    """A row of directions has no element index (the located elements say where)."""
    return fmt(value) if c.unit == "directions" else f"{fmt(value)} at {_index(index)}"


def located_table(comparisons: list[Comparison], reference: str) -> RenderableType | None:
    """The elements located for the failed rows of a reference (projection, forward): one row
    per element shown, each index as finite-diff's rows show it; then each search's count,
    whether it is all of them, and its cost."""
    rows = [c for c in comparisons if c.located is not None]
    if not rows:
        return None
    table = Table(title=f"where: the wrong elements located ({reference})", box=box.SIMPLE_HEAVY,
                  title_justify="left", show_edge=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("gradient")
    table.add_column("element", overflow="fold")
    table.add_column("value", justify="right")
    table.add_column("reference", justify="right")
    table.add_column("difference", justify="right")
    captions = []
    for c in rows:
        tensor, _, label = c.name.removesuffix(f"vs {reference}").strip().rpartition(": ")
        located = c.located or {}
        for e in located.get("elements", []):
            table.add_row(tensor, label, _index(e["index"]), fmt(e["gradient"]),
                          fmt(e["reference"]), fmt(e["gradient"] - e["reference"]))
        captions.append(f"{tensor} ({label}): {located_summary(located)}")
    return Group(table, Text("\n".join(captions)))


def finite_diff_text(block: dict[str, Any]) -> str:
    if "batches" not in block:  # the Python API's finite differences (a target with inputs)
        return f"{block.get('method', 'central differences')}: {block['evaluations']} evaluations"
    batches = block["batches"]
    how = (
        f"{batches} batch{'es' if batches != 1 else ''} of up to {block['pairs_per_batch']} ±h "
        "pairs through torch.func.vmap" if block["vectorised"] else "element by element"
    )
    step = f"{block['step']:.0e}".replace("e-0", "e-")
    return (
        f"(L(p + h·eᵢ) − L(p − h·eᵢ)) / 2h in float64, h={step}: "
        f"{block['evaluations']} loss evaluations, {how}"
    )


def repeat_text(block: dict[str, Any]) -> str:
    runs = block["runs"]
    if block["bitwise_identical"]:
        text = f"{runs} runs on fresh graphs: autograd gradient bitwise identical every time"
    else:
        where = block.get("max_spread_tensor") or ""
        index = _index(block["max_spread_index"] or [])
        text = (
            f"{runs} runs on fresh graphs: NOT bitwise identical ({block['identical_runs']} of "
            f"{runs} equal to run 1, {block['varying_elements']} elements varied); greatest "
            f"spread {fmt(block['max_spread'])} at {where}{index}"
        )
    if block["in_verdict"] and not block["bitwise_identical"]:
        text += " — --deterministic promised identical runs: counts as a failure"
    return text


def determinism_line(env: dict[str, Any]) -> str:
    def on(key: str) -> str:
        value = env.get(key)
        return "?" if value is None else ("on" if value else "off")

    return (
        f"deterministic algorithms {on('deterministic_algorithms')} · TF32 matmul "
        f"{on('tf32_matmul')} · TF32 cuDNN {on('tf32_cudnn')} · float32 matmul precision "
        f"{env.get('float32_matmul_precision', '?')}"
    )


def contract_rows(grid: Table, result: CheckResult) -> None:
    """The backward's contract: the rules kept on one row, each rule broken on its own."""
    if not result.contract:
        return
    kept = [c.name for c in result.contract if c.passed]
    grid.add_row("contract", f"{len(kept)} of {len(result.contract)} rules kept"
                 + (f": {', '.join(kept)}" if kept else ""))
    for c in result.contract:
        if not c.passed:
            grid.add_row(Text(c.name, style="bold red"), Text(f"FAIL [{c.kind}] {c.text}"))


def verdict_panel(result: CheckResult) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    main = [c for c in result.comparisons if not is_reference(c)]  # manual against autograd
    if len(main) == 1:
        for row, value in comparison_rows(main[0]):
            grid.add_row(row, value)
    elif main:
        total = sum(c.numel for c in main)
        bad = sum(c.mismatched for c in main)
        grid.add_row("bit-exact (eq().all())", "yes" if result.bit_exact else "no")
        grid.add_row("mismatched elements", f"{bad} of {total}")
    if result.error is not None:
        grid.add_row("error", Text(result.error))
        grid.add_row("verdict by", "the check could not finish: the target's own code raised")
    if not result.comparisons:
        contract_rows(grid, result)
        environment_rows(grid, result.environment)
        failed = Text(" FAIL ", style="bold white on red")
        return Panel(grid, title=failed, title_align="left", border_style="red")
    first = result.comparisons[0]
    criterion = (
        "exact: bit-exact equality"
        if result.criterion == "exact"
        else "tolerance: |manual − autograd| ≤ atol + rtol·|autograd|"
    )
    if not main:  # no manual gradient: the reference alone decides
        criterion = f"the reference: {(result.reference or {}).get('name', 'reference')}"
    ranks = result.distributed
    if ranks is not None:
        criterion = ("exact: bit-exact equality" if result.criterion == "exact" else
                     "tolerance: |distributed − reference| ≤ atol + rtol·|reference|, and every "
                     "rank holds the same gradient")
    tolerance_text = f"rtol={first.rtol:g} atol={first.atol:g}"
    grid.add_row("tolerances", tolerance_text if ranks is None
                 else f"{tolerance_text} ({ranks['tolerance']})")
    grid.add_row("verdict by", criterion)
    if ranks is not None:
        grid.add_row("ranks agree", "yes, bit for bit" if ranks["ranks_agree"] else
                     Text(f"no: greatest spread {fmt(ranks['rank_spread'])}", style="bold red"))
        if ranks.get("cause") and not result.diagnosis:  # a record of an older version
            grid.add_row("likely cause", Text(ranks["cause"]))
    for ref, rows in by_reference(result.comparisons).items():
        bad = sum(c.mismatched for c in rows)
        misses = sum(not c.passed for c in rows)
        if ref == "finite-diff":
            grid.add_row(
                "finite-diff",
                f"{bad} of {sum(c.numel for c in rows)} mismatched: |g − fd| ≤ atol + "
                f"rtol·|fd| with rtol={rows[0].rtol:g} atol={rows[0].atol:g} (gradcheck's test)",
            )
        else:
            grid.add_row(
                ref,
                f"{len(rows) - misses} of {len(rows)} comparisons passed, {bad} of "
                f"{sum(c.numel for c in rows)} directions mismatched (rtol={rows[0].rtol:g})",
            )
            for c in rows:
                if c.located is not None:
                    tensor, _, which = c.name.removesuffix(f" vs {ref}").rpartition(": ")
                    grid.add_row("located", Text(f"{tensor} ({which}): "
                                                 f"{located_summary(c.located)}"))
    if result.repeat is not None:
        grid.add_row("repeat", repeat_text(result.repeat))
    contract_rows(grid, result)
    for finding in result.diagnosis:
        grid.add_row("likely cause", Text(f"{finding['tensor']}: [{finding['kind']}] "
                                          f"{finding['text']}"))
    environment_rows(grid, result.environment)
    label = Text(" PASS ", style="bold white on green") if result.passed else Text(
        " FAIL ", style="bold white on red"
    )
    border = "green" if result.passed else "red"
    return Panel(grid, title=label, title_align="left", border_style=border)


def autograd_text(result: CheckResult) -> str:
    if result.reference is not None and "real" not in result.tensors:  # a target with inputs
        return "fn(*inputs).backward(grad_output, inputs=checked tensors), then their .grad"
    if result.spec.get("model") and result.reference is not None:  # through the API
        return "loss.backward(inputs=(x and each parameter)), then their .grad"
    if result.spec.get("model"):
        return "loss.backward(), then .grad of each parameter and of x (and of y, retained)"
    return "loss.backward(), then predicted.grad"


def result_renderable(result: CheckResult, show_tensors: bool | None = None) -> RenderableType:
    """Tensors (whole when small, or as asked), loss and grad_fn chain, then the verdict panel."""
    parts: list[RenderableType] = []
    if show_tensors is not False:
        # Records read back from JSON have their keys sorted: show them in the check's order.
        order = list(TENSOR_TITLES)
        views = sorted(
            result.tensors.values(),
            key=lambda v: order.index(v.name) if v.name in order else len(order),
        )
        for view in views:
            whole = bool(show_tensors) or view.numel <= SHOW_WHOLE_UP_TO
            titles = MODEL_TITLES if result.spec.get("model") else TENSOR_TITLES
            parts.append(tensor_panel(view, whole, titles))
    loss = Table.grid(padding=(0, 2))
    loss.add_column(style="bold")
    loss.add_column()
    # Text, not markup: formulas hold brackets (xₙ[realₙ]) and a --target's text is the user's.
    value = fmt(result.loss_value) if result.error is None else "not reported (the check stopped)"
    loss.add_row("loss", Text(f"{result.loss_formula} = {value}  ({result.loss_name})"))
    if result.grad_fn_chain:  # empty when a --target raised before backward
        loss.add_row("loss.grad_fn", " ← ".join(result.grad_fn_chain))
    ranks = result.distributed
    if ranks is not None and ranks.get("stopped"):
        loss.add_row("distributed gradient", Text(
            f"{ranks['wrapper']} on {ranks['ranks']} ranks: the check stopped before the "
            "gradients were compared"))
    elif ranks is not None:
        loss.add_row("distributed gradient", Text(
            f"{ranks['wrapper']} on {ranks['ranks']} rank{'s' if ranks['ranks'] != 1 else ''}, "
            f"{ranks['accumulate']} micro-batch{'es' if ranks['accumulate'] != 1 else ''} each; "
            f"train step: {ranks['train_step']}"))
        loss.add_row("reference", Text(f"one process, loss.backward() on the whole batch: "
                                       f"{ranks['reference']}"))
    else:
        loss.add_row("manual gradient", Text(
            "none given" if result.gradient_formula == "none given"
            else f"{result.gradient_formula}, under torch.no_grad()"))
        loss.add_row("autograd gradient", autograd_text(result))
    if result.finite_diff is not None:
        loss.add_row("finite differences", finite_diff_text(result.finite_diff))
    elif result.reference is not None and result.reference.get("method"):
        block = result.reference
        name = ", ".join(block.get("references", [])[1:]) or block["name"]
        loss.add_row("reference", Text(f"{name}: {block['method']}"))
        if block.get("why"):
            loss.add_row("why", Text(block["why"]))
    if result.reference is not None and "second_order" in result.reference:
        second = result.reference["second_order"]
        loss.add_row("order 2", Text(str(second.get("method", "the double backward"))))
    for note in result.notes:
        loss.add_row("note", Text(note))
    parts.append(loss)
    if sum(not is_reference(c) for c in result.comparisons) > 1:
        parts.append(parameters_table(result))
    for ref, rows in by_reference(result.comparisons).items():
        parts.append(finite_diff_table(rows, ref))
        where = located_table(rows, ref)
        if where is not None:
            parts.append(where)
    parts.append(verdict_panel(result))
    return Group(*parts)


def print_result(result: CheckResult, console: Console, show_tensors: bool | None = None) -> None:
    console.print(result_renderable(result, show_tensors))

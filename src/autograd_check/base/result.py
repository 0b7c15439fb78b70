"""CheckResult: plain data (no torch objects): rendered, written as JSON, sent back from Slurm."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from autograd_check.base.document import dumps, envelope, unplain

TENSOR_DATA_LIMIT = 4096
"""Tensors with at most this many elements carry their values (nested lists) in the result."""


@dataclass
class TensorView:
    """A tensor as data: its summary always, its values when small."""

    name: str
    shape: list[int]
    dtype: str
    numel: int
    min: float
    max: float
    mean: float
    head: list[float]
    data: Any | None = None


@dataclass
class Comparison:
    """Manual gradient against autograd's, for one tensor (a parameter, or `predicted`)."""

    name: str
    shape: list[int]
    numel: int
    bit_exact: bool
    mismatched: int
    max_abs_diff: float
    max_abs_index: list[int]
    max_rel_diff: float
    max_rel_index: list[int]
    rtol: float
    atol: float
    passed: bool
    unit: str = "elements"
    """What shape, numel, mismatched and the differences count: "elements" (the gradient
    against another, element by element), or "directions" (projection and forward: one number
    per random direction, and no element index: the *_index lists are empty)."""
    located: dict[str, Any] | None = None
    """A failed "directions" row: the wrong elements its search located (kernel/locate.py):
    count, numel, elements (the first few: index, gradient, reference), evaluations, budget,
    exhaustive, stopped."""


@dataclass
class ContractCheck:
    """One rule a backward must keep, whatever its numbers (references/contract.py): torch's own
    gradcheck checks most of them. kind names the rule (CONTRACT_KINDS), text says what was seen."""

    kind: str
    name: str
    passed: bool
    text: str


@dataclass
class CheckResult:
    spec: dict[str, Any]
    passed: bool
    bit_exact: bool
    criterion: str  # "tolerance" (torch.testing.assert_close style) or "exact" (eq().all())
    loss_name: str
    loss_value: float
    loss_formula: str
    gradient_formula: str
    grad_fn_chain: list[str]
    comparisons: list[Comparison]
    tensors: dict[str, TensorView]
    environment: dict[str, Any]
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    """The user's own code (--target) raised: the check failed with this message, unfinished."""
    finite_diff: dict[str, Any] | None = None
    """--reference finite-diff: the step, tolerances and cost of the central differences."""
    repeat: dict[str, Any] | None = None
    """--repeat N: whether the N autograd gradients were bitwise identical, and their spread."""
    reference: dict[str, Any] | None = None
    """The Python API (check()): the reference's name, method, directions, step and order."""
    distributed: dict[str, Any] | None = None
    """--ranks N: DDP or FSDP2 against the full-batch gradient (distributed/verdict.py)."""
    diagnosis: list[dict[str, Any]] = field(default_factory=list)
    """Why each failed tensor is wrong (kernel/diagnose.py): tensor, kind, text, factor,
    elements; empty when the check passed."""
    contract: list[ContractCheck] = field(default_factory=list)
    """The backward's contract (inputs and grad_output left unwritten, linear in grad_output,
    gradient shapes, ...): the rules that ran, passed or not (references/contract.py)."""

    def __str__(self) -> str:
        return verdict_text(self)

    def __repr__(self) -> str:
        """The verdict line, not every field: what `assert result.passed, result` shows in
        pytest's report when passed is False (str(result) is the whole verdict)."""
        return f"<CheckResult {verdict_text(self).splitlines()[0]}>"

    @classmethod
    def failed(cls, spec: dict[str, Any], error: str, *, loss_name: str, loss_formula: str,
               gradient_formula: str, exact: bool = False, **fields: Any) -> CheckResult:
        """A check that the user's own code stopped: failed, no comparison, carrying the error
        (its type, message and line); other fields (tensors, environment, reference, the ranks'
        block) as the caller knows them."""
        base: dict[str, Any] = {
            "spec": spec, "passed": False, "bit_exact": False,
            "criterion": "exact" if exact else "tolerance", "loss_name": loss_name,
            "loss_value": math.nan, "loss_formula": loss_formula,
            "gradient_formula": gradient_formula, "grad_fn_chain": [], "comparisons": [],
            "tensors": {}, "environment": {}, "timings": {}, "error": error,
        }
        return cls(**{**base, **fields})

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (kind "check"), the same for run, submit and sweep records."""
        doc = envelope("check", {
            "spec": self.spec,
            "verdict": {
                "passed": self.passed,
                "bit_exact": self.bit_exact,
                "criterion": self.criterion,
                "exit_code": self.exit_code,
                # Only when the user's own code (--target) raised: the contract is unchanged else.
                **({"error": self.error} if self.error is not None else {}),
            },
            "loss": {
                "name": self.loss_name,
                "value": self.loss_value,
                "formula": self.loss_formula,
                "gradient_formula": self.gradient_formula,
                "grad_fn_chain": self.grad_fn_chain,
            },
            "statistics": [asdict(c) for c in self.comparisons],
            "tensors": {k: asdict(v) for k, v in self.tensors.items()},
            "environment": self.environment,
            "timings": self.timings,
            "notes": self.notes,
        })
        # Present only when asked for (--reference finite-diff, --repeat N > 1).
        if self.finite_diff is not None:
            doc["finite_diff"] = self.finite_diff
        if self.repeat is not None:
            doc["repeat"] = self.repeat
        if self.reference is not None:
            doc["reference"] = self.reference
        if self.distributed is not None:
            doc["distributed"] = self.distributed
        if self.contract:
            doc["contract"] = [asdict(c) for c in self.contract]
        if self.diagnosis:
            doc["diagnosis"] = self.diagnosis
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CheckResult:
        verdict, loss = doc["verdict"], doc["loss"]
        return cls(
            spec=dict(doc["spec"]),
            passed=verdict["passed"],
            bit_exact=verdict["bit_exact"],
            criterion=verdict["criterion"],
            loss_name=loss["name"],
            loss_value=unplain(loss["value"]),
            loss_formula=loss["formula"],
            gradient_formula=loss["gradient_formula"],
            grad_fn_chain=list(loss["grad_fn_chain"]),
            comparisons=[Comparison(**unplain(c)) for c in doc["statistics"]],
            tensors={k: TensorView(**unplain(v)) for k, v in doc["tensors"].items()},
            environment=dict(doc["environment"]),
            timings=dict(doc["timings"]),
            notes=list(doc.get("notes", [])),
            error=verdict.get("error"),
            finite_diff=unplain(doc["finite_diff"]) if doc.get("finite_diff") else None,
            repeat=unplain(doc["repeat"]) if doc.get("repeat") else None,
            reference=unplain(doc["reference"]) if doc.get("reference") else None,
            distributed=unplain(doc["distributed"]) if doc.get("distributed") else None,
            contract=[ContractCheck(**c) for c in doc.get("contract", [])],
            diagnosis=[dict(unplain(d)) for d in doc.get("diagnosis", [])],
        )

    def to_json(self, indent: int | None = 2) -> str:
        return dumps(self.to_dict(), indent=indent)


# --- the plain-text verdict (str(result)): no Rich, for AssertionError messages and logs --------


def _number(x: float) -> str:
    return f"{x:.4g}"


def _where(index: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _shape(shape: list[int]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


COLUMNS = ("compared", "shape", "bit-exact", "mismatched", "greatest abs diff",
           "greatest rel diff", "rtol", "atol", "verdict")


def directions_text(k: int) -> str:
    return f"{k} direction{'s' if k != 1 else ''}"


def difference_cell(value: float, index: list[int], c: Comparison) -> str:
    """'1.5 at [2, 3]' for elements; a row of directions has no element index: the number only
    (where: located_text)."""
    return _number(value) if c.unit == "directions" else f"{_number(value)} at {_where(index)}"


def comparison_cells(c: Comparison) -> tuple[str, ...]:
    return (
        c.name,
        directions_text(c.numel) if c.unit == "directions" else _shape(c.shape),
        "yes" if c.bit_exact else "no",
        f"{c.mismatched} of {c.numel}",
        difference_cell(c.max_abs_diff, c.max_abs_index, c),
        difference_cell(c.max_rel_diff, c.max_rel_index, c),
        _number(c.rtol),
        _number(c.atol),
        "PASS" if c.passed else "FAIL",
    )


def located_summary(located: dict[str, Any]) -> str:
    """How many wrong elements a search located, whether that is all, at what cost."""
    count, n, cost = located["count"], located["numel"], located["evaluations"]
    stopped = located.get("stopped")
    noun = "element" if count == 1 else "elements"
    if stopped is None and count == 0:
        return (f"no single wrong element of {n} located ({cost} evaluations of fn): along a "
                "fresh direction the gradient agrees with the reference within its noise")
    if stopped is None:
        return f"{count} wrong {noun} of {n}, all of them ({cost} evaluations of fn)"
    if stopped == "budget":
        return (f"at least {count} wrong {noun} of {n}: the search stopped at its budget of "
                f"{located['budget']} evaluations of fn")
    if stopped == "spread":
        return (f"{count} wrong {noun} of {n} located ({cost} evaluations of fn), not all: the "
                "rest of the difference is spread over elements each within the noise")
    return (f"{count} wrong {noun} of {n} located ({cost} evaluations of fn) before fn's value "
            "along a direction was not finite")


def located_element(element: dict[str, Any], label: str) -> str:
    """'[2, 3]: autograd 1.5, reference 0.5', the index as finite-diff's rows show it."""
    return (f"{_where(element['index'])}: {label} {_number(element['gradient'])}, reference "
            f"{_number(element['reference'])}")


def located_text(c: Comparison) -> str:
    """One line: the row's located elements (the first few), for str(result)."""
    located = c.located or {}
    label = c.name.rpartition(": ")[2].partition(" vs ")[0] or "gradient"
    shown = [located_element(e, label) for e in located.get("elements", [])]
    more = located.get("count", 0) - len(shown)
    if more > 0:
        shown.append(f"{more} more")
    return f"located ({c.name}): {located_summary(located)}" + (
        ": " + "; ".join(shown) if shown else "")


def contract_lines(contract: list[ContractCheck]) -> list[str]:
    """The backward's contract: one line for the rules kept, one per rule broken."""
    if not contract:
        return []
    kept = [c.name for c in contract if c.passed]
    lines = [f"contract: {len(kept)} of {len(contract)} rules kept"
             + (f" ({', '.join(kept)})" if kept else "")]
    lines += [f"contract FAIL [{c.kind}] {c.name}: {c.text}" for c in contract if not c.passed]
    return lines


def distributed_lines(block: dict[str, Any] | None, diagnosed: bool = False) -> list[str]:
    """--ranks: the ranks' agreement, the reference's scaling and the likely cause, as text (the
    cause only when the result has no diagnosis, which says it: a record of an older version)."""
    if block is None:
        return []
    if block.get("stopped"):
        return [f"ranks: {block['ranks']} x {block['accumulate']} micro-batch(es), "
                f"{block['wrapper']}: stopped before the gradients were compared"]
    lines = [f"ranks: {block['ranks']} x {block['accumulate']} micro-batch(es), "
             f"{block['wrapper']} on {', '.join(dict.fromkeys(block.get('hosts', [])))}; "
             f"reference: {block['reference']}"]
    lines.append("ranks agree: " + ("yes, bit for bit" if block["ranks_agree"] else
                                    f"no (greatest spread {_number(block['rank_spread'])})"))
    lines.append(f"tolerance: {block['tolerance']}")
    if block.get("cause") and not diagnosed:
        lines.append(f"likely cause: {block['cause']}")
    return lines


def verdict_text(result: CheckResult) -> str:
    """PASS/FAIL with what was compared, then one row per comparison: shape, bit-exact,
    mismatched k of N, greatest absolute and relative difference with their index, the
    tolerances, the verdict; then the criterion and any notes."""
    comparisons = result.comparisons
    failed = sum(not c.passed for c in comparisons)
    reference = result.reference or {}
    head = f"{'PASS' if result.passed else 'FAIL'}: {result.loss_name}"
    if reference.get("references"):
        head += f", references {', '.join(reference['references'])}"
    elif reference.get("name"):
        head += f", reference {reference['name']}"
        if reference.get("order", 1) != 1:
            head += f", order {reference['order']}"
    if comparisons:
        head += f": {len(comparisons) - failed} of {len(comparisons)} comparisons passed"
    lines = [head]
    checked = result.spec.get("checked")
    if checked:
        lines.append("checked: " + ", ".join(
            f"{t['name']} ({_shape(t['shape'])} {t['dtype']})" for t in checked))
    rows = [COLUMNS, *(comparison_cells(c) for c in comparisons)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    if comparisons:
        for row in rows:
            cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            lines.append(("  " + "  ".join(cells)).rstrip())
    lines += [located_text(c) for c in comparisons if c.located is not None]
    if result.error is not None:
        lines.append(f"error: {result.error}")
    lines += contract_lines(result.contract)
    lines += distributed_lines(result.distributed, bool(result.diagnosis))
    lines.append(
        "criterion: bit-exact equality (exact=True)" if result.criterion == "exact"
        else "criterion: |a − b| ≤ atol + rtol·|b| for every element (torch.testing.assert_close)"
    )
    for key in ("directions", "step"):
        if key in reference:
            lines.append(f"{key}: {reference[key]}")
    lines += [f"note: {note}" for note in result.notes]
    lines += [f"likely cause ({d['tensor']}): [{d['kind']}] {d['text']}" for d in result.diagnosis]
    return "\n".join(lines)

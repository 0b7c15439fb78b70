"""The verdict of a check over ranks: each parameter's distributed gradient against the full-batch
reference (scaled as the loss's reduction requires), whether the ranks agree, and, when the check
fails, its likely causes: findings as a single-process check gives them (distributed/causes.py).

Scaling. DDP and FSDP average the ranks' gradients. For a loss that is a mean over the batch the
average of the shards' gradients is the full-batch gradient; for a sum it is the full-batch
gradient / W. The reference is scaled so, and the result says which.

Tolerance. Each element of the distributed gradient is a sum of W·K partial sums (W ranks, K
micro-batches) added in another order than the full batch's: its rounding grows with W·K, so the
dtype's default tolerances (torch.testing.assert_close's) are multiplied by W·K. Given --rtol and
--atol are used as they are; --exact asks for bit-exact equality (DDP is bit-exact with the
full-batch gradient only by chance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.device import resolve_device
from autograd_check.base.environment import collect_environment
from autograd_check.base.errors import CheckError
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult, ContractCheck
from autograd_check.base.spec import DEFAULT_TOLERANCES, CheckSpec
from autograd_check.distributed.causes import ranks_findings
from autograd_check.losses.user import short_name
from autograd_check.references.gradients import contract_findings, manual_vs_autograd

if TYPE_CHECKING:
    from torch import Tensor

    from autograd_check.distributed.problem import Problem

PARALLEL_NAMES = {"ddp": "DistributedDataParallel", "fsdp": "FSDP2 (fully_shard)"}


@dataclass
class Gathered:
    """What rank 0 holds after the step: its gradients, the reference's and the ranks' facts."""

    names: list[str]
    grads: list[Tensor | None]
    present: list[bool]
    expected: list[Tensor | None]
    start_agree: bool
    ranks_agree: bool
    rank_spread: float
    loss_value: float
    grad_fn_chain: list[str]
    custom_step: bool
    hosts: list[str]
    """Each rank's host name, in rank order."""
    unreduced: bool = False
    """FSDP: gradients of a backward run with gradient sync off were left unreduced."""
    frozen: list[str] = field(default_factory=list)
    """Parameters with requires_grad=False (no gradient anywhere, by design)."""
    hints: list[str] = field(default_factory=list)
    """What in the module makes the ranks differ from the full batch by design
    (rank.module_hints)."""
    contract: list[ContractCheck] = field(default_factory=list)
    """The rules of the module's own backward, when it has one (references/contract.py)."""
    rank_mean: Callable[[], tuple[list[Tensor], str] | None] | None = None
    """The gradient when each micro-batch averages over its own elements, and their counts
    (causes.rank_mean_gradients): computed only for a failure nothing else explains."""


def tolerances_for(spec: CheckSpec, world: int) -> tuple[float, float, str]:
    """(rtol, atol, how they were chosen)."""
    rtol, atol = DEFAULT_TOLERANCES[spec.dtype]
    partials = world * (spec.accumulate or 1)
    if spec.rtol is None:
        rtol *= partials
    if spec.atol is None:
        atol *= partials
    given = spec.rtol is not None or spec.atol is not None
    how = ("as given" if spec.rtol is not None and spec.atol is not None else
           f"{spec.dtype}'s defaults x {partials} partial sums (W·K){', where not given' * given}")
    return (spec.rtol if spec.rtol is not None else rtol,
            spec.atol if spec.atol is not None else atol, how)


def distributed_result(spec: CheckSpec, problem: Problem, got: Gathered,
                       world: int) -> CheckResult:
    torch = import_torch()
    k = spec.accumulate or 1
    parallel = spec.parallel or "ddp"
    scale = 1.0 / world if problem.reduction == "sum" else 1.0
    rtol, atol, how = tolerances_for(spec, world)
    grads, expected = [], []
    for g, e, p in zip(got.grads, got.expected, problem_shapes(problem), strict=True):
        zero = torch.zeros(p[0], dtype=p[1], device=p[2])
        grads.append(zero if g is None else g)
        expected.append(zero if e is None else e * scale)
    # resolve=False: a refusal here would end the ranks' job, not answer it (left for later)
    comparisons = manual_vs_autograd(got.names, grads, expected, lambda _d: (rtol, atol),
                                     spec.exact, resolve=False)
    passed = all(c.passed for c in comparisons) and got.ranks_agree and all(
        c.passed for c in got.contract)
    if parallel == "fsdp":
        passed = passed and got.start_agree
    unused = [n for n, e in zip(got.names, got.expected, strict=True)
              if e is None and n not in got.frozen]
    missing = [n for n, g, e in zip(got.names, got.grads, got.expected, strict=True)
               if g is None and e is not None]
    findings = [] if passed else ranks_findings(
        got.names, grads, expected, [not c.passed for c in comparisons], world=world, k=k,
        reduction=problem.reduction, parallel=parallel, rtol=rtol, atol=atol, exact=spec.exact,
        start_agree=got.start_agree, unreduced=got.unreduced, ranks_agree=got.ranks_agree,
        unused=unused, find_unused=bool(problem.options.get("find_unused_parameters")),
        hints=got.hints, rank_mean=got.rank_mean)
    cause = "; ".join(f.text for f in findings) or None
    scaled = ("the full-batch gradient" if scale == 1.0 else
              f"the full-batch gradient / {world} (the loss sums over the batch; "
              f"{'DDP' if parallel == 'ddp' else 'FSDP'} averages over the {world} ranks)")
    block: dict[str, Any] = {
        "ranks": world,
        "parallel": parallel,
        "wrapper": PARALLEL_NAMES[parallel],
        "accumulate": k,
        "train_step": "the target's train_step" if got.custom_step else "the default "
        "(no_sync on all but the last micro-batch, a mean loss divided by K)",
        "reduction": problem.reduction,
        "reference": scaled,
        "scale": scale,
        "tolerance": how,
        "ranks_agree": got.ranks_agree,
        "rank_spread": got.rank_spread,
        "start_agree": got.start_agree,
        "unused_parameters": unused,
        "cause": cause,
        "hosts": got.hosts,
    }
    notes = []
    if not got.start_agree and parallel == "ddp":
        notes.append("the ranks built different initial parameters; DDP broadcast rank 0's, so "
                     "training is unaffected, but FSDP would shard mismatched parameters")
    if unused:
        notes.append(f"no gradient (unused in forward): {', '.join(unused)}")
    if got.frozen:
        notes.append(f"no gradient (frozen, requires_grad=False): {', '.join(got.frozen)}")
    if missing:
        notes.append(f"no gradient on the ranks, though the reference has one: "
                     f"{', '.join(missing)}")
    return CheckResult(
        spec=spec.to_dict(),
        passed=passed,
        bit_exact=all(c.bit_exact for c in comparisons),
        criterion="exact" if spec.exact else "tolerance",
        loss_name=problem.loss_name,
        loss_value=got.loss_value,
        loss_formula=problem.loss_formula,
        gradient_formula=f"{PARALLEL_NAMES[parallel]} on {world} rank{'s' * (world != 1)} x {k} "
        "micro-batch"
        f"{'es' * (k > 1)} vs {scaled}",
        grad_fn_chain=got.grad_fn_chain,
        comparisons=comparisons,
        tensors={},
        environment={},
        timings={},
        notes=notes,
        distributed=block,
        contract=got.contract,
        diagnosis=[*contract_findings(got.contract, got.names),
                   *(f.to_dict() for f in findings)],
    )


def problem_shapes(problem: Problem) -> list[tuple[Any, Any, Any]]:
    return [(tuple(p.shape), p.dtype, p.device) for p in _plain_params(problem)]


def _plain_params(problem: Problem) -> list[Any]:
    # the parameters' global shapes (FSDP2's DTensor reports the unsharded shape)
    return list(problem.module.parameters())


def failed_result(spec: CheckSpec, error: str, rank: int | None = None,
                  host: str | None = None) -> CheckResult:
    """A check over ranks that the user's own code (a --target's train_step, loss or inputs)
    stopped: a failed check carrying the error, as without --ranks; with the rank it raised on
    and that rank's host when known."""
    parallel = spec.parallel or "ddp"
    where = {} if rank is None else {"raised_on": {"rank": rank, "host": host}}
    return CheckResult.failed(
        spec.to_dict(), error,
        loss_name=short_name(spec.target) if spec.target else spec.loss, loss_formula="loss",
        gradient_formula="none given", exact=spec.exact, environment=_environment(spec),
        distributed={"ranks": spec.ranks, "parallel": parallel,
                     "wrapper": PARALLEL_NAMES[parallel], "accumulate": spec.accumulate or 1,
                     "stopped": True, **where})


def _environment(spec: CheckSpec) -> dict[str, Any]:
    """Where the check ran, as a finished check tells it (empty if the device is not usable)."""
    try:
        return collect_environment(resolve_device(spec.device))
    except CheckError:
        return {}

"""The verdict of a check over ranks: each parameter's distributed gradient against the full-batch
reference (scaled as the loss's reduction requires), whether the ranks agree, and, when the
difference is an exact factor, its likely cause in one line.

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

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.device import resolve_device
from autograd_check.base.environment import collect_environment
from autograd_check.base.errors import CheckError
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult, ContractCheck
from autograd_check.base.spec import DEFAULT_TOLERANCES, CheckSpec
from autograd_check.losses.user import short_name
from autograd_check.references.gradients import contract_findings, manual_vs_autograd

if TYPE_CHECKING:
    from torch import Tensor

    from autograd_check.distributed.problem import Problem

PARALLEL_NAMES = {"ddp": "DistributedDataParallel", "fsdp": "FSDP2 (fully_shard)"}
FACTOR_RTOL = 1e-3
"""How close a least-squares ratio must be to W, 1/W, K or 1/K to be named as that factor."""


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
    comparisons = manual_vs_autograd(got.names, grads, expected, lambda _d: (rtol, atol),
                                     spec.exact)
    passed = all(c.passed for c in comparisons) and got.ranks_agree and all(
        c.passed for c in got.contract)
    if parallel == "fsdp":
        passed = passed and got.start_agree
    unused = [n for n, e in zip(got.names, got.expected, strict=True)
              if e is None and n not in got.frozen]
    missing = [n for n, g, e in zip(got.names, got.grads, got.expected, strict=True)
               if g is None and e is not None]
    cause = None if passed else likely_cause(
        grads, expected, got, world, k, problem.reduction, parallel, rtol, atol, unused=unused,
        find_unused=bool(problem.options.get("find_unused_parameters")))
    if not passed and got.hints:  # by design, not a bug of the step: say it whatever the cause
        cause = "; ".join([*([cause] if cause else []), *got.hints])
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
        diagnosis=contract_findings(got.contract, got.names),
    )


def problem_shapes(problem: Problem) -> list[tuple[Any, Any, Any]]:
    return [(tuple(p.shape), p.dtype, p.device) for p in _plain_params(problem)]


def _plain_params(problem: Problem) -> list[Any]:
    # the parameters' global shapes (FSDP2's DTensor reports the unsharded shape)
    return list(problem.module.parameters())


def likely_cause(grads: list[Tensor], expected: list[Tensor], got: Gathered, world: int, k: int,
                 reduction: str, parallel: str, rtol: float, atol: float, *,
                 unused: list[str] | None = None, find_unused: bool = False) -> str | None:
    """One line naming what most likely went wrong, or None when nothing fits."""
    wrapper = "DDP" if parallel == "ddp" else "FSDP"
    if not got.start_agree and parallel == "fsdp":
        return ("the ranks started from different parameters, so FSDP sharded a model no rank "
                "holds: seed the model's initialisation the same on every rank")
    if got.unreduced:
        return ("the gradients were not synchronised: the last backward ran with gradient sync "
                "off (no_sync() or set_requires_gradient_sync(False) around the last "
                "micro-batch), so FSDP never reduce-scattered them into the parameters")
    if not got.ranks_agree:
        if parallel == "ddp" and unused and not find_unused:
            return (f"the ranks hold different gradients: they were not synchronised, for "
                    f"{', '.join(unused)} took no part in forward and DDP waited for their "
                    "gradients (pass find_unused_parameters=True, or use every parameter)")
        return ("the ranks hold different gradients: some were not synchronised (no_sync() around "
                "the last micro-batch, or a parameter unused in forward without "
                "find_unused_parameters=True)")
    ratio = exact_factor(grads, expected, rtol, atol)
    if ratio is None:
        return None
    sum_as_mean = "the loss sums over the batch but is checked as a mean: {} (use a mean " \
                  "loss, or declare reduction = 'sum')"
    mean_as_sum = "the loss averages over the batch but is declared a sum{} (use a sum loss, " \
                  "or declare reduction = 'mean')"
    # The factors in the order of their likelihood for the declared reduction: when two
    # coincide (W = K), the first that fits names the cause.
    causes: list[tuple[float, str]] = []
    if reduction == "mean":
        if k > 1:
            causes.append((1.0 / (world * k), f"1/{world * k} of the reference: " + sum_as_mean
                           .format(f"{wrapper} averages over the {world} ranks and the train "
                                   f"step divides by the {k} micro-batches")))
        causes += [
            (float(k), f"{k}x the reference: the accumulated loss is not divided by the {k} "
             "micro-batches (unscaled accumulation)"),
            (1.0 / world, f"1/{world} of the reference: "
             + sum_as_mean.format(f"{wrapper} averages over the {world} ranks")),
            (float(world), f"{world}x the reference: the ranks' gradients were summed, not "
             "averaged"),
            (1.0 / k, f"1/{k} of the reference: the loss is divided by the {k} micro-batches "
             "twice"),
        ]
    else:
        if k > 1:
            causes.append((float(world * k), f"{world * k}x the reference: " + mean_as_sum
                           .format(f": the {k} micro-batches' mean losses were added up")))
        causes += [
            (float(world), f"{world}x the reference: " + mean_as_sum
             .format(", or the ranks' gradients were summed, not averaged")),
            (1.0 / k, f"1/{k} of the reference: the loss is divided by the {k} micro-batches "
             "although it is a sum"),
        ]
    # When factors coincide (W = K, say), every cause that fits is named.
    fits = list(dict.fromkeys(
        words for factor, words in causes
        if factor != 1.0 and math.isclose(ratio, factor, rel_tol=FACTOR_RTOL)))
    if fits:
        return "; or ".join(fits)
    if math.isclose(ratio, 1.0, rel_tol=FACTOR_RTOL):
        return None
    return (f"every gradient is {ratio:.4g}x the reference: one uniform scale, as gradient "
            "clipping (clip_grad_norm_) or a constant factor on the loss in train_step gives; "
            "train_step should end with the backward passes (no clipping, no optimiser step)")


def exact_factor(grads: list[Tensor], expected: list[Tensor], rtol: float,
                 atol: float) -> float | None:
    """c when grads = c·expected within the tolerances (least squares over every parameter)."""
    torch = import_torch()
    got = torch.cat([g.reshape(-1).double() for g in grads]) if grads else torch.zeros(0)
    want = torch.cat([e.reshape(-1).double() for e in expected]) if expected else torch.zeros(0)
    norm = float(want.dot(want))
    if norm == 0.0:
        return None
    c = float(got.dot(want)) / norm
    if torch.allclose(got, c * want, rtol=rtol, atol=atol):
        return c
    return None


def failed_result(spec: CheckSpec, error: str) -> CheckResult:
    """A check over ranks that the user's own code (a --target's train_step, loss or inputs)
    stopped: a failed check carrying the error, as without --ranks."""
    parallel = spec.parallel or "ddp"
    return CheckResult.failed(
        spec.to_dict(), error,
        loss_name=short_name(spec.target) if spec.target else spec.loss, loss_formula="loss",
        gradient_formula="none given", exact=spec.exact, environment=_environment(spec),
        distributed={"ranks": spec.ranks, "parallel": parallel,
                     "wrapper": PARALLEL_NAMES[parallel], "accumulate": spec.accumulate or 1,
                     "stopped": True})


def _environment(spec: CheckSpec) -> dict[str, Any]:
    """Where the check ran, as a finished check tells it (empty if the device is not usable)."""
    try:
        return collect_environment(resolve_device(spec.device))
    except CheckError:
        return {}

"""Why a check over ranks failed, as findings of kernel/diagnose.py (tensor, kind, text, factor,
elements): the same list a single-process check gives, named in the ranks' terms.

The kinds of single-process checks are reused where they fit: `scale` (every gradient c times the
reference, c named as a factor of the N ranks and K micro-batches when it is one: 1/N, 1/(N·K),
K, ...), and, when nothing of the ranks explains a failed parameter, that parameter's own
explanation (zero, sign, ..., unknown). What only ranks do has its own kind:

    unsynced          the ranks hold different gradients: some were not synchronised (no_sync()
                      around the last micro-batch; FSDP's gradients left unreduced)
    unused-parameter  the same, because a parameter took no part in forward and DDP, without
                      find_unused_parameters=True, waited for its gradient
    init-differs      FSDP: the ranks built different parameters, so FSDP sharded a model no rank
                      holds
    rank-mean         the gradient is the average of each micro-batch's own loss's, which is not
                      the full batch's: each rank (micro-batch) averages its loss over its own
                      count of elements (tokens other than ignore_index, named with their counts),
                      or its loss depends on its elements together
    rank-local        by design, not a bug of the step: BatchNorm statistics or Dropout masks that
                      differ per rank and from the full batch's

Pure torch: prints nothing, and is given what it looks at (rank 0's gradients, the reference's).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autograd_check.base.lazy_torch import import_torch
from autograd_check.distributed.problem import Problem, shards
from autograd_check.kernel.diagnose import Finding, diagnose

if TYPE_CHECKING:
    from torch import Tensor, nn

EVERY = "every parameter"
"""The tensor a finding about the whole step names (a factor, the ranks' disagreement)."""
FACTOR_RTOL = 1e-3
"""How close a least-squares ratio must be to N, 1/N, K, ... to be named as that factor."""
IGNORE_INDEX = -100
"""cross_entropy's and nll_loss's default ignore_index: the padding a rank's token count leaves
out."""


def ranks_findings(
    names: Sequence[str], grads: Sequence[Tensor], expected: Sequence[Tensor],
    failed: Sequence[bool], *, world: int, k: int, reduction: str, parallel: str,
    rtol: float, atol: float, exact: bool, start_agree: bool, unreduced: bool,
    ranks_agree: bool, unused: Sequence[str], find_unused: bool, hints: Sequence[str],
    rank_mean: Callable[[], tuple[list[Tensor], str] | None] | None = None,
) -> list[Finding]:
    """The likely causes of a failed check over ranks, most likely first; empty when none fits.
    grads: rank 0's gradients; expected: the reference, already scaled for the reduction;
    failed: which parameters failed; rank_mean: the gradient a step gets when each micro-batch
    averages over its own elements, and how many each has (computed only when asked)."""
    found = _step_findings(names, grads, expected, failed, world, k, reduction, parallel, rtol,
                           atol, exact, start_agree, unreduced, ranks_agree, unused, find_unused,
                           hints, rank_mean)
    # by design, not a bug of the step: said whatever else is found
    return found + [Finding(EVERY, "rank-local", hint) for hint in hints]


def _step_findings(
    names: Sequence[str], grads: Sequence[Tensor], expected: Sequence[Tensor],
    failed: Sequence[bool], world: int, k: int, reduction: str, parallel: str, rtol: float,
    atol: float, exact: bool, start_agree: bool, unreduced: bool, ranks_agree: bool,
    unused: Sequence[str], find_unused: bool, hints: Sequence[str],
    rank_mean: Callable[[], tuple[list[Tensor], str] | None] | None,
) -> list[Finding]:
    wrapper = "DDP" if parallel == "ddp" else "FSDP"
    if not start_agree and parallel == "fsdp":
        return [Finding(EVERY, "init-differs", "the ranks started from different parameters, "
                        "so FSDP sharded a model no rank holds: seed the model's initialisation "
                        "the same on every rank")]
    if unreduced:
        return [Finding(EVERY, "unsynced", "the gradients were not synchronised: the last "
                        "backward ran with gradient sync off (no_sync() or "
                        "set_requires_gradient_sync(False) around the last micro-batch), so FSDP "
                        "never reduce-scattered them into the parameters")]
    if not ranks_agree:
        if parallel == "ddp" and unused and not find_unused:
            return [Finding(", ".join(unused), "unused-parameter", "the ranks hold different "
                            f"gradients: they were not synchronised, for {', '.join(unused)} "
                            "took no part in forward and DDP waited for their gradients (pass "
                            "find_unused_parameters=True, or use every parameter)")]
        return [Finding(EVERY, "unsynced", "the ranks hold different gradients: some were not "
                        "synchronised (no_sync() around the last micro-batch, or a parameter "
                        "unused in forward without find_unused_parameters=True)")]
    ratio = exact_factor(grads, expected, rtol, atol)
    if ratio is not None and not math.isclose(ratio, 1.0, rel_tol=FACTOR_RTOL):
        named = _scale(ratio, world, k, reduction, wrapper)
        if named is not None:
            return [named]
    if reduction == "mean" and rank_mean is not None and not hints:
        # (BatchNorm's per-shard statistics fit it too: the hints name those)
        got = rank_mean()
        if got is not None:
            means, counts = got
            c = exact_factor(grads, means, rtol, atol)
            if c is not None and math.isclose(c, 1.0, rel_tol=FACTOR_RTOL):
                return [_rank_mean_finding(counts, world, k, wrapper)]
    if ratio is not None and not math.isclose(ratio, 1.0, rel_tol=FACTOR_RTOL):
        return [Finding(EVERY, "scale", f"every gradient is {ratio:.4g} times the reference: one "
                        "uniform scale, as gradient clipping (clip_grad_norm_) or a constant "
                        "factor on the loss in train_step gives; train_step should end with the "
                        "backward passes (no clipping, no optimiser step)", factor=ratio)]
    if hints:
        return []  # the module's own per-rank computation explains the rest
    return _each_parameter(names, grads, expected, failed, rtol, atol, exact)


def _scale(ratio: float, world: int, k: int, reduction: str, wrapper: str) -> Finding | None:
    """`scale` with the factor named as the ranks' or micro-batches' count, when it is one."""
    sum_as_mean = ("the loss sums over the batch but is checked as a mean: {} (use a mean loss, "
                   "or declare reduction = 'sum')")
    mean_as_sum = ("the loss averages over the batch but is declared a sum{} (use a sum loss, or "
                   "declare reduction = 'mean')")
    twice = (f"the loss is divided by the world size (the {world} ranks) in train_step, and "
             f"{wrapper} averages over the ranks as well: averaged twice across ranks (drop the "
             f"division: {wrapper} already averages the ranks' gradients)")
    n = f"N = {world} ranks"
    big_k = f"K = {k} micro-batches"
    # The factors in the order of their likelihood for the declared reduction: when two
    # coincide (N = K), every one that fits is named.
    causes: list[tuple[float, str, str]] = []
    if reduction == "mean":
        if k > 1:
            causes.append((1.0 / (world * k), f"1/{world * k} (= 1/(N·K), {n}, {big_k})",
                           sum_as_mean.format(f"{wrapper} averages over the {world} ranks and "
                                              f"the train step divides by the {k} "
                                              "micro-batches")))
        causes += [
            (float(k), f"{k} (= K, {big_k})", f"the accumulated loss is not divided by the {k} "
             "micro-batches (unscaled accumulation)"),
            (1.0 / world, f"1/{world} (= 1/N, {n})",
             sum_as_mean.format(f"{wrapper} averages over the {world} ranks")),
            (1.0 / world, f"1/{world} (= 1/N, {n})", twice),
            (float(world), f"{world} (= N, {n})", "the ranks' gradients were summed, not "
             "averaged"),
            (1.0 / k, f"1/{k} (= 1/K, {big_k})", f"the loss is divided by the {k} micro-batches "
             "twice"),
        ]
    else:
        if k > 1:
            causes.append((float(world * k), f"{world * k} (= N·K, {n}, {big_k})",
                           mean_as_sum.format(f": the {k} micro-batches' mean losses were added "
                                              "up")))
        causes += [
            (float(world), f"{world} (= N, {n})",
             mean_as_sum.format(", or the ranks' gradients were summed, not averaged")),
            (1.0 / world, f"1/{world} (= 1/N, {n})", twice),
            (1.0 / k, f"1/{k} (= 1/K, {big_k})", f"the loss is divided by the {k} micro-batches "
             "although it is a sum"),
        ]
    fits = [(factor, f"every gradient is {named} times the reference: {why}")
            for factor, named, why in causes
            if factor != 1.0 and math.isclose(ratio, factor, rel_tol=FACTOR_RTOL)]
    if not fits:
        return None
    text = "; or ".join(dict.fromkeys(words for _, words in fits))
    return Finding(EVERY, "scale", text, factor=fits[0][0])


def _rank_mean_finding(counts: str, world: int, k: int, wrapper: str) -> Finding:
    each = "micro-batch" if k > 1 else "rank"
    if counts:
        return Finding(EVERY, "rank-mean", (
            f"each {each}'s loss is a mean over its own tokens, not over the global batch's "
            f"({counts}): {wrapper} averages those means, so a token weighs more where there are "
            "fewer; sum the loss over the tokens (reduction='sum') and divide by the global "
            "token count (all_reduce the count over the ranks, then multiply by the "
            f"N = {world} ranks, as {wrapper} averages)"))
    return Finding(EVERY, "rank-mean", (
        f"the gradient is the average of each {each}'s own loss's gradient, and the full batch's "
        f"loss is not the average of those losses: the loss of a {each} depends on its elements "
        "together (a mean over a count that differs between ranks, such as padded or masked "
        "tokens; in-batch statistics or negatives); make each rank's loss its share of the "
        "global loss (a sum divided by the global count, all_reduced over the ranks)"))


def _each_parameter(names: Sequence[str], grads: Sequence[Tensor],
                    expected: Sequence[Tensor], failed: Sequence[bool], rtol: float, atol: float,
                    exact: bool) -> list[Finding]:
    """Nothing of the ranks fits: each failed parameter's own explanation (kernel/diagnose.py),
    the parameters nothing explains in one `unknown`."""
    found, unexplained = [], []
    for name, g, e, bad in zip(names, grads, expected, failed, strict=True):
        if not bad:
            continue
        finding = diagnose(name, g, e, rtol, atol, exact=exact)
        if finding.kind == "unknown":
            unexplained.append(name)
        else:
            found.append(finding)
    if unexplained:
        found.append(Finding(", ".join(unexplained), "unknown", "no cause of the ranks (a factor "
                             "of the ranks or micro-batches, unsynchronised ranks, per-rank "
                             "means) and no simple explanation (a sign, a transpose, an axis) "
                             "fits the difference from the reference"))
    return found


def exact_factor(grads: Sequence[Tensor], expected: Sequence[Tensor], rtol: float,
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


def rank_mean_gradients(problem: Problem, module: nn.Module, world: int,
                        k: int) -> tuple[list[Tensor], str] | None:
    """On rank 0: the gradient of the default step when each of the N·K micro-batches averages
    its loss over its own elements (the mean of the micro-batches' gradients, each from a copy of
    the reference module), and the micro-batches' token counts in words ('' when no input has
    ignore_index padding). None when the user's loss raises on a micro-batch."""
    torch = import_torch()
    fresh = copy.deepcopy(module)
    micro = [m for r in range(world) for m in shards(problem, world, k, r)]
    total: list[Tensor | None] = [None] * len(list(fresh.parameters()))
    try:
        for batch in micro:
            fresh.zero_grad(set_to_none=True)
            with torch.enable_grad():
                problem.loss_of(fresh, batch).backward()  # type: ignore[no-untyped-call]
            for i, p in enumerate(fresh.parameters()):
                if p.grad is not None:
                    g = p.grad.detach().clone()
                    total[i] = g if total[i] is None else total[i] + g  # type: ignore[operator]
    except Exception:  # noqa: BLE001  (a hypothesis only: the user's loss on a micro-batch)
        return None
    means = [torch.zeros_like(p) if t is None else t / len(micro)
             for t, p in zip(total, fresh.parameters(), strict=True)]
    return [m.detach() for m in means], token_counts(problem.batch, world, k)


def token_counts(batch: Sequence[Tensor], world: int, k: int) -> str:
    """'rank 0 has 23 tokens, rank 1 has 7, of 30 in all: ...' (with K > 1, one count per
    micro-batch), when an integer input holds ignore_index and its micro-batches keep different
    counts of other elements; else ''."""
    for i, t in enumerate(batch):
        if t.is_floating_point() or t.is_complex() or not bool((t == IGNORE_INDEX).any()):
            continue
        size = t.shape[0] // (world * k)
        kept = [int((t[j * size:(j + 1) * size] != IGNORE_INDEX).sum()) for j in range(world * k)]
        if len(set(kept)) == 1:
            continue  # equal counts average to the global mean: not what went wrong
        ranks = [" + ".join(map(str, kept[r * k:(r + 1) * k])) for r in range(world)]
        said = f"rank 0 has {ranks[0]} tokens" + "".join(
            f", rank {r} has {n}" for r, n in enumerate(ranks) if r) + (
            " (one count per micro-batch)" if k > 1 else "")
        return (f"{said}, of {sum(kept)} in all: the elements of input {i} other than "
                f"ignore_index {IGNORE_INDEX}")
    return ""

"""Why a gradient is wrong: the first simple explanation of the difference between the user's
gradient m and the reference r that holds within the check's tolerances, else `unknown`.

The explanations, in the order they are tried (each a `kind`):

    zero         m is zero where r is not: a detached or forgotten term
    sign         m = −r
    scale        m = c·r for one constant c, named as a size when it is one (1/32 = 1/shape[0])
    transpose    m = rᵀ (or r with its dimensions permuted)
    swapped      m is the reference of another checked tensor (said by the caller, who has them)
    axis         m is r reduced along one dimension and broadcast back (a sum or mean over the
                 wrong axis), or m − r is constant along one dimension (a dropped mean term),
                 or m − r is a term constant along one dimension plus one constant along
                 another, alone or times fn's output (a reduction over the wrong dimension:
                 a centring, or a softmax-like y·(g − Σ g·y), summed along the wrong one)
    slice-scale  each slice along one dimension is r's, scaled by its own constant
    subset       wrong exactly on the elements where one input (or d = predicted − real) is
                 above, or below, one threshold, right (to rounding) everywhere else, and too
                 many of them for the split to be chance
    precision    with exact: not bit-exact, but within the dtype's rounding of r
    unknown      none of the above: never a confident wrong claim

Pure torch: it prints nothing and is given everything it looks at.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    from torch import Tensor

FIT_RTOL = 1e-4
"""An explanation holds when m and the explained r agree within the check's tolerances, or this
relative tolerance when wider (a constant fitted by least squares carries its own rounding)."""
FACTOR_RTOL = 1e-3
"""A fitted constant is named as a number (2, 1/32, a size) when within this of it."""
EXPLAINED = 0.01
"""An explanation must account for all but this share (by norm) of the difference m − r."""
MAX_ELEMENTS = 5
"""Located elements listed in a finding."""
SUBSET_CHANCE = 1e-2
"""subset is claimed only when a split as clean would come by chance (one threshold on one
condition separating that many wrong elements from the right ones) with at most this
probability: 2·conditions / C(n, wrong) ≤ it. Fewer wrong elements than that: unknown."""
SUBSET_GAP = 10.0
"""subset is claimed only when the wrong elements differ at least this many times more than the
right ones do: a branch is wrong by a term, not by a difference that grows across the
threshold (a continuous error only crossing the tolerance there)."""


@dataclass
class Finding:
    """One explanation of one checked tensor's wrong gradient."""

    tensor: str
    kind: str
    text: str
    factor: float | None = None
    elements: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    torch = import_torch()
    return bool(torch.isclose(a, b, rtol=max(rtol, FIT_RTOL), atol=atol).all())


def _explains(m: Tensor, model: Tensor, r: Tensor, rtol: float, atol: float) -> bool:
    """model (r transformed by an explanation) is m within tolerance, and leaves at most
    EXPLAINED of the difference m − r unexplained: FIT_RTOL's allowance alone, wider than the
    check's, would let any explanation "fit" a difference smaller than itself."""
    torch = import_torch()
    if not _close(m, model, rtol, atol):
        return False
    return float(torch.linalg.vector_norm(m - model)) <= EXPLAINED * float(
        torch.linalg.vector_norm(m - r))


def _fit(m: Tensor, r: Tensor) -> float | None:
    """The least-squares c of m ≈ c·r, or None when r is zero."""
    torch = import_torch()
    rr = float(torch.dot(r.reshape(-1), r.reshape(-1)))
    if rr == 0.0 or not math.isfinite(rr):
        return None
    return float(torch.dot(m.reshape(-1), r.reshape(-1))) / rr


def _sizes(sizes: Mapping[str, Sequence[int]]) -> list[tuple[float, str]]:
    """Candidate names of a factor: small integers, and each input's dimensions (and products
    of two, and its numel), with their reciprocals: (value, '32 (shape[0] of x)')."""
    named: list[tuple[float, str, str]] = [(float(k), str(k), "") for k in (2, 3, 4)]
    for name, shape in sizes.items():
        for i, d in enumerate(shape):
            if d > 1:
                named.append((float(d), str(d), f"shape[{i}] of {name}"))
        for (i, a), (j, b) in itertools.combinations(enumerate(shape), 2):
            if a > 1 and b > 1:
                named.append((float(a * b), str(a * b), f"shape[{i}]·shape[{j}] of {name}"))
        numel = math.prod(shape)
        if numel > 1 and len(shape) > 2:
            named.append((float(numel), str(numel), f"numel of {name}"))
    out = []
    for value, number, why in named:
        out.append((value, f"{number} ({why})" if why else number))
        out.append((1.0 / value, f"1/{number} (1/{why})" if why else f"1/{number}"))
    return out


def name_factor(c: float, sizes: Mapping[str, Sequence[int]]) -> str:
    """c as a person would say it: 2, 1/2, 1/32 (1/shape[0] of predicted), else c itself."""
    for value, text in _sizes(sizes):
        if abs(c - value) <= FACTOR_RTOL * abs(value):
            return text
    return f"{c:.4g}"


def _where(mask: Tensor, shape: Sequence[int]) -> list[list[int]]:
    torch = import_torch()
    flat = torch.nonzero(mask.reshape(-1)).reshape(-1)[:MAX_ELEMENTS].tolist()
    out = []
    for i in flat:
        index = []
        for d in reversed(shape):
            i, rest = divmod(i, d)
            index.append(rest)
        out.append(index[::-1])
    return out


def diagnose(
    tensor: str,
    m: Tensor,
    r: Tensor,
    rtol: float,
    atol: float,
    *,
    exact: bool = False,
    sizes: Mapping[str, Sequence[int]] | None = None,
    conditions: Mapping[str, Tensor] | None = None,
    output: Tensor | None = None,
) -> Finding:
    """The first explanation of m against r (module docstring). sizes: each input's shape, to
    name a factor; conditions: tensors shaped like m (inputs, d = predicted − real) whose values
    may split the wrong elements from the right ones; output: fn's output, when shaped like m
    (a softmax-like backward is the output times a term)."""
    torch = import_torch()
    sizes = sizes or {}
    m = m.detach().to(torch.float64)
    r = r.detach().to(torch.float64)
    shape = list(m.shape)
    if m.shape != r.shape or m.numel() == 0:
        return Finding(tensor, "unknown", "the two gradients cannot be compared element by "
                       "element")
    if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(r).all())):
        bad = ~torch.isfinite(m)
        return Finding(tensor, "unknown", f"{int(bad.sum())} element(s) are not finite (NaN "
                       "or inf): no simple explanation is tried", elements=_where(bad, shape))
    wrong = ~torch.isclose(m, r, rtol=rtol, atol=atol)
    count, n = int(wrong.sum()), m.numel()
    if exact and count == 0:
        return Finding(tensor, "precision", "not bit-exact, but within the dtype's rounding of "
                       "the reference: a different order of operations, not a wrong formula")
    nonzero = r.abs() > atol
    if bool((m == 0).all()) and bool(nonzero.any()):
        return Finding(tensor, "zero", f"the gradient is zero where the reference is not "
                       f"({int(nonzero.sum())} of {n} elements): a detached or forgotten term "
                       "(.detach(), .data, a no_grad block, a term left out)",
                       elements=_where(nonzero, shape))
    if _explains(m, -r, r, rtol, atol):
        return Finding(tensor, "sign", "the gradient is the reference with its sign flipped "
                       "(m = −r): a minus sign", factor=-1.0)
    c = _fit(m, r)
    if c is not None and abs(c - 1) > FACTOR_RTOL and c != 0 and _explains(
            m, c * r, r, rtol, atol):
        said = name_factor(c, sizes)
        return Finding(tensor, "scale", f"the gradient is {said} times the reference "
                       f"everywhere (m = c·r, c = {c:.6g}): a factor missing or extra",
                       factor=c)
    if m.dim() >= 2:
        for perm in itertools.permutations(range(m.dim())):
            if list(perm) == list(range(m.dim())):
                continue
            moved = r.permute(perm)
            if list(moved.shape) == shape and _explains(m, moved, r, rtol, atol):
                what = "transposed" if m.dim() == 2 else f"with its dimensions permuted {perm}"
                return Finding(tensor, "transpose", f"the gradient is the reference {what}: "
                               "a transposed weight or index (a .T or a swapped einsum)")
    axis = _axis(m, r, rtol, atol)
    if axis is None:
        axis = _two_axes(m, r, rtol, atol, output)
    if axis is not None:
        return Finding(tensor, "axis", axis)
    sliced = _slice_scale(m, r, rtol, atol)
    if sliced is not None:
        return Finding(tensor, "slice-scale", sliced)
    subset = _subset(wrong, m - r, conditions or {}, count, n)
    if subset is not None:
        return Finding(tensor, "subset", subset, elements=_where(wrong, shape))
    return Finding(tensor, "unknown", f"{count} of {n} elements are wrong, and no simple "
                   "explanation (a factor, a sign, a transpose, an axis, one branch) fits",
                   elements=_where(wrong, shape))


def _axis(m: Tensor, r: Tensor, rtol: float, atol: float) -> str | None:
    """A reduction over one dimension broadcast back, or a difference constant along one."""
    for dim in range(m.dim()):
        if m.shape[dim] < 2:
            continue
        for how in ("sum", "mean"):
            reduced = getattr(r, how)(dim=dim, keepdim=True).expand_as(r)
            if _explains(m, reduced, r, rtol, atol):
                return (f"the gradient is the reference's {how} over dimension {dim}, broadcast "
                        f"back: a {how} over the wrong axis, or a reduction that should not be")
        d = m - r
        if bool((d.abs() > atol + rtol * r.abs()).any()):
            if _explains(m, r + d.mean(dim=dim, keepdim=True), r, rtol, atol):
                return (f"the difference from the reference is the same along dimension {dim}: "
                        f"a term reduced over dimension {dim} is missing, extra or broadcast "
                        "wrongly (a dropped mean term, a missing keepdim, a bias term summed on "
                        "the wrong side)")
    return None


def _two_axes(m: Tensor, r: Tensor, rtol: float, atol: float,
              output: Tensor | None) -> str | None:
    """m − r = q·(A + B), A constant along dimension p, B along q, with q = 1 or fn's output:
    a reduction over one dimension where another was meant (the right term's along p, the
    wrong one's along q). Only where the pair leaves (size_p − 1)(size_q − 1) ≥ 2 degrees of
    freedom unexplained, so that a fit is not a tautology."""
    torch = import_torch()
    d = m - r
    weights: list[tuple[Tensor, str]] = [(torch.ones_like(m), "")]
    if output is not None and output.shape == m.shape and output.is_floating_point():
        out = output.detach().to(torch.float64)
        size = float(out.abs().max()) if out.numel() else 0.0
        # the output divides: only where none of it is (nearly) zero
        if size > 0 and math.isfinite(size) and float(out.abs().min()) > 1e-3 * size:
            weights.append((out, "fn's output times "))
    for (p, q) in itertools.combinations(range(m.dim()), 2):
        if (m.shape[p] - 1) * (m.shape[q] - 1) < 2:
            continue
        for w, said in weights:
            e = d / w
            fit = (e.mean(dim=p, keepdim=True) + e.mean(dim=q, keepdim=True)
                   - e.mean(dim=(p, q), keepdim=True))
            if _explains(m, r + w * fit, r, rtol, atol):
                return (f"the difference from the reference is {said}a term constant along "
                        f"dimension {p} plus one constant along dimension {q}: a sum or mean "
                        f"over dimension {q} where dimension {p} was meant, or the reverse (a "
                        "reduction over the wrong axis, a missing keepdim)")
    return None


def _slice_scale(m: Tensor, r: Tensor, rtol: float, atol: float) -> str | None:
    """Each slice along one dimension is r's slice times its own constant."""
    torch = import_torch()
    for dim in range(m.dim()):
        if m.shape[dim] < 2 or m.numel() == m.shape[dim]:
            continue
        mm, rr = m.movedim(dim, 0).reshape(m.shape[dim], -1), r.movedim(dim, 0).reshape(
            m.shape[dim], -1)
        denom = (rr * rr).sum(1)
        if bool((denom == 0).any()):
            continue
        c = (mm * rr).sum(1) / denom
        if bool(torch.isclose(c, c.mean(), rtol=FACTOR_RTOL).all()):
            continue  # one constant: scale, said before
        if _explains(mm, c[:, None] * rr, rr, rtol, atol):
            shown = ", ".join(f"{float(v):.3g}" for v in c[:4]) + (", ..." if len(c) > 4 else "")
            return (f"each slice along dimension {dim} is the reference's times its own "
                    f"constant ({shown}): a per-slice normaliser (a per-row 1/n, a norm) "
                    "applied wrongly")
    return None


def _subset(wrong: Tensor, d: Tensor, conditions: Mapping[str, Tensor], count: int,
            n: int) -> str | None:
    """Wrong exactly where one tensor's values are beyond one threshold, by a difference that
    stands clear of the right elements' (SUBSET_GAP), and too many for chance (SUBSET_CHANCE)."""
    torch = import_torch()
    if count == 0 or count == n:
        return None
    # log C(n, count) by lgamma: C itself has thousands of digits past a float's range
    log_ways = math.lgamma(n + 1) - math.lgamma(count + 1) - math.lgamma(n - count + 1)
    if math.log(2 * max(len(conditions), 1) / SUBSET_CHANCE) > log_ways:
        return None
    flat = wrong.reshape(-1)
    gap = d.abs().reshape(-1)
    if float(gap[flat].min()) < SUBSET_GAP * float(gap[~flat].max()):
        return None
    for name, values in conditions.items():
        v = values.detach().reshape(-1).to(torch.float64)
        if v.numel() != n:
            continue
        bad, good = v[flat], v[~flat]
        for above in (True, False):
            if above and float(bad.min()) > float(good.max()):
                t = _simple(float(good.max()), float(bad.min()))
                return (f"wrong exactly where {name} > {t:g} ({count} of {n} elements), right "
                        "everywhere else: one branch of the formula is wrong")
            if not above and float(bad.max()) < float(good.min()):
                t = _simple(float(bad.max()), float(good.min()))
                return (f"wrong exactly where {name} < {t:g} ({count} of {n} elements), right "
                        "everywhere else: one branch of the formula is wrong")
    return None


def _simple(low: float, high: float) -> float:
    """The simplest number strictly between low and high, as a person would write the branch's
    threshold: 0 when the gap holds it, else the midpoint to the fewest significant digits."""
    if low < 0 < high:
        return 0.0
    middle = (low + high) / 2
    for digits in range(1, 7):
        t = float(f"{middle:.{digits}g}")
        if low < t < high:
            return t
    return middle


def swapped(names: Sequence[str], mine: Sequence[Tensor], refs: Sequence[Tensor],
            rtol: float, atol: float) -> dict[int, Finding]:
    """Tensor i whose gradient is tensor j's reference (j ≠ i, same shape), by position."""
    torch = import_torch()
    found: dict[int, Finding] = {}
    for i, j in itertools.permutations(range(len(names)), 2):
        m, r = mine[i], refs[j]
        if m.shape != r.shape or i in found:
            continue
        if torch.isclose(m.to(torch.float64), refs[i].to(torch.float64), rtol=rtol,
                         atol=atol).all():
            continue
        m64, own = m.detach().to(torch.float64), refs[i].detach().to(torch.float64)
        if _explains(m64, r.detach().to(torch.float64), own, rtol, atol):
            found[i] = Finding(names[i], "swapped", f"the gradient given for {names[i]} is the "
                               f"reference of {names[j]}: two gradients returned in the wrong "
                               "order")
    return found


def findings_as_text(findings: Sequence[Finding]) -> list[str]:
    """One 'likely cause' line per finding, for str(result) and the plain verdict."""
    return [f"likely cause ({f.tensor}): [{f.kind}] {f.text}" for f in findings]

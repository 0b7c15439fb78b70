"""What a gradient is checked against when it is not (only) a hand-derived one.

All of them look at the scalar L(x) = ⟨u, fn(x)⟩, u the cotangent (grad_output), whose gradient
is the vector-Jacobian product Jᵀu that autograd (and a custom backward) computes.

projection (the default without manual): for each checked tensor x and each of k random
directions v (Directions: n independent elements, |vᵢ| uniform in [0.5, 1) with a random sign of
its own, so every element of x weighs at least 0.5 in v), the directional derivative by central
differences in float64 at two steps,

    d(h) = (L(x + h·v) − L(x − h·v)) / 2h,       h = step = 1e-6 (gradcheck's eps), and d(2h)

against ⟨g, v⟩ for the gradient g (autograd's, and manual's when given), as
torch.autograd.gradcheck(fast_mode=True) does with one step. They agree when

    |⟨g, v⟩ − d(h)| ≤ E_fd + E_g

E_fd, the error of d(h) itself, estimated from the evaluations:

    E_fd = S·(|d(h) − d(2h)|/3 + |δ⁴L|/2h) + N,     S = FD_SAFETY = 6

|d(h) − d(2h)|/3 is Richardson's estimate of the truncation error of d(h) (c·h² + O(h⁴));
δ⁴L = L(x+2hv) − 4L(x+hv) + 6L(x) − 4L(x−hv) + L(x−2hv), the fourth difference, is O(h⁴) for a
smooth L but of order J·h where x ± 2h·v crosses a kink of slope jump J (relu, abs), where
Richardson's estimate can be near zero while d(h) is off by up to J/2 (for one kink,
S·(both terms) ≥ 2× that error, wherever it lies); N = FD_NOISE·ε·Σ|u·y|/h bounds the float64
rounding of L over 2h (as for finite-diff). No fixed rtol: in float64 the test keeps what the
difference quotient is accurate to.

E_g, what a correct g may be off by in its own dtype: each element within rtol·|gᵢ| + atol
(the dtype's, or the check's own rtol and atol), those errors δ enter ⟨δ, v⟩ = Σ δᵢ·vᵢ with the
signs of v, drawn independently of δ and of each other, and |vᵢ| ≤ 1. By Hoeffding's inequality
(given the magnitudes |vᵢ|), with ‖δ‖₂ ≤ rtol·‖g‖₂ + atol·√n,

    P(|⟨δ, v⟩| > c·(rtol·‖g‖₂ + atol·√n)) ≤ 2·exp(−c²/2)

so c = √(2·ln(2/p)) = 5.39 for a false-fail probability p = FALSE_FAIL = 1e-6 per direction:

    E_g = c·(rtol·‖g‖₂ + atol·√n) + FD_NOISE·ε·‖g‖₁      (the last: the float64 sum ⟨g, v⟩)

It grows like ‖δ‖₂ (√n), not like ‖δ‖₁ (n): one element wrong by r·|gᵢ| adds at least
0.5·r·|gᵢ| to ⟨g, v⟩, which is caught, along every direction, when it passes E_fd + E_g. Several
wrong elements can cancel along one direction (two errors of equal size, with opposite signs in
v and |vᵢ| within E/size of each other); the directions are independent, so the chance that they
cancel along all k is that of one to the power k. For two equal errors each M times what one
element needs to be caught, about 1/M per direction, (1/M)^k for k; k = 3 by default
(docs/api.md, measured by benchmarks/bench_cancellation.py).

Cost: E_fd ≥ N, so a direction where |⟨g, v⟩ − d(h)| ≤ N + E_g passes whatever d(2h) and L(x)
would say; they are evaluated only for the other directions. A passing check costs 2k
evaluations of fn per checked tensor (gradcheck's fast mode: 2, along one direction), a failing
one up to 4k, and one of L(x), instead of finite differences' 2n.

A pass must be one the check could have refused. An inf or NaN in g fails its row (E_g is built
from g's finite part, never widened to inf or NaN). A reference that is not finite along a
direction measured nothing: Inconclusive. And a checked tensor whose every direction has
|d(h)| ≤ E_fd + c·atol·√n (the tolerance a zero gradient would get: atol beside a mean over many
elements, fn's rounding beside huge constants) is reported in Outcome.unresolved; check() then
refuses a pass (Inconclusive) and lets a failure stand. Weak: such a tensor is refused only when
its tolerance also covers the check's greatest |d(h)|, so a gradient that is zero beside the
others' (a bias before a BatchNorm) is checked as zero. forward does the same with its own
allowance.

forward: forward mode against reverse mode, both analytic, in the inputs' dtype: for each
direction v, ⟨J·v, u⟩ (a jvp, torch.autograd.forward_ad) against ⟨v, Jᵀ·u⟩ = ⟨v, g⟩, within
the check's rtol and an atol widened by rtol·(‖g‖₁ + ‖(J·v)⊙u‖₁) for the rounding of the sums.

finite-diff: central differences of L for every element (check/finite_diff.py), as `run` does.

order=2: the double backward. With w a standard normal shaped like each gradient, S(x) =
Σ ⟨w, g(x)⟩; autograd's ∂S/∂x (differentiating through the backward) against central
differences of S, element by element, S computed with autograd in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import Inconclusive
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import Comparison
from autograd_check.kernel.compare import compare, to64
from autograd_check.kernel.locate import (
    DIRECTION_STRIDE,
    Allowance,
    Located,
    Memo,
    Oracle,
    Probe,
    direction,
    locate,
)
from autograd_check.references.arguments import Arguments, Call
from autograd_check.references.finite_diff import (
    FD_ATOL,
    FD_NOISE,
    FD_RTOL,
    FLOAT64_EPS,
    central_differences,
)

if TYPE_CHECKING:
    from torch import Tensor

FD_SAFETY = 6.0
"""projection: the factor on its estimate of d(h)'s error (Richardson's, and the fourth
difference): 6× the truncation error of a smooth L, 2× the error of d(h) at one kink."""
FALSE_FAIL = 1e-6
"""projection: the probability, per direction, that a correct gradient's own rounding (within its
dtype's rtol and atol) fails it."""
ROUNDING_SPREAD = math.sqrt(2 * math.log(2 / FALSE_FAIL))
"""c = √(2·ln(2/p)) = 5.39: |⟨δ, v⟩| ≤ c·‖δ‖₂ but with probability p (Hoeffding's inequality:
module docstring)."""

Gradients = Sequence[Mapping[str, "Tensor"]]
"""Per checked tensor: label ('autograd', 'manual') → its gradient."""


@dataclass
class Where:
    """A failed tensor's located elements, with what a diagnosis of them needs."""

    tensor: str
    label: str
    gradient: Tensor
    located: Located
    rtol: float
    atol: float


@dataclass
class Outcome:
    comparisons: list[Comparison] = field(default_factory=list)
    block: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    estimates: list[Tensor] = field(default_factory=list)
    """finite-diff: its float64 estimate of each checked tensor's gradient (for a diagnosis)."""
    located: list[Where] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    """Why a checked tensor's rows cannot catch even a zero gradient (Weak.reasons):
    check() refuses a pass then, and lets a failure stand."""


def reduce64(out: Tensor, u64: Tensor | None) -> Tensor:
    """L = ⟨u, out⟩ in float64 (out itself when scalar: u = 1)."""
    torch = import_torch()
    out64 = out.to(torch.float64)
    if u64 is None:
        return out64.reshape(())
    value: Tensor = torch.dot(out64.reshape(-1), u64.reshape(-1))
    return value


def numeric_tolerances(args: Arguments, rtol: float, atol: float, scale: float) -> tuple[
        float, float]:
    """gradcheck's rtol and atol, the check's own when wider, and the rounding of L (of size
    scale) in float64 over 2h."""
    noise = FD_NOISE * FLOAT64_EPS * scale / args.step if math.isfinite(scale) else 0.0
    return max(FD_RTOL, rtol), max(FD_ATOL, atol, noise)


class Directions:
    """Random directions v for one checked tensor: n independent elements, |vᵢ| uniform in
    [0.5, 1) (on locate's STEPS steps, exact in float32) with independent random signs: no
    element is left out of a direction (|vᵢ| ≥ 0.5), and no two elements share a factor, so the
    errors of several elements cancel along v only by chance, each direction independently
    (module docstring). Direction j is kernel/locate.py's direction(n, seed + j·DIRECTION_STRIDE),
    drawn on the CPU, then held on the tensor's device in float64."""

    def __init__(self, x: Tensor, seed: int) -> None:
        self.n = x.numel()
        self.base = seed
        self.device = x.device
        self.seed = seed
        self.v: Tensor | None = None

    def seed_of(self, j: int) -> int:
        """The seed of direction j (direction 0's is the locator's own first: kernel/locate.py)."""
        return self.base + j * DIRECTION_STRIDE

    def draw(self, j: int) -> None:
        self.seed = self.seed_of(j)
        self.v = None  # the last direction's memory first
        self.v = direction(self.n, self.seed, self.device)

    def step(self, x64: Tensor, h: float, out: Tensor) -> None:
        """out = x64 + h·v (h may be negative)."""
        torch = import_torch()
        assert self.v is not None
        torch.add(x64.reshape(-1), self.v, alpha=h, out=out.view(-1))

    def along(self, g: Tensor) -> Tensor:
        """⟨g, v⟩ in float64."""
        torch = import_torch()
        assert self.v is not None
        value: Tensor = torch.dot(g.detach().reshape(-1).to(torch.float64), self.v)
        return value

    def tensor(self, like: Tensor) -> Tensor:
        """v itself, shaped and typed like `like` (a tangent for forward mode). In a dtype that
        cannot hold v exactly (float16, bfloat16), v becomes its rounded self, so that ⟨g, v⟩
        is taken along the direction the jvp was."""
        assert self.v is not None
        tangent = self.v.reshape(like.shape).to(like.dtype)
        self.v = tangent.reshape(-1).to(self.v.dtype)
        return tangent


def unmeasured(name: str, numeric: Tensor, error: Tensor) -> None:
    """Refuse a reference that is not a finite number along some direction (fn overflowed or
    gave NaN in float64 at x ± h·v): it measured nothing there, so it can neither pass nor fail."""
    torch = import_torch()
    bad = ~(torch.isfinite(numeric) & torch.isfinite(error))
    if bool(bad.any()):
        j = int(torch.nonzero(bad)[0, 0])
        raise Inconclusive(
            f"projection cannot measure {name}'s derivative: along direction {j} the difference "
            f"quotient is {float(numeric[j]):g} with an error bound of {float(error[j]):g} (fn "
            "overflows or gives NaN in float64 near these inputs); use reference='forward' or "
            "'finite-diff', or inputs where fn stays finite"
        )


class Weak:
    """The checked tensors whose directional rows could not fail a zero gradient, and the
    check's greatest |derivative|: a tensor is refused only when its tolerance also covers that
    (one whose gradient is zero beside the others', a bias before a BatchNorm, is checked)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, float]] = []
        self.scale = 0.0

    def add(self, name: str, reference: Tensor, error: Tensor, floor: float, atol: float,
            passed: bool) -> None:
        torch = import_torch()
        size = reference.abs()
        if size.numel():
            self.scale = max(self.scale, float(size.max()))
        band = error + floor
        if not passed or not bool((size > 0).any()) or bool((size > band).any()):
            return  # it failed (that stands), the reference is zero, or a direction resolves
        j = int(torch.argmax(size))
        d, e = float(size[j]), float(error[j])
        if floor >= e:
            smaller = 10.0 ** math.floor(math.log10(d / 10 / floor * atol))
            cause = (f"atol={atol:g} allows {floor:.3g} along a direction: give a smaller atol "
                     f"({smaller:.0e} or less)")
        else:
            cause = ("fn's own rounding and truncation in float64 hide it (large values beside "
                     "small ones, a lower precision inside fn, kinks): check fn at inputs where "
                     "its derivative stands out, or use another reference")
        self.found.append((
            f"{name}: the derivative along each direction is at most {d:.3g} in size, within "
            f"the check's tolerance ({float(band[j]):.3g}), so a zero gradient would pass; "
            + cause, float(band.max())))

    def reasons(self) -> list[str]:
        return [why for why, band in self.found if band >= self.scale]


def first_failed(analytic: Tensor, numeric: Tensor, tolerance: Tensor) -> int:
    """The first direction at which |analytic − numeric| passes its tolerance (NaN is never
    close), 0 when none does."""
    torch = import_torch()
    far = ~((analytic - numeric).abs() <= tolerance)
    return int(torch.nonzero(far)[0, 0]) if bool(far.any()) else 0


def _agreement(
    name: str, analytic: Tensor, numeric: Tensor, tolerance: Tensor
) -> Comparison:
    """compare()'s statistics with rtol = 0 and each direction's own atol (tolerance[j]): the
    row shows the widest of them."""
    row = compare(name, analytic, numeric, 0.0, float(tolerance.max()), False)
    close = (analytic - numeric).abs() <= tolerance  # NaN is never close
    mismatched = int((~close).sum())
    return by_direction(replace(row, mismatched=mismatched, passed=mismatched == 0))


def by_direction(row: Comparison) -> Comparison:
    """A row of one number per random direction: its unit said, and no index (a direction's
    index is not an element's; the located elements say where)."""
    return replace(row, unit="directions", max_abs_index=[], max_rel_index=[])


def locate_failed(
    outcome: Outcome, rows: Sequence[Comparison], name: str, grads: Mapping[str, Tensor],
    oracle: Oracle, allowance: Allowance, seeds: Sequence[int], rtol: float, atol: float,
    known: Mapping[int, Probe] | None = None,
) -> None:
    """For each failed row of one tensor (one per gradient label, in grads' order): the wrong
    elements located (kernel/locate.py) along the row's first failed direction (seeds[k] drew
    it: the search starts from a direction known to disagree), on the row and in
    outcome.located. Searches along the same direction share their answers; known: the check's
    own sound answer along a direction (by its seed), the search's first question answered."""
    torch = import_torch()
    memos: dict[int, Memo] = {}
    start = len(outcome.comparisons) - len(rows)
    for k, (row, (label, g)) in enumerate(zip(rows, grads.items(), strict=True)):
        if row.passed:
            continue
        m = g.detach().to(torch.float64)
        memo = memos.setdefault(seeds[k], {})
        root = (known or {}).get(seeds[k])
        # the locator's w is the check's v unless it zeroes non-finite elements of m
        if root is not None and not memo and bool(torch.isfinite(m).all()):
            memo[(0, (), 0, m.numel())] = (root, True)  # Memo's key of the first root
        found = locate(m, oracle, allowance, seed=seeds[k], memo=memo)
        outcome.comparisons[start + k] = replace(row, located=found.to_dict())
        outcome.located.append(Where(name, label, m, found, rtol, atol))


class _Center:
    """L(x) in float64, evaluated once per check when a direction first needs it, and Σ|u·y|
    there (the size of L whose float64 rounding N allows for)."""

    def __init__(self, call: Call, x64: list[Tensor], u64: Tensor | None) -> None:
        self.call, self.x64, self.u64 = call, x64, u64
        self.value: Tensor | None = None
        self.scale = math.inf

    def get(self) -> Tensor:
        if self.value is None:
            torch = import_torch()
            y = self.call.evaluate(self.x64, float64=True).to(torch.float64)
            self.value = reduce64(y, self.u64)
            size = y.abs().reshape(-1)
            self.scale = float(size.sum() if self.u64 is None else torch.dot(
                size, self.u64.abs().reshape(-1)))
        return self.value


def projection(
    call: Call, args: Arguments, u: Tensor, gradients: Gradients, scale: float
) -> Outcome:
    torch = import_torch()
    k, h = args.directions, args.step
    u64 = None if u.dim() == 0 else u.to(torch.float64)
    x64 = [to64(x).contiguous() for x in call.values]
    outcome = Outcome()
    evaluations = 0
    with torch.no_grad():
        center = _Center(call, x64, u64)
        if not math.isfinite(scale):  # fn overflowed in x's dtype: the size of L in float64
            center.get()
            evaluations += 1
            scale = center.scale
        noise = FD_NOISE * FLOAT64_EPS * scale / h if math.isfinite(scale) else 0.0
        weak = Weak()
        for i, c in enumerate(call.checked):
            xi = x64[i]
            directions = Directions(xi, args.seed + 1 + i)
            buf = torch.empty_like(xi)
            values = list(x64)
            values[i] = buf

            def loss(step: float, values: list[Tensor] = values, xi: Tensor = xi,
                     buf: Tensor = buf, directions: Directions = directions) -> Tensor:
                directions.step(xi, step, buf)
                return reduce64(call.evaluate(values, float64=True), u64)

            rtol, atol = args.tolerances(c.value.dtype)
            spread: dict[str, float] = {}
            for label, g in gradients[i].items():
                # the finite part: an inf or NaN in g fails its row (⟨g, v⟩ is not finite),
                # where a tolerance built from it would be inf or NaN and pass or raise
                g64 = g.detach().to(torch.float64)
                if not bool(torch.isfinite(g64).all()):  # a copy only then: g64 may be g
                    g64 = torch.nan_to_num(g64, nan=0.0, posinf=0.0, neginf=0.0)
                spread[label] = ROUNDING_SPREAD * (
                    rtol * float(torch.linalg.vector_norm(g64)) + atol * math.sqrt(g.numel())
                ) + FD_NOISE * FLOAT64_EPS * float(torch.linalg.vector_norm(g64, 1))
            numeric = torch.empty(k, dtype=torch.float64)
            error = torch.full((k,), noise, dtype=torch.float64)
            analytic = {label: torch.empty(k, dtype=torch.float64) for label in gradients[i]}
            for j in range(k):
                directions.draw(j)
                plus, minus = loss(h), loss(-h)
                evaluations += 2
                d1 = (plus - minus) / (2 * h)
                numeric[j] = d1
                settled = True
                for label, g in gradients[i].items():
                    analytic[label][j] = along = directions.along(g)
                    # E_fd ≥ N: within N + E_g, the verdict is a pass whatever d(2h) says
                    settled = settled and bool((along - d1).abs() <= noise + spread[label])
                if settled:
                    continue
                plus2, minus2 = loss(2 * h), loss(-2 * h)
                evaluations += 2 + (center.value is None)
                d2 = (plus2 - minus2) / (4 * h)
                fourth = plus2 - 4 * plus + 6 * center.get() - 4 * minus + minus2
                error[j] += FD_SAFETY * ((d1 - d2).abs() / 3 + fourth.abs() / (2 * h))
            unmeasured(c.name, numeric, error)
            rows = [_agreement(f"{c.name}: {label} vs projection", analytic[label], numeric,
                               error + spread[label]) for label in gradients[i]]
            # the allowance a zero gradient would get: E_fd and atol's share of E_g
            weak.add(c.name, numeric, error, ROUNDING_SPREAD * atol * math.sqrt(xi.numel()),
                     atol, all(row.passed for row in rows))
            outcome.comparisons += rows
            if not all(row.passed for row in rows):
                directions.v = None  # the locator draws its own
                oracle = _projection_oracle(call, values, xi, buf, u64, h, noise, center)
                failed = [first_failed(analytic[label], numeric, error + spread[label])
                          for label in gradients[i]]
                seeds = [directions.seed_of(j) for j in failed]
                # a failed direction was answered soundly (d(2h) and δ⁴L): no need to ask again
                known = {directions.seed_of(j): Probe(
                    float(numeric[j]), float(error[j]), 0)
                    for j, row in zip(failed, rows, strict=True) if not row.passed}
                locate_failed(outcome, rows, c.name, gradients[i], oracle,
                              _projection_allowance(rtol, atol), seeds, rtol, atol, known)
            del buf, directions
    outcome.unresolved = weak.reasons()
    outcome.block = {
        "method": "directional derivatives by central differences in float64 at steps h and "
                  "2h: d(h) = (L(x + h·v) − L(x − h·v)) / 2h against ⟨g, v⟩, each |vᵢ| uniform in "
                  "[0.5, 1) with a random sign of its own; d(2h) and L(x) only for a "
                  "direction that d(h) alone does not pass",
        "directions": k,
        "step": h,
        "criterion": f"|⟨g, v⟩ − d(h)| ≤ {FD_SAFETY:g}·(|d(h) − d(2h)|/3 + |δ⁴L|/2h) + "
                     f"{FD_NOISE:g}·ε·Σ|u·y|/h + {ROUNDING_SPREAD:.1f}·(rtol·‖g‖₂ + atol·√n) + "
                     f"{FD_NOISE:g}·ε·‖g‖₁ (the error of the difference quotient, and a correct "
                     f"g's own rounding but with probability {FALSE_FAIL:g} per direction)",
        "evaluations": evaluations,
    }
    return outcome


def _projection_oracle(call: Call, values: list[Tensor], xi: Tensor, buf: Tensor,
                       u64: Tensor | None, h: float, noise: float, center: _Center) -> Oracle:
    """⟨r, v⟩ as projection answers it, for the locator: d(h) alone (2 evaluations of fn; its
    error bound then only N, a lower estimate), or soundly with d(2h) and the fourth difference
    (2 more, and L(x) once per check)."""
    torch = import_torch()

    def loss(v: Tensor, step: float) -> float:
        torch.add(xi, v, alpha=step, out=buf)
        return float(reduce64(call.evaluate(values, float64=True), u64))

    def oracle(v: Tensor, sound: bool) -> Probe:
        plus, minus = loss(v, h), loss(v, -h)
        d1 = (plus - minus) / (2 * h)
        if not sound:
            return Probe(d1, noise, 2)
        evaluations = 4 + (center.value is None)
        plus2, minus2 = loss(v, 2 * h), loss(v, -2 * h)
        d2 = (plus2 - minus2) / (4 * h)
        fourth = plus2 - 4 * plus + 6 * float(center.get()) - 4 * minus + minus2
        return Probe(d1, noise + FD_SAFETY * (abs(d1 - d2) / 3 + abs(fourth) / (2 * h)),
                     evaluations)

    return oracle


def _projection_allowance(rtol: float, atol: float) -> Allowance:
    """E_g of a block: a correct gradient's own rounding along w_B (module docstring)."""
    torch = import_torch()

    def allowance(mw: Tensor, w: Tensor) -> float:
        return ROUNDING_SPREAD * (rtol * float(torch.linalg.vector_norm(mw))
                                  + atol * float(torch.linalg.vector_norm(w)))

    return allowance


def _no_forward_mode(call: Call, error: BaseException) -> ValueError | None:
    """One sentence for an fn that has no forward-mode derivative, else None."""
    text = str(error)
    if not any(key in text for key in ("jvp", "forward AD", "forward mode", "forward-mode")):
        return None
    first = (text.strip().splitlines() or [""])[0]
    return ValueError(
        f"reference='forward' needs fn's forward-mode derivative, and {call.name} has none "
        f"(torch: {first}); define jvp on the autograd.Function, or use reference='projection'"
    )


def _jvp(call: Call, i: int, xi: Tensor, v: Tensor) -> Tensor:
    """J·v for the checked tensor i (forward mode), flat in float64: zero when fn's output does
    not depend on it."""
    torch = import_torch()
    fwd = torch.autograd.forward_ad
    with warnings.catch_warnings(), fwd.dual_level():
        # torch's first dual level loads its jvp decompositions with torch.jit.script,
        # which warns that it is deprecated (a DeprecationWarning; a FutureWarning from 2.14):
        # torch's own business, not the caller's
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
        values = [x.detach() for x in call.values]
        values[i] = fwd.make_dual(xi, v)
        try:
            out = call.evaluate(values)
        except (RuntimeError, NotImplementedError) as e:
            better = _no_forward_mode(call, e)
            if better is None:
                raise
            raise better from None
        tangent = fwd.unpack_dual(out).tangent
    if tangent is None:
        tangent = torch.zeros_like(out)
    flat: Tensor = tangent.detach().reshape(-1).to(torch.float64)
    return flat


def forward(
    call: Call, args: Arguments, u: Tensor, gradients: Gradients
) -> Outcome:
    torch = import_torch()

    k = args.directions
    outcome = Outcome()
    uf = u.detach().reshape(-1).to(torch.float64)
    weak = Weak()
    with torch.no_grad():
        for i, c in enumerate(call.checked):
            xi = c.value.detach()
            directions = Directions(xi, args.seed + 1 + i)
            reverse = {label: torch.empty(k, dtype=torch.float64) for label in gradients[i]}
            flat = gradients[i]
            forward_values = torch.empty(k, dtype=torch.float64)
            spread = 0.0
            for j in range(k):
                directions.draw(j)
                tf = _jvp(call, i, xi, directions.tensor(xi))
                forward_values[j] = torch.dot(tf, uf)
                spread = max(spread, float(torch.dot(tf.abs(), uf.abs())))
                for label, g in flat.items():
                    reverse[label][j] = directions.along(g)
            rtol, atol = args.tolerances(c.value.dtype)
            if not (bool(torch.isfinite(forward_values).all()) and math.isfinite(spread)):
                raise Inconclusive(
                    f"forward mode cannot measure {c.name}'s derivative: fn's jvp is not finite "
                    "(it overflows or gives NaN near these inputs); use reference='projection' "
                    "or 'finite-diff', or inputs where fn stays finite")
            rows, seeds = [], []
            for label, g in flat.items():
                # the finite part of g: an inf or NaN in g fails its row, never widens it
                size = g.detach()
                if not bool(torch.isfinite(size).all()):  # a copy only then
                    size = torch.nan_to_num(size, nan=0.0, posinf=0.0, neginf=0.0)
                allowance = atol + rtol * (float(torch.linalg.vector_norm(size, 1)) + spread)
                rows.append(by_direction(compare(
                    f"{c.name}: {label} vs forward", reverse[label], forward_values, rtol,
                    allowance, False)))
                seeds.append(directions.seed_of(first_failed(
                    reverse[label], forward_values, allowance + rtol * forward_values.abs())))
            # the allowance a zero gradient would get
            weak.add(c.name, forward_values, rtol * (forward_values.abs() + spread), atol, atol,
                     all(row.passed for row in rows))
            outcome.comparisons += rows
            directions.v = None
            if not all(row.passed for row in rows):
                locate_failed(outcome, rows, c.name, flat, _forward_oracle(call, i, xi, uf, rtol,
                                                                           atol),
                              _forward_allowance(rtol), seeds, rtol, atol)
    outcome.unresolved = weak.reasons()
    outcome.block = {
        "method": "forward mode against reverse mode: ⟨J·v, u⟩ (jvp) against ⟨v, Jᵀ·u⟩ (vjp), "
                  "v as for projection",
        "directions": k,
        "criterion": "|⟨v, g⟩ − ⟨J·v, u⟩| ≤ atol + rtol·|⟨J·v, u⟩|, atol widened by "
                     "rtol·(‖g‖₁ + ‖(J·v)⊙u‖₁)",
        "evaluations": k * len(call.checked),
    }
    return outcome


def _forward_oracle(call: Call, i: int, xi: Tensor, uf: Tensor, rtol: float,
                    atol: float) -> Oracle:
    """⟨r, v⟩ = ⟨J·v, u⟩ by one jvp (one evaluation of fn), within forward's own allowance for
    its rounding: atol + rtol·(‖(J·v)⊙u‖₁ + |⟨J·v, u⟩|); the same answer cheap or sound."""
    torch = import_torch()

    def oracle(v: Tensor, sound: bool) -> Probe:
        tf = _jvp(call, i, xi, v.to(xi.dtype))
        value = float(torch.dot(tf, uf))
        return Probe(value, atol + rtol * (float(torch.dot(tf.abs(), uf.abs())) + abs(value)),
                     1)

    return oracle


def _forward_allowance(rtol: float) -> Allowance:
    """A correct gradient's rounding along w_B, as forward allows it: rtol·‖g ⊙ w_B‖₁."""
    torch = import_torch()

    def allowance(mw: Tensor, w: Tensor) -> float:
        return rtol * float(torch.linalg.vector_norm(mw, 1))

    return allowance


def fd_budget(call: Call, args: Arguments, what: str) -> None:
    elements = sum(c.value.numel() for c in call.checked)
    if elements > args.max_fd_elements:
        raise ValueError(
            f"{what} perturbs each of the {elements} checked elements twice (O(n²) work), past "
            f"max_fd_elements={args.max_fd_elements}: raise max_fd_elements, or use "
            "reference='projection'"
        )


def _element_by_element(name: str, fallback: str | None, expected: bool) -> list[str]:
    if fallback is None or expected:
        return []
    reason = fallback.split(". ")[0]  # torch's first sentence is the reason; the rest is links
    return [f"finite differences for {name} were evaluated element by element (slower): "
            f"torch.func.vmap could not evaluate fn in batches ({reason})"]


def finite_diff(
    call: Call, args: Arguments, u: Tensor, gradients: Gradients, scale: float
) -> Outcome:
    torch = import_torch()
    fd_budget(call, args, "reference='finite-diff'")
    u64 = None if u.dim() == 0 else u.to(torch.float64)
    x64 = [to64(x) for x in call.values]
    outcome = Outcome()
    vectorised = True
    for i, c in enumerate(call.checked):

        def loss(t: Tensor, i: int = i) -> Tensor:
            values = list(x64)
            values[i] = t
            return reduce64(call.evaluate(values, float64=True), u64)

        diff = central_differences(loss, x64[i], step=args.step)
        outcome.estimates.append(diff.grad)
        vectorised = vectorised and diff.vectorised
        outcome.notes += _element_by_element(c.name, diff.fallback, False)
        rtol, atol = args.tolerances(c.value.dtype)
        fd_rtol, fd_atol = numeric_tolerances(args, rtol, atol, scale)
        for label, g in gradients[i].items():
            outcome.comparisons.append(compare(
                f"{c.name}: {label} vs finite-diff", g.detach().to(torch.float64), diff.grad,
                fd_rtol, fd_atol, False))
    elements = sum(c.value.numel() for c in call.checked)
    outcome.block = {
        "method": "central differences in float64: (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h",
        "step": args.step,
        "criterion": "|g − fd| ≤ atol + rtol·|fd| (gradcheck's test)",
        "elements": elements,
        "evaluations": 2 * elements,
        "vectorised": vectorised,
    }
    return outcome


def _gradient_sum(
    call: Call, values: Sequence[Tensor], u: Tensor, w: Sequence[Tensor], float64: bool
) -> Tensor:
    """S = Σ ⟨w, g⟩ with g = Jᵀu computed by autograd with create_graph (differentiable)."""
    torch = import_torch()
    out: Tensor = call.evaluate(values, float64=float64)
    total: Tensor = out.new_zeros(())
    if not out.requires_grad:
        return total
    # grad_output requires grad, as in gradgradcheck: a backward marked @once_differentiable
    # then leaves its mark in the graph (an Error node), rather than looking constant
    u = u.detach().to(out.dtype).requires_grad_()
    grads = torch.autograd.grad(out, list(values), u, create_graph=True,
                                allow_unused=True, materialize_grads=True)
    for g, wi in zip(grads, w, strict=True):
        total = total + torch.sum(g * wi.to(g.dtype))
    return total


def _differentiated_once_only(s: Tensor) -> bool:
    """Whether S's graph holds the Error node that @once_differentiable puts on its gradients.

    The Python objects for a graph's nodes can be made afresh on each access of next_functions
    and freed when dropped, and a freed object's id() is given to the next one: a walk that keeps
    only ids would take a new node for one already seen and stop early (seen on torch 2.1 and
    2.4). So the nodes seen are held, which keeps each id theirs until the walk ends."""
    seen: dict[int, Any] = {}
    stack = [s.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node  # held: its id cannot be reused while the walk runs
        if type(node).__name__ == "Error":
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def second_order(call: Call, args: Arguments, u: Tensor) -> Outcome:
    torch = import_torch()
    fd_budget(call, args, "order=2")
    gen = torch.Generator().manual_seed(args.seed + 2)
    w = [torch.randn(tuple(c.value.shape), generator=gen, dtype=torch.float64).to(
        device=c.value.device) for c in call.checked]
    with torch.enable_grad():
        s = _gradient_sum(call, call.values, u, w, float64=False)
        if _differentiated_once_only(s):
            raise ValueError(
                f"order=2 differentiates fn's backward, and {call.name}'s backward cannot be "
                "differentiated (it is marked @once_differentiable): use order=1"
            )
        if s.requires_grad:
            analytic = list(torch.autograd.grad(s, call.values, allow_unused=True,
                                                materialize_grads=True))
        else:  # the gradient does not depend on the checked tensors: its derivative is zero
            analytic = [torch.zeros_like(x) for x in call.values]
    x64 = [to64(x) for x in call.values]
    u64 = u.detach().to(torch.float64)
    scale = abs(float(s.detach()))
    outcome = Outcome()
    for i, c in enumerate(call.checked):

        def fn(t: Tensor, i: int = i) -> Tensor:
            with torch.enable_grad():
                values = [x.detach().requires_grad_() for x in x64]
                values[i] = t.detach().requires_grad_()
                return _gradient_sum(call, values, u64, w, float64=True).detach()

        diff = central_differences(fn, x64[i], step=args.step)
        rtol, atol = args.tolerances(c.value.dtype)
        fd_rtol, fd_atol = numeric_tolerances(args, rtol, atol, scale)
        outcome.comparisons.append(compare(
            f"{c.name}: double backward vs finite-diff", analytic[i].detach().to(torch.float64),
            diff.grad, fd_rtol, fd_atol, False))
    elements = sum(c.value.numel() for c in call.checked)
    outcome.block = {
        "method": "S = Σ ⟨w, g(x)⟩, w standard normal: autograd's ∂S/∂x (through the backward) "
                  "against central differences of S in float64",
        "step": args.step,
        "elements": elements,
        "evaluations": 2 * elements,
    }
    return outcome

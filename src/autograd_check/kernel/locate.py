"""Where a gradient is wrong: the elements of one tensor at which the user's gradient m differs
from the reference r, found by group testing, with one reference evaluation per question.

The question for a block B of elements (a run of the tensor's flat indices) is whether

    S_B = ⟨m, w_B⟩ − ⟨r, w_B⟩

is beyond what a correct m may show there, for one direction w drawn once per search and
restricted to B (zero elsewhere): |wᵢ| uniform in [0.5, 1) on 2²² steps (exact in float32), with
random signs. ⟨m, w_B⟩ is a sum here; ⟨r, w_B⟩ is the oracle's: one directional derivative of
fn, i.e. one jvp (reference 'forward') or one ±h pair of central differences (reference
'projection', and a second pair at ±2h when the answer must be sound: module references).

The search (depth first, left before right, so elements come out in flat order):

- the root, B = every element, is asked soundly; when it agrees, nothing is wrong to find;
- a block that disagrees is halved: the left half is asked, the right half is the parent less
  the left (S_R = S_P − S_L: the oracle is linear in the direction, so this is sound, with the
  two error bounds added), and costs nothing unless that sum is ambiguous (beyond what one
  question would allow, within the added bounds), when it is asked itself;
- a question of a block with more than one element may be cheap (its error bound only a lower
  estimate, as d(h) alone): it steers the search and claims nothing;
- a single element is asked soundly (at once when it is a left half), and it is claimed wrong
  only then, with m's value and the reference's rᵢ = ⟨r, wᵢeᵢ⟩ / wᵢ.

Cancellation: the continuous |wᵢ| make an exact cancellation of two wrong elements in a block a
null event (±1 signs alone cancel two equal errors half the time), but not a near one: errors
that cancel within a block's bound are pruned with it, and since they cancel in the root's sum
too, the search alone cannot tell. So a search that ends exhaustive is confirmed along a fresh
direction, the elements found left out of it (its root then holds only what is left): when
that root agrees, the search is done; when it does not, the fresh direction's own search finds
the rest, and another fresh direction confirms that (CONFIRM_ROUNDS in all).

Exhaustive: every block that disagreed was resolved to single elements, the elements found
account for the root's whole difference, S_root − Σ S_i within the sum of their bounds, and a
fresh direction without them agrees: no other element is wrong by more than the reference can
see. Else `stopped` says why: "budget" (the evaluations ran out first: the count is a lower
bound), "spread" (the rest of the difference is spread over elements each too small to stand
out), "reference" (the oracle's answer was not finite), or "confirm" (every fresh direction
found more). Elements where m itself is not finite (NaN, inf) are wrong without a question: they
are listed with the reference's value NaN (not asked), and left out of the search.

Cost: one wrong element among n takes one question per halving, log2(n) of them, plus the root,
its sound answer, and the confirming root: forward, about log2(n) + 2 jvps; projection, about
2·log2(n) + 12 evaluations of fn (2 per question, 4 for a sound one, and L(x) once when the
check has not evaluated it yet; benchmarks/bench_locate.py). k wrong elements take about k·log2(n/k)
questions more: about 2·k·log2(n) evaluations for projection. The search starts no question
once it has spent LOCATE_BUDGET evaluations (the last may take it past by up to 5).

Pure torch: it prints nothing and is given everything it looks at (callables, not a call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.kernel.diagnose import MAX_ELEMENTS, Finding, diagnose

if TYPE_CHECKING:
    from torch import Tensor

LOCATE_BUDGET = 1024
"""Evaluations of fn a search may start questions within: about 1024 / (2·log2(n) + 8) wrong
elements among n (projection; twice as many with forward), 21 among 10⁶, and every element of a
tensor of up to about 170 (a wrong one costs about 5 evaluations when all are wrong)."""
CONFIRM_ROUNDS = 2
"""Fresh directions that may confirm an exhaustive search (locate), each a sound question of the
root when it agrees: 4 evaluations of fn for projection, 1 for forward."""
DIRECTION_STRIDE = 1_000_003
"""A check's direction j (references/independent.py) is drawn from seed + j·DIRECTION_STRIDE;
direction 0 from the seed itself, this locator's first."""
CONFIRM_STRIDE = 7_777_777
"""Confirming direction r is drawn from seed + r·CONFIRM_STRIDE: never one of the check's own
directions (seed + j·DIRECTION_STRIDE, j small), some of which agreed."""
STEPS = 2**22
"""|wᵢ| takes STEPS values in [0.5, 1), each exact in float32 (a forward-mode tangent in the
tensor's own dtype is the same direction)."""
SUM_ROUNDING = 8.0 * 2.0**-52
"""The float64 rounding of a sum ⟨m, w_B⟩, per unit of Σ|mᵢwᵢ| (FD_NOISE·ε, as in the
references)."""


@dataclass(frozen=True)
class Probe:
    """One answer of the oracle: the reference's ⟨r, v⟩, a bound on its own error (a lower
    estimate only, when asked cheaply), and the evaluations of fn it took."""

    value: float
    error: float
    evaluations: int


Memo = dict[tuple[Any, ...], tuple[Probe, bool]]
"""Answers by question: (round, the elements left out of the direction, lo, hi) → (the probe,
whether it was sound). The same seed and the same elements left out make the same direction."""
Oracle = Callable[["Tensor", bool], Probe]
"""oracle(v, sound) -> Probe: v shaped like m (float64, zero outside the block); sound=False
allows a cheaper answer whose error bound is only a lower estimate."""
Allowance = Callable[["Tensor", "Tensor"], float]
"""allowance(mw, w) -> how far ⟨m, w⟩ over a block may be from ⟨r, w⟩ for a correct m (its own
rounding), given the block's mᵢwᵢ and wᵢ (float64, 1-D)."""


@dataclass(frozen=True)
class Element:
    """One element claimed wrong: its index, the checked gradient's value and the reference's."""

    index: list[int]
    gradient: float
    reference: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "gradient": self.gradient, "reference": self.reference}


@dataclass
class Located:
    """The outcome of one search (module docstring)."""

    numel: int
    found: list[Element] = field(default_factory=list)
    evaluations: int = 0
    budget: int = 0
    stopped: str | None = None

    @property
    def count(self) -> int:
        return len(self.found)

    @property
    def exhaustive(self) -> bool:
        return self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a comparison row: the first MAX_ELEMENTS elements only."""
        return {
            "count": self.count,
            "numel": self.numel,
            "elements": [e.to_dict() for e in self.found[:MAX_ELEMENTS]],
            "evaluations": self.evaluations,
            "budget": self.budget,
            "exhaustive": self.exhaustive,
            "stopped": self.stopped,
        }


def unravel(flat: int, shape: list[int]) -> list[int]:
    index = []
    for d in reversed(shape):
        flat, rest = divmod(flat, d)
        index.append(rest)
    return index[::-1]


def ravel(index: Sequence[int], shape: Sequence[int]) -> int:
    flat = 0
    for i, d in zip(index, shape, strict=True):
        flat = flat * d + i
    return flat


def direction(n: int, seed: int, device: Any = None) -> Tensor:
    """w: n float64 numbers, |wᵢ| uniform on STEPS steps of [0.5, 1), random signs; drawn on
    the CPU from torch.Generator().manual_seed(seed), then moved to device."""
    torch = import_torch()
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randint(0, STEPS, (n,), generator=gen, dtype=torch.int64)
    signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64).mul_(2).sub_(1)
    w: Tensor = (steps + STEPS).to(torch.float64).div_(2 * STEPS).mul_(signs)
    return w.to(device) if device is not None else w


class _OutOfBudget(Exception):
    pass


class _Unanswered(Exception):
    """The oracle's answer was not a finite number (fn overflowed, or NaN, along v)."""


class _Search:
    def __init__(self, m: Tensor, oracle: Oracle, allowance: Allowance, seed: int,
                 limit: int, memo: Memo | None, round_: int = 0,
                 known: Sequence[int] = ()) -> None:
        torch = import_torch()
        self.shape = list(m.shape)
        self.m = m.detach().reshape(-1).to(torch.float64)
        self.n = self.m.numel()
        self.w = direction(self.n, seed, self.m.device)
        self.bad = torch.nonzero(~torch.isfinite(self.m)).reshape(-1).tolist()
        left_out = sorted(self.bad + list(known))
        if left_out:  # wrong without a question (or found already): out of every sum
            self.w[left_out] = 0.0
        self.key = (round_, tuple(left_out))
        self.mw = torch.nan_to_num(self.m, nan=0.0, posinf=0.0, neginf=0.0) * self.w
        self.oracle, self.allowance, self.limit = oracle, allowance, limit
        self.memo = {} if memo is None else memo
        self.evaluations = 0

    def ask(self, lo: int, hi: int, sound: bool) -> tuple[float, float, Probe]:
        """(S_B, its bound, the probe) for the block [lo, hi)."""
        torch = import_torch()
        known = self.memo.get(self.key + (lo, hi))
        if known is not None and (known[1] or not sound):
            probe = known[0]
        else:
            if self.evaluations >= self.limit:
                raise _OutOfBudget
            v = torch.zeros_like(self.w)
            v[lo:hi] = self.w[lo:hi]
            probe = self.oracle(v.view(self.shape), sound)
            self.evaluations += probe.evaluations
            if not (math.isfinite(probe.value) and math.isfinite(probe.error)):
                raise _Unanswered
            self.memo[self.key + (lo, hi)] = (probe, sound)
        mw = self.mw[lo:hi]
        s = float(mw.sum()) - probe.value
        bound = probe.error + self.allowance(mw, self.w[lo:hi]) + SUM_ROUNDING * float(
            mw.abs().sum())
        return s, bound, probe


def locate(
    m: Tensor,
    oracle: Oracle,
    allowance: Allowance,
    *,
    seed: int = 0,
    limit: int | None = None,
    memo: Memo | None = None,
    confirm: int | None = None,
) -> Located:
    """The elements at which m differs from the reference the oracle answers for (module
    docstring). limit: the evaluations of fn to start questions within (LOCATE_BUDGET);
    memo: answers by question (Memo), shared by searches of the same tensor with the same seed
    (the autograd and the manual gradient of one tensor ask the same questions).

    A search that ends exhaustive is confirmed along a fresh direction (seed + r·CONFIRM_STRIDE),
    the elements found left out of it: wrong elements whose errors cancelled in a block of the
    first direction (and so in its root's sum) do not cancel there but by chance, and when they
    do not, that direction's search finds them. Up to CONFIRM_ROUNDS such directions; the result
    is exhaustive only when the last one agrees (confirm: how many, CONFIRM_ROUNDS by default;
    0: one search alone, unconfirmed)."""
    budget = LOCATE_BUDGET if limit is None else limit
    out = Located(m.numel(), budget=budget)
    found: list[int] = []
    search: _Search | None = None
    rounds = CONFIRM_ROUNDS if confirm is None else confirm
    for round_ in range(1 + rounds):
        search = _Search(m, oracle, allowance, seed + round_ * CONFIRM_STRIDE,
                         budget - out.evaluations, memo, round_, found)
        new, stopped = _search(search)
        out.evaluations += search.evaluations
        out.found += new
        found += [ravel(e.index, search.shape) for e in new]
        out.stopped = stopped
        if stopped is not None or (round_ > 0 and not new) or rounds == 0:
            break
    else:
        out.stopped = "confirm"  # every fresh direction found more: the last one unconfirmed
    assert search is not None
    out.found.sort(key=lambda e: e.index)
    return _with_nonfinite(out, search)


def _search(search: _Search) -> tuple[list[Element], str | None]:
    """One search along search.w: the elements it claims, and why it stopped short (None: it
    accounts for the root's whole difference)."""
    found: list[Element] = []
    explained, errors = 0.0, 0.0  # Σ S_i and Σ of their probes' errors, for the found elements
    try:
        root, root_bound, _ = search.ask(0, search.n, True)
        if abs(root) <= root_bound:
            return found, None
        # (lo, hi, S, bound, the bound one question of the block would have, or None: asked)
        stack: list[tuple[int, int, float, float, float | None]] = [
            (0, search.n, root, root_bound, None)]
        while stack:
            lo, hi, s, bound, single = stack.pop()
            if abs(s) <= bound:
                if single is None or abs(s) <= single:
                    continue  # agrees
                s, bound, _ = search.ask(lo, hi, False)  # ambiguous sum: ask the block itself
                if abs(s) <= bound:
                    continue
            if hi - lo == 1:
                s, bound, probe = search.ask(lo, hi, True)
                if abs(s) > bound:
                    wi = float(search.w[lo])
                    found.append(Element(unravel(lo, search.shape), float(search.m[lo]),
                                         probe.value / wi))
                    explained += s
                    errors += probe.error
                continue
            mid = (lo + hi) // 2
            # a single element is asked soundly at once: its claim needs that answer anyway
            left, left_bound, probe = search.ask(lo, mid, mid - lo == 1)
            mw = search.mw[mid:hi]
            one = probe.error + search.allowance(mw, search.w[mid:hi]) + SUM_ROUNDING * float(
                mw.abs().sum())
            stack.append((mid, hi, s - left, bound + left_bound, one))
            stack.append((lo, mid, left, left_bound, None))
        if abs(root - explained) > root_bound + errors:
            return found, "spread"
    except _OutOfBudget:
        return found, "budget"
    except _Unanswered:
        return found, "reference"
    return found, None


def _with_nonfinite(out: Located, search: _Search) -> Located:
    """The elements where m is not finite, merged into the found ones in flat order."""
    if search.bad:
        nan = float("nan")
        out.found += [Element(unravel(i, search.shape), float(search.m[i]), nan)
                      for i in search.bad]
        out.found.sort(key=lambda e: e.index)
    return out


def finding(
    tensor: str,
    m: Tensor,
    located: Located,
    rtol: float,
    atol: float,
    *,
    sizes: Mapping[str, Sequence[int]] | None = None,
    conditions: Mapping[str, Tensor] | None = None,
) -> Finding:
    """Why, as far as the located elements tell: when the search was exhaustive, r is known at
    each wrong element and agrees with m everywhere else (to the reference's resolution), so
    kernel/diagnose.py is asked about m against that r (a `subset` then names the condition);
    else `unknown`, saying how far the search went. Its elements: the first located ones."""
    torch = import_torch()
    elements = [e.index for e in located.found[:MAX_ELEMENTS]]
    n, count = located.numel, located.count
    if located.exhaustive and count:
        flat = m.detach().to(torch.float64).reshape(-1).clone()
        for e in located.found:
            flat[ravel(e.index, list(m.shape))] = e.reference
        out = diagnose(tensor, m, flat.view(m.shape), rtol, atol, sizes=sizes,
                       conditions=conditions)
        out.elements = elements
        return out
    if located.exhaustive:
        text = ("no single element located: along a fresh random direction the gradient agrees "
                "with the reference within its noise (a difference near the tolerance)")
    elif located.stopped == "budget":
        text = (f"at least {count} of {n} elements are wrong (the search stopped at its budget "
                f"of {located.budget} evaluations of fn): too many to name a cause from")
    elif located.stopped == "spread":
        text = (f"{count} of {n} elements located as wrong, and more are: the rest of the "
                "difference is spread over elements each too small to stand out")
    elif located.stopped == "confirm":
        text = (f"{count} of {n} elements located as wrong, and each fresh direction found more: "
                "too many, or too small, to name a cause from")
    else:
        text = (f"{count} of {n} elements located as wrong before fn's value along a direction "
                "was not finite")
    return Finding(tensor, "unknown", text, elements=elements)

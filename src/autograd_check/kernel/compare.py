"""Manual gradient against autograd's: verdict and mismatch statistics without full-size copies
in the common (bit-exact) case, and with a bounded number of temporaries otherwise."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import Comparison

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def unravel(flat_index: int, shape: list[int]) -> list[int]:
    index = []
    for dim in reversed(shape):
        flat_index, rest = divmod(flat_index, dim)
        index.append(rest)
    return index[::-1]


def to64(t: Tensor) -> Tensor:
    """A float64 copy of a floating tensor, detached (the truth half precision is judged by);
    other dtypes (class indices) detached as they are."""
    torch = import_torch()
    return t.detach().to(torch.float64) if t.is_floating_point() else t.detach()


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Differences are taken in float64 for float64, else float32, so that half types' reported
    differences are not rounded again."""
    import_torch()
    import torch  # already imported quietly; this gives mypy its types

    return torch.float64 if dtype == torch.float64 else torch.float32


def difference(manual: Tensor, auto: Tensor) -> Tensor:
    """manual − autograd, signed, in the work dtype (for showing where they differ)."""
    work = work_dtype(manual.dtype)
    return manual.detach().to(work) - auto.detach().to(work)


def compare(
    name: str, manual: Tensor, auto: Tensor, rtol: float, atol: float, exact: bool
) -> Comparison:
    """Compare like torch.testing.assert_close: torch.isclose(m, a, rtol, atol), so |m - a| <= atol
    + rtol |a|, NaN never close, an infinity close only to the same infinity. With `exact`, every
    element that is not equal mismatches."""
    torch = import_torch()
    shape = list(manual.shape)
    numel = manual.numel()
    if torch.equal(manual, auto):  # the tutorial's eq().all(), with an early exit
        zero = [0] * len(shape)
        return Comparison(name, shape, numel, True, 0, 0.0, zero, 0.0, zero, rtol, atol, True)

    work = work_dtype(manual.dtype)
    m = manual.detach().to(work).reshape(-1)
    a = auto.detach().to(work).reshape(-1)
    same = m == a
    diff = torch.sub(m, a).abs_().masked_fill_(same, 0.0)  # inf - inf is NaN, but they are equal
    i_abs = int(torch.argmax(diff))  # NaN counts as the greatest
    max_abs = float(diff[i_abs])
    rel = diff.div_(a.abs())  # in place: one full-size temporary fewer
    rel.masked_fill_(same, 0.0)  # 0/0 and inf/inf: equal elements differ by nothing
    i_rel = int(torch.argmax(rel))
    max_rel = float(rel[i_rel])
    del diff, rel
    if exact:
        mismatched = numel - int(same.sum())
    else:
        del same  # torch.isclose makes its own, with the temporaries just freed
        close = torch.isclose(m, a, rtol=rtol, atol=atol, equal_nan=False)
        mismatched = numel - int(close.sum())
    passed = mismatched == 0
    return Comparison(
        name,
        shape,
        numel,
        False,
        mismatched,
        max_abs,
        unravel(i_abs, shape),
        max_rel,
        unravel(i_rel, shape),
        rtol,
        atol,
        passed,
    )


RESOLUTION = 0.5
"""The least an element-wise check must be able to catch: a gradient off by half (m = r/2, a
×2 or a 1/n forgotten) at one element at least. A check whose atol lets that pass at every
element of every tensor, while the reference is not zero, proves nothing: it is refused, not
passed."""


def largest(references: list[Tensor]) -> float:
    """The greatest |element| of any of the tensors (0 when they are empty or zero), without a
    full-size temporary (aminmax, not abs)."""
    torch = import_torch()
    sizes = []
    for r in references:
        if r.numel():
            lo, hi = torch.aminmax(r.detach())
            sizes.append(max(abs(float(lo)), abs(float(hi))))
    return max(sizes, default=0.0)


def unresolved_elements(name: str, reference: Tensor, rtol: float, atol: float,
                        scale: float) -> str | None:
    """Why comparing with `reference` element by element at (rtol, atol) cannot catch a gradient
    off by half anywhere: atol is as large as the check's greatest gradient element (scale, over
    every checked tensor: one whose gradient is zero beside the others' is checked, not refused).
    None when it can, when everything is zero, or when rtol itself allows half."""
    if scale == 0.0 or not math.isfinite(scale) or rtol >= RESOLUTION:
        return None
    if (RESOLUTION - rtol) * scale > atol:
        return None
    size = largest([reference])
    smaller = 10.0 ** math.floor(math.log10(RESOLUTION * scale / 10))
    return (
        f"{name}: every element of the reference gradient is at most {size:.3g} in size, so "
        f"atol={atol:g} (with rtol={rtol:g}) would pass a gradient off by half everywhere: give "
        f"a smaller atol ({smaller:.0e} or less)"
    )


HALF_ROUNDING = 4.0
"""K, the element-wise allowance of the half-precision criterion (compare_with_truth), in units
of ε·max|truth|. Measured (benchmarks/bench_half_precision.py) on correct RMSNorm, BatchNorm and
x³ backwards written by hand, bfloat16 and float16, 32x32, 30 seeds: at most 1.26."""
HALF_NORM = 2.0
"""K₂, the allowance of the whole tensor, ‖m − truth‖₂ in units of ε·‖truth‖₂: measured at
most 0.62 on the same correct backwards; at least 4.0 with a planted bug (BatchNorm's mean term
dropped, x³'s gradient zeroed where |x| < 0.5), which the element-wise test alone can miss."""


def compare_with_truth(
    name: str, mine: Tensor, auto: Tensor, truth: Tensor, rtol: float, atol: float,
    trust_auto: bool = True,
) -> Comparison:
    """Half precision: a gradient judged against truth, the gradient evaluated in float64 at
    the same (rounded) inputs, rather than against autograd's half-precision one, which rounds
    differently (and, for your own backward, is your code). It passes when

        |mine − truth| ≤ atol + rtol·|truth| + K·ε·max|truth|     for every element, and
        ‖mine − truth‖₂ ≤ K₂·ε·‖truth‖₂ + atol·√n                  for the tensor,

    ε the dtype's machine epsilon (HALF_ROUNDING, HALF_NORM). The first allows each element the
    rounding of the terms it is a difference of; the second keeps that allowance from hiding a
    wrong formula spread over the small elements. With trust_auto (autograd is torch's own
    code), an element close to autograd's (compare's test) passes as it is and is left out of
    the norm: near a kink (|y − real|, a ReLU of a sum) the half type and float64 can take
    different branches, and truth is then the other branch's. The statistics stay mine against
    auto."""
    torch = import_torch()
    base = compare(name, mine, auto, rtol, atol, False)
    f64 = torch.float64
    m = mine.detach().to(f64).reshape(-1)
    t = truth.detach().to(f64).reshape(-1)
    eps = torch.finfo(mine.dtype).eps
    scale = float(t.abs().max()) if t.numel() else 0.0
    error = (m - t).abs()
    within = error <= atol + rtol * t.abs() + HALF_ROUNDING * eps * scale
    judged = torch.ones_like(within)
    if trust_auto:
        close = torch.isclose(m, auto.detach().to(f64).reshape(-1), rtol=rtol, atol=atol)
        within |= close
        judged = ~close
    base.mismatched = base.numel - int(within.sum())
    whole = float(torch.linalg.vector_norm((m - t)[judged]))
    allowed = HALF_NORM * eps * float(torch.linalg.vector_norm(t)) + atol * math.sqrt(
        max(base.numel, 1))
    base.passed = base.mismatched == 0 and whole <= allowed  # NaN: never within
    return base

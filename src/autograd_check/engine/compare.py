"""Manual gradient against autograd's: verdict and mismatch statistics without full-size copies
in the common (bit-exact) case, and with a bounded number of temporaries otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd_check._torch import import_torch
from autograd_check.engine.result import Comparison

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def unravel(flat_index: int, shape: list[int]) -> list[int]:
    index = []
    for dim in reversed(shape):
        flat_index, rest = divmod(flat_index, dim)
        index.append(rest)
    return index[::-1]


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


HALF_ROUNDING = 4.0
"""K in the half-precision criterion (compare_with_truth): measured on correct RMSNorm and
BatchNorm backwards written by hand in bfloat16 and float16 (32x32, 30 seeds each), the manual
gradient's error exceeded autograd's by at most 1.13·ε·‖truth‖∞; with the mean term of
BatchNorm's dx dropped, by at least 10·ε·‖truth‖∞ (bfloat16) and 81·ε·‖truth‖∞ (float16)."""


def compare_with_truth(
    name: str, manual: Tensor, auto: Tensor, truth: Tensor, rtol: float, atol: float
) -> Comparison:
    """Half precision: manual against autograd, judged against truth (the gradient evaluated in
    float64 at the same, rounded, inputs). An element passes when manual is close to autograd
    (compare's test), or when manual's error is within autograd's own plus a few roundings of
    the tensor's scale:

        |manual − truth| ≤ |autograd − truth| + atol + K·ε·‖truth‖∞      (K = HALF_ROUNDING)

    ε the dtype's machine epsilon. Two correct half-precision gradients round differently, and
    a hand-written one rounds where autograd's kernels accumulate in float32: element by element
    they can be far apart where the gradient is a small difference of large terms. The one off
    by more than the other's error plus a few roundings is wrong. The statistics stay manual
    against autograd."""
    torch = import_torch()
    base = compare(name, manual, auto, rtol, atol, False)
    if base.passed:
        return base
    f64 = torch.float64
    m = manual.detach().to(f64).reshape(-1)
    a = auto.detach().to(f64).reshape(-1)
    t = truth.detach().to(f64).reshape(-1)
    eps = torch.finfo(manual.dtype).eps
    scale = float(t.abs().max()) if t.numel() else 0.0
    close = torch.isclose(m, a, rtol=rtol, atol=atol)
    within = (m - t).abs() <= (a - t).abs() + atol + HALF_ROUNDING * eps * scale
    mismatched = base.numel - int((close | within).sum())
    base.mismatched, base.passed = mismatched, mismatched == 0
    return base

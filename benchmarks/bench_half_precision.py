"""The half-precision criterion's bounds, measured (docs/api.md, "Half precision").

For backwards written by hand (examples/traps.py's RMSNorm and BatchNorm; x³), correct and with a
planted bug (BatchNorm's mean term dropped; x³'s gradient zeroed where |x| < 0.5), in bfloat16
and float16, over seeds: the error of the hand-written gradient m against the float64 gradient
t at the same inputs, ε the dtype's machine epsilon,

    element = max over elements of |m − t| / (ε·max|t|)      (criterion: ≤ K  = HALF_ROUNDING)
    norm    = ‖m − t‖₂ / (ε·‖t‖₂)                             (criterion: ≤ K₂ = HALF_NORM)

A correct backward must stay within both on every seed; a planted bug must break one of them on
every seed (the element test alone misses the zeroed small elements in bfloat16).

    python benchmarks/bench_half_precision.py            # 32x32, 30 seeds
    python benchmarks/bench_half_precision.py --size 64 --seeds 100

Exit status 1 when a correct backward breaks the criterion or a bug passes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autograd_check.kernel.compare import HALF_NORM, HALF_ROUNDING

ROOT = Path(__file__).resolve().parents[1]


def _traps() -> Any:
    spec = importlib.util.spec_from_file_location("traps", ROOT / "examples" / "traps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def errors(fn: Callable[..., torch.Tensor], manual: Callable[..., object],
           inputs: list[torch.Tensor], u: torch.Tensor) -> tuple[float, float]:
    """(element, norm) of the module docstring, the larger over the checked tensors."""
    wide = [t.double().requires_grad_() for t in inputs]
    truth = torch.autograd.grad(fn(*wide), wide, u.double())
    given = manual(*inputs, grad_output=u)
    mine = given if isinstance(given, tuple) else (given,)
    eps = torch.finfo(u.dtype).eps
    element = norm = 0.0
    for m, t in zip(mine, truth, strict=True):
        gap = m.double() - t
        element = max(element, float(gap.abs().max()) / (eps * float(t.abs().max())))
        norm = max(norm, float(gap.norm()) / (eps * float(t.norm())))
    return element, norm


def cube(x: torch.Tensor) -> torch.Tensor:
    return x**3


def cube_manual(x: torch.Tensor, grad_output: torch.Tensor, zero_small: bool = False) -> (
        torch.Tensor):
    g = 3 * x * x * grad_output
    return torch.where(x.abs() < 0.5, torch.zeros_like(g), g) if zero_small else g


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=30)
    opts = parser.parse_args()
    traps: Any = _traps()
    rms, batch_norm, batch_norm_manual = traps.RMSNorm, traps.batch_norm, traps.batch_norm_manual
    cases: list[tuple[str, Callable[..., torch.Tensor], Callable[..., object], bool, int]] = [
        ("RMSNorm", rms.fn, rms.manual, True, 2),
        ("BatchNorm", batch_norm, batch_norm_manual, True, 1),
        ("x³", cube, cube_manual, True, 1),
        ("BatchNorm, mean term dropped", batch_norm,
         lambda x, grad_output: batch_norm_manual(x, grad_output, drop_mean=True), False, 1),
        ("x³, zero where |x| < 0.5", cube,
         lambda x, grad_output: cube_manual(x, grad_output, zero_small=True), False, 1),
    ]
    n = opts.size
    print(f"torch {torch.__version__} · {n}x{n} · {opts.seeds} seeds · K = {HALF_ROUNDING:g}, "
          f"K₂ = {HALF_NORM:g}")
    print(f"{'backward':30} {'dtype':9} {'element: max':>12} {'norm: min':>10} {'max':>7}   "
          "verdict")
    ok = True
    for dtype in (torch.bfloat16, torch.float16):
        for name, fn, manual, correct, count in cases:
            seen = []
            for seed in range(opts.seeds):
                gen = torch.Generator().manual_seed(seed)
                inputs = [torch.randn(n, n, generator=gen).to(dtype),
                          torch.randn(n, generator=gen).to(dtype)][:count]
                u = torch.randn(n, n, generator=gen).to(dtype)
                seen.append(errors(fn, manual, inputs, u))
            passes = [e <= HALF_ROUNDING and m <= HALF_NORM for e, m in seen]
            right = all(passes) if correct else not any(passes)
            ok = ok and right
            what = ("passes on every seed" if correct else "fails on every seed") if right \
                else "WRONG on some seed"
            print(f"{name:30} {str(dtype).removeprefix('torch.'):9} "
                  f"{max(e for e, _ in seen):12.2f} {min(m for _, m in seen):10.2f} "
                  f"{max(m for _, m in seen):7.2f}   {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

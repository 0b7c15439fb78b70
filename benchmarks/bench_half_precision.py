"""The half-precision criterion's bound, measured (docs/api.md, "Half precision").

For RMSNorm and BatchNorm backwards written by hand (examples/traps.py's RMSNorm, and the
BatchNorm of tests/test_verdicts.py, with and without its planted bug: the mean term of dx
dropped), in bfloat16 and float16, over seeds: how far the manual gradient's error against the
float64 gradient t exceeds autograd's own, in units of ε·max|t| (ε the dtype's machine epsilon):

    excess = max over elements of (|manual − t| − |autograd − t|) / (ε·max|t|)

The criterion passes an element when its excess is at most K = HALF_ROUNDING (4, plus atol).
A correct backward must stay below K on every seed; the planted bug must stay above it.

    python benchmarks/bench_half_precision.py            # 32x32, 30 seeds
    python benchmarks/bench_half_precision.py --size 64 --seeds 100

Exit status 1 when a correct backward exceeds K or the bug's excess falls below it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from autograd_check.engine.compare import HALF_ROUNDING

ROOT = Path(__file__).resolve().parents[1]


def _traps() -> object:
    spec = importlib.util.spec_from_file_location("traps", ROOT / "examples" / "traps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch_norm(x: torch.Tensor) -> torch.Tensor:
    mu, var = x.mean(0), x.var(0, unbiased=False)
    return (x - mu) / torch.sqrt(var + 1e-5)


def batch_norm_manual(x: torch.Tensor, grad_output: torch.Tensor,
                      drop_mean: bool = False) -> torch.Tensor:
    n = x.shape[0]
    mu, var = x.mean(0), x.var(0, unbiased=False)
    inv = 1 / torch.sqrt(var + 1e-5)
    xh = (x - mu) * inv
    mean_term = 0 if drop_mean else grad_output.sum(0)
    return inv / n * (n * grad_output - mean_term - xh * (grad_output * xh).sum(0))


def excess(fn: Callable[..., torch.Tensor], manual: Callable[..., object],
           inputs: list[torch.Tensor], u: torch.Tensor) -> float:
    """The largest excess over every checked tensor (module docstring)."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    auto = torch.autograd.grad(fn(*leaves), leaves, u)
    given = manual(*inputs, grad_output=u)
    mine = given if isinstance(given, tuple) else (given,)
    wide = [t.double().requires_grad_() for t in inputs]
    truth = torch.autograd.grad(fn(*wide), wide, u.double())
    eps = torch.finfo(u.dtype).eps
    worst = 0.0
    for m, a, t in zip(mine, auto, truth, strict=True):
        over = (m.double() - t).abs() - (a.double() - t).abs()
        worst = max(worst, float(over.max()) / (eps * float(t.abs().max())))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=30)
    opts = parser.parse_args()
    traps = _traps()
    rms = traps.RMSNorm  # type: ignore[attr-defined]
    cases: list[tuple[str, Callable[..., torch.Tensor], Callable[..., object], bool, int]] = [
        ("RMSNorm", rms.fn, rms.manual, True, 2),
        ("BatchNorm", batch_norm, batch_norm_manual, True, 1),
        ("BatchNorm, mean term dropped", batch_norm,
         lambda x, grad_output: batch_norm_manual(x, grad_output, drop_mean=True), False, 1),
    ]
    n = opts.size
    print(f"torch {torch.__version__} · {n}x{n} · {opts.seeds} seeds · K = {HALF_ROUNDING:g}")
    print(f"{'backward':30} {'dtype':10} {'excess: min':>12} {'max':>8}   verdict")
    ok = True
    for dtype in (torch.bfloat16, torch.float16):
        for name, fn, manual, correct, count in cases:
            seen = []
            for seed in range(opts.seeds):
                gen = torch.Generator().manual_seed(seed)
                inputs = [torch.randn(n, n, generator=gen).to(dtype),
                          torch.randn(n, generator=gen).to(dtype)][:count]
                u = torch.randn(n, n, generator=gen).to(dtype)
                seen.append(excess(fn, manual, inputs, u))
            right = max(seen) <= HALF_ROUNDING if correct else min(seen) > HALF_ROUNDING
            ok = ok and right
            what = ("passes on every seed" if correct else "fails on every seed") if right \
                else "WRONG on some seed"
            print(f"{name:30} {str(dtype).removeprefix('torch.'):10} {min(seen):12.2f} "
                  f"{max(seen):8.2f}   {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""How often several wrong elements cancel along projection's random directions: the false PASS
that one direction leaves, and what k directions cost.

One wrong element is caught along every direction once it is past the tolerance (|vᵢ| ≥ 0.5);
several can cancel along a direction by chance (two equal errors, opposite signs in v, and
|vᵢ| close). The directions are independent, so the chance that they cancel along all k is
that of one, to the power k. This measures it through check() itself.

The function is L = Σ x·sin(x) (a custom autograd.Function, scalar output, x standard normal,
float64, 256 x 256), whose backward is right except at a few elements of typical size (|gᵢ| near
the root mean square), each off by ±M·(2·E) with its own random sign, E the tolerance of a
direction for a correct gradient (5.39·(rtol·‖g‖₂ + atol·√n), float64's rtol = atol = 1e-7):
2·E is what one element needs to be caught along every direction, so M is how many times over
each element is wrong. Patterns: 2 and 4 elements at random places, a 2 x 2 block (the shape
of a bug in one corner of a weight gradient), and 16 elements.

For each pattern, M and k (1, 2, 3 directions; direction j is the same in each, so k = 3 is
k = 2 and one more): the share of seeds whose check passed (a false PASS), and then the cost of
a passing check at each k against one forward+backward of fn (median time, same process).

    python benchmarks/bench_cancellation.py                # 400 seeds
    python benchmarks/bench_cancellation.py --seeds 50     # quicker

Exit status 1 when the default (k = 3) misses any pattern at M = 100, or any single element.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from typing import Any

import torch

from autograd_check import check
from autograd_check.base.environment import cpu_name
from autograd_check.references.arguments import DEFAULT_DIRECTIONS
from autograd_check.references.independent import ROUNDING_SPREAD

N = 256
PATTERNS = ["1 element", "2 elements", "4 elements", "2 x 2 block", "16 elements"]
LADDER = [3, 10, 30, 100]
KS = [1, 2, 3]


class Planted(torch.autograd.Function):
    """L = Σ x·sin(x); the backward adds ERRORS·grad_output at INDEX."""

    INDEX: torch.Tensor | None = None
    ERRORS: torch.Tensor | None = None

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x * torch.sin(x)).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        g = (grad_output * (torch.sin(x) + x * torch.cos(x))).contiguous()  # for .view
        if Planted.INDEX is not None and Planted.ERRORS is not None:
            # scaled by grad_output, as a wrong formula is (the contract checks catch an error
            # that is not: that is not the cancellation measured here)
            g.view(-1)[Planted.INDEX] += Planted.ERRORS * grad_output
        return g


def plant(pattern: str, x: torch.Tensor, m: float, gen: torch.Generator) -> None:
    """Errors of size M·2E at the pattern's elements, each with a random sign."""
    g = (torch.sin(x) + x * torch.cos(x)).detach().reshape(-1)
    tolerance = ROUNDING_SPREAD * 1e-7 * (float(torch.linalg.vector_norm(g)) + math.sqrt(g.numel()))
    typical = (g.abs() - g.pow(2).mean().sqrt()).abs().argsort()[:1000]
    if pattern == "2 x 2 block":
        r, c = divmod(int(typical[int(torch.randint(0, 1000, (1,), generator=gen))]), N)
        r, c = min(r, N - 2), min(c, N - 2)
        index = torch.tensor([r * N + c, r * N + c + 1, (r + 1) * N + c, (r + 1) * N + c + 1])
    else:
        count = int(pattern.split()[0])
        index = typical[torch.randperm(1000, generator=gen)[:count]]
    signs = torch.randint(0, 2, (len(index),), generator=gen, dtype=torch.float64) * 2 - 1
    Planted.INDEX, Planted.ERRORS = index, signs * m * 2 * tolerance


def draw(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, N, dtype=torch.float64, generator=gen).requires_grad_()


def false_passes(pattern: str, m: float, seeds: int) -> dict[int, int]:
    """Per k, the seeds whose check passed."""
    missed = dict.fromkeys(KS, 0)
    for seed in range(seeds):
        x = draw(seed)
        plant(pattern, x.detach(), m, torch.Generator().manual_seed(10_000 + seed))
        try:
            for k in KS:
                missed[k] += check(Planted.apply, x, seed=seed, directions=k).passed
        finally:
            Planted.INDEX = Planted.ERRORS = None
    return missed


def median_time(fn: Any, repeats: int = 21) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cost() -> list[str]:
    x = draw(0)

    def bare() -> None:
        Planted.apply(x).backward()
        x.grad = None

    base = median_time(bare)
    rows = [f"| one forward+backward of fn | | {base * 1e3:.2f} ms | 1.0x |"]
    for k in KS:
        result = check(Planted.apply, x, seed=0, directions=k)
        assert result.passed and result.reference is not None
        t = median_time(lambda k=k: check(Planted.apply, x, seed=0, directions=k))
        rows.append(f"| check, k = {k} | {result.reference['evaluations']} | {t * 1e3:.2f} ms | "
                    f"{t / base:.1f}x |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__} · Python {platform.python_version()} · {cpu_name()} · "
          f"torch threads: 1 · {args.seeds} seeds · n = {N}x{N} float64 · default k = "
          f"{DEFAULT_DIRECTIONS}\n")
    print("false PASS: seeds whose check passed a backward wrong at the pattern's elements, each "
          "by M times what one element needs to be caught\n")
    print("| pattern | M | k = 1 | k = 2 | k = 3 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    bad = []
    for pattern in PATTERNS:
        for m in LADDER:
            missed = false_passes(pattern, m, args.seeds)
            cells = " | ".join(f"{missed[k]}/{args.seeds}" for k in KS)
            print(f"| {pattern} | {m} | {cells} |", flush=True)
            if missed[DEFAULT_DIRECTIONS] and (m == 100 or pattern == "1 element"):
                bad.append(f"{pattern} at M = {m}")
    print("\ncost of a passing check (median of 21, same process)\n")
    print("| | evaluations of fn | time | against one forward+backward |")
    print("| --- | ---: | ---: | ---: |")
    for row in cost():
        print(row)
    if bad:
        print(f"\nthe default k = {DEFAULT_DIRECTIONS} missed: {', '.join(bad)}")
        return 1
    print(f"\ndefault k = {DEFAULT_DIRECTIONS}: every single element caught, and no pattern "
          "missed at M = 100: met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

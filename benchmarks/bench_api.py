"""The Python API's references side by side with torch.autograd.gradcheck, in the same process.

1. projection on the tutorial loss, L = Σ (predicted − real)², float64, 4096x4096 by default:
   check(loss, predicted, real) (reference='projection': one autograd gradient, then 2k
   evaluations of L along k random directions) against one forward and backward of the same
   loss (a fresh leaf, loss.backward()), and against gradcheck(fast_mode=True), which looks
   along one direction. Targets (issue 11), held at k = 1, gradcheck's one direction: at most 3x
   the forward and backward, and at most gradcheck's fast mode. The default k = 3 (several wrong
   elements cancel along all three only by chance: docs/api.md) costs 2 evaluations of L and one
   draw of n random numbers per direction more; it is reported beside them, not held to them.
2. finite-diff at 128x128 float64: check(..., reference='finite-diff') against gradcheck (slow
   mode), both from a fresh leaf to a verdict. Reported, not held to a target here
   (benchmarks/bench_finite_diff.py is where that figure is worked on).
3. The catch rate of the planted bug (examples/function_buggy.py, Swish with a wrong backward)
   over 100 seeds, for projection and forward: the seed draws the 4x5 input and the check's own
   directions and cotangent. A rate, not a timing.

Runs are interleaved (the order rotating) so that a noisy neighbour slows each alike; medians.

    python benchmarks/bench_api.py                 # 4096x4096, 5 runs; 128x128, 3 runs
    python benchmarks/bench_api.py --size 2048 --runs 9 --seeds 100

Exit status 1 when projection misses either target or a planted bug slips through.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from autograd_check import check
from autograd_check.base.environment import cpu_name
from autograd_check.references.arguments import DEFAULT_DIRECTIONS

ROOT = Path(__file__).resolve().parents[1]


def loss(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return ((predicted - real) ** 2).sum()


def tensors(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's draws: real, then predicted, torch.rand, here in float64."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(n, n, generator=gen, dtype=torch.float64)
    predicted = torch.rand(n, n, generator=gen, dtype=torch.float64).requires_grad_()
    return real, predicted


def medians(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(runs):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def projection_figures(n: int, runs: int) -> tuple[dict[str, float], bool]:
    real, predicted = tensors(n)

    def forward_backward() -> None:
        leaf = predicted.detach().requires_grad_()
        loss(leaf, real).backward()

    def projection() -> None:
        assert check(loss, predicted, real, directions=1).passed

    def projection_default() -> None:
        assert check(loss, predicted, real).passed

    def gradcheck_fast() -> None:
        assert torch.autograd.gradcheck(loss, (predicted, real), fast_mode=True)

    cases = {"forward+backward": forward_backward, "projection, k = 1": projection,
             "gradcheck(fast_mode=True)": gradcheck_fast,
             f"projection, k = {DEFAULT_DIRECTIONS} (default)": projection_default}
    forward_backward()  # warm: the first call pays for page faults and lazy set-up
    projection()
    t = medians(cases, runs)
    ok = t["projection, k = 1"] <= 3 * t["forward+backward"] and t["projection, k = 1"] <= t[
        "gradcheck(fast_mode=True)"]
    return t, ok


def finite_diff_figures(n: int, runs: int) -> dict[str, float]:
    real, predicted = tensors(n)

    def finite_diff() -> None:
        assert check(loss, predicted, real, reference="finite-diff").passed

    def gradcheck_slow() -> None:
        assert torch.autograd.gradcheck(loss, (predicted, real))

    return medians({"finite-diff": finite_diff, "gradcheck": gradcheck_slow}, runs)


def catch_rates(seeds: int) -> dict[str, int]:
    spec = importlib.util.spec_from_file_location("function_buggy",
                                                  ROOT / "examples" / "function_buggy.py")
    assert spec is not None and spec.loader is not None
    buggy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(buggy)
    caught = {"projection": 0, "forward": 0}
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
        for reference in caught:
            if not check(buggy.Swish.apply, x, reference=reference, seed=seed).passed:
                caught[reference] += 1
    return caught


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="projection: N for NxN")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fd-size", type=int, default=128, help="finite-diff: N for NxN")
    parser.add_argument("--fd-runs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=100)
    a = parser.parse_args()
    print(f"torch {torch.__version__} · Python {platform.python_version()} · {cpu_name()} · "
          f"{torch.get_num_threads()} threads")

    t, ok = projection_figures(a.size, a.runs)
    fb = t["forward+backward"]
    print(f"\nprojection, tutorial loss {a.size}x{a.size} float64, median of {a.runs}:")
    for name, value in t.items():
        print(f"  {name:<30} {value:7.3f} s   {value / fb:5.2f}x forward+backward")
    print(f"  projection, k = 1 / gradcheck(fast_mode=True): "
          f"{t['projection, k = 1'] / t['gradcheck(fast_mode=True)']:.2f}   "
          f"targets at k = 1: ≤ 3x forward+backward, ≤ 1x gradcheck fast: "
          f"{'met' if ok else 'MISSED'}")

    f = finite_diff_figures(a.fd_size, a.fd_runs)
    print(f"\nfinite-diff, tutorial loss {a.fd_size}x{a.fd_size} float64, median of {a.fd_runs}:")
    for name, value in f.items():
        print(f"  {name:<26} {value:7.3f} s")
    print(f"  finite-diff / gradcheck: {f['finite-diff'] / f['gradcheck']:.2f}")

    caught = catch_rates(a.seeds)
    print(f"\nplanted bug (examples/function_buggy.py) caught over {a.seeds} seeds:")
    for reference, count in caught.items():
        print(f"  {reference:<12} {count}/{a.seeds}")
    all_caught = all(count == a.seeds for count in caught.values())
    return 0 if ok and all_caught else 1


if __name__ == "__main__":
    sys.exit(main())

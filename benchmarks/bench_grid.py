"""How long a sweep's grid takes to build from a large --seeds range (issue 10, item 9).

The duplicate check of an axis once scanned a list for every value: quadratic, seconds for 40,000
seeds and minutes for 0-999998. It is a dict now; the time per seed should stay flat as the range
grows (each seed is still validated once, which is what is left of the cost).

    python benchmarks/bench_grid.py                  # 10,000 to 200,000 seeds
    python benchmarks/bench_grid.py --seeds 999999   # one size
"""

from __future__ import annotations

import argparse
import time

from autograd_check.sweep.grid import build_grid


def seconds(count: int) -> float:
    start = time.perf_counter()
    grid = build_grid({"seeds": f"0-{count - 1},0-{count - 1}"})  # every seed given twice
    elapsed = time.perf_counter() - start
    assert len(grid.seeds) == count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    args = parser.parse_args()
    print(f"{'seeds':>9}  {'seconds':>8}  {'us/seed':>8}")
    for count in args.seeds:
        took = seconds(count)
        print(f"{count:>9}  {took:>8.2f}  {took / count * 1e6:>8.1f}")


if __name__ == "__main__":
    main()

"""How often a failed check names its bug right: each planted bug of examples/planted_bugs.py
over many seeds (each seed draws new shapes and values), and the correct implementations there.

For each bug and seed, the check's diagnosis is

    named      a finding of the bug's declared kind, on its tensor, with its factor and phrases
    unknown    no finding of the declared kind, and no other confident one (`unknown` claims
               nothing: it is honest, but it names nothing)
    wrong      a confident finding of another kind: a wrong claim, which must never happen

and for correct code, any failed check or any finding is a false claim (there must be none).
The baseline beside it is what the verdict said before a diagnosis existed: that a gradient is
wrong, and which elements differ most, naming no kind (0 named, 0 wrong).

    python benchmarks/bench_diagnose.py                 # 100 seeds per bug and per correct case
    python benchmarks/bench_diagnose.py --seeds 10 --only softmax_wrong_axis

Exit status 1 on any wrong claim or false claim, or when a bug is named on fewer than every seed.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]


def library() -> ModuleType:
    """examples/planted_bugs.py, imported by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("planted_bugs", ROOT / "examples" /
                                                  "planted_bugs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100, help="seeds per bug (0, 1, ...)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="only this bug or correct case (repeatable)")
    args = ap.parse_args(argv)
    lib = library()
    bugs = [b for b in lib.BUGS.values() if not args.only or b.name in args.only]
    correct = {n: m for n, m in lib.CORRECT.items() if not args.only or n in args.only}
    seeds = range(args.seeds)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {args.seeds} seeds "
          "per case, float64")
    print()
    start = time.perf_counter()
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # named, unknown, wrong, n
    failures = 0
    print(f"{'kind':20} {'bug':28} {'named':>7} {'unknown':>8} {'wrong':>6}  first wrong claim")
    for b in bugs:
        named = unknown = wrong = 0
        first = ""
        for seed in seeds:
            verdict = lib.judge(b, seed)
            named += verdict.named
            wrong += bool(verdict.wrong)
            unknown += not verdict.named and not verdict.wrong
            if verdict.wrong and not first:
                first = f"seed {seed}: {', '.join(verdict.wrong)}"
            elif not verdict.named and not first:
                first = f"(seed {seed} not named: {', '.join(verdict.kinds) or 'no finding'})"
        counts = by_kind[b.kind]
        for i, v in enumerate((named, unknown, wrong, len(seeds))):
            counts[i] += v
        failures += wrong + (len(seeds) - named)
        print(f"{b.kind:20} {b.name:28} {named:>7} {unknown:>8} {wrong:>6}  {first}")
    print()
    print(f"{'kind':20} {'named right':>12} {'unknown':>8} {'wrong claims':>13} "
          f"{'baseline (no diagnosis)':>24}")
    for kind, (named, unknown, wrong, n) in by_kind.items():
        print(f"{kind:20} {named / n:>11.0%} {unknown:>8} {wrong:>13} {'0% named, 0 wrong':>24}")
    total = [sum(c[i] for c in by_kind.values()) for i in range(4)]
    if total[3]:
        print(f"{'all bugs':20} {total[0] / total[3]:>11.0%} {total[1]:>8} {total[2]:>13}   "
              f"({total[3]} checks)")
    print()
    claims = 0
    for name, make in correct.items():
        found = [c for seed in seeds for c in lib.false_claims(make, seed)]
        claims += len(found)
        print(f"correct  {name:28} {len(seeds):>4} checks, {len(found)} false claim(s)"
              + (f": {found[:3]}" if found else ""))
    print()
    print(f"{total[3] + len(correct) * len(seeds)} checks in "
          f"{time.perf_counter() - start:.0f} s; {total[2]} wrong claim(s), {claims} false "
          "claim(s) on correct code")
    return 1 if failures or claims else 0


if __name__ == "__main__":
    sys.exit(main())

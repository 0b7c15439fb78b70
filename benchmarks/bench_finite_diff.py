"""--reference finite-diff side by side with torch.autograd.gradcheck, in the same process.

Both check the same loss at the same float64 input (the check's own draws for the seed): gradcheck
builds the full Jacobian of the scalar loss w.r.t. predicted, numerically (two evaluations per
element, one at a time) and analytically (backward), and compares them with eps=1e-6, atol=1e-5,
rtol=1e-3; ours computes autograd's gradient, then the same central differences in batches with
torch.func.vmap, and compares them with the same test. Timed: everything each needs from a fresh
leaf to a verdict. The two are interleaved run by run (their order alternating) so that a noisy
neighbour slows both alike, and medians are reported.

The verdicts are compared twice: on the loss as it is (both must pass), and on the same loss with
a planted backward bug (a custom autograd.Function whose backward is off by 100·atol + 1% on one
element; both must fail).

    python benchmarks/bench_finite_diff.py                  # 64x64 and 128x128, 5 runs each
    python benchmarks/bench_finite_diff.py --runs 9 --loss huber
    python benchmarks/bench_finite_diff.py --threads 1      # torch.set_num_threads(1) for both

Exit status 1 when ours takes more than --max-ratio (0.5) of gradcheck's median wall time, or
when a verdict differs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from autograd_check.base.spec import build_spec
from autograd_check.checks.draw import draw
from autograd_check.losses.builtin import LOSS_NAMES, get_loss
from autograd_check.references.finite_diff import FD_ATOL, FD_RTOL, FD_STEP, plain_finite_diff

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def planted(loss: LossFn) -> LossFn:
    """The same loss, with a backward off by 100·atol + 1% on element 0 (whatever the scale of the
    gradient, e.g. cross-entropy's mean over samples): what both checks must catch."""

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(p, r)
            return loss(p, r).detach()

        @staticmethod
        def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
            p, r = ctx.saved_tensors
            with torch.enable_grad():
                leaf = p.detach().requires_grad_()
                (g,) = torch.autograd.grad(loss(leaf, r), leaf)
            g = g * grad_out
            first = g.view(-1)[:1]
            first += 100 * FD_ATOL + 0.01 * first.abs()
            return g, None

    def wrong(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = Wrong.apply(p, r)  # type: ignore[no-untyped-call]
        return out

    return wrong


def with_gradcheck(loss: LossFn, predicted: torch.Tensor, real: torch.Tensor) -> bool:
    leaf = predicted.detach().clone().requires_grad_()
    return bool(
        torch.autograd.gradcheck(
            lambda p: loss(p, real), (leaf,), eps=FD_STEP, atol=FD_ATOL, rtol=FD_RTOL,
            raise_exception=False,
        )
    )


def with_ours(loss: LossFn, predicted: torch.Tensor, real: torch.Tensor, spec: Any) -> bool:
    leaf = predicted.detach().clone().requires_grad_()
    loss(leaf, real).backward()  # type: ignore[no-untyped-call]
    assert leaf.grad is not None
    plain = get_loss(spec.loss)
    # The loss under test is evaluated as given (it may carry the planted backward); the
    # finite differences only ever evaluate its forward.
    subject = type(plain)(**{**vars(plain), "forward": loss})
    outcome = plain_finite_diff(spec, subject, leaf.detach(), real, {"autograd": leaf.grad})
    return all(c.passed for c in outcome.comparisons)


@dataclass
class Row:
    shape: str
    elements: int
    gradcheck: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    verdicts: dict[str, tuple[bool, bool]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.gradcheck)


def measure(shape: str, loss_name: str, runs: int) -> Row:
    spec = build_spec({"shape": shape, "dtype": "float64", "loss": loss_name,
                       "reference": "finite-diff"})
    loss_def = get_loss(spec.loss)
    real, predicted = draw(spec, torch.device("cpu"), loss_def)
    row = Row(shape, spec.numel)
    correct, wrong = loss_def.forward, planted(loss_def.forward)
    row.verdicts["correct"] = (with_gradcheck(correct, predicted, real),
                               with_ours(correct, predicted, real, spec))
    row.verdicts["planted bug"] = (with_gradcheck(wrong, predicted, real),
                                   with_ours(wrong, predicted, real, spec))
    for i in range(runs):
        order = [("gradcheck", row.gradcheck), ("ours", row.ours)]
        for name, walls in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            if name == "gradcheck":
                with_gradcheck(correct, predicted, real)
            else:
                with_ours(correct, predicted, real, spec)
            walls.append(time.perf_counter() - start)
        print(f"  {shape} run {i + 1}/{runs}: gradcheck {row.gradcheck[-1]:.3f} s, "
              f"ours {row.ours[-1]:.3f} s", file=sys.stderr, flush=True)
    return row


def verdict_text(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="64x64,128x128")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loss", default="mse-sum", choices=LOSS_NAMES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-ratio", type=float, default=0.5)
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (medians of fewer runs are noise)")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [measure(shape, args.loss, args.runs) for shape in args.shapes.split(",")]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, loss {args.loss}, "
          f"float64, median of {args.runs} runs each\n")
    print("| shape | elements | gradcheck (s) | finite-diff (s) | ratio | verdicts: correct "
          "(gradcheck / ours) | planted bug (gradcheck / ours) |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    ok = True
    for row in rows:
        same = all(a == b for a, b in row.verdicts.values())
        expected = row.verdicts["correct"] == (True, True) and row.verdicts["planted bug"] == (
            False, False)
        ok = ok and same and expected and row.ratio <= args.max_ratio
        print(f"| {row.shape} | {row.elements} | {statistics.median(row.gradcheck):.3f} | "
              f"{statistics.median(row.ours):.3f} | {row.ratio:.2f}x | "
              + " | ".join(" / ".join(verdict_text(v) for v in row.verdicts[k])
                           for k in ("correct", "planted bug")) + " |")
    print(f"\nrequirement: ratio ≤ {args.max_ratio} and the same verdicts: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""--deterministic and --repeat N: is the autograd gradient the same, bit for bit, every time?

`--deterministic` turns on, for the duration of one check and restored afterwards:
- torch.use_deterministic_algorithms(True): ops with a nondeterministic kernel (CUDA atomics in
  index_add, scatter_add, some backward passes) use a deterministic one, or raise;
- torch.backends.cudnn.deterministic = True and torch.backends.cudnn.benchmark = False (cuDNN
  would otherwise pick its algorithm by timing, which can differ from run to run);
- CUBLAS_WORKSPACE_CONFIG=:4096:8 (what cuBLAS needs for reproducible results since CUDA 10.2).
  cuBLAS reads it when it sets up its workspace, so it is set before this process first uses
  CUDA, and left set afterwards (cuBLAS has read it by then).

`--repeat N` computes the autograd gradient N times on the same inputs, each time through a fresh
graph (new leaf, new forward, new backward), and compares the runs bitwise (as integers, so that
identical NaNs count as identical). When they differ it reports the greatest spread
max − min over the runs, with its index. On a CPU the answer is almost always "identical"; on a
GPU, float atomics make some backward passes vary from run to run unless --deterministic.
A spread counts in the verdict (exit 1) only when --deterministic promised there would be none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.lazy_torch import import_torch
from autograd_check.kernel.compare import unravel, work_dtype
from autograd_check.losses.user import backward

if TYPE_CHECKING:
    from torch import Tensor

    from autograd_check.losses.base import Loss

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")
"""The two settings torch accepts for deterministic cuBLAS; the first is the one set."""


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[list[str]]:
    """Deterministic algorithms while the block runs (module docstring); yields notes for the
    result. A kernel with no deterministic implementation is EnvironmentProblem (exit 3)."""
    notes: list[str] = []
    if not enabled:
        yield notes
        return
    if os.environ.get(CUBLAS_VARIABLE) not in CUBLAS_DETERMINISTIC:
        previous = os.environ.get(CUBLAS_VARIABLE)
        os.environ[CUBLAS_VARIABLE] = CUBLAS_DETERMINISTIC[0]
        if previous is not None:
            notes.append(
                f"--deterministic: {CUBLAS_VARIABLE} was {previous!r}, not deterministic; "
                f"set to {CUBLAS_DETERMINISTIC[0]!r}"
            )
    torch = import_torch()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        notes.append(
            f"--deterministic: CUDA was already initialised in this process, so cuBLAS may have "
            f"set up its workspace before {CUBLAS_VARIABLE} was set; export "
            f"{CUBLAS_VARIABLE}={CUBLAS_DETERMINISTIC[0]} before starting to be sure"
        )
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield notes
    except RuntimeError as e:
        if "deterministic" not in str(e):
            raise
        first = str(e).strip().splitlines()[0]
        raise EnvironmentProblem(
            f"--deterministic: this torch build has no deterministic implementation of an "
            f"operation the check needs: {first}"
        ) from None
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def bits(t: Tensor) -> Tensor:
    """The tensor's bits as integers of its width: equal bits ⇔ equal integers, NaNs included."""
    torch = import_torch()
    if not t.is_floating_point():
        return t
    width = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()]
    return t.detach().contiguous().view(width)


def bitwise_equal(a: Tensor, b: Tensor) -> bool:
    torch = import_torch()
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(bits(a), bits(b)))


def repeat_gradients(
    first: Mapping[str, Tensor],
    rerun: Callable[[], Mapping[str, Tensor]],
    runs: int,
    *,
    in_verdict: bool,
) -> dict[str, Any]:
    """Run 1 is `first`; rerun() makes runs 2..N on fresh graphs. The `repeat` block of the result.

    Full-size running min and max tensors are only made for a tensor once a run differs from run
    1, so the usual identical case costs one gradient's memory, not three.
    """
    torch = import_torch()
    identical = 1
    low: dict[str, Tensor] = {}
    high: dict[str, Tensor] = {}
    for _ in range(1, runs):
        grads = rerun()
        same = True
        for name, reference in first.items():
            g = grads[name]
            if bitwise_equal(g, reference):
                continue
            same = False
            work = work_dtype(reference.dtype)
            if name not in low:
                low[name] = reference.detach().to(work, copy=True)
                high[name] = reference.detach().to(work, copy=True)
            g = g.detach().to(work)
            torch.minimum(low[name], g, out=low[name])
            torch.maximum(high[name], g, out=high[name])
        identical += same
        del grads
    block: dict[str, Any] = {
        "runs": runs,
        "bitwise_identical": identical == runs,
        "identical_runs": identical,
        "varying_elements": 0,
        "max_spread": 0.0,
        "max_spread_tensor": None,
        "max_spread_index": None,
        "in_verdict": in_verdict,
    }
    for name in low:
        spread = high[name].sub_(low[name]).reshape(-1)
        # NaN in one run and a number in another: the spread is NaN, and counts as the greatest.
        spread.nan_to_num_(nan=float("inf"))
        block["varying_elements"] += int((spread != 0).sum())
        i = int(torch.argmax(spread))
        value = float(spread[i])
        if value > block["max_spread"] or block["max_spread_tensor"] is None:
            block["max_spread"] = value
            block["max_spread_tensor"] = name
            block["max_spread_index"] = unravel(i, list(first[name].shape))
    return block


def plain_rerun(
    loss_def: Loss, predicted: Tensor, real: Tensor
) -> Callable[[], dict[str, Tensor]]:
    """Another autograd gradient of the loss at the same point: a new leaf sharing predicted's
    values (no copy), a new forward, a new backward."""

    def rerun() -> dict[str, Tensor]:
        leaf = predicted.detach().requires_grad_()
        backward(loss_def, loss_def.forward(leaf, real))
        assert leaf.grad is not None  # a leaf that requires grad, after backward()
        return {"predicted": leaf.grad}

    return rerun


def repeat_passed(block: Mapping[str, Any] | None) -> bool:
    """False only when --deterministic promised identical runs and they were not."""
    return block is None or not block["in_verdict"] or bool(block["bitwise_identical"])

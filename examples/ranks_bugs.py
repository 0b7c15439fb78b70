"""Planted bugs of data-parallel training, for a check over ranks to catch: each class is the
network of examples/ranks_correct.py (Linear → tanh → Linear, a batch of 8, a mean squared error)
with one mistake that real training code makes. None of them raises: training would run on, with
gradients that are not the full batch's.

    autograd-check run --target examples/ranks_bugs.py:UnusedParameter --ranks 2
    autograd-check run --target examples/ranks_bugs.py:NoSyncOnLast --ranks 2 --accumulate 2
    autograd-check run --target examples/ranks_bugs.py:NoSyncEverywhere --ranks 2 --accumulate 2
    autograd-check run --target examples/ranks_bugs.py:UnscaledAccumulation --ranks 2 \\
        --accumulate 2
    autograd-check run --target examples/ranks_bugs.py:SumLossAsMean --ranks 2
    autograd-check run --target examples/ranks_bugs.py:MeanLossAsSum --ranks 2
    autograd-check run --target examples/ranks_bugs.py:RankSeededInit --ranks 2 --parallel fsdp

What each gives: exit 1, FAIL, and in the result a likely cause (JSON: distributed.cause):

- UnusedParameter: a layer that forward never uses, under DDP without find_unused_parameters. The
  first step raises nothing, but DDP's bucket waits for that parameter's gradient and is never
  reduced: each rank keeps its own shard's gradient, the ranks disagree ("the ranks hold
  different gradients: they were not synchronised, for skip.weight, skip.bias took no part in
  forward ..."). UnusedParameterFound, with ddp_options = {"find_unused_parameters": True},
  passes. (FSDP needs no such option: it passes there.)
- NoSyncOnLast: no_sync() around the last micro-batch instead of the others: that micro-batch's
  gradient is never averaged, the ranks disagree ("... some were not synchronised"). Under FSDP
  the gradients stay unreduced ("the gradients were not synchronised: the last backward ran with
  gradient sync off").
- NoSyncEverywhere: no_sync() around every micro-batch: nothing is averaged; as NoSyncOnLast.
- UnscaledAccumulation: the mean loss of each of the K micro-batches is not divided by K:
  "Kx the reference: the accumulated loss is not divided by the K micro-batches (unscaled
  accumulation)" (needs --accumulate 2 or more; with K = 1 it is correct).
- SumLossAsMean: a loss that sums over the batch, with the reduction left at "mean": DDP and
  FSDP average over the W ranks, "1/W of the reference: the loss sums over the batch but is
  checked as a mean" (1/(W·K) with --accumulate K: the default step divides a mean loss by K).
- MeanLossAsSum: the converse, a mean loss declared reduction = "sum": "Wx the reference: the
  loss averages over the batch but is declared a sum" (W·K x with --accumulate K).
- RankSeededInit: each rank seeds its initialisation with its own rank. Under DDP this is
  invisible (DDP broadcasts rank 0's parameters when it wraps the model): PASS, with a note. Under
  FSDP each rank keeps its own shard of its own parameters, a model no rank built: FAIL ("the ranks
  started from different parameters, so FSDP sharded a model no rank holds").
"""

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from ranks_correct import FEATURES_IN, FEATURES_OUT, TwoLayer  # the file beside this one
from torch import nn

Batch = tuple[torch.Tensor, ...]


class _Net(TwoLayer):
    """The correct network of examples/ranks_correct.py; each bug below changes one thing."""


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Skip the gradient all-reduce: DDP's no_sync(), FSDP2's set_requires_gradient_sync(False)."""
    if hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


class UnusedParameter(_Net):
    """A skip connection defined but never used in forward (and no find_unused_parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.skip = nn.Linear(FEATURES_IN, FEATURES_OUT)  # the bug: forward never calls it


class UnusedParameterFound(UnusedParameter):
    """The fix of UnusedParameter: DDP told to look for parameters that get no gradient."""

    ddp_options = {"find_unused_parameters": True}


class NoSyncOnLast(_Net):
    """Gradient accumulation with no_sync() on the wrong micro-batch: the last one."""

    def train_step(self, model: nn.Module, micro_batches: list[Batch]) -> None:
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            # the bug: the condition is inverted (it should skip the sync on all but the last)
            context = no_sync(model) if i == k - 1 else contextlib.nullcontext()
            with context:
                (self.loss(model(*micro), *micro) / k).backward()


class NoSyncEverywhere(_Net):
    """Gradient accumulation with no_sync() around every micro-batch: nothing is averaged."""

    def train_step(self, model: nn.Module, micro_batches: list[Batch]) -> None:
        k = len(micro_batches)
        for micro in micro_batches:
            with no_sync(model):  # the bug: the last micro-batch must synchronise
                (self.loss(model(*micro), *micro) / k).backward()


class UnscaledAccumulation(_Net):
    """Gradient accumulation that adds up the micro-batches' mean losses without dividing by K."""

    def train_step(self, model: nn.Module, micro_batches: list[Batch]) -> None:
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            context = contextlib.nullcontext() if i == k - 1 else no_sync(model)
            with context:
                self.loss(model(*micro), *micro).backward()  # the bug: should be loss / k


class SumLossAsMean(_Net):
    """A loss summed over the batch, with reduction left at its default, "mean"."""

    def loss(self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """loss = Σ (prediction − y)²  (a sum over the batch)"""
        return (output - y).square().sum()  # the bug: reduction = "sum" is not declared


class MeanLossAsSum(_Net):
    """A mean loss declared to sum over the batch."""

    reduction = "sum"  # the bug: loss() is a mean


class RankSeededInit(_Net):
    """The initialisation seeded with the rank (the module is built after init_process_group)."""

    def __init__(self) -> None:
        if dist.is_available() and dist.is_initialized():
            torch.manual_seed(dist.get_rank())  # the bug: every rank builds its own model
        super().__init__()

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
    autograd-check run --target examples/ranks_bugs.py:SumLossAveragedTwice --ranks 2
    autograd-check run --target examples/ranks_bugs.py:PerRankTokenMean --ranks 2

What each gives: exit 1, FAIL, and in the result its likely cause: a finding as single-process
checks give them (JSON: "diagnosis", each with tensor, kind, text, factor, elements; the kinds in
src/autograd_check/distributed/causes.py), the one that must be named in brackets:

- UnusedParameter [unused-parameter]: a layer that forward never uses, under DDP without
  find_unused_parameters. The first step raises nothing, but DDP's bucket waits for that
  parameter's gradient and is never reduced: each rank keeps its own shard's gradient, the ranks
  disagree ("the ranks hold different gradients: they were not synchronised, for skip.weight,
  skip.bias took no part in forward ..."). UnusedParameterFound, with ddp_options =
  {"find_unused_parameters": True}, passes. (FSDP needs no such option: it passes there.)
- NoSyncOnLast [unsynced]: no_sync() around the last micro-batch instead of the others: that
  micro-batch's gradient is never averaged, the ranks disagree ("... some were not
  synchronised"). Under FSDP the gradients stay unreduced ("the gradients were not synchronised:
  the last backward ran with gradient sync off").
- NoSyncEverywhere [unsynced]: no_sync() around every micro-batch: nothing is averaged; as
  NoSyncOnLast.
- UnscaledAccumulation [scale, factor K]: the mean loss of each of the K micro-batches is not
  divided by K: "every gradient is 2 (= K, K = 2 micro-batches) times the reference: the
  accumulated loss is not divided by the 2 micro-batches (unscaled accumulation)" (needs
  --accumulate 2 or more; with K = 1 it is correct).
- SumLossAsMean [scale, factor 1/N]: a loss that sums over the batch, with the reduction left at
  "mean": DDP and FSDP average over the N ranks, "every gradient is 1/2 (= 1/N, N = 2 ranks) times
  the reference: the loss sums over the batch but is checked as a mean" (1/(N·K) with
  --accumulate K: the default step divides a mean loss by K).
- MeanLossAsSum [scale, factor N]: the converse, a mean loss declared reduction = "sum": "every
  gradient is 2 (= N, N = 2 ranks) times the reference: the loss averages over the batch but is
  declared a sum" (N·K with --accumulate K).
- SumLossAveragedTwice [scale, factor 1/N]: a sum loss (declared so) that train_step divides by
  the world size, as if DDP summed the ranks' gradients: DDP averages them too, "every gradient
  is 1/2 (= 1/N, N = 2 ranks) times the reference: the loss is divided by the world size ...:
  averaged twice across ranks".
- PerRankTokenMean [rank-mean]: a per-token cross-entropy with ignore_index padding, each rank
  averaging over its own tokens (rank 0 holds 23 of the 30 tokens, rank 1 7): DDP averages the
  ranks' means, which is not the mean over all 30 tokens. "each rank's loss is a mean over its
  own tokens, not over the global batch's (rank 0 has 23, rank 1 has 7 tokens ...): ... sum the
  loss over the tokens (reduction='sum') and divide by the global token count". Its fix,
  PerRankTokenMeanFixed, does that, and passes (with --accumulate K too).
- RankSeededInit [init-differs, under FSDP]: each rank seeds its initialisation with its own
  rank. Under DDP this is invisible (DDP broadcasts rank 0's parameters when it wraps the model):
  PASS, with a note. Under FSDP each rank keeps its own shard of its own parameters, a model no
  rank built: FAIL ("the ranks started from different parameters, so FSDP sharded a model no rank
  holds").
"""

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from ranks_correct import FEATURES_IN, FEATURES_OUT, TwoLayer  # the file beside this one
from torch import nn
from torch.nn import functional

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


class SumLossAveragedTwice(_Net):
    """A sum loss divided by the world size in train_step, as if DDP summed the ranks' gradients."""

    reduction = "sum"

    def loss(self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """loss = Σ (prediction − y)²  (a sum over the batch)"""
        return (output - y).square().sum()

    def train_step(self, model: nn.Module, micro_batches: list[Batch]) -> None:
        world = dist.get_world_size()
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            context = contextlib.nullcontext() if i == k - 1 else no_sync(model)
            with context:
                # the bug: DDP averages the ranks' gradients already; this averages them again
                (self.loss(model(*micro), *micro) / world).backward()


IGNORE_INDEX = -100
"""cross_entropy's default: the label of a padding token, which the loss leaves out."""
VOCABULARY = 5
LENGTHS = (6, 6, 6, 5, 2, 1, 3, 1)
"""Each sequence's real tokens (of 6): rank 0 of 2 holds 23 of them, rank 1 7."""


class _Tagger(nn.Module):
    """Tags each token of a padded batch of sequences (8 x 6 tokens, 6 features each) with one
    of 5 labels; a padding token's label is IGNORE_INDEX."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(FEATURES_IN, VOCABULARY)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def inputs(self, generator: torch.Generator, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(len(LENGTHS), max(LENGTHS), FEATURES_IN, generator=generator,
                        dtype=dtype, device=device)
        labels = torch.randint(0, VOCABULARY, (len(LENGTHS), max(LENGTHS)),
                               generator=generator, device=device)
        for row, length in enumerate(LENGTHS):
            labels[row, length:] = IGNORE_INDEX
        return x, labels

    def token_loss(self, output: torch.Tensor, labels: torch.Tensor,
                   reduction: str = "mean") -> torch.Tensor:
        return functional.cross_entropy(output.reshape(-1, VOCABULARY), labels.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction=reduction)

    def loss(self, output: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """loss = mean over the real tokens of the cross-entropy (padding left out)"""
        return self.token_loss(output, labels)


class PerRankTokenMean(_Tagger):
    """The default train step on a per-token mean: each rank averages over its own tokens."""


class PerRankTokenMeanFixed(_Tagger):
    """The fix: each rank sums its tokens' losses and divides by the global token count."""

    def train_step(self, model: nn.Module, micro_batches: list[Batch]) -> None:
        count = sum(int((labels != IGNORE_INDEX).sum()) for _, labels in micro_batches)
        total = torch.tensor([count], dtype=torch.int64)
        dist.all_reduce(total)  # the tokens of every rank (on the CPU: gloo)
        # DDP averages over the ranks: times the world size, each token weighs 1 / total
        scale = dist.get_world_size() / int(total)
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            context = contextlib.nullcontext() if i == k - 1 else no_sync(model)
            with context:
                (self.token_loss(model(*micro), micro[1], "sum") * scale).backward()

"""distributed/causes.py on gradients made here (no ranks started): the factor named as the
ranks' or micro-batches' count, the per-rank token counts, and no claim that does not hold (the
planted bugs over real ranks: tests/test_ranks.py)."""

from __future__ import annotations

from typing import Any

import torch

from autograd_check.distributed.causes import ranks_findings, token_counts

F64 = torch.float64
NAMES = ["fc.weight", "fc.bias"]


def _expected() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)]


def _findings(grads: list[torch.Tensor], expected: list[torch.Tensor], **given: Any) -> list[Any]:
    facts: dict[str, Any] = {
        "world": 2, "k": 1, "reduction": "mean", "parallel": "ddp", "rtol": 1e-7, "atol": 1e-7,
        "exact": False, "start_agree": True, "unreduced": False, "ranks_agree": True,
        "unused": [], "find_unused": False, "hints": []}
    facts.update(given)
    return ranks_findings(NAMES, grads, expected, [True, True], **facts)


def test_a_sum_loss_averaged_twice_is_one_over_the_ranks() -> None:
    expected = _expected()
    [finding] = _findings([e / 4 for e in expected], expected, world=4, reduction="sum")
    assert finding.kind == "scale" and finding.factor == 0.25
    assert finding.tensor == "every parameter"
    assert finding.text.startswith("every gradient is 1/4 (= 1/N, N = 4 ranks) times the "
                                   "reference: the loss is divided by the world size")


def test_one_over_ranks_times_micro_batches_is_named_so() -> None:
    expected = _expected()
    [finding] = _findings([e / 6 for e in expected], expected, world=2, k=3)
    assert finding.factor == 1 / 6
    assert finding.text.startswith("every gradient is 1/6 (= 1/(N·K), N = 2 ranks, K = 3 "
                                   "micro-batches) times the reference")


def test_what_nothing_explains_is_unknown_never_a_cause() -> None:
    expected = _expected()
    gen = torch.Generator().manual_seed(1)
    noise = [torch.randn(e.shape, generator=gen, dtype=F64) for e in expected]
    asked = []

    def rank_mean() -> tuple[list[torch.Tensor], str]:
        asked.append(True)
        return expected, ""  # not the gradients: no per-rank mean claimed

    [finding] = _findings(noise, expected, rank_mean=rank_mean)
    assert asked and finding.kind == "unknown" and finding.tensor == "fc.weight, fc.bias"


def test_a_per_rank_mean_is_claimed_only_where_it_fits_and_no_module_hint_explains_it() -> None:
    expected = _expected()
    means = [e * torch.linspace(0.5, 1.5, e.numel(), dtype=F64).reshape(e.shape)
             for e in expected]
    [finding] = _findings(means, expected, rank_mean=lambda: (means, ""))
    assert finding.kind == "rank-mean" and "depends on its elements together" in finding.text
    hint = "the module's BatchNorm layers (norm) normalise each rank's shard with ..."
    found = _findings(means, expected, rank_mean=lambda: (means, ""), hints=[hint])
    assert [(f.kind, f.text) for f in found] == [("rank-local", hint)]


def test_token_counts_only_when_they_differ() -> None:
    labels = torch.tensor([[1, 2, -100], [3, -100, -100], [1, 1, 1], [2, 2, -100]])
    assert token_counts((torch.zeros(4, 3), labels), 2, 1) == (
        "rank 0 has 3 tokens, rank 1 has 5, of 8 in all: the elements of input 1 other than "
        "ignore_index -100")
    assert token_counts((labels,), 2, 2) == (
        "rank 0 has 2 + 1 tokens, rank 1 has 3 + 2 (one count per micro-batch), of 8 in all: "
        "the elements of input 0 other than ignore_index -100")
    even = torch.tensor([[1, -100], [2, -100]])
    assert token_counts((even,), 2, 1) == ""

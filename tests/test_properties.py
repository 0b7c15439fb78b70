"""Property tests (hypothesis): for random shapes, dtypes, seeds and every loss the hand-derived
gradient agrees with autograd within the dtype's tolerance, with and without a model; and a
planted perturbation of k elements is reported as exactly k mismatches, with the right greatest
difference at the right index."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd_check.base.spec import DEFAULT_TOLERANCES, DTYPES, build_spec
from autograd_check.base.spec import LOSS_NAMES as LOSSES
from autograd_check.execute import run_check
from autograd_check.kernel.compare import compare, unravel

CPU = torch.device("cpu")
SEEDS = st.integers(min_value=0, max_value=2**63 - 1)
SHAPES = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=4).map(tuple)
FAST = settings(max_examples=120, deadline=None)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


@FAST
@given(
    loss=st.sampled_from(LOSSES),
    dtype=st.sampled_from(list(DTYPES)),
    shape=SHAPES,
    seed=SEEDS,
    delta=st.floats(min_value=0.05, max_value=3.0),
)
def test_every_loss_agrees_with_autograd(
    loss: str, dtype: str, shape: tuple[int, ...], seed: int, delta: float
) -> None:
    values: dict[str, object] = {"loss": loss, "dtype": dtype, "shape": shape_text(shape)}
    values["seed"] = seed
    if loss == "huber":
        values["delta"] = delta
    result = run_check(build_spec(values), CPU)
    c = result.comparisons[0]
    assert result.passed, (c.mismatched, c.max_abs_diff, c.max_abs_index, c.max_rel_diff)
    assert (c.rtol, c.atol) == DEFAULT_TOLERANCES[dtype]


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["linear", "mlp"]),
    loss=st.sampled_from(LOSSES),
    dtype=st.sampled_from(list(DTYPES)),
    shape=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=3).map(tuple),
    hidden=st.integers(min_value=1, max_value=9),
    seed=SEEDS,
)
def test_every_model_and_loss_agrees_with_autograd(
    kind: str, loss: str, dtype: str, shape: tuple[int, ...], hidden: int, seed: int
) -> None:
    values: dict[str, object] = {"model": kind, "loss": loss, "dtype": dtype, "seed": seed}
    values["shape"] = shape_text(shape)
    if kind == "mlp":
        values["hidden"] = hidden
    result = run_check(build_spec(values), CPU)
    bad = [(c.name, c.mismatched, c.max_abs_diff) for c in result.comparisons if not c.passed]
    assert result.passed, bad


@FAST
@given(
    dtype=st.sampled_from(list(DTYPES)),
    shape=SHAPES,
    seed=st.integers(min_value=0, max_value=2**32),
    data=st.data(),
)
def test_k_planted_perturbations_are_k_mismatches_at_the_right_place(
    dtype: str, shape: tuple[int, ...], seed: int, data: st.DataObject
) -> None:
    numel = math.prod(shape)
    k = data.draw(st.integers(min_value=0, max_value=min(numel, 8)), label="k")
    gen = torch.Generator().manual_seed(seed)
    t = getattr(torch, dtype)
    # Values of magnitude 0.5 to 1.5 with either sign: no zeros, so relative differences are finite.
    sign = torch.randint(0, 2, shape, generator=gen).mul(2).sub(1)
    auto = ((torch.rand(shape, generator=gen) + 0.5) * sign).to(t)
    planted = torch.randperm(numel, generator=gen)[:k]
    # Perturbations 0.25, 0.5, ... with random signs: far beyond every dtype's tolerance and
    # distinct even after rounding, so the greatest one is unambiguous.
    bumps = torch.arange(1, k + 1, dtype=torch.float32) * 0.25
    bumps *= torch.randint(0, 2, (k,), generator=gen).mul(2).sub(1)
    manual = auto.clone()
    manual.view(-1)[planted] = (auto.view(-1)[planted].float() + bumps).to(t)
    rtol, atol = DEFAULT_TOLERANCES[dtype]

    c = compare("predicted", manual, auto, rtol, atol, exact=False)

    assert c.mismatched == k
    assert c.passed is (k == 0) and c.bit_exact is (k == 0)
    assert c.numel == numel and c.shape == list(shape)
    if k == 0:
        assert c.max_abs_diff == 0.0
        return
    work = torch.float64 if t == torch.float64 else torch.float32
    diff = (manual.to(work) - auto.to(work)).abs().view(-1)
    largest = int(planted[k - 1])  # the last bump is the largest
    assert c.max_abs_index == unravel(largest, list(shape))
    assert c.max_abs_diff == float(diff[largest])
    assert math.isclose(c.max_abs_diff, 0.25 * k, rel_tol=2e-2)  # the bump, up to rounding
    rel = diff / auto.to(work).abs().view(-1)
    assert c.max_rel_diff == float(rel.max())
    assert int(torch.tensor(c.max_rel_index).dot(torch.tensor(strides(shape)))) in planted.tolist()


def strides(shape: tuple[int, ...]) -> list[int]:
    out, step = [], 1
    for dim in reversed(shape):
        out.append(step)
        step *= dim
    return out[::-1]

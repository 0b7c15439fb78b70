"""The loss family: forwards against torch.nn.functional, hand-derived gradients against autograd
(for every dtype), the subgradient convention at the kinks, and the draws."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from autograd_check.base import spec
from autograd_check.base.errors import BadInput
from autograd_check.base.spec import DEFAULT_TOLERANCES, DTYPES, build_spec
from autograd_check.checks.draw import draw
from autograd_check.cli import app
from autograd_check.execute import run_check
from autograd_check.kernel.compare import compare
from autograd_check.losses import builtin as losses
from autograd_check.losses.base import TUTORIAL_DRAWS

runner = CliRunner()

SHAPES = [(3, 8), (5,), (2, 3, 4), (1, 1, 2, 7)]


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def counterpart(name: str, delta: float = 1.0) -> LossFn:
    """The torch.nn.functional loss each of ours must equal."""
    if name == "mse-sum":
        return lambda p, r: F.mse_loss(p, r, reduction="sum")
    if name == "mse-mean":
        return lambda p, r: F.mse_loss(p, r, reduction="mean")
    if name == "l1":
        return lambda p, r: F.l1_loss(p, r)
    if name == "huber":
        return lambda p, r: F.huber_loss(p, r, delta=delta)
    if name == "bce-logits":
        return lambda p, r: F.binary_cross_entropy_with_logits(p, r)
    if name == "cross-entropy":  # ours: classes on the last dim; torch's: dim 1 of (N, C)
        return lambda p, r: F.cross_entropy(p.reshape(-1, p.shape[-1]), r.reshape(-1))
    raise AssertionError(name)


def tensors(name: str, shape: tuple[int, ...], dtype: str, seed: int = 0, delta: float = 1.0):
    loss = losses.get_loss(name, delta if name == "huber" else None)
    gen = torch.Generator().manual_seed(seed)
    real = loss.draw_real(gen, shape, getattr(torch, dtype))
    predicted = loss.draw_predicted(gen, shape, getattr(torch, dtype)).requires_grad_()
    return loss, real, predicted


def test_the_registry_is_the_list_the_spec_validates() -> None:
    assert losses.LOSS_NAMES == tuple(losses.LOSSES)
    for name in losses.LOSS_NAMES:
        assert spec.build_spec({"loss": name}).loss == name
    for name, loss in losses.LOSSES.items():
        assert loss.name == name
        assert loss.formula.count("loss =") == 1
        assert loss.gradient_formula.startswith("∂loss/∂predicted = ")
        assert loss.manual_grad.__doc__ or name == "mse-sum"  # the derivation is written out


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_forward_equals_torch_functional(name: str, dtype: str) -> None:
    for shape in SHAPES:
        loss, real, predicted = tensors(name, shape, dtype)
        ours = loss.forward(predicted, real)
        try:
            theirs = counterpart(name)(predicted, real)
        except RuntimeError as e:  # an older torch has no CPU kernel of it for half types
            if "not implemented for" not in str(e):
                raise
            pytest.skip(f"this torch cannot compute the counterpart: {e}")
        assert ours.shape == theirs.shape == ()
        assert ours.dtype == predicted.dtype
        # Half types: ours rounds once from float32, torch's kernel may round more often.
        rtol, atol = DEFAULT_TOLERANCES[dtype]
        torch.testing.assert_close(ours, theirs, rtol=4 * rtol, atol=4 * atol)


@pytest.mark.parametrize("delta", [0.05, 0.3, 2.5])
def test_huber_forward_follows_delta(delta: float) -> None:
    loss, real, predicted = tensors("huber", (4, 6), "float64", seed=3, delta=delta)
    torch.testing.assert_close(
        loss.forward(predicted, real), F.huber_loss(predicted, real, delta=delta)
    )
    assert f"δ = {delta:g}" in loss.formula


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_manual_gradient_agrees_with_autograd(name: str, dtype: str) -> None:
    rtol, atol = DEFAULT_TOLERANCES[dtype]
    for shape in SHAPES:
        for seed in range(3):
            loss, real, predicted = tensors(name, shape, dtype, seed)
            loss.forward(predicted, real).backward()
            auto = predicted.grad
            assert auto is not None
            with torch.no_grad():
                manual = loss.manual_grad(predicted, real)
            assert manual.shape == predicted.shape and manual.dtype == predicted.dtype
            c = compare("predicted", manual, auto, rtol, atol, exact=False)
            assert c.passed, (shape, seed, c)


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_manual_gradient_agrees_with_autograd_through_torch_functional(name: str) -> None:
    """Our forward could be wrong in the same way as our gradient; torch's own loss is not."""
    loss, real, predicted = tensors(name, (6, 5), "float64", seed=7)
    counterpart(name)(predicted, real).backward()
    with torch.no_grad():
        manual = loss.manual_grad(predicted, real)
    torch.testing.assert_close(manual, predicted.grad)


def test_the_tutorials_loss_is_the_tutorials_code_bit_for_bit() -> None:
    loss, real, predicted = tensors("mse-sum", (3, 8), "float32")
    assert torch.equal(loss.forward(predicted, real), (predicted - real).pow(2).sum())
    with torch.no_grad():
        assert torch.equal(loss.manual_grad(predicted, real), 2.0 * (predicted - real))
    assert loss.draws == TUTORIAL_DRAWS


@pytest.mark.parametrize("name", ["mse-sum", "mse-mean", "l1"])
def test_regression_losses_draw_as_the_tutorial(name: str) -> None:
    torch.manual_seed(11)
    real = torch.rand(2, 5)
    predicted = torch.rand(2, 5)
    r, p = draw(build_spec({"loss": name, "shape": "2x5", "seed": 11}), torch.device("cpu"))
    assert torch.equal(r, real) and torch.equal(p.detach(), predicted)


def test_cross_entropy_draws_class_indices_then_logits() -> None:
    torch.manual_seed(4)
    classes = torch.randint(0, 7, (2, 3))
    logits = torch.randn(2, 3, 7)
    drawn = build_spec({"loss": "cross-entropy", "shape": "2x3x7", "seed": 4})
    r, p = draw(drawn, torch.device("cpu"))
    assert r.dtype == torch.int64 and torch.equal(r, classes)
    assert torch.equal(p.detach(), logits)


def test_huber_draws_cross_delta_so_both_branches_are_checked() -> None:
    r, p = draw(build_spec({"loss": "huber"}), torch.device("cpu"))
    d = (p - r).abs()
    assert (d < 1).any() and (d >= 1).any()


class TestKinks:
    """Exact ties, planted: the manual gradient takes torch's subgradient there."""

    def test_l1_at_zero_is_zero_as_torch(self) -> None:
        real = torch.tensor([0.25, 0.5, -1.0, 3.0], dtype=torch.float64)
        predicted = torch.tensor([0.25, 0.75, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
        loss = losses.get_loss("l1")
        loss.forward(predicted, real).backward()
        ours_auto = predicted.grad
        predicted.grad = None
        F.l1_loss(predicted, real).backward()
        with torch.no_grad():
            manual = loss.manual_grad(predicted, real)
        expected = torch.tensor([0.0, 0.25, 0.0, -0.25], dtype=torch.float64)
        assert torch.equal(manual, expected)
        assert torch.equal(ours_auto, expected)
        assert torch.equal(predicted.grad, expected)

    @pytest.mark.parametrize("dtype", list(DTYPES))
    def test_l1_ties_in_every_dtype(self, dtype: str) -> None:
        _, real, predicted = tensors("l1", (4, 6), dtype, seed=2)
        with torch.no_grad():
            predicted[::2] = real[::2]  # half the rows tie exactly
        loss = losses.get_loss("l1")
        loss.forward(predicted, real).backward()
        with torch.no_grad():
            manual = loss.manual_grad(predicted, real)
        assert torch.equal(manual[::2], torch.zeros_like(manual[::2]))
        assert torch.equal(manual, predicted.grad)

    @pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
    def test_huber_at_plus_minus_delta_is_plus_minus_delta_as_torch(self, delta: float) -> None:
        real = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
        # Dyadic values: real ± delta is exact, so |d| == delta holds exactly.
        predicted = (real + torch.tensor([delta, -delta, delta / 2, 0.0], dtype=torch.float64))
        predicted.requires_grad_()
        ties = (predicted - real).abs()[:2]
        assert torch.equal(ties, torch.full((2,), delta, dtype=torch.float64))
        loss = losses.get_loss("huber", delta)
        loss.forward(predicted, real).backward()
        ours_auto = predicted.grad
        predicted.grad = None
        F.huber_loss(predicted, real, delta=delta).backward()
        with torch.no_grad():
            manual = loss.manual_grad(predicted, real)
        expected = torch.tensor([delta, -delta, delta / 2, 0.0], dtype=torch.float64) / 4
        assert torch.equal(manual, expected)
        assert torch.equal(ours_auto, expected)
        assert torch.equal(predicted.grad, expected)

    def test_bce_logits_at_zero_logit_is_sigmoid_minus_target(self) -> None:
        """A naive max(x, 0) form would give −r at x = 0; the true derivative is ½ − r."""
        real = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
        predicted = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        loss = losses.get_loss("bce-logits")
        loss.forward(predicted, real).backward()
        with torch.no_grad():
            manual = loss.manual_grad(predicted, real)
        expected = (0.5 - real) / 3
        torch.testing.assert_close(manual, expected)
        torch.testing.assert_close(predicted.grad, expected)


def test_cross_entropy_on_one_sample_and_on_one_class() -> None:
    for shape in [(5,), (3, 1)]:
        loss, real, predicted = tensors("cross-entropy", shape, "float64")
        assert real.shape == shape[:-1]
        loss.forward(predicted, real).backward()
        with torch.no_grad():
            manual = loss.manual_grad(predicted, real)
        torch.testing.assert_close(manual, predicted.grad)


def test_unknown_loss_is_bad_input_naming_the_known_ones() -> None:
    with pytest.raises(BadInput, match="'hinge' is not known; choose one of mse-sum, mse-mean"):
        losses.get_loss("hinge")


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_engine_checks_every_loss(name: str) -> None:
    result = run_check(build_spec({"loss": name, "shape": "4x5", "seed": 2}), torch.device("cpu"))
    assert result.passed and result.comparisons[0].mismatched == 0
    assert result.loss_name == name
    assert result.loss_formula == losses.get_loss(name).formula
    assert result.gradient_formula == losses.get_loss(name).gradient_formula
    drawn_differently = name in ("huber", "bce-logits", "cross-entropy")
    assert any(n.startswith("draws: ") for n in result.notes) is drawn_differently


class TestCommandLine:
    def test_loss_flag_runs_and_shows_the_formula(self) -> None:
        result = runner.invoke(app, ["run", "--loss", "cross-entropy", "--shape", "2x4"])
        assert result.exit_code == 0, result.output
        assert "(softmax(predicted) − one_hot(real)) / N" in result.stdout
        assert "predictedₙ[realₙ]" in result.stdout  # brackets are text, not Rich markup
        assert "real  2 int64" in result.stdout
        assert result.stderr == ""

    def test_huber_delta_reaches_the_spec_and_the_formula(self) -> None:
        result = runner.invoke(app, ["run", "--loss", "huber", "--delta", "0.25", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["spec"]["loss"] == "huber" and doc["spec"]["delta"] == 0.25
        assert "δ = 0.25" in doc["loss"]["formula"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--loss", "hinge"], "loss 'hinge' is not known; choose one of mse-sum, mse-mean, l1"),
            (["--delta", "0.5"], "delta applies only to loss huber, not 'mse-sum'"),
            (["--loss", "huber", "--delta", "-1"], "delta '-1' is not allowed"),
            (["--loss", "huber", "--delta", "nan"], "delta 'nan' is not allowed"),
        ],
    )
    def test_bad_loss_options_are_one_line_exit_2(self, args: list[str], message: str) -> None:
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr

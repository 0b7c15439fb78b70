"""A test file as a user writes it: the `autograd_check` fixture (the pytest plugin that installing
autograd-check registers; docs/pytest-plugin.md) on the Functions and the module of examples/.

    python -m pytest examples/test_gradients_example.py
    python -m pytest examples/test_gradients_example.py --autograd-check-dtype float64
    python -m pytest examples/test_gradients_example.py --autograd-check-device cuda  # GPU node

The fixture's randn() makes its tensors on the device and in the dtype those options name;
assert_gradients() fails the test with the per-input table. The Swish test has a planted bug
and is expected to fail (xfail, strict: if the bug ever went unnoticed, the file would fail).
"""

import pytest
from function_buggy import Swish
from function_correct import LogSumExp
from function_correct import manual as logsumexp_manual
from module_manual import MyLinear


def test_logsumexp_against_directional_derivatives(autograd_check):
    # no hand-derived gradient needed: the default reference is projection
    autograd_check.assert_gradients(LogSumExp.apply, autograd_check.randn(4, 5))


def test_logsumexp_against_the_hand_derived_gradient(autograd_check):
    autograd_check.assert_gradients(LogSumExp.apply, autograd_check.randn(4, 5),
                                    manual=logsumexp_manual)


def test_logsumexp_jvp_against_backward(autograd_check):
    autograd_check.assert_gradients(LogSumExp.apply, autograd_check.randn(4, 5),
                                    reference="forward")


def test_logsumexp_double_backward(autograd_check):
    autograd_check.assert_gradients(LogSumExp.apply, autograd_check.randn(4, 5), order=2)


def test_linear_module_and_its_parameters(autograd_check):
    layer = autograd_check.to(MyLinear(3, 2))  # its parameters on the device, in the dtype

    def manual(x, grad_output):  # one gradient per checked tensor: x, then weight and bias
        return grad_output @ layer.weight, grad_output.T @ x, grad_output.sum(dim=0)

    result = autograd_check.assert_gradients(layer, autograd_check.randn(4, 3), manual=manual)
    # manual against autograd for each, then (the backward being MyLinear's own) projection
    assert [c.name for c in result.comparisons][:3] == ["x", "weight", "bias"]


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="planted bug: Swish.backward forgets the factor (1 - sigmoid(x))")
def test_swish_with_the_planted_bug(autograd_check):
    autograd_check.assert_gradients(Swish.apply, autograd_check.randn(4, 5))

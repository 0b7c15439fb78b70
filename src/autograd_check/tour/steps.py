"""The tour's steps, as data: the tutorial's ideas, each a short piece of Python and a claim.

Each step's code is run as written (by tour/runner.py, in a fresh namespace holding `torch`, right
after `torch.manual_seed(seed)`), so the code shown is the code that ran; its claim is then checked
on the objects the code left behind (Evidence), by the step's `verify`. Nothing here runs a step:
listing and choosing steps needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch


@dataclass
class Check:
    """One checked part of a step's claim."""

    what: str
    passed: bool


class Evidence:
    """What a step's code left behind, and the checks made on it."""

    def __init__(self, namespace: dict[str, Any], raised: Exception | None, warned: list[str]):
        self.ns = namespace
        self.raised = raised
        self.warned = warned
        self.checks: list[Check] = []

    def __getitem__(self, name: str) -> Any:
        return self.ns[name]

    def check(self, what: str, ok: object) -> None:
        self.checks.append(Check(what, bool(ok)))


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    code: str
    claim: str
    verify: Callable[[Evidence], None]
    raises: type[Exception] | None = None
    """The exception the code's last line must raise: the lesson of the step."""


def _grad_fn_name(t: Any) -> str | None:
    return None if t.grad_fn is None else type(t.grad_fn).__name__


# --- the steps, in the tutorial's order ------------------------------------------------------


def _leaf(e: Evidence) -> None:
    x = e["x"]
    e.check("x.requires_grad is True", x.requires_grad is True)
    e.check("x.is_leaf is True", x.is_leaf)
    e.check("x.grad_fn is None (no operation made x)", x.grad_fn is None)
    e.check("x.grad is None (no backward yet)", x.grad is None)


def _grad_fn(e: Evidence) -> None:
    x, y = e["x"], e["y"]
    e.check("y.requires_grad is True", y.requires_grad is True)
    e.check("y.is_leaf is False", not y.is_leaf)
    e.check("type(y.grad_fn).__name__ == 'AddBackward0'", _grad_fn_name(y) == "AddBackward0")
    e.check("x, the leaf, still has no grad_fn", x.grad_fn is None)


def _grad_fun(e: Evidence) -> None:
    e.check("y.grad_fn exists (AddBackward0)", _grad_fn_name(e["y"]) == "AddBackward0")
    e.check("the AttributeError names 'grad_fun'", "grad_fun" in str(e.raised))


CHAIN = ["SumBackward0", "PowBackward0", "SubBackward0", "AccumulateGrad"]


def _chain(e: Evidence) -> None:
    names: list[str] = []
    nodes: list[Any] = []
    fn = e["loss"].grad_fn
    while fn is not None:
        names.append(type(fn).__name__)
        nodes.append(fn)
        fn = next((f for f, _ in fn.next_functions if f is not None), None)
    e.check(f"the chain is {' ← '.join(CHAIN)}", names == CHAIN)
    e.check(
        "AccumulateGrad.variable is predicted (the chain ends at the leaf)",
        names[-1:] == ["AccumulateGrad"] and nodes[-1].variable is e["predicted"],
    )
    sub = nodes[2] if len(nodes) > 2 else None
    e.check(
        "SubBackward0's slot for real is None (real is not tracked)",
        sub is not None and len(sub.next_functions) == 2 and sub.next_functions[1][0] is None,
    )


def _detach(e: Evidence) -> None:
    x, h = e["x"], e["h"]
    e.check("x.requires_grad is False after x.detach_()", x.requires_grad is False)
    e.check("x.grad_fn is None", x.grad_fn is None)
    requires, before = e["tracked"]
    e.check("h was tracked before (requires_grad, MulBackward0)", requires and before is not None)
    e.check("h.requires_grad is False after h.detach_()", h.requires_grad is False)
    e.check("h.grad_fn is None: h is now a leaf", h.grad_fn is None and h.is_leaf)


def _requires_grad(e: Evidence) -> None:
    x = e["x"]
    e.check("x.requires_grad is False after x.requires_grad_(False)", x.requires_grad is False)
    e.check("x is still a leaf", x.is_leaf)
    e.check("on the non-leaf y it raises, naming leaf variables", "leaf" in str(e.raised))
    e.check("y still requires grad", e["y"].requires_grad is True)


def _no_grad(e: Evidence) -> None:
    y, z, w = e["y"], e["z"], e["w"]
    e.check("under no_grad: y.requires_grad False, y.grad_fn None", not y.requires_grad and
            y.grad_fn is None)
    e.check("under inference_mode: z.requires_grad False, z.grad_fn None", not z.requires_grad and
            z.grad_fn is None)
    e.check("z is an inference tensor", z.is_inference())
    e.check("outside both, tracking resumes: w.grad_fn is MulBackward0",
            w.requires_grad and _grad_fn_name(w) == "MulBackward0")


def _backward(e: Evidence) -> None:
    torch = import_torch()
    predicted, bias, real = e["predicted"], e["bias"], e["real"]
    grad = predicted.grad
    e.check("predicted.grad is filled, shape 3×8",
            grad is not None and tuple(grad.shape) == (3, 8))
    e.check("bias.grad is None (bias was detached)", bias.grad is None)
    e.check("real.grad is None (never tracked)", real.grad is None)
    e.check("the manual 2(predicted + bias − real) equals it bit for bit",
            grad is not None and torch.equal(e["manual_gradient_predicted"], grad))


def _non_leaf_grad(e: Evidence) -> None:
    e.check("y.grad is None (y is not a leaf)", e["y"].grad is None)
    e.check("torch warned, pointing to .retain_grad()",
            any("retain_grad" in w for w in e.warned))
    x, y = e["x"], e["y"]
    e.check("the leaf x got its gradient, 2(x + 1)",
            x.grad is not None and bool(x.grad.eq(2 * y.detach()).all()))


def _retain_grad(e: Evidence) -> None:
    y = e["y"]
    e.check("y.grad is filled after y.retain_grad()", y.grad is not None)
    e.check("y.grad == 2y (d sum(y²) / dy)",
            y.grad is not None and bool(y.grad.eq(2 * y.detach()).all()))
    e.check("no warning this time", not e.warned)


def _second_backward(e: Evidence) -> None:
    e.check("the error says to use retain_graph=True", "retain_graph" in str(e.raised))
    predicted, real = e["predicted"], e["real"]
    grad = predicted.grad
    e.check("predicted.grad still holds the first backward's 2(predicted − real)",
            grad is not None and bool(grad.eq(2.0 * (predicted.detach() - real)).all()))


def _accumulate(e: Evidence) -> None:
    first, doubled, predicted, real = e["first"], e["doubled"], e["predicted"], e["real"]
    e.check("first == 2(predicted − real)", bool(first.eq(2.0 * (predicted.detach() - real)).all()))
    e.check("after a second backward, .grad == first + first", bool(doubled.eq(2 * first).all()))
    e.check("after .grad.zero_() and one more backward, .grad == first",
            predicted.grad is not None and bool(predicted.grad.eq(first).all()))


STEPS: list[Step] = [
    Step(
        "leaf",
        "requires_grad=True makes a tracked leaf",
        "x = torch.rand(3, 7, requires_grad=True)\n"
        "print(x)\n"
        "print(x.requires_grad, x.is_leaf, x.grad_fn, x.grad)",
        "A tensor created with requires_grad=True is tracked and is a leaf: no grad_fn, no .grad "
        "yet.",
        _leaf,
    ),
    Step(
        "grad-fn",
        "An operation on a tracked tensor records itself in grad_fn",
        "x = torch.ones(2, 4, requires_grad=True)\n"
        "print(x)\n"
        "y = x + 1\n"
        "print(y)\n"
        "print(y.grad_fn)",
        "y = x + 1 requires grad, is not a leaf, and has a grad_fn (AddBackward0).",
        _grad_fn,
    ),
    Step(
        "grad-fun",
        "The tutorial's grad_fun is spelled grad_fn",
        "x = torch.ones(2, 4, requires_grad=True)\n"
        "y = x + 1\n"
        "print(y.grad_fn)\n"
        "y.grad_fun",
        "The attribute is grad_fn; y.grad_fun raises AttributeError.",
        _grad_fun,
        raises=AttributeError,
    ),
    Step(
        "chain",
        "The loss's grad_fn chain, through next_functions down to AccumulateGrad",
        "real = torch.rand(3, 8)\n"
        "predicted = torch.rand(3, 8, requires_grad=True)\n"
        "loss = (predicted - real).pow(2).sum()\n"
        "fn = loss.grad_fn\n"
        "while fn is not None:\n"
        "    inputs = [type(f).__name__ if f else None for f, _ in fn.next_functions]\n"
        "    print(type(fn).__name__, '<-', inputs)\n"
        "    last, fn = fn, next((f for f, _ in fn.next_functions if f), None)\n"
        "print(last.variable is predicted)",
        "loss.grad_fn is SumBackward0 ← PowBackward0 ← SubBackward0 ← AccumulateGrad, and the "
        "AccumulateGrad at the end holds predicted.",
        _chain,
    ),
    Step(
        "detach",
        "detach_() stops tracking, in place",
        "x = torch.rand(4, 3, requires_grad=True)\n"
        "print(x)\n"
        "print(x.detach_())\n"
        "print(x.requires_grad, x.grad_fn)\n"
        "h = torch.rand(4, 3, requires_grad=True) * 2\n"
        "tracked = (h.requires_grad, h.grad_fn)\n"
        "print(*tracked)\n"
        "h.detach_()\n"
        "print(h.requires_grad, h.grad_fn)",
        "After t.detach_(), t itself no longer requires grad and has no grad_fn.",
        _detach,
    ),
    Step(
        "requires-grad",
        "requires_grad_(False) turns tracking off on a leaf, and only on a leaf",
        "x = torch.rand(4, 3, requires_grad=True)\n"
        "print(x)\n"
        "print(x.requires_grad_(False))\n"
        "print(x.requires_grad, x.is_leaf)\n"
        "y = torch.rand(4, 3, requires_grad=True) * 2\n"
        "y.requires_grad_(False)",
        "x.requires_grad_(False) untracks the leaf x; on a non-leaf it raises RuntimeError "
        "(use detach() there).",
        _requires_grad,
        raises=RuntimeError,
    ),
    Step(
        "no-grad",
        "Nothing is tracked inside torch.no_grad(), nor inside torch.inference_mode()",
        "x = torch.rand(3, requires_grad=True)\n"
        "with torch.no_grad():\n"
        "    y = x * 2\n"
        "print(y.requires_grad, y.grad_fn)\n"
        "with torch.inference_mode():\n"
        "    z = x * 2\n"
        "print(z.requires_grad, z.grad_fn, z.is_inference())\n"
        "w = x * 2\n"
        "print(w.requires_grad, w.grad_fn)",
        "Results computed under no_grad() or inference_mode() have no grad_fn; outside them "
        "tracking resumes.",
        _no_grad,
    ),
    Step(
        "backward",
        "loss.backward() fills .grad of the leaf, not of a detached tensor",
        "real = torch.rand(3, 8)\n"
        "predicted = torch.rand(3, 8, requires_grad=True)\n"
        "bias = torch.rand(3, 8, requires_grad=True)\n"
        "bias.detach_()\n"
        "loss = (predicted + bias - real).pow(2).sum()\n"
        "print(predicted.grad, bias.grad)\n"
        "loss.backward()\n"
        "print(predicted.grad)\n"
        "print(bias.grad, real.grad)\n"
        "with torch.no_grad():\n"
        "    manual_gradient_predicted = 2.0 * (predicted + bias - real)\n"
        "print(manual_gradient_predicted.eq(predicted.grad).all())",
        "After loss.backward(), predicted.grad holds the gradient (equal to the hand-derived one); "
        "the detached bias and the untracked real get none.",
        _backward,
    ),
    Step(
        "non-leaf-grad",
        "The tutorial's print(y.grad) on a non-leaf y gives None, and torch warns",
        "x = torch.ones(2, 4, requires_grad=True)\n"
        "y = x + 1\n"
        "loss = y.pow(2).sum()\n"
        "loss.backward()\n"
        "print(y.grad)\n"
        "print(x.grad)",
        "backward() fills .grad of leaves only: y.grad is None (with a UserWarning), x.grad is "
        "filled.",
        _non_leaf_grad,
    ),
    Step(
        "retain-grad",
        "y.retain_grad() keeps the gradient of a non-leaf",
        "x = torch.ones(2, 4, requires_grad=True)\n"
        "y = x + 1\n"
        "y.retain_grad()\n"
        "loss = y.pow(2).sum()\n"
        "loss.backward()\n"
        "print(y.grad)",
        "After y.retain_grad(), backward() fills y.grad (= 2y), without a warning.",
        _retain_grad,
    ),
    Step(
        "second-backward",
        "A second backward() through the same graph raises",
        "real = torch.rand(3, 8)\n"
        "predicted = torch.rand(3, 8, requires_grad=True)\n"
        "loss = (predicted - real).pow(2).sum()\n"
        "loss.backward()\n"
        "loss.backward()",
        "backward() frees the graph's saved tensors; a second backward() without "
        "retain_graph=True raises RuntimeError.",
        _second_backward,
        raises=RuntimeError,
    ),
    Step(
        "accumulate",
        "Gradients add up across backward passes until zeroed",
        "real = torch.rand(3, 8)\n"
        "predicted = torch.rand(3, 8, requires_grad=True)\n"
        "loss = (predicted - real).pow(2).sum()\n"
        "loss.backward(retain_graph=True)\n"
        "first = predicted.grad.clone()\n"
        "loss.backward(retain_graph=True)\n"
        "doubled = predicted.grad.clone()\n"
        "predicted.grad.zero_()\n"
        "loss.backward()\n"
        "print(first[0])\n"
        "print(doubled[0])\n"
        "print(predicted.grad[0])",
        "A second backward() adds to .grad (2× the first); after .grad.zero_() the next one "
        "gives the first again.",
        _accumulate,
    ),
]


def select_steps(names: Sequence[str] | None, steps: Sequence[Step] | None = None) -> list[Step]:
    """The steps asked for, in the order asked (all of them when none); an unknown name is
    BadInput listing the valid ones. No torch is needed to answer."""
    pool = list(STEPS if steps is None else steps)
    if not names:
        return pool
    by_name = {s.name: s for s in pool}
    chosen: list[Step] = []
    for raw in names:
        name = raw.strip().lower().replace("_", "-")  # grad_fun, as the tutorial spells it
        if name not in by_name:
            raise BadInput(f"unknown step {raw!r}; valid steps: {', '.join(by_name)}")
        chosen.append(by_name[name])
    return chosen

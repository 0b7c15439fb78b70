"""--model linear|mlp: the check through a small model, backpropagated by hand by the chain rule.

How --shape maps onto the model. The shape stays the shape of `predicted` (and of `real`), so
every loss means what it means without a model: `predicted` is now the model's output. Its last
dimension F is the feature dimension; the input x has the same shape (in_features = out_features
= F) and every leading dimension is a batch dimension, as torch.nn.Linear treats them.

    linear:  y = x Wᵀ + b                         W: F×F, b: F
    mlp:     h = x W₁ᵀ + b₁,  a = tanh(h),  y = a W₂ᵀ + b₂
                                                  W₁: H×F, b₁: H, W₂: F×H, b₂: F, H = --hidden

and loss = L(y, real) for the chosen --loss (or --target).

Draws, from the seed's generator in this order: real (as the loss draws it), then the input
x = torch.rand(shape) (where the tutorial draws predicted), then the parameters in forward order,
each uniform in [−k, k) with k = 1/√fan_in: torch.nn.Linear's default initialisation.

The manual backward (no autograd). Flatten the batch dimensions into M rows, so x is M×F, and let
g = ∂L/∂y (M×F) be the loss's own hand-derived gradient at y. For one linear layer
y = x Wᵀ + b, i.e. yₘᵢ = Σⱼ xₘⱼ Wᵢⱼ + bᵢ:

    ∂L/∂Wᵢⱼ = Σₘ gₘᵢ xₘⱼ     → gᵀ x        (each Wᵢⱼ meets every row m)
    ∂L/∂bᵢ  = Σₘ gₘᵢ         → g summed over the rows
    ∂L/∂xₘⱼ = Σᵢ gₘᵢ Wᵢⱼ     → g W         (the gradient handed to the layer below)

and through a = tanh(h): ∂a/∂h = 1 − tanh²(h) = 1 − a², elementwise, so ∂L/∂h = ∂L/∂a ⊙ (1 − a²).
For the mlp the chain is applied from the top: g → (∂W₂, ∂b₂, ∂a = g W₂) → ∂h = ∂a ⊙ (1 − a²)
→ (∂W₁, ∂b₁, ∂x = ∂h W₁).

Each of these is compared with autograd's `.grad` (and ∂L/∂y with y.retain_grad()), one
Comparison per tensor, in the order the chain rule reaches them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from autograd_check.base.budget import layer_shapes
from autograd_check.base.clock import Clock
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import TENSOR_DATA_LIMIT, CheckResult, TensorView
from autograd_check.base.spec import DEFAULT_HIDDEN, CheckSpec
from autograd_check.checks.determinism import repeat_gradients, repeat_passed
from autograd_check.checks.draw import draw_notes
from autograd_check.kernel.compare import difference, to64
from autograd_check.kernel.views import tensor_view
from autograd_check.losses.user import backward
from autograd_check.references import gradients as one_path
from autograd_check.references.arguments import prepare
from autograd_check.references.finite_diff import check_against_fd, evaluator
from autograd_check.references.gradients import (
    against_float64,
    diagnose_rows,
    is_half,
    manual_vs_autograd,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from autograd_check.losses.base import Loss
    from autograd_check.references.finite_diff import FiniteDiffOutcome, Progress

LINEAR_FORMULA = "∂W = gᵀ·x,  ∂b = Σ_rows g,  ∂x = g·W"
MLP_FORMULA = (
    "∂W₂ = gᵀ·a,  ∂b₂ = Σ_rows g,  ∂a = g·W₂,  ∂h = ∂a ⊙ (1 − a²),  "
    "∂W₁ = ∂hᵀ·x,  ∂b₁ = Σ_rows ∂h,  ∂x = ∂h·W₁"
)


@dataclass
class Layer:
    name: str
    weight: Tensor
    bias: Tensor


def init_layers(spec: CheckSpec, gen: torch.Generator, dtype: torch.dtype) -> list[Layer]:
    """torch.nn.Linear's default initialisation, from the seed's generator: U[−k, k), k = 1/√in."""
    torch = import_torch()
    layers = []
    for name, out, inp in layer_shapes(spec):
        k = 1.0 / math.sqrt(inp)
        weight = torch.rand((out, inp), generator=gen, dtype=dtype).mul_(2 * k).sub_(k)
        bias = torch.rand((out,), generator=gen, dtype=dtype).mul_(2 * k).sub_(k)
        layers.append(Layer(name, weight, bias))
    return layers


def draw_model(
    spec: CheckSpec, device: torch.device, loss_def: Loss
) -> tuple[Tensor, Tensor, list[Layer]]:
    """real, the input x and the layers, drawn from the seed's generator on the CPU in the
    order of the module docstring, then moved to device (none of them requires grad)."""
    torch = import_torch()
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator().manual_seed(spec.seed)
    real = loss_def.draw_real(gen, spec.shape, dtype).to(device)
    x = torch.rand(spec.shape, generator=gen, dtype=dtype).to(device)
    layers = init_layers(spec, gen, dtype)
    for layer in layers:
        layer.weight = layer.weight.to(device)
        layer.bias = layer.bias.to(device)
    return real, x, layers


def forward(layers: list[Layer], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The model's output and the tanh activations (one per hidden layer), tracked by autograd."""
    torch = import_torch()
    activations: list[Tensor] = []
    out = x
    for i, layer in enumerate(layers):
        out = torch.nn.functional.linear(out, layer.weight, layer.bias)
        if i < len(layers) - 1:
            out = torch.tanh(out)
            activations.append(out)
    return out, activations


def manual_backward(
    layers: list[Layer], x: Tensor, activations: list[Tensor], grad_out: Tensor
) -> dict[str, Tensor]:
    """∂L/∂(every weight, bias, and the input) from g = ∂L/∂y, by the chain rule (module docstring).

    Call under torch.no_grad(); it uses matmuls and elementwise ops only, no autograd.
    """
    grads: dict[str, Tensor] = {}
    inputs = [x, *activations]  # the input each layer saw
    g = grad_out.reshape(-1, grad_out.shape[-1])
    for i in range(len(layers) - 1, -1, -1):
        layer, seen = layers[i], inputs[i]
        rows_in = seen.reshape(-1, seen.shape[-1])
        grads[f"{layer.name}.weight"] = g.t() @ rows_in  # ∂W = gᵀ x
        grads[f"{layer.name}.bias"] = g.sum(0)  # ∂b = Σ_rows g
        g = g @ layer.weight  # ∂(layer input) = g W
        if i > 0:
            a = inputs[i].reshape(-1, inputs[i].shape[-1])
            g = _through_tanh(g, a)
    grads["input"] = g.reshape(x.shape)
    return grads


def _through_tanh(grad_a: Tensor, a: Tensor) -> Tensor:
    """∂h = ∂a ⊙ (1 − a²). In float16/bfloat16 this is computed in float32 and rounded once, as
    torch's own elementwise kernels (tanh's backward among them) do: three half-precision
    roundings instead of one would differ from autograd by more than rounding noise."""
    torch = import_torch()
    wide = grad_a.element_size() == 2
    g, y = (grad_a.float(), a.float()) if wide else (grad_a, a)
    # 1 − a² as one fused multiply-add (addcmul: 1 + (−1)·a·a), rounded once like torch's
    # tanh_backward, so that a correct backward is bit-exact rather than an ulp away.
    one_minus_a2: Tensor = torch.addcmul(torch.ones_like(y), y, y, value=-1)
    out = g * one_minus_a2
    return out.to(grad_a.dtype) if wide else out


def _autograd_grads(
    loss_def: Loss, layers: list[Layer], x: Tensor, real: Tensor
) -> dict[str, Tensor]:
    """Autograd's gradients on a fresh graph, at the same values (new leaves share the storage)."""
    x = x.detach().requires_grad_()
    fresh = [
        Layer(la.name, la.weight.detach().requires_grad_(), la.bias.detach().requires_grad_())
        for la in layers
    ]
    y, _ = forward(fresh, x)
    y.retain_grad()
    backward(loss_def, loss_def.forward(y, real))
    grads = {"predicted": y.grad, "input": x.grad}
    for layer in fresh:
        grads[f"{layer.name}.weight"] = layer.weight.grad
        grads[f"{layer.name}.bias"] = layer.bias.grad
    assert all(g is not None for g in grads.values())  # leaves, and y retains its grad
    return grads  # type: ignore[return-value]


def _finite_diff(
    spec: CheckSpec,
    loss_def: Loss,
    layers: list[Layer],
    x: Tensor,
    real: Tensor,
    gradients: dict[str, dict[str, Tensor]],
    progress: Progress | None,
) -> FiniteDiffOutcome:
    """--reference finite-diff through the model: the loss as a float64 function of each compared
    tensor in turn (the output, every parameter, the input), the others held fixed."""
    torch = import_torch()

    loss = evaluator(loss_def)
    real64, x64 = to64(real), to64(x.detach())
    params64 = {
        f"{la.name}.{p}": to64(getattr(la, p)) for la in layers for p in ("weight", "bias")
    }

    def net(values: dict[str, Tensor]) -> list[Layer]:
        return [
            Layer(la.name, values[f"{la.name}.weight"], values[f"{la.name}.bias"]) for la in layers
        ]

    def through_model(name: str) -> Callable[[Tensor], Tensor]:
        def fn(value: Tensor) -> Tensor:
            values = {**params64, name: value} if name in params64 else params64
            inp = value if name == "input" else x64
            return loss(forward(net(values), inp)[0], real64)

        return fn

    with torch.no_grad():
        y64 = forward(net(params64), x64)[0]
        loss64 = float(loss(y64, real64))
    values = {"predicted": y64, "input": x64, **params64}
    targets: dict[str, tuple[Callable[[Tensor], Tensor], Tensor, dict[str, Tensor]]] = {}
    for name, grads in gradients.items():
        fn = (lambda v: loss(v, real64)) if name == "predicted" else through_model(name)
        targets[name] = (fn, values[name], grads)
    return check_against_fd(spec, targets, loss64, progress)


def run_model_check(
    spec: CheckSpec, device: torch.device, loss_def: Loss, progress: Progress | None = None
) -> CheckResult:
    """The check through the model: autograd's .grad of every parameter (and of the input and
    the output) against the manual backward; with --repeat, N fresh autograd passes; with
    --reference finite-diff, every one of them against central differences too.

    A user of the Python API's own path (references/gradients.py), as the plain check is: the
    loss of the model's output as a function of the input and every parameter is the Call, and the
    manual backward is its manual; the output's two gradients (y.grad and the loss's own
    manual_grad at y) are compared beside them."""
    rtol, atol = spec.tolerances()
    clock = Clock(device)

    real, x, layers = draw_model(spec, device, loss_def)
    names = ["input", *(f"{la.name}.{p}" for la in layers for p in ("weight", "bias"))]
    inputs = [x, *(getattr(la, p) for la in layers for p in ("weight", "bias"))]
    for t in inputs:
        t.requires_grad_()
    clock.mark("draw")
    seen = _Seen([la.name for la in layers], names)
    # A built-in loss is the tool's own code on the tool's own tensors: no copies (peak memory)
    call = prepare(partial(_loss_through, loss_def, real, seen), inputs, names,
                   isolate=loss_def.user_code)
    again = partial(_autograd_grads, loss_def, layers, x, real) if spec.repeat > 1 else None
    repeats: list[dict[str, Any]] = []
    got = one_path.autograd_then_manual(
        call, partial(_manual_through, loss_def, real, seen), spec.seed, clock,
        backward=partial(backward, loss_def),
        after_backward=partial(_repeat, spec, seen, again, clock, repeats))
    assert got.manual is not None and seen.y.grad is not None  # y retains its grad
    loss_value = float(got.out)
    repeat = repeats[0] if repeats else None
    # In the order the chain rule reaches them: the output, the last layer first, the input.
    order = ["predicted",
             *(f"{la.name}.{p}" for la in reversed(layers) for p in ("weight", "bias")), "input"]
    autos = {"predicted": seen.y.grad, **dict(zip(names, got.auto, strict=True))}
    manual = {"predicted": seen.grad_y, **dict(zip(names, got.manual, strict=True))}
    finite_diff = None
    if spec.reference == "finite-diff":
        gradients = {name: {"autograd": autos[name], "manual": manual[name]} for name in order}
        finite_diff = _finite_diff(spec, loss_def, layers, x, real, gradients, progress)
        clock.mark("finite_diff")

    # The same tensor names as the plain check: predicted is the model's output here, and the
    # two gradients are the loss's, at the output (the per-parameter ones are in comparisons).
    tensors: dict[str, TensorView] = {
        "real": tensor_view("real", real),
        "input": tensor_view("input", x),
        "predicted": tensor_view("predicted", seen.y),
        "manual_grad": tensor_view("manual_grad", manual["predicted"]),
        "autograd_grad": tensor_view("autograd_grad", autos["predicted"]),
    }
    comparisons = manual_vs_autograd(order, [manual[n] for n in order],
                                     [autos[n] for n in order], lambda _: (rtol, atol),
                                     spec.exact)
    half_notes: list[str] = []
    if is_half(x.dtype) and not spec.exact and spec.rtol is None and spec.atol is None:
        f64 = [Layer(la.name, to64(la.weight), to64(la.bias)) for la in layers]
        truth = _autograd_grads(loss_def, f64, to64(x), to64(real))
        comparisons, half_notes = against_float64(
            comparisons, [manual[n] for n in order], [autos[n] for n in order],
            [truth[n] for n in order], lambda _: (rtol, atol))
    diagnosis = diagnose_rows(
        comparisons, [manual[n] for n in order], [autos[n] for n in order],
        lambda _: (rtol, atol), spec.exact, {n: list(manual[n].shape) for n in order}, {})
    for c, name in zip(comparisons, order, strict=True):
        m = manual[name]
        if not c.bit_exact and m.numel() <= TENSOR_DATA_LIMIT:
            key = f"difference[{name}]"
            tensors[key] = tensor_view(key, difference(m, autos[name]))
    clock.mark("compare")
    checked = comparisons + (finite_diff.comparisons if finite_diff else [])

    formula = LINEAR_FORMULA if spec.model == "linear" else MLP_FORMULA
    return CheckResult(
        spec=spec.to_dict(),
        passed=all(c.passed for c in checked) and repeat_passed(repeat),
        bit_exact=all(c.bit_exact for c in comparisons),
        criterion="exact" if spec.exact else "tolerance",
        loss_name=loss_def.name,
        loss_value=loss_value,
        loss_formula=loss_def.formula,
        gradient_formula=f"g = {loss_def.gradient_formula}; then by hand through the "
        f"{spec.model}: {formula}",
        grad_fn_chain=got.chain,
        comparisons=checked,
        tensors=tensors,
        environment={},
        timings=clock.total(),
        notes=[f"model: {describe(spec)}", *draw_notes(loss_def),
               *(finite_diff.notes if finite_diff else []), *half_notes],
        diagnosis=diagnosis,
        finite_diff=finite_diff.block if finite_diff else None,
        repeat=repeat,
    )


class _Seen:
    """What the model's forward saw, for its manual backward and the output's comparison: the
    output y (retaining its .grad, the tutorial's y.grad), the tanh activations, and the loss's
    manual gradient at y."""

    def __init__(self, layer_names: list[str], names: list[str]) -> None:
        self.layer_names = layer_names
        self.names = names
        self.y: Tensor
        self.activations: list[Tensor] = []
        self.grad_y: Tensor

    def net(self, params: tuple[Tensor, ...]) -> list[Layer]:
        return [Layer(name, params[2 * i], params[2 * i + 1])
                for i, name in enumerate(self.layer_names)]


def _loss_through(loss_def: Loss, real: Tensor, seen: _Seen, x: Tensor,
                  *params: Tensor) -> Tensor:
    y, seen.activations = forward(seen.net(params), x)
    y.retain_grad()  # a non-leaf keeps its .grad only when asked (the tutorial's y.grad)
    seen.y = y
    return loss_def.forward(y, real)


def _manual_through(loss_def: Loss, real: Tensor, seen: _Seen, x: Tensor, *params: Tensor,
                    grad_output: Tensor) -> tuple[Tensor, ...]:
    """The loss is a scalar (grad_output is 1): g = manual_grad(y, real), then by hand through
    the model, at what the forward saw."""
    seen.grad_y = grad_y = loss_def.manual_grad(seen.y, real)
    backprop = manual_backward(seen.net(params), x, [a.detach() for a in seen.activations],
                               grad_y)
    return tuple(backprop[name] for name in seen.names)


def _repeat(spec: CheckSpec, seen: _Seen, again: Callable[[], dict[str, Tensor]] | None,
            clock: Clock, repeats: list[dict[str, Any]], auto: list[Tensor]) -> None:
    """--repeat N: N - 1 more autograd passes, each on a fresh graph, before the manual
    backward."""
    if again is not None:
        assert seen.y.grad is not None  # y retains its grad
        first = {"predicted": seen.y.grad, **dict(zip(seen.names, auto, strict=True))}
        repeats.append(repeat_gradients(first, again, spec.repeat,
                                        in_verdict=spec.deterministic))
        clock.mark("repeat")


def describe(spec: CheckSpec) -> str:
    features = spec.shape[-1]
    if spec.model == "linear":
        return f"y = x Wᵀ + b, W {features}×{features}, on x of shape {spec.shape_text()}"
    hidden = spec.hidden or DEFAULT_HIDDEN
    return (
        f"y = tanh(x W₁ᵀ + b₁) W₂ᵀ + b₂, W₁ {hidden}×{features}, W₂ {features}×{hidden}, "
        f"on x of shape {spec.shape_text()}"
    )

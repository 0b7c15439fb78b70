"""What the ranks train and what the reference computes: a module, the global batch, the loss and
how it reduces over the batch, and the training step (the target's own, or the default one).

--model linear|mlp: the model of checks/model.py as torch.nn.Linear layers (the same draws from the
seed: real, x, then the parameters), the batch (x, real) and the chosen loss. A --target module
(the inputs form: an nn.Module with inputs(generator, dtype, device)) brings its own inputs; it may
also give

    loss(output, *inputs) -> scalar      default: output.square().mean()
    reduction = "mean" | "sum"           how loss reduces over the batch; default "mean"
    train_step(model, micro_batches)     default: default_train_step below
    ddp_options / fsdp_options           keyword arguments for DDP / fully_shard

Every rank builds the same module from the same seed (the global RNG is seeded before the target
is made, so nn.Module's default initialisation agrees); the check tells when it did not.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.spec import CheckSpec
from autograd_check.checks.model import draw_model
from autograd_check.distributed.rendezvous import lost_contact
from autograd_check.losses.base import Loss
from autograd_check.losses.inputs import InputsTarget, load_any_target
from autograd_check.losses.resolve import resolve_loss
from autograd_check.losses.user import TargetRaised, reduction_of, user_line

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

DEFAULT_TARGET_LOSS = "output.square().mean()"


@dataclass
class Problem:
    module: nn.Module
    batch: tuple[Tensor, ...]
    """The global batch: every tensor's first dimension is the batch, split over the ranks."""
    loss_of: Callable[[nn.Module, tuple[Tensor, ...]], Tensor]
    """The loss of a (wrapped or plain) module on a (micro-)batch."""
    reduction: str
    loss_name: str
    loss_formula: str
    train_step: Callable[..., Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for DDP (ddp_options) or fully_shard (fsdp_options)."""
    user_code: bool = False
    filename: str | None = None
    default_loss: bool = False
    """A target without loss(): the default output.square().mean() is used."""


def build_problem(spec: CheckSpec, device: torch.device) -> Problem:
    """The problem of this spec, the same on every rank."""
    torch = import_torch()
    dtype = getattr(torch, spec.dtype)
    target = load_target(spec) if spec.target is not None else None
    if isinstance(target, InputsTarget):
        return _target_problem(spec, target, device, dtype)
    loss_def = target if target is not None else resolve_loss(spec)
    return _model_problem(spec, loss_def, device, dtype)


def load_target(spec: CheckSpec) -> Loss | InputsTarget:
    """The target, made with the global RNG seeded from --seed: a module's default
    initialisation is then the same on every rank (the caller's RNG restored after)."""
    torch = import_torch()
    assert spec.target is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return load_any_target(spec.target)


def _model_problem(spec: CheckSpec, loss_def: Loss, device: torch.device,
                   dtype: torch.dtype) -> Problem:
    torch = import_torch()
    if spec.model is None:
        raise BadInput(f"target {spec.target!r} is a loss; --ranks needs --model linear|mlp with "
                       "it, or a --target module with inputs(generator, dtype, device)")
    # The model check's own draws (the same seed gives the same real, x and parameters), as
    # torch.nn.Linear layers with tanh between them.
    real, x, drawn = draw_model(spec, device, loss_def)
    layers: dict[str, nn.Module] = {}
    for i, layer in enumerate(drawn):
        out, inp = layer.weight.shape
        linear = torch.nn.Linear(inp, out, dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(layer.weight)
            linear.bias.copy_(layer.bias)
        layers[layer.name] = linear
        if i < len(drawn) - 1:
            layers[f"tanh{i + 1}"] = torch.nn.Tanh()
    module = torch.nn.Sequential(OrderedDict(layers))

    def loss_of(model: nn.Module, micro: tuple[Tensor, ...]) -> Tensor:
        out: Tensor = loss_def.forward(model(micro[0]), micro[1])
        return out

    reduction = getattr(loss_def, "reduction", "mean")
    return Problem(module, (x, real), loss_of, reduction, loss_def.name,
                   loss_def.formula, user_code=loss_def.user_code)


def _target_problem(spec: CheckSpec, target: InputsTarget, device: torch.device,
                    dtype: torch.dtype) -> Problem:
    torch = import_torch()
    module = target.fn
    if target.kind != "module" or not isinstance(module, torch.nn.Module):
        raise BadInput(f"target {target.short!r} is not an nn.Module: --ranks splits a module's "
                       "batch over ranks (give an nn.Module with inputs(generator, dtype, device))")
    module.to(device=device, dtype=dtype)  # its floating-point parameters, as without --ranks
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    batch = tuple(t.detach() for t in target.draw(gen, dtype, device))
    reduction = reduction_of(target.short, module)
    user_loss = getattr(module, "loss", None)
    options_name = "fsdp_options" if spec.parallel == "fsdp" else "ddp_options"
    options = getattr(module, options_name, None) or {}
    if not isinstance(options, dict):
        raise BadInput(f"target {target.short!r}: {options_name} is a "
                       f"{type(options).__name__}; expected a dict of keyword arguments")

    def loss_of(model: nn.Module, micro: tuple[Tensor, ...]) -> Tensor:
        out = model(*micro)
        if user_loss is None:
            return out.square().mean()  # type: ignore[no-any-return]
        return user_loss(out, *micro)  # type: ignore[no-any-return]

    step = getattr(module, "train_step", None)
    return Problem(
        module, batch, loss_of, reduction, target.short,
        _doc_line(user_loss) or (f"loss(output, *inputs) of {target.short}" if user_loss
                                 else f"loss = {DEFAULT_TARGET_LOSS}"),
        train_step=step if callable(step) else None, options=dict(options), user_code=True,
        filename=target.filename, default_loss=user_loss is None,
    )


def _doc_line(fn: object) -> str | None:
    doc = getattr(fn, "__doc__", None)
    return doc.strip().splitlines()[0] if isinstance(doc, str) and doc.strip() else None


def shards(problem: Problem, world: int, accumulate: int, rank: int) -> list[tuple[Tensor, ...]]:
    """This rank's micro-batches: the global batch split into world equal shards (rank r takes
    the r-th), each split into `accumulate` equal micro-batches."""
    size = problem.batch[0].shape[0] if problem.batch[0].dim() else 0
    for i, t in enumerate(problem.batch):
        if t.dim() == 0 or t.shape[0] != size:
            raise BadInput(f"input {i} has shape {list(t.shape)}: every input of a check over "
                           f"ranks needs the batch as its first dimension ({size})")
    if size == 0 or size % (world * accumulate):
        raise BadInput(f"the batch of {size} does not split into {world} ranks x {accumulate} "
                       "micro-batches of equal size; choose a batch divisible by "
                       f"{world * accumulate}")
    per_rank = size // world
    mine = [t[rank * per_rank:(rank + 1) * per_rank] for t in problem.batch]
    per_micro = per_rank // accumulate
    return [tuple(t[k * per_micro:(k + 1) * per_micro] for t in mine) for k in range(accumulate)]


@contextlib.contextmanager
def gradient_sync(model: Any, parallel: str, sync: bool) -> Iterator[None]:
    """DDP's no_sync() when not syncing; FSDP2's set_requires_gradient_sync(sync)."""
    if parallel == "fsdp":
        model.set_requires_gradient_sync(sync)
        yield
    elif sync:
        yield
    else:
        with model.no_sync():
            yield


def default_train_step(problem: Problem, parallel: str) -> Callable[..., None]:
    """One optimiser step's backward passes as training does it: K micro-batches, the gradients
    synchronised on the last only, a mean loss divided by K (a sum loss adds up as it is)."""

    def train_step(model: Any, micro_batches: list[tuple[Tensor, ...]]) -> None:
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            with gradient_sync(model, parallel, sync=i == k - 1):
                loss = problem.loss_of(model, micro)
                scaled = loss / k if problem.reduction == "mean" else loss
                scaled.backward()  # type: ignore[no-untyped-call]

    return train_step


def run_user(problem: Problem, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), the user's own code: its exception is the user's (a failed check), unless it is
    a collective that failed because another rank died (JobFailed, exit 4)."""
    try:
        return fn(*args)
    except (Exception, SystemExit) as e:
        lost = lost_contact(e, what)
        if lost is not None:
            raise lost from None
        if not problem.user_code:
            raise
        raise TargetRaised(_what(e, problem.filename, what), e,
                           user_line(e, problem.filename)) from None


def _what(error: BaseException, filename: str | None, what: str) -> str:
    """'forward()': the user's innermost function that was running, else `what`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return f"{frames[-1].name}()" if frames else what

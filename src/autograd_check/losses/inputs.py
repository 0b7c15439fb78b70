"""--target with inputs: any function of any tensors, checked from the command line (and on a
Slurm node) through the Python API, as `check()` checks it from Python.

Besides the loss form (losses/user.py: loss(predicted, real) and manual_grad(predicted, real)), a
target may be

- an object (instance, class called with no arguments, or module namespace) that has
      inputs(generator, dtype, device) -> tuple of tensors   (a single tensor is a 1-tuple)
      fn(*inputs) -> tensor
  and optionally manual(*inputs, grad_output) -> the hand-derived gradients, one per checked tensor;
- an `nn.Module` subclass (called with no arguments) or instance with such an `inputs` method: fn
  is the module itself, and its parameters are checked too (named by their parameter names);
- a `torch.autograd.Function` subclass with a static `inputs` (and optionally `manual`): fn is
  its `.apply`.

`generator` is a torch.Generator on the check's device, seeded from --seed; `dtype` and `device`
are --dtype's torch.dtype and the check's torch.device. The tensors that require grad are checked;
when none does, every floating-point one is.

Errors as for any target: a missing method or a return of the wrong kind is BadInput (exit 2, one
line); the user's code raising is TargetRaised (a failed check, exit 1).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch
from autograd_check.losses.base import Loss
from autograd_check.losses.user import (
    CONTRACT,
    TargetRaised,
    as_loss,
    import_target,
    resolve_name,
    short_name,
    split,
    user_line,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

INPUTS = "inputs(generator, dtype, device)"
INPUTS_CONTRACT = f"or {INPUTS} and fn(*inputs), with manual(*inputs, grad_output) optional"
_API_DIRS = tuple(Path(__file__).resolve().parents[1] / d for d in ("api", "references"))
"""Where check() checks its arguments (a ValueError raised there is a refusal, not the user's)."""


@dataclass(frozen=True)
class InputsTarget:
    """A target that gives its own inputs: what check() is called with."""

    text: str
    short: str
    kind: str
    """'function' (an autograd.Function subclass), 'module' (an nn.Module) or 'object'."""
    fn: Callable[..., Any]
    inputs: Callable[..., Any]
    manual: Callable[..., Any] | None
    filename: str | None

    def draw(self, generator: torch.Generator, dtype: torch.dtype,
             device: torch.device) -> tuple[Tensor, ...]:
        """inputs(generator, dtype, device), checked: a tuple of tensors; when none requires
        grad, every floating-point one is made to."""
        torch = import_torch()
        try:
            given = self.inputs(generator, dtype, device)
        except (Exception, SystemExit) as e:
            raise TargetRaised(INPUTS, e, user_line(e, self.filename)) from None
        items = [given] if isinstance(given, torch.Tensor) else given
        if not isinstance(items, (tuple, list)) or not items:
            raise BadInput(f"target {self.short!r}: {INPUTS} returned "
                           f"{_kind(given)}; expected a tuple of tensors")
        for i, t in enumerate(items):
            if not isinstance(t, torch.Tensor):
                raise BadInput(f"target {self.short!r}: {INPUTS} returned a "
                               f"{type(t).__name__} at position {i}; expected a tuple of tensors")
        tensors = [t.detach() if t.requires_grad and not t.is_leaf else t for t in items]
        if not any(t.requires_grad for t in tensors):
            tensors = [t.detach().requires_grad_() if t.is_floating_point() else t
                       for t in tensors]
        return tuple(tensors)

    def call_api(self, run: Callable[[], Any]) -> Any:
        """run() (a check() call) with its failures in the target's terms: the API's refusal of
        what the target gave (its TypeError/ValueError) is BadInput; anything the user's own code
        raised is TargetRaised."""
        try:
            return run()
        except (BadInput, TargetRaised):
            raise
        except (TypeError, ValueError) as e:
            if _raised_in_api(e):
                raise BadInput(f"target {self.short!r}: {e}") from None
            raise TargetRaised(_what(e, self.filename), e, user_line(e, self.filename)) from None
        except (Exception, SystemExit) as e:
            raise TargetRaised(_what(e, self.filename), e, user_line(e, self.filename)) from None


def _kind(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return f"an empty {type(value).__name__}"
    return f"a {type(value).__name__}"


def _raised_in_api(error: BaseException) -> bool:
    """The innermost frame is the API's own (an argument it refused), not the user's code."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(Path(frames[-1].filename).resolve().is_relative_to(d)
                                for d in _API_DIRS)


def _what(error: BaseException, filename: str | None) -> str:
    """'backward()': the user's innermost function that was running, else fn(*inputs)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return f"{frames[-1].name}()" if frames else "fn(*inputs)"


def find_target(text: str) -> bool:
    """Import the target's file or module and find its NAME, without calling anything in it:
    BadInput when either is missing. Whether it gives its own inputs (the inputs form)."""
    where, name = split(text)
    import_torch()  # before the user's own `import torch`: numpy's noise about it filtered
    module = import_target(text, where)
    return callable(getattr(resolve_name(text, module, name, instantiate=False), "inputs", None))


def load_any_target(text: str) -> Loss | InputsTarget:
    """Import the target and tell its form: one with inputs (an InputsTarget), else the loss
    form (a Loss, as load_target gives). BadInput when it is neither."""
    torch = import_torch()
    where, name = split(text)
    module = import_target(text, where)
    filename = getattr(module, "__file__", None)
    short = short_name(text)
    raw = resolve_name(text, module, name, instantiate=False)
    label = name or where
    if isinstance(raw, type) and issubclass(raw, torch.autograd.Function):
        function: Any = raw
        if not callable(getattr(function, "inputs", None)):
            raise BadInput(f"target {text!r}: {label} is a torch.autograd.Function without "
                           f"{INPUTS}; give it one as a @staticmethod returning its inputs")
        return InputsTarget(text, short, "function", function.apply, function.inputs,
                            _manual(text, label, function), filename)
    obj = resolve_name(text, module, name) if isinstance(raw, type) else raw
    if callable(getattr(obj, "inputs", None)):
        if isinstance(obj, torch.nn.Module):
            return InputsTarget(text, short, "module", obj, obj.inputs,
                                _manual(text, label, obj), filename)
        fn = getattr(obj, "fn", None)
        if not callable(fn):
            raise BadInput(f"target {text!r}: {label} has {INPUTS} but lacks fn(*inputs), the "
                           "function whose gradients are checked")
        return InputsTarget(text, short, "object", fn, obj.inputs, _manual(text, label, obj),
                            filename)
    if isinstance(obj, torch.nn.Module):
        raise BadInput(f"target {text!r}: {label} is an nn.Module without {INPUTS}; give it "
                       "one returning the module's inputs")
    missing = [f for f in ("loss", "manual_grad") if not callable(getattr(obj, f, None))]
    if missing:
        lacks = " and ".join(f"{f}(predicted, real)" for f in missing)
        tail = f" ({INPUTS_CONTRACT})" if len(missing) == 2 else ""
        raise BadInput(f"target {text!r}: {label} lacks {lacks}; {CONTRACT}{tail}")
    return as_loss(text, obj, filename)


def _manual(text: str, label: str, obj: Any) -> Callable[..., Any] | None:
    manual = getattr(obj, "manual", None)
    if manual is not None and not callable(manual):
        raise BadInput(f"target {text!r}: {label}.manual is a {type(manual).__name__}, not "
                       "manual(*inputs, grad_output)")
    return manual

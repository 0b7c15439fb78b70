"""check()'s arguments, checked once and prepared: what is checked, under which names, how fn is
evaluated at other values, the cotangent, and the caller's state kept as it was.

Isolation (check(), and a --target through it): the caller's tensors are never handed to the
user's code. fn works on the check's own copies (a checked input is a fresh leaf made from a
copy), manual and every backward on fresh copies of their own; the caller's tensors, which no
user code is given, are the kept values (`pristine`) that each step's copies are compared with
afterwards (references/contract.py) and put back from after a write. An `nn.Module` is called
through `torch.func.functional_call` with copies of its parameters and buffers (so running
statistics are not updated). `run`'s built-in losses, whose code is the tool's own, are evaluated
on the tensors themselves (isolate=False: no copies, for peak memory at large shapes).
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.spec import DEFAULT_MAX_FD_ELEMENTS, DEFAULT_TOLERANCES
from autograd_check.kernel.compare import to64
from autograd_check.references.contract import same_values, written

if TYPE_CHECKING:
    import torch
    from torch import Tensor

REFERENCES = ("autograd", "finite-diff", "projection", "forward")
DEFAULT_DIRECTIONS = 3
"""k, the random directions of reference='projection' and 'forward' (per checked tensor)."""
DEFAULT_STEP = 1e-6
"""h, the central-difference step of 'finite-diff', 'projection' and order=2 (gradcheck's eps)."""
OPTIONS: dict[str, Any] = {
    "directions": DEFAULT_DIRECTIONS,
    "step": DEFAULT_STEP,
    "max_fd_elements": DEFAULT_MAX_FD_ELEMENTS,
    "nondet_tol": 0.0,
}
"""check()'s own **options and their defaults; any other keyword argument goes to fn."""


@dataclass(frozen=True)
class Arguments:
    """check()'s keyword arguments, validated."""

    reference: str
    rtol: float | None
    atol: float | None
    exact: bool
    order: int
    seed: int
    directions: int
    step: float
    max_fd_elements: int
    nondet_tol: float = 0.0
    name: str | None = None
    """The label of the report (fn's own name when None)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """fn's non-tensor keyword arguments."""

    def tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """(rtol, atol): those given, else torch.testing.assert_close's defaults for dtype."""
        name = str(dtype).removeprefix("torch.")
        rtol, atol = DEFAULT_TOLERANCES.get(name, DEFAULT_TOLERANCES["float32"])
        return (rtol if self.rtol is None else self.rtol, atol if self.atol is None else self.atol)


def _tolerance(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _whole(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < least:
        raise ValueError(f"{name} must be >= {least}, not {value}")
    return value


def parse_arguments(
    manual: object,
    reference: object,
    rtol: object,
    atol: object,
    exact: object,
    order: object,
    seed: object,
    options: dict[str, Any],
    name: object = None,
) -> Arguments:
    """check()'s arguments, validated (TypeError/ValueError naming the bad one). options holds
    check()'s own (OPTIONS) and, apart from those, fn's keyword arguments."""
    kwargs = {k: v for k, v in options.items() if k not in OPTIONS}
    opts = {**OPTIONS, **{k: v for k, v in options.items() if k in OPTIONS}}
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, not {type(name).__name__}")
    given = reference is not None
    if manual is not None and not callable(manual):
        raise TypeError(f"manual must be a function or None, not {type(manual).__name__}")
    if reference is None:
        reference = "autograd" if manual is not None else "projection"
    if reference not in REFERENCES:
        raise ValueError(
            f"reference {reference!r} is not one of " + ", ".join(repr(r) for r in REFERENCES)
        )
    if reference == "autograd" and manual is None:
        raise ValueError(
            "reference='autograd' compares manual with autograd, but manual is None: pass "
            "manual=..., or pick 'projection', 'forward' or 'finite-diff'"
        )
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be True or False, not {type(exact).__name__}")
    if exact and manual is None:
        raise ValueError("exact=True asks manual and autograd to agree bit for bit, and manual "
                         "is None: pass manual=..., or drop exact (a numerical reference is "
                         "never bit-exact)")
    if "directions" in options and given and reference in ("autograd", "finite-diff"):
        raise ValueError(f"directions applies to reference='projection' or 'forward', not to "
                         f"reference={reference!r}: drop it, or pick one of those")
    order = _whole("order", order, 1)
    if order > 2:
        raise ValueError(f"order must be 1 or 2, not {order}")
    step = opts["step"]
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"step must be a number, not {type(step).__name__}")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a finite number > 0, not {step!r}")
    nondet_tol = opts["nondet_tol"]
    if isinstance(nondet_tol, bool) or not isinstance(nondet_tol, (int, float)) or not (
            nondet_tol >= 0):  # inf: a spread is reported, never in the verdict
        raise ValueError(f"nondet_tol must be a number >= 0, not {nondet_tol!r}")
    return Arguments(
        reference=str(reference),
        nondet_tol=float(nondet_tol),
        name=name,
        kwargs=kwargs,
        rtol=_tolerance("rtol", rtol),
        atol=_tolerance("atol", atol),
        exact=exact,
        order=order,
        seed=_whole("seed", seed, 0),
        directions=_whole("directions", opts["directions"], 1),
        step=float(step),
        max_fd_elements=_whole("max_fd_elements", opts["max_fd_elements"], 1),
    )


@dataclass
class Checked:
    """One tensor whose gradient is checked: an input with requires_grad=True, or a parameter."""

    name: str
    value: Tensor
    """A fresh leaf that requires grad: a copy of the caller's tensor (a detached view of it when
    the call is not isolated)."""
    role: str
    """'input' or 'parameter'."""
    key: int | str
    """Its position in inputs, or its name in module.named_parameters()."""


JOINED = -1
"""Call.output for every floating-point output of fn at once (their flattened concatenation),
so that a backward receives a gradient for each of them together."""


@dataclass
class Call:
    """fn and its inputs, ready to be evaluated at other values of the checked tensors."""

    fn: Callable[..., Any]
    name: str
    module: Any | None
    """fn when it is an nn.Module, else None."""
    inputs: list[Tensor]
    """Detached views of the caller's inputs (what manual receives)."""
    checked: list[Checked]
    caller_tensors: list[Tensor]
    """The caller's own tensors (inputs and parameters), whose .grad is left as it was."""
    state: dict[str, Tensor] = field(default_factory=dict)
    """A module's parameters and buffers (copies), for functional_call."""
    isolate: bool = True
    """Whether every call of fn gets copies of the inputs and buffers (the user's code)."""
    pristine: list[Tensor] = field(default_factory=list)
    """Private copies of inputs (then of the module's state, in state's order), never handed
    out: what a call's copies are compared with, and made from (isolate only)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Non-tensor keyword arguments passed to fn (and to manual) as they are."""
    output: int | None = None
    """For an fn with several outputs, the one checked (references/outputs.py), else None;
    JOINED: every floating-point output at once, flattened and joined into one vector."""
    _cast: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> list[Tensor]:
        return [c.value for c in self.checked]

    def evaluate(self, values: Sequence[Tensor], float64: bool = False) -> Any:
        """fn with the checked tensors replaced by values; with float64, every other floating
        input, parameter and buffer is cast to float64 too (values are the caller's to cast)."""
        return self.invoke(*self.arguments(values, float64))

    def arguments(self, values: Sequence[Tensor], float64: bool = False) -> tuple[
            list[Tensor], dict[str, Tensor]]:
        """fn's positional inputs and a module's state for one call: copies when isolated."""
        if float64:
            if not self._cast:
                self._cast["inputs"] = [to64(t) for t in self.inputs]
                self._cast["state"] = {k: to64(t) for k, t in self.state.items()}
            args, state = list(self._cast["inputs"]), dict(self._cast["state"])
        else:
            args, state = list(self.inputs), dict(self.state)
        for c, v in zip(self.checked, values, strict=True):
            if c.role == "input":
                args[int(c.key)] = v
            else:
                state[str(c.key)] = v
        return args, state

    def invoke(self, args: Sequence[Tensor], state: dict[str, Tensor]) -> Any:
        torch = import_torch()
        if self.module is not None:
            out = torch.func.functional_call(self.module, state, tuple(args), self.kwargs or None)
        elif self.kwargs and function_class(torch, self.fn) is not None:
            out = self.fn(*positional(torch, self.fn, args, self.kwargs))
        else:
            out = self.fn(*args, **self.kwargs)
        if self.output is None:
            return out
        if self.output == JOINED:
            return torch.cat([o.reshape(-1) for o in out if o.is_floating_point()])
        return out[self.output]

    def fresh_leaves(self, other: bool = False) -> list[Tensor]:
        """New leaves for the checked tensors, at the values the caller gave; with other, each
        reversed along every dimension (the same values elsewhere, so fn's domain holds: the
        contract's second forward)."""
        if other:
            return [x.detach().flip(list(range(x.dim()))).requires_grad_()
                    for x in self.fresh_leaves()]
        if not self.isolate:
            return [c.value.detach().requires_grad_() for c in self.checked]
        return [copy(self.kept(c.role, c.key)).requires_grad_() for c in self.checked]

    def fresh(self, **changes: Any) -> Call:
        """This call with new leaves for the checked tensors (no .grad yet), and changes."""
        checked = [replace(c, value=v) for c, v in zip(self.checked, self.fresh_leaves(),
                                                       strict=True)]
        state = dict(self.state)
        for c in checked:
            if c.role == "parameter":
                state[str(c.key)] = c.value
        return replace(self, checked=checked, state=state, _cast={}, **changes)

    def kept(self, role: str, key: int | str) -> Tensor:
        """The private copy of an input (by position) or of a module's state entry (by name)."""
        if role == "input":
            return self.pristine[int(key)]
        return self.pristine[len(self.inputs) + list(self.state).index(str(key))]

    @property
    def input_names(self) -> list[str]:
        named = {int(c.key): c.name for c in self.checked if c.role == "input"}
        return [named.get(i, f"inputs[{i}]") for i in range(len(self.inputs))]

    def written_inputs(self, who: str, given: Sequence[Tensor],
                       state: dict[str, Tensor] | None = None) -> list[str]:
        """Sentences for each of given (the inputs handed to who) and, for a module, each state
        entry, that was written: compared with the private copies (isolated calls only)."""
        if not self.isolate:
            return []
        names, tensors = list(self.input_names), list(given)
        kept = self.pristine[: len(tensors)]
        if state is not None and self.module is not None:
            # parameters only: a module in training mode updates its buffers (running stats)
            parameters = {n for n, _ in self.module.named_parameters()}
            for k, t in state.items():
                if k in parameters:
                    names.append(f"{type(self.module).__name__}.{k}")
                    tensors.append(t)
                    kept.append(self.kept("parameter", k))
        return written(who, names, tensors, kept)

    def writes(self, who: str) -> list[str]:
        """After a run of evaluations: a sentence for each working copy (input, its float64 cast,
        a module's parameter) that who wrote into, each then put back (isolated calls only).
        The working copies are the tool's own, so a write never reaches the caller; checking
        once after many evaluations, rather than copying for each, keeps a reference as fast as
        fn itself."""
        if not self.isolate:
            return []
        found = self.written_inputs(who, self.inputs, self.state)
        for cast, t in zip(self._cast.get("inputs", []), self.inputs, strict=False):
            if cast.data_ptr() == t.data_ptr():  # float64 already: the same memory, seen above
                continue
            if not found and not same_values(cast.to(t.dtype), t):
                found = [f"{who} wrote into a float64 copy of its inputs: it must leave its "
                         "inputs as it found them"]
        if found:
            self.restore()
        return found

    def manual_inputs(self) -> list[Tensor]:
        """What manual is given: copies of the inputs when isolated, else the inputs."""
        if not self.isolate:
            return list(self.inputs)
        return [copy(self.kept("input", i)) for i in range(len(self.inputs))]

    def restore(self) -> None:
        """Every working copy back to the caller's values (after a call wrote into them)."""
        if not self.isolate:
            return
        torch = import_torch()
        with torch.no_grad():
            for i, t in enumerate(self.inputs):
                t.copy_(self.kept("input", i))
            for k, t in self.state.items():
                t.data.copy_(self.kept("parameter", k))  # .data: a leaf's graph is not this
            for c in self.checked:
                c.value.data.copy_(self.kept(c.role, c.key))
        self._cast.clear()


def describe_fn(fn: object) -> str:
    """MyFunction.apply, a function's qualified name, torch.sin's name, or a module's class."""
    torch = import_torch()
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return f"{owner.__qualname__}.{getattr(fn, '__name__', 'apply')}"
    if isinstance(fn, torch.nn.Module):
        return type(fn).__name__
    module = getattr(fn, "__module__", None)
    if module == "torch" or owner is torch._C._VariableFunctions:
        return f"torch.{getattr(fn, '__name__', '?')}"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


def function_class(torch: Any, fn: Any) -> type | None:
    """The autograd.Function whose apply fn is, else None."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return owner
    return None


def positional(torch: Any, fn: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """MyFunction.apply's arguments all by position (apply takes no keywords on every torch):
    kwargs bound to forward's parameters by name."""
    target, skip = _signature_target(torch, fn, None)
    bound = inspect.signature(target).bind(*([None] * skip), *args, **kwargs)
    bound.apply_defaults()
    return list(bound.args[skip:])


def _signature_target(torch: Any, fn: Any, module: Any | None) -> tuple[Any, int]:
    """The function whose parameters name fn's inputs, and how many leading ones to skip."""
    if module is not None:
        return module.forward, 0
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        function: Any = owner
        # forward(ctx, *inputs), or forward(*inputs) with a separate setup_context
        with_ctx = function.setup_context is torch.autograd.Function.setup_context
        return function.forward, 1 if with_ctx else 0
    return fn, 0


def input_names(torch: Any, fn: Any, module: Any | None, count: int) -> list[str]:
    """fn's own parameter names where they name every input once, else inputs[i]."""
    fallback = [f"inputs[{i}]" for i in range(count)]
    target, skip = _signature_target(torch, fn, module)
    try:
        parameters = list(inspect.signature(target).parameters.values())[skip:]
    except (TypeError, ValueError):
        return fallback
    names: list[str] = []
    for p in parameters:
        if len(names) == count:
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}[{j}]" for j in range(count - len(names))]
        else:
            break
    return names if len(names) == count and len(set(names)) == count else fallback


def copy(t: Tensor) -> Tensor:
    """A detached copy of t in t's own layout, so that a backward runs at the strides the
    caller's tensor has: clone() keeps a dense layout (transposed, channels_last) but makes a
    slice with a step (x[:, ::2]) contiguous, where a stride-blind backward would pass. An
    overlapping layout (expand) cannot be written into: it is copied contiguous."""
    torch = import_torch()
    t = t.detach()
    out: Tensor = torch.empty_like(t)  # a dense layout's strides kept (torch.preserve_format)
    if out.stride() != t.stride() and 0 not in t.stride():
        out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    try:
        out.copy_(t)
    except RuntimeError:  # more than one element at one place
        return t.clone()
    return out


def _working_inputs(tensors: Sequence[Tensor], checked: Sequence[Checked],
                    isolate: bool) -> list[Tensor]:
    """fn's inputs for the check: a checked input's place holds its leaf's data (fn is given
    the leaf itself), any other a copy when isolated (the caller's never)."""
    leaves = {int(c.key): c.value for c in checked if c.role == "input"}
    return [leaves[i].detach() if i in leaves else (copy(x) if isolate else x.detach())
            for i, x in enumerate(tensors)]


def _checkable(what: str, x: Tensor) -> None:
    """A checked tensor has elements, all finite: no gradient is defined at NaN or inf, and no
    reference can be evaluated there (ValueError naming it, before anything runs)."""
    torch = import_torch()
    if x.numel() == 0:
        raise ValueError(f"{what} has no elements (shape {list(x.shape)}): there is no gradient "
                         "to check; give it at least one element")
    # a finite sum says every element is (one pass, no n-sized mask); else count them
    if x.is_floating_point() and not math.isfinite(float(x.detach().sum())):
        bad = int((~torch.isfinite(x.detach())).sum())
        if bad:
            raise ValueError(f"{what} holds {bad} NaN or infinite value(s): no gradient is "
                             "defined there; check at finite values (an input that does not "
                             "require grad, an attention mask say, may hold -inf)")


def prepare(fn: object, inputs: Sequence[object], names: Sequence[str] | None = None,
            isolate: bool = True, kwargs: dict[str, Any] | None = None) -> Call:
    """Check fn and inputs (TypeError/ValueError naming the argument) and prepare the call.

    names, when given, name the inputs (one per input) instead of fn's signature: the CLI's
    model check names them as its own statistics do (input, fc1.weight, ...). isolate: copies
    for every call (the module docstring); kwargs: fn's non-tensor keyword arguments."""
    torch = import_torch()
    if not callable(fn):
        raise TypeError(f"fn must be callable (a function, MyFunction.apply or an nn.Module), "
                        f"not {type(fn).__name__}")
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"inputs[{i}] is a {type(x).__name__}, not a tensor: check() takes fn's inputs "
                "as tensors (bind other arguments with a lambda or functools.partial)"
            )
    for key, value in (kwargs or {}).items():
        if isinstance(value, torch.Tensor):
            raise TypeError(f"keyword argument {key} is a tensor: pass tensors as inputs, by "
                            "position (keyword arguments are fn's non-tensor options)")
    tensors: list[Tensor] = list(inputs)  # type: ignore[arg-type]  # all tensors, checked above
    module = fn if isinstance(fn, torch.nn.Module) else None
    if names is None:
        names = input_names(torch, fn, module, len(tensors))
    elif len(names) != len(tensors) or len(set(names)) != len(names):
        raise ValueError(f"names must name each of the {len(tensors)} inputs once, not "
                         f"{list(names)}")
    checked: list[Checked] = []
    for i, (name, x) in enumerate(zip(names, tensors, strict=True)):
        if not x.requires_grad:
            continue
        if x.is_complex():
            raise ValueError(f"inputs[{i}] ({name}) is {str(x.dtype).removeprefix('torch.')}: "
                             "complex inputs are not supported; check the real and imaginary "
                             "parts as two real tensors")
        _checkable(name if name == f"inputs[{i}]" else f"inputs[{i}] ({name})", x)
        value = copy(x) if isolate else x.detach()
        checked.append(Checked(name, value.requires_grad_(), "input", i))
    state: dict[str, Tensor] = {}
    originals: list[Tensor] = []
    """The module's own parameters and buffers, in state's order."""
    caller = [x for x in tensors if x.is_leaf]
    if module is not None:
        for pname, p in module.named_parameters():
            caller.append(p)
            originals.append(p)
            if p.requires_grad:
                _checkable(f"parameter {pname}", p)
                if p.is_complex():
                    raise ValueError(f"parameter {pname} of fn is complex: complex parameters "
                                     "are not supported")
                name = pname if pname not in names else f"{type(module).__name__}.{pname}"
                value = (copy(p) if isolate else p.detach()).requires_grad_()
                checked.append(Checked(name, value, "parameter", pname))
                state[pname] = value
            else:
                state[pname] = copy(p) if isolate else p.detach()
        for bname, b in module.named_buffers():
            originals.append(b)
            state[bname] = copy(b)
    if not checked:
        raise ValueError(
            "no input requires grad: set requires_grad=True on the inputs to check"
            + (" (fn's parameters are frozen too)" if module is not None else "")
        )
    return Call(
        fn=fn,
        name=describe_fn(fn),
        module=module,
        inputs=_working_inputs(tensors, checked, isolate),
        checked=checked,
        caller_tensors=caller,
        state=state,
        isolate=isolate,
        # the caller's own tensors are never handed to fn or manual: they are the kept values
        pristine=[t.detach() for t in (*tensors, *originals)] if isolate else [],
        kwargs=dict(kwargs or {}),
    )


class SeveralOutputs(Exception):
    """fn returned a tuple or list of tensors: the check goes output by output (api/outputs)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"fn returned {count} tensors")
        self.count = count


def check_output(out: object) -> Tensor:
    """fn's output must be one floating-point tensor (SeveralOutputs for a tuple of them)."""
    torch = import_torch()
    if isinstance(out, (tuple, list)) and out and all(
            isinstance(o, torch.Tensor) for o in out):
        raise SeveralOutputs(len(out))
    if not isinstance(out, torch.Tensor):
        hint = " (for several outputs, check one at a time: lambda *x: f(*x)[0])" if isinstance(
            out, (tuple, list)) else ""
        raise TypeError(f"fn returned a {type(out).__name__}, not a tensor: check() needs "
                        f"fn(*inputs) to return one tensor{hint}")
    if not out.is_floating_point():
        raise ValueError(f"fn's output is {str(out.dtype).removeprefix('torch.')}: gradients "
                         "need a floating-point (not integer, bool or complex) output")
    tensor: Tensor = out
    return tensor


COTANGENT_SALT = 0x9E3779B97F4A7C15
"""XORed into the seed of grad_output's generator. With the seed itself, a test that draws its
input as torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) for
an fn whose output has that shape got grad_output equal to its input: then Jᵀu of x @ wᵀ is
symmetric, and a transposed weight gradient passed."""


def cotangent(out: Tensor, seed: int) -> Tensor:
    """grad_output: 1 for a one-element output (a loss of shape () or (1,)), as loss.backward()
    gives; else a standard normal drawn on the CPU in float64 from
    torch.Generator().manual_seed(seed ^ COTANGENT_SALT), then cast to the output's dtype and
    moved to its device (the same on every device)."""
    torch = import_torch()
    if out.numel() == 1:
        return out.detach().new_ones(out.shape)
    gen = torch.Generator().manual_seed(seed ^ COTANGENT_SALT)
    draw: Tensor = torch.randn(tuple(out.shape), generator=gen, dtype=torch.float64)
    return draw.to(dtype=out.dtype, device=out.device)


@contextmanager
def caller_state_kept(tensors: Sequence[Tensor]) -> Iterator[None]:
    """Global RNGs (torch's CPU and CUDA, Python's), default dtype, threads, grad mode and the
    .grad of the caller's tensors are as they were after the block, whatever fn did."""
    torch = import_torch()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    py_rng = random.getstate()
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    grad_mode = torch.is_grad_enabled()
    grads = [(t, t.grad) for t in tensors]
    try:
        yield
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        if torch.get_default_dtype() != dtype:
            torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad_mode)
        for t, g in grads:
            if t.grad is not g:
                t.grad = g

"""--target: a user's own loss and hand-derived gradient, checked like a built-in loss.

A target is 'FILE.py:NAME', 'package.module:NAME', or either without ':NAME' (the module itself).
NAME (dotted attributes allowed) names a module-level object, a class instance, a class (called
with no arguments) or a module-like namespace that gives

    loss(predicted, real) -> scalar tensor           (the forward, tracked by autograd)
    manual_grad(predicted, real) -> tensor           (∂loss/∂predicted, called under no_grad)

and optionally `name`, `formula` and `gradient_formula` strings for the output (else the first
docstring line of each function).

What goes wrong is reported in the user's terms, never as a traceback from this package:
- cannot be imported, lacks a function, returns a non-tensor, a non-scalar loss, or a gradient of
  the wrong shape, dtype or device: BadInput (exit 2), one line naming the target and the problem;
- the user's loss, its backward or manual_grad raises: TargetRaised, which the engine turns into a
  failed check (exit 1) carrying the user's error type, message and line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch
from autograd_check.losses.base import Loss

if TYPE_CHECKING:
    from torch import Tensor

CONTRACT = "a target is an object (or module) that has both"


class TargetRaised(Exception):
    """The user's own code raised while the check ran: a failed check, not a crash."""

    def __init__(self, what: str, error: BaseException, location: str | None) -> None:
        self.what = what
        self.error_type = type(error).__name__
        self.error_message = str(error)
        self.location = location
        where = f" (at {location})" if location else ""
        super().__init__(f"{what} raised {self.error_type}: {self.error_message}{where}")


def split(text: str) -> tuple[str, str]:
    """'where:NAME' → (where, NAME); 'where' → (where, '')."""
    where, colon, name = text.rpartition(":")
    return (where, name) if colon else (text, "")


def is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def short_name(text: str) -> str:
    """The target as the user would recognise it: a file's name rather than its absolute path."""
    where, name = split(text)
    shown = Path(where).name if is_file(where) else where
    return f"{shown}:{name}" if name else shown


_modules: dict[tuple[str, int], ModuleType] = {}
"""File targets loaded so far, by (path, mtime): a sweep runs the same target many times in one
process. They are kept here, not in sys.modules."""


def import_target_file(text: str, path: Path) -> ModuleType:
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as e:
        raise BadInput(f"target {text!r}: cannot read {str(path)!r}: {e.strerror or e}") from None
    key = (str(path), stamp)
    if key in _modules:
        return _modules[key]
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"autograd_check_target_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"target {text!r}: {str(path)!r} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    # While it runs, the module is in sys.modules (dataclasses look their module up there) and, as
    # `python FILE.py` would, the file can import the modules beside it. Afterwards neither is
    # left behind: the module lives on in _modules and in what load_target returns.
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise BadInput(
            f"target {text!r}: {path.name}:{e.lineno}: SyntaxError: {e.msg}"
        ) from None
    except (Exception, SystemExit) as e:
        raise BadInput(
            f"target {text!r}: importing {path.name} raised {type(e).__name__}: {e}"
            + (f" (at {at})" if (at := user_line(e, str(path))) else "")
        ) from None
    finally:
        sys.path.remove(str(path.parent))
        _forget(module_name, before, path.parent.resolve())
    _modules[key] = module
    return module


def _forget(module_name: str, before: set[str], folder: Path) -> None:
    """Take the target out of sys.modules, with the modules it imported from beside it (a
    `helper.py` or `helpers/` package in its folder, importable only while the folder was on
    sys.path). Anything else it imported for the first time (torch's submodules, installed
    packages) stays, as any import would."""
    sys.modules.pop(module_name, None)
    new = set(sys.modules) - before
    beside = {top for top in new if "." not in top and _in_folder(sys.modules.get(top), folder)}
    for name in new:
        if name.partition(".")[0] in beside:
            del sys.modules[name]


def _in_folder(module: ModuleType | None, folder: Path) -> bool:
    """A top-level module that is a file in folder, or a package directory in it."""
    file = getattr(module, "__file__", None)
    if file and Path(file).name != "__init__.py":
        return Path(file).resolve().parent == folder
    places = [str(Path(file).parent)] if file else list(getattr(module, "__path__", []))
    return any(Path(place).resolve().parent == folder for place in places)


def import_target_module(text: str, name: str) -> ModuleType:
    # A console script does not put the working directory on sys.path as `python -m` does; a
    # user naming `mypkg.losses` from their project directory expects it to be importable.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(name)
    except (Exception, SystemExit) as e:
        missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            hint = " (a file target must be a .py file)" if os.path.isfile(name) else ""
            raise BadInput(
                f"target {text!r}: no module named {missing!r} (looked in {cwd} and sys.path)"
                + hint
            ) from None
        raise BadInput(
            f"target {text!r}: importing {name} raised {type(e).__name__}: {e}"
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):
        # a folder without __init__.py imports as an empty namespace package: it has nothing
        folders = ", ".join(repr(str(place)) for place in module.__path__)
        raise BadInput(
            f"target {text!r}: {name!r} is a folder ({folders}), not a Python file or module; "
            f"name a file in it (FOLDER/FILE.py:NAME) or a module (package.module:NAME)")
    return module


def import_target(text: str, where: str) -> ModuleType:
    """The module a --target names: its file (a path) or an importable module name."""
    if is_file(where):
        return import_target_file(text, Path(where))
    return import_target_module(text, where)


def user_line(error: BaseException, filename: str | None) -> str | None:
    """'FILE:LINE' of the innermost frame in the user's file, if there is one."""
    if filename is None:
        return None
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    return f"{Path(filename).name}:{frames[-1].lineno}" if frames else None


def resolve_name(text: str, module: ModuleType, name: str, instantiate: bool = True) -> Any:
    """The object NAME names; a class is called with no arguments unless instantiate is False."""
    obj: Any = module
    for part in name.split(".") if name else []:
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            shown = ", ".join(public[:12]) + (", …" if len(public) > 12 else "")
            raise BadInput(
                f"target {text!r}: no attribute {part!r} (there is: {shown or 'nothing'})"
            )
        obj = getattr(obj, part)
    if instantiate and isinstance(obj, type):
        try:
            obj = obj()
        except (Exception, SystemExit) as e:
            raise BadInput(
                f"target {text!r}: {name}() (a class, called with no arguments) raised "
                f"{type(e).__name__}: {e}"
            ) from None
    return obj


def _doc_line(fn: Callable[..., Any]) -> str | None:
    doc = getattr(fn, "__doc__", None)
    return doc.strip().splitlines()[0].strip() if isinstance(doc, str) and doc.strip() else None


def load_target(text: str) -> Loss:
    """Import the target and check it has both functions (call it before any work is done); the
    Loss it gives checks what the user's functions return and reports what they raise."""
    import_torch()  # before the user's own `import torch`, which would warn when numpy is missing
    where, name = split(text)
    module = import_target(text, where)
    obj = resolve_name(text, module, name)
    missing = [f for f in ("loss", "manual_grad") if not callable(getattr(obj, f, None))]
    if missing:
        lacks = " and ".join(f"{f}(predicted, real)" for f in missing)
        raise BadInput(f"target {text!r}: {name or where} lacks {lacks}; {CONTRACT}")
    return as_loss(text, obj, getattr(module, "__file__", None))


def as_loss(text: str, obj: Any, filename: str | None) -> Loss:
    user_loss: Callable[..., Any] = obj.loss
    user_grad: Callable[..., Any] = obj.manual_grad
    short = short_name(text)

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (Exception, SystemExit) as e:
            # The user's sys.exit() fails their check, as any exception of theirs does. Ctrl-C,
            # a sweep's --case-timeout and a Slurm job being stopped are BaseExceptions that are
            # not SystemExit: they pass through (node.JobStopping, runner.CaseTimedOut).
            raise TargetRaised(what, e, user_line(e, filename)) from None

    def tensor_from(what: str, fn: Callable[..., Any], *args: Any) -> Tensor:
        torch = import_torch()
        out = call(what, fn, *args)
        if not isinstance(out, torch.Tensor):
            raise BadInput(f"target {short!r}: {what} returned {type(out).__name__}, not a tensor")
        tensor: Tensor = out
        return tensor

    def evaluate(predicted: Tensor, real: Tensor) -> Tensor:
        # The loss without forward()'s graph checks: finite differences evaluate it under
        # torch.no_grad() and torch.func.vmap, where there is no graph to be connected to.
        return tensor_from("loss(predicted, real)", user_loss, predicted, real)

    def forward(predicted: Tensor, real: Tensor) -> Tensor:
        out = evaluate(predicted, real)
        if out.numel() != 1:
            raise BadInput(
                f"target {short!r}: loss(predicted, real) returned shape {tuple(out.shape)}; "
                "a loss is a scalar (reduce it, e.g. with .sum() or .mean())"
            )
        if out.grad_fn is None:
            raise BadInput(
                f"target {short!r}: loss(predicted, real) is not connected to predicted by "
                "autograd (no grad_fn): was it detached or computed under torch.no_grad()?"
            )
        return out

    def manual_grad(predicted: Tensor, real: Tensor) -> Tensor:
        out = tensor_from("manual_grad(predicted, real)", user_grad, predicted, real)
        problems = []
        if out.shape != predicted.shape:
            problems.append(f"shape {tuple(out.shape)}, predicted has {tuple(predicted.shape)}")
        if out.dtype != predicted.dtype:
            problems.append(f"dtype {out.dtype}, predicted has {predicted.dtype}")
        if out.device != predicted.device:
            problems.append(f"device {out.device}, predicted is on {predicted.device}")
        if problems:
            raise BadInput(
                f"target {short!r}: manual_grad(predicted, real) returned {'; '.join(problems)}"
            )
        return out

    def text_attr(attr: str) -> str | None:
        value = getattr(obj, attr, None)
        return value if isinstance(value, str) and value.strip() else None

    return Loss(
        name=text_attr("name") or short,
        formula=text_attr("formula")
        or _doc_line(user_loss)
        or f"loss = loss(predicted, real) of {short}",
        gradient_formula=text_attr("gradient_formula")
        or _doc_line(user_grad)
        or f"∂loss/∂predicted = manual_grad(predicted, real) of {short}",
        forward=forward,
        manual_grad=manual_grad,
        user_code=True,
        evaluate=evaluate,
        reduction=reduction_of(text, obj),
    )


REDUCTIONS = ("mean", "sum")


def reduction_of(text: str, obj: Any) -> str:
    """The target's `reduction` ("mean", the default, or "sum"): how its loss reduces over the
    batch, which a check over ranks needs (DDP averages the ranks' gradients)."""
    value = getattr(obj, "reduction", "mean")
    if value not in REDUCTIONS:
        raise BadInput(f"target {text!r}: reduction {value!r} is not allowed; choose one of "
                       f"{', '.join(REDUCTIONS)}")
    return str(value)


def backward(loss_def: Loss, loss: Tensor, grad_output: Tensor | None = None,
             inputs: list[Tensor] | None = None) -> None:
    """loss.backward(grad_output, inputs=inputs); for a target, an error in the user's graph is
    the user's, not ours."""
    if not loss_def.user_code:
        loss.backward(grad_output, inputs=inputs)  # type: ignore[no-untyped-call]
        return
    try:
        loss.backward(grad_output, inputs=inputs)  # type: ignore[no-untyped-call]
    except (Exception, SystemExit) as e:
        raise TargetRaised("loss.backward()", e, None) from None

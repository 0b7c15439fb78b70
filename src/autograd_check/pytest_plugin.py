"""The pytest plugin (docs/pytest-plugin.md): the `autograd_check` fixture, whose check() and
assert_gradients() are the API's (docs/api.md), with the device, dtype and seed of this run.

Registered through the package's `pytest11` entry point, so installing the package is enough;
`-p no:autograd_check` turns it off. Options (each also an ini setting, the command line first):

    --autograd-check-device cpu|cuda|cuda:N|auto   where the fixture's tensors go (default cpu)
    --autograd-check-dtype float32|float64|float16|bfloat16   their dtype (default float32)
    --autograd-check-seed N                        the fixture's generator, and check()'s seed (0)

Loading the plugin imports neither torch nor the checking code: pytest itself (`pytest
--version`, collecting tests that never use the fixture) pays nothing for it. torch is imported
when a test first asks for the fixture; the API through the package's lazy names
(autograd_check/__init__.py) when a test first calls check().
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

import autograd_check as api
from autograd_check.base import device, spec
from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from autograd_check import CheckResult

DEVICES = "cpu, cuda, cuda:N or auto"
DTYPES = tuple(spec.DTYPES)
DEFAULT_DEVICE = "cpu"
DEFAULT_DTYPE = "float32"
DEFAULT_SEED = spec.DEFAULT_SEED


T = TypeVar("T")


def _for_argparse(parse: Callable[[object], T]) -> Callable[[str], T]:
    """The spec's own parser (the command line's), its refusal as argparse's usage error."""
    def parsed(value: str) -> T:
        try:
            return parse(value)
        except BadInput as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parsed.__name__ = parse.__name__
    return parsed


parse_device = _for_argparse(spec.parse_device)
parse_dtype = _for_argparse(spec.parse_dtype)
parse_seed = _for_argparse(spec.parse_seed)


@dataclass(frozen=True)
class Settings:
    """This run's defaults for the fixture, as given (the device not yet resolved)."""

    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    seed: int = DEFAULT_SEED


_SETTINGS = pytest.StashKey[Settings]()

_OPTIONS: list[tuple[str, Callable[[str], Any], str, str]] = [
    ("device", parse_device, "DEVICE",
     f"Device of the autograd_check fixture's tensors: {DEVICES} (CUDA when usable); a CUDA "
     f"device that is not usable skips the tests that use the fixture. Default: {DEFAULT_DEVICE}."),
    ("dtype", parse_dtype, "DTYPE",
     f"dtype of the autograd_check fixture's tensors: {', '.join(DTYPES)}. "
     f"Default: {DEFAULT_DTYPE}."),
    ("seed", parse_seed, "N",
     "Seed of the autograd_check fixture's generator (randn) and of its check()'s cotangent "
     f"and directions. Default: {DEFAULT_SEED}."),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograd-check", "autograd-check (the autograd_check fixture)")
    for name, parse, metavar, help_text in _OPTIONS:
        group.addoption(f"--autograd-check-{name}", dest=f"autograd_check_{name}", type=parse,
                        default=None, metavar=metavar, help=help_text)
        parser.addini(f"autograd_check_{name}", f"Default of --autograd-check-{name}.",
                      type="string", default="")


def pytest_configure(config: pytest.Config) -> None:
    """The settings, from the command line, else the ini file, else the defaults; a bad ini
    value is a usage error, as a bad option is (argparse's)."""
    values: dict[str, Any] = {}
    for name, parse, _, _ in _OPTIONS:
        given = config.getoption(f"autograd_check_{name}")
        if given is None:
            ini = str(config.getini(f"autograd_check_{name}")).strip()
            if ini:
                try:
                    given = parse(ini)
                except argparse.ArgumentTypeError as e:
                    raise pytest.UsageError(f"ini setting autograd_check_{name}: {e}") from None
        if given is not None:
            values[name] = given
    config.stash[_SETTINGS] = Settings(**values)


def cuda_unusable(torch: Any, name: str) -> str | None:
    """Why the CUDA device `name` (cuda or cuda:N) cannot be used here, else None."""
    problem = device.cuda_unusable(torch, name)
    return None if problem is None else f"--autograd-check-device {name}: {problem[0]}"


class AutogradCheck:
    """The `autograd_check` fixture: the API's check() and assert_gradients(), and tensors made
    on this run's device and dtype (--autograd-check-device, --autograd-check-dtype)."""

    device: torch.device
    """Where randn(), tensor() and to() put tensors: cpu, or the CUDA device asked for."""
    dtype: torch.dtype
    """Their dtype (floating point)."""
    seed: int
    """check()'s default seed, and the first seed of `generator`."""
    generator: torch.Generator
    """A CPU generator, seeded with `seed` for each test: randn() draws from it."""

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        torch = import_torch()
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"<autograd_check fixture: device {self.device}, dtype {dtype}, seed {self.seed}>"

    def randn(self, *shape: int | Sequence[int], requires_grad: bool = True) -> Tensor:
        """Standard normal, drawn on the CPU in float64 from `generator`, then cast to `dtype`
        and moved to `device` (so the same numbers, rounded, on every device): a leaf tensor
        that requires grad unless told otherwise. randn(4, 5) or randn((4, 5))."""
        torch = import_torch()
        dims = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        drawn = torch.randn(dims, generator=self.generator, dtype=torch.float64)
        out = drawn.to(device=self.device, dtype=self.dtype).requires_grad_(requires_grad)
        return cast("Tensor", out)

    def tensor(self, data: Any, requires_grad: bool = True) -> Tensor:
        """torch.tensor(data) on `device` in `dtype`, requiring grad unless told otherwise."""
        torch = import_torch()
        out = torch.tensor(data, dtype=self.dtype, device=self.device,
                           requires_grad=requires_grad)
        return cast("Tensor", out)

    def to(self, thing: T) -> T:
        """A module moved to `device` and cast to `dtype` in place (module.to), and returned; a
        tensor as a new leaf on `device` in `dtype`, requiring grad as the tensor did."""
        torch = import_torch()
        if isinstance(thing, torch.nn.Module):
            return cast(T, thing.to(device=self.device, dtype=self.dtype))
        if isinstance(thing, torch.Tensor):
            moved = thing.detach().to(device=self.device, dtype=self.dtype)
            return cast(T, moved.requires_grad_(thing.requires_grad))
        raise TypeError(f"autograd_check.to() takes a tensor or an nn.Module, not a "
                        f"{type(thing).__name__}")

    def check(self, fn: Callable[..., Any], *inputs: Any, **arguments: Any) -> CheckResult:
        """autograd_check.check(fn, *inputs, ...) (docs/api.md: the arguments are the same), seed
        defaulting to --autograd-check-seed."""
        if arguments.get("seed") is None:  # not given (or None): the option's seed
            arguments["seed"] = self.seed
        return api.check(fn, *inputs, **arguments)

    def assert_gradients(
        self, fn: Callable[..., Any], *inputs: Any, **arguments: Any
    ) -> CheckResult:
        """autograd_check.assert_gradients(): AssertionError with the verdict (the per-input
        table) when the check fails, which is what pytest reports."""
        __tracebackhide__ = True  # pytest shows the test's line, and the verdict
        if arguments.get("seed") is None:  # not given (or None): the option's seed
            arguments["seed"] = self.seed
        return api.assert_gradients(fn, *inputs, **arguments)


@pytest.fixture
def autograd_check(request: pytest.FixtureRequest) -> AutogradCheck:
    """check() and assert_gradients() of autograd-check, with randn(), tensor() and to() on the
    device and dtype of --autograd-check-device and --autograd-check-dtype; a CUDA device that
    is not usable skips the test, saying why."""
    settings = request.config.stash.get(_SETTINGS, Settings())
    torch = import_torch()
    name = settings.device
    if name == "cpu":
        device = torch.device("cpu")
    elif name == "auto":
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    else:
        reason = cuda_unusable(torch, name)
        if reason is not None:
            pytest.skip(reason)
        device = torch.device("cuda", int(name.partition(":")[2] or 0))
    return AutogradCheck(device, getattr(torch, settings.dtype), settings.seed)

"""autograd-check: verify PyTorch autograd against hand-derived gradients.

The Python API (docs/api.md):

    from autograd_check import check, assert_gradients, CheckSpec, CheckResult, Inconclusive

Each name is imported when first used, so that `import autograd_check` (and the command line's
start-up) loads neither torch nor the modules behind them. The spec and result live in
autograd_check.base; the API's functions in autograd_check.api.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autograd_check._version import __version__

if TYPE_CHECKING:
    from autograd_check.api.check import assert_gradients as assert_gradients
    from autograd_check.api.check import check as check
    from autograd_check.base.errors import Inconclusive as Inconclusive
    from autograd_check.base.result import CheckResult as CheckResult
    from autograd_check.base.spec import CheckSpec as CheckSpec

__all__ = ["CheckResult", "CheckSpec", "Inconclusive", "__version__", "assert_gradients", "check"]


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use."""
    if name in ("check", "assert_gradients"):
        # lazy: the API loads torch when called; `import autograd_check` stays light
        from autograd_check.api import check as api

        return getattr(api, name)
    if name == "CheckSpec":
        # lazy: the engine's modules stay out of the command line's start-up
        from autograd_check.base.spec import CheckSpec

        return CheckSpec
    if name == "CheckResult":
        # lazy: the engine's modules stay out of the command line's start-up
        from autograd_check.base.result import CheckResult

        return CheckResult
    if name == "Inconclusive":
        # the errors module is plain Python: no torch
        from autograd_check.base.errors import Inconclusive

        return Inconclusive
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

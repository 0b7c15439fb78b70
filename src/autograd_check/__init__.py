"""autograd-check: verify PyTorch autograd against hand-derived gradients.

The Python API (docs/api.md):

    from autograd_check import check, assert_gradients, CheckSpec, CheckResult

Each name is imported when first used, so that `import autograd_check` (and the command line's
start-up) loads neither torch nor the modules behind them.

`check` is also the name of the subpackage autograd_check.check (the engine). Python sets a
package's attribute to each subpackage it imports, which would hide the function as soon as the
engine is loaded; so the package's module class answers `autograd_check.check` with the function
and lets the import system's assignment pass. The engine is imported by its full name, as every
module here does (`from autograd_check.check.spec import CheckSpec`); a dotted lookup through
attributes (`autograd_check.check.spec`, or mock.patch("autograd_check.check.x.y")) reaches the
function instead: patch through the module object, or with pkgutil.resolve_name.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from autograd_check._version import __version__

if TYPE_CHECKING:
    from autograd_check.api.check import assert_gradients as assert_gradients
    from autograd_check.api.check import check as check
    from autograd_check.check.result import CheckResult as CheckResult
    from autograd_check.check.spec import CheckSpec as CheckSpec

__all__ = ["CheckResult", "CheckSpec", "__version__", "assert_gradients", "check"]


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use."""
    if name == "assert_gradients":
        # lazy: the API loads torch when called; `import autograd_check` stays light
        from autograd_check.api.check import assert_gradients

        return assert_gradients
    if name == "CheckSpec":
        # lazy: the engine's modules stay out of the command line's start-up
        from autograd_check.check.spec import CheckSpec

        return CheckSpec
    if name == "CheckResult":
        # lazy: the engine's modules stay out of the command line's start-up
        from autograd_check.check.result import CheckResult

        return CheckResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(ModuleType):
    """autograd_check's module class: `check` is the API's function, never the subpackage."""

    @property
    def check(self) -> Any:
        # lazy: the API loads torch when called; `import autograd_check` stays light
        from autograd_check.api.check import check

        return check

    @check.setter
    def check(self, value: Any) -> None:
        """The import system sets the subpackage autograd_check.check here: it stays in
        sys.modules, where every import finds it."""


sys.modules[__name__].__class__ = _Package

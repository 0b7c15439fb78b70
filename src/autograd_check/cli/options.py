"""The check options shared by every command that runs checks (run, submit, sweep).

They are declared once here and added to a command's signature by `check_options`, so the flags,
their help and their validation cannot drift apart between commands. Every default is None:
`None` means "not given", so a config file can fill it and flags override the file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from autograd_check.spec import DEFAULT_SEED

PANEL = "Check options"

_P = inspect.Parameter
CHECK_PARAMETERS: list[inspect.Parameter] = [
    _P("shape", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="Tensor shape, 1 to 8 dims, 'x' or ',' separated.", metavar="DIMS",
        show_default="3x8", rich_help_panel=PANEL)]),
    _P("dtype", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="float32, float64, float16 or bfloat16.", show_default="float32",
        rich_help_panel=PANEL)]),
    _P("device", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="cpu, cuda, cuda:N, or auto (CUDA when usable).", show_default="cpu",
        rich_help_panel=PANEL)]),
    _P("seed", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="torch.manual_seed(SEED): real, then predicted, as the tutorial draws them.",
        metavar="INTEGER", show_default=str(DEFAULT_SEED), rich_help_panel=PANEL)]),
    _P("rtol", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="Relative tolerance [default: per dtype, as torch.testing.assert_close].",
        metavar="FLOAT", rich_help_panel=PANEL)]),
    _P("atol", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option(
        help="Absolute tolerance [default: per dtype, as torch.testing.assert_close].",
        metavar="FLOAT", rich_help_panel=PANEL)]),
    _P("exact", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[bool], typer.Option(
        "--exact/--no-exact",
        help="Verdict by bit-exact equality (the tutorial's eq().all()) instead of tolerances.",
        show_default="--no-exact", rich_help_panel=PANEL)]),
    _P("config", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], typer.Option(
        help="TOML profile (see configs/); flags override it.", metavar="FILE",
        rich_help_panel=PANEL)]),
]
CHECK_NAMES = [p.name for p in CHECK_PARAMETERS]


def check_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the check options to a command; it receives them as one dict, `check_values`."""
    own = [
        p
        for p in inspect.signature(func, eval_str=True).parameters.values()
        if p.name != "check_values"
    ]
    params = own + CHECK_PARAMETERS

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in CHECK_NAMES}
        return func(*args, check_values=values, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper

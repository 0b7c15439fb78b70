"""Options declared once for every command that has them: the check options (run, submit, sweep),
`--json` (every command) and `--show-tensors` (run, submit, result).

The check options are added to a command's signature by `check_options`, so the flags, their help
and their validation cannot drift apart between commands. Every default is None: `None` means "not
given", so a config file can fill it and flags override the file.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from autograd_check.base.spec import (
    DEFAULT_DELTA,
    DEFAULT_HIDDEN,
    DEFAULT_MAX_FD_ELEMENTS,
    DEFAULT_SEED,
    LOSS_NAMES,
)

PANEL = "Check options"
RANKS_PANEL = "Across ranks"

_P = inspect.Parameter
CHECK_PARAMETERS: list[inspect.Parameter] = [
    _P("shape", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Tensor shape, 1 to 8 dims, 'x' or ',' separated.", metavar="DIMS",
        show_default="3x8", rich_help_panel=PANEL)]),
    _P("dtype", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="float32, float64, float16 or bfloat16.", metavar="DTYPE", show_default="float32",
        rich_help_panel=PANEL)]),
    _P("device", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="cpu, cuda, cuda:N, or auto (CUDA when usable).", metavar="DEVICE",
        show_default="cpu",
        rich_help_panel=PANEL)]),
    _P("seed", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="torch.manual_seed(SEED): real, then predicted, as the tutorial draws them.",
        metavar="INTEGER", show_default=str(DEFAULT_SEED), rich_help_panel=PANEL)]),
    _P("rtol", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Relative tolerance (default: per dtype, as torch.testing.assert_close).",
        metavar="FLOAT", rich_help_panel=PANEL)]),
    _P("atol", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Absolute tolerance (default: per dtype, as torch.testing.assert_close).",
        metavar="FLOAT", rich_help_panel=PANEL)]),
    _P("exact", _P.KEYWORD_ONLY, default=None, annotation=Annotated[bool | None, typer.Option(
        "--exact/--no-exact",
        help="Verdict by bit-exact equality (the tutorial's eq().all()) instead of tolerances.",
        show_default="--no-exact", rich_help_panel=PANEL)]),
    _P("loss", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help=f"The loss: {', '.join(LOSS_NAMES)}; each with its gradient derived by hand.",
        metavar="NAME", show_default="mse-sum", rich_help_panel=PANEL)]),
    _P("delta", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Huber's delta (--loss huber only).", metavar="FLOAT",
        show_default=f"{DEFAULT_DELTA:g}", rich_help_panel=PANEL)]),
    _P("model", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Check through a model backpropagated by hand: linear, or mlp (Linear → tanh → "
        "Linear); its output is predicted, its width the last dim of --shape.",
        metavar="linear|mlp", show_default="none", rich_help_panel=PANEL)]),
    _P("hidden", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Hidden width of --model mlp.", metavar="N", show_default=str(DEFAULT_HIDDEN),
        rich_help_panel=PANEL)]),
    _P("target", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Your own loss instead of --loss: an object with loss(predicted, real) and "
        "manual_grad(predicted, real); or with inputs(generator, dtype, device) and "
        "fn(*inputs) (manual(*inputs, grad_output) optional), an nn.Module or an "
        "autograd.Function with inputs; as FILE.py:NAME or package.module:NAME.",
        metavar="TARGET", rich_help_panel=PANEL)]),
    _P("reference", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="What autograd is checked against: manual (the hand-derived gradient; alias "
        "autograd), finite-diff (also central differences in float64, h=1e-6, as gradcheck), "
        "projection (directional differences along random directions, as gradcheck's fast "
        "mode) or forward (forward-mode jvp against reverse-mode vjp).",
        metavar="manual|finite-diff|projection|forward", show_default="manual",
        rich_help_panel=PANEL)]),
    _P("order", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="2: also check the double backward (the gradient's own gradient) against finite "
        "differences of the gradient.", metavar="1|2", show_default="1",
        rich_help_panel=PANEL)]),
    _P("max_fd_elements", _P.KEYWORD_ONLY, default=None, annotation=Annotated[
        str | None, typer.Option(
            help="Refuse --reference finite-diff on more elements than this (its work grows "
            "as elements²).", metavar="N", show_default=str(DEFAULT_MAX_FD_ELEMENTS),
            rich_help_panel=PANEL)]),
    _P("deterministic", _P.KEYWORD_ONLY, default=None, annotation=Annotated[
        bool | None, typer.Option(
            "--deterministic/--no-deterministic",
            help="Deterministic algorithms during the check (torch, cuDNN, and "
            "CUBLAS_WORKSPACE_CONFIG=:4096:8 for cuBLAS).",
            show_default="--no-deterministic", rich_help_panel=PANEL)]),
    _P("repeat", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Compute the autograd gradient N times on fresh graphs; report whether the runs "
        "were bitwise identical, else their greatest spread.", metavar="N", show_default="1",
        rich_help_panel=PANEL)]),
    _P("ranks", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Split the batch over N ranks (torch.distributed) and check their gradients "
        "against one process's full-batch gradient (--model or a --target module; the batch "
        "must divide by N·K). docs/ranks.md.",
        metavar="N", show_default="one process", rich_help_panel=RANKS_PANEL)]),
    _P("parallel", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="How --ranks wraps the model: ddp (DistributedDataParallel) or fsdp (FSDP2).",
        metavar="ddp|fsdp", show_default="ddp", rich_help_panel=RANKS_PANEL)]),
    _P("accumulate", _P.KEYWORD_ONLY, default=None, annotation=Annotated[
        str | None, typer.Option(
            help="Micro-batches per rank, accumulated with no_sync() before the gradients are "
            "synchronised (a --target may give its own train_step).", metavar="K",
            show_default="1", rich_help_panel=RANKS_PANEL)]),
    _P("config", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, typer.Option(
        help="TOML profile (see configs/); flags override it.", metavar="FILE",
        rich_help_panel=PANEL)]),
]

JsonOutput = Annotated[
    bool,
    typer.Option("--json", help="Print one plain JSON document on stdout, nothing else."),
]
"""`--json`, the same on every command: the parameter is named `json_output`."""

ShowTensors = Annotated[
    bool | None,
    typer.Option(
        "--show-tensors/--no-show-tensors",
        help="Whole tensors (up to 4096 elements), or none (default: whole when at most 256 "
        "elements, else a summary).",
        show_default=False,
    ),
]


def option_group(
    parameters: list[inspect.Parameter], into: str, *, empty_to_none: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding `parameters` to a command, delivered to it as one dict named `into`.

    With `empty_to_none`, repeatable options that were not given arrive as None (not []), so that
    a config file's list is used unless the flags give one.
    """
    names = [p.name for p in parameters]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        # eval_str: the command's own annotations are strings under `from __future__ import
        # annotations`, and a Signature set by hand is not evaluated again by typer.
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.name != into
        ]
        params = own + parameters

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            if empty_to_none:
                values = {k: (None if v in ([], ()) else v) for k, v in values.items()}
            return func(*args, **{into: values}, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


check_options = option_group(CHECK_PARAMETERS, "check_values")
"""Add the check options to a command; it receives them as one dict, `check_values`."""

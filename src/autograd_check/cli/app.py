"""The Typer app, and the edge where domain errors become one line on stderr and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from autograd_check import __version__
from autograd_check.errors import EXIT_CODE_SHORT, CheckError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODE_HELP = "Exit codes: " + " · ".join(f"{c} {text}" for c, text in EXIT_CODE_SHORT.items())
PROG = "autograd-check"


def error_line(message: str) -> None:
    """Errors and progress go to stderr, plain: a user's value is never read as markup."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def json_error(code: int, message: str) -> None:
    """When JSON was asked, stdout still gets a (plain JSON) document for an error."""
    from autograd_check.document import SCHEMA_VERSION, dumps

    error = {"exit_code": code, "message": message}
    print(dumps({"schema_version": SCHEMA_VERSION, "error": error}))


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, a value of the wrong type) as one line on stderr, exit 2,
    instead of a multi-line panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:
            print(e.ctx.get_help() if e.ctx else "", file=sys.stdout)
            code = 0
        except ClickException as e:
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx else PROG
            message = f"{e.format_message()} (see '{where} --help')"
            error_line(message)
            code = e.exit_code
            if "--json" in (sys.argv[1:] if args is None else args):
                json_error(code, message)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=OneLineErrors,
    name=PROG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Verify PyTorch autograd against hand-derived gradients, on CPU or CUDA, locally or "
    "on Slurm.",
    epilog=EXIT_CODE_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Verify PyTorch autograd against hand-derived gradients, on CPU or CUDA, locally or on Slurm.
    """


def edge(func: F) -> F:
    """Catch domain errors where the CLI meets the work: one line on stderr, the right exit code.

    When JSON was asked, stdout still gets a (plain JSON) error envelope.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CheckError as e:
            error_line(str(e))
            if kwargs.get("json_output"):
                json_error(e.exit_code, str(e))
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]

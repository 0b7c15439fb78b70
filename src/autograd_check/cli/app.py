"""The Typer app and its lazily loaded commands (the edge where errors become one line on stderr
and an exit code is cli/edge.py).

Start-up: `autograd-check --help` imports this module and typer, nothing else of ours. The command
names and their one-line help come from the static table `COMMANDS`; a command's module is
imported when that command runs (or its own --help is asked), and registers the command on `app`
as usual (`@app.command(...)`). `LazyGroup.get_command` then builds the click command from that
registration with typer's public `typer.main.get_command`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from autograd_check import __version__
from autograd_check.base.errors import EXIT_INTERRUPTED, EXIT_PASS
from autograd_check.base.process import claimed
from autograd_check.cli.edge import (
    EXIT_CODE_HELP,
    cut_long_words,
    json_asked,
    print_json_error,
    process_edge,
    stop_on_signals,
)
from autograd_check.render.console import PROG, error
from autograd_check.render.help import print_app_help

COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "autograd_check.cli.run",
        "Run the real-vs-predicted gradient check here: manual gradient against autograd.",
    ),
    "env": (
        "autograd_check.cli.env",
        "What is here: torch and CUDA devices, Slurm tools, partitions, accounting, the allocation"
        "\nthis shell is in, and what `submit` would do.",
    ),
    "submit": (
        "autograd_check.cli.submit",
        "Run the check on Slurm: an sbatch job through submitit, or, inside an salloc allocation,"
        "\na job step of it (srun). Same check, same result view as `run`.",
    ),
    "status": (
        "autograd_check.cli.jobs",
        "State, node, elapsed time and log paths of a job `submit` queued.",
    ),
    "result": (
        "autograd_check.cli.jobs",
        "The result of a job `submit` queued (the view of `run`), or its state and log tail.",
    ),
    "sweep": (
        "autograd_check.cli.sweep",
        "Check every combination of shapes, dtypes, devices, losses and seeds; one record per "
        "case.",
    ),
    "report": (
        "autograd_check.cli.report",
        "Summarise a sweep: pass/fail by dtype, device, loss and shape; the worst cases; the failed"
        "\nand missing ones with their job ids and log tails.",
    ),
    "tour": (
        "autograd_check.cli.tour",
        "Walk the tutorial's autograd ideas on live tensors; each step's claim is checked "
        "(PASS/FAIL).",
    ),
    "_step": ("autograd_check.cli.jobs", "Inside a job step: run the check, answer with one marked "
              "JSON line (see slurm.run_step)."),
}
"""Every command, in the order `--help` lists them: the module that registers it, and its help's
first paragraph (a test checks that it is the command's own). Names starting with _ are hidden."""


class LazyGroup(TyperGroup):
    """The app's command group: commands load on demand (see the module's docstring).

    Also the edge for usage errors (unknown option, a value of the wrong type): one line on
    stderr, exit 2, instead of a multi-line panel; no arguments at all print the help, exit 0.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.suggest_commands = False  # done in resolve_command, from the static table
        self._listing = False
        self._json = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        built = self.commands.get(cmd_name)
        if built is not None or cmd_name not in COMMANDS:
            return built
        module, short = COMMANDS[cmd_name]
        if self._listing:  # the app's --help: the name and its line, no import
            return TyperCommand(name=cmd_name, help=short, hidden=cmd_name.startswith("_"))
        importlib.import_module(module)
        built = load_command(cmd_name)
        if built is not None:
            self.commands[cmd_name] = built
        return built

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            shown = {name: help_line for name, (_, help_line) in COMMANDS.items()
                     if not name.startswith("_")}
            print_app_help(self, ctx, shown)
        finally:
            self._listing = False

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with process_edge(self._json):  # the app's --help and --version print here
            try:
                return super().make_context(*args, **kwargs)
            finally:
                sys.stdout.flush()

    def invoke(self, ctx: Any) -> Any:
        with process_edge(self._json):
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # here, where a closed pipe can still be told apart

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            print(ctx.get_help())
            raise typer.Exit(EXIT_PASS)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as e:  # click's UsageError: "No such command 'rnu'."
            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if matches and "Did you mean" not in e.message:
                suggestions = ", ".join(f"{m!r}" for m in matches)
                e.message = f"{e.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        self._json = json_asked(args)
        try:
            # claimed: this process writes the results; a fork of it made by a target will not
            with stop_on_signals(), claimed():
                code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
        except typer.Abort:  # Ctrl-C where click saw it first (completion, say)
            error("interrupted by Ctrl-C")
            code = EXIT_INTERRUPTED
        except typer.TyperException as e:  # click's UsageError and its kin
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else PROG
            message = f"{cut_long_words(e.format_message())} (see '{where} --help')"
            error(message)
            code = e.exit_code
            if json_asked(args):
                print_json_error(code, message)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def load_command(name: str) -> Any:
    """The click command of `name`, built from its registration on `app` (None if none)."""
    for info in app.registered_commands:
        callback = info.callback
        own = info.name or (callback.__name__.lower().replace("_", "-") if callback else None)
        if own == name:
            single = typer.Typer(
                add_completion=False,
                rich_markup_mode=app.rich_markup_mode,
                pretty_exceptions_enable=False,
            )
            single.registered_commands.append(info)
            return typer.main.get_command(single)
    return None


app = typer.Typer(
    cls=LazyGroup,
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

"""The Typer app, its lazily loaded commands, and the edge where errors become one line on stderr
and an exit code.

Start-up: `autograd-check --help` imports this module and typer, nothing else of ours. The command
names and their one-line help come from the static table `COMMANDS`; a command's module is
imported when that command runs (or its own --help is asked), and registers the command on `app`
as usual (`@app.command(...)`). `LazyGroup.get_command` then builds the click command from that
registration with typer's public `typer.main.get_command`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import inspect
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from difflib import get_close_matches
from typing import Annotated, Any, TypeVar

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from autograd_check import __version__
from autograd_check.base.document import dumps, error_document
from autograd_check.base.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODE_SHORT,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    CheckError,
    JobState,
)
from autograd_check.base.process import claimed, leave_if_copy
from autograd_check.render.console import PROG, detail, error

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODE_HELP = "Exit codes: " + " · ".join(f"{c} {text}" for c, text in EXIT_CODE_SHORT.items())
"""The epilog of `--help`, of the app and of each command: the one exit-code table, in short."""

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


def json_asked(args: Sequence[str] | None) -> bool:
    return "--json" in (sys.argv[1:] if args is None else args)


def print_json_error(code: int, message: str, **extra: Any) -> None:
    """When JSON was asked, stdout still gets a (plain JSON) error document."""
    leave_if_copy()
    print(dumps(error_document(code, message, **extra)), flush=True)


_STOPPED_BY: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
_stopped_by: list[str] = []
"""The signal that stopped this command, when not Ctrl-C (see _stop_on_signals)."""


def _stop(signum: int, frame: object) -> None:
    _stopped_by.append(_STOPPED_BY.get(signum, f"signal {signum}"))
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler) and SIGHUP (a closed terminal or ssh session) stop a command
    as Ctrl-C does, so that each command's own handling of Ctrl-C (a wait's hint, a sweep's kept
    records) and the edge's one line with exit 130 hold for them too. A signal ignored when the
    process started (`nohup`) stays ignored; the previous handlers are back afterwards."""
    previous: dict[int, Any] = {}
    for signum in _STOPPED_BY:
        try:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, _stop)
        except ValueError:  # not the main thread (an embedding program): leave signals alone
            break
    _stopped_by.clear()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _process_edge(json_output: bool) -> Iterator[None]:
    """What ends a command from outside its work, caught once for every command:

    - Ctrl-C, SIGTERM or SIGHUP that no command handled: one line, exit 130 (never a traceback);
    - stdout closed by its reader (`| head`): nothing more is written, no message, exit 141 as for
      a program killed by SIGPIPE (128 + 13; what `set -o pipefail` sees from any shell tool),
      never 1, which means a gradient mismatch. Python's advice: point stdout at /dev/null, so
      that the final flush at exit does not fail again.
    """
    try:
        yield
    except KeyboardInterrupt:
        how = _stopped_by[-1] if _stopped_by else "Ctrl-C"
        error(f"interrupted by {how}")
        if json_output:
            with contextlib.suppress(OSError):
                print_json_error(EXIT_INTERRUPTED, f"interrupted by {how}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (OSError, SystemExit) as e:
        # Rich answers a broken pipe with its own SystemExit(1), raised while handling it
        cause = e.__context__ if isinstance(e, SystemExit) else e
        if not isinstance(cause, OSError) or cause.errno != errno.EPIPE:
            raise
        with contextlib.suppress(OSError, ValueError):  # not a real descriptor (CliRunner)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        raise typer.Exit(EXIT_BROKEN_PIPE) from None


def _cut_long_words(text: str, limit: int = 60) -> str:
    """A usage error echoes the value it refused: a 5,000-digit one is cut to its ends."""
    return re.sub(rf"\S{{{limit},}}",
                  lambda m: f"{m[0][:20]}...{m[0][-20:]} ({len(m[0])} characters)", text)


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
            print_app_help(self, ctx)
        finally:
            self._listing = False

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _process_edge(self._json):  # the app's --help and --version print here
            try:
                return super().make_context(*args, **kwargs)
            finally:
                sys.stdout.flush()

    def invoke(self, ctx: Any) -> Any:
        with _process_edge(self._json):
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
            with _stop_on_signals(), claimed():
                code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
        except typer.Abort:  # Ctrl-C where click saw it first (completion, say)
            error("interrupted by Ctrl-C")
            code = EXIT_INTERRUPTED
        except typer.TyperException as e:  # click's UsageError and its kin
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else PROG
            message = f"{_cut_long_words(e.format_message())} (see '{where} --help')"
            error(message)
            code = e.exit_code
            if json_asked(args):
                print_json_error(code, message)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


_HELP_STYLES = {
    "option": "bold cyan",
    "switch": "bold green",
    "negative_option": "bold magenta",
    "negative_switch": "bold red",
    "types": "bold yellow",
    "types_sep": "dim",
    "usage": "yellow",
}
_OPTION_PATTERNS = (
    r"(^|\W)(?P<switch>\-\w+)(?![a-zA-Z0-9])",
    r"(^|\W)(?P<option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
    r"(?P<types>\<[^\>]+\>)",
    r"(?P<usage>Usage: )",
)


def print_app_help(group: TyperGroup, ctx: Any) -> None:
    """The app's --help, drawn as typer draws it (its rich_utils), with Rich's basic pieces only.

    typer.rich_utils imports Markdown, tracebacks and syntax highlighting at the top, about half
    of what `--help` would cost; the app's help needs none of them. A test checks that this draws
    exactly what typer draws (plain and in colour), so a typer release that changes the look is
    caught. Each command's own --help is typer's.
    """

    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.align import Align
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.highlighter import RegexHighlighter
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text
    from rich.theme import Theme

    class OptionHighlighter(RegexHighlighter):
        highlights = list(_OPTION_PATTERNS)

    highlight = OptionHighlighter()
    width = os.environ.get("TERMINAL_WIDTH")
    force: bool | None = None
    if os.environ.get("GITHUB_ACTIONS") or os.environ.get("FORCE_COLOR") or os.environ.get(
        "PY_COLORS"
    ):
        force = True
    if os.environ.get("_TYPER_FORCE_DISABLE_TERMINAL"):
        force = False
    console = Console(
        theme=Theme(_HELP_STYLES), highlighter=highlight, color_system="auto",
        force_terminal=force, width=int(width) if width else None,
    )

    def markup(text: str, style: str = "") -> Text:
        return highlight(Text.from_markup(inspect.cleandoc(text), style=style))

    console.print(Padding(highlight(group.get_usage(ctx)), 1), style="bold")
    if group.help:
        first, *rest = inspect.cleandoc(group.help).partition("\f")[0].split("\n\n")
        parts = [markup(first.replace("\n", " ").strip())]
        if rest:
            parts += [Text(""), markup("\n\n".join(rest), style="dim")]
        console.print(Padding(Align(Group(*parts), pad=False), (0, 1, 1, 1)))

    def table(**extra: Any) -> Table:
        return Table(show_header=False, expand=True, box=None, show_lines=False, leading=0,
                     border_style=None, row_styles=None, pad_edge=False, padding=(0, 1),
                     **extra)

    options = table(highlight=True)
    for param in group.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        opts, secondary = list(param.opts), list(param.secondary_opts)
        types = Text(style="bold yellow", overflow="fold")  # the app has flags only: no type
        if not getattr(param, "is_flag", False):
            types.append(str(param.metavar or param.type.name.upper()))
        paragraphs = (getattr(param, "help", None) or "").split("\n\n")
        help_text = "\n".join(p.replace("\n", " ").strip() for p in paragraphs).strip()
        options.add_row(
            highlight(",".join(o for o in opts if "--" in o)),
            highlight(",".join(o for o in opts if "--" not in o)),
            Text(",".join(o for o in secondary if "--" in o), style="bold magenta"),
            Text(",".join(o for o in secondary if "--" not in o), style="bold red"),
            types,
            Columns([markup(help_text)] if help_text else []),
        )
    if options.row_count:
        console.print(Panel(options, border_style="dim", title="Options", title_align="left"))

    shown = [name for name in COMMANDS if not name.startswith("_")]
    commands = table(highlight=False)
    commands.add_column(style="bold cyan", no_wrap=True, width=max(map(len, shown)))
    commands.add_column("Description", justify="left", no_wrap=False, ratio=10)
    for name in shown:
        commands.add_row(Text(name), markup(COMMANDS[name][1].split("\n\n")[0].strip()))
    console.print(Panel(commands, border_style="dim", title="Commands", title_align="left"))

    if group.epilog:
        console.print(Padding(Align(markup(group.epilog), pad=False), 1))


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


def edge(func: F) -> F:
    """Catch domain errors where the CLI meets the work: one line on stderr, the right exit code.

    A failed Slurm job adds its log tail on stderr. When JSON was asked, stdout still gets a
    (plain JSON) error document, with the job's state and log tail for a failed job.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CheckError as e:
            leave_if_copy()
            error(str(e))
            extra: dict[str, Any] = {}
            if isinstance(e, JobState):
                if e.log_tail:
                    detail("last lines of the job's log", e.log_tail)
                extra["job"] = {"state": e.state, "log_tail": e.log_tail}
            if kwargs.get("json_output"):
                print_json_error(e.exit_code, str(e), **extra)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]

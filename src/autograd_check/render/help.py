"""The app's --help (`autograd-check --help`), drawn as typer draws it."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

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


def print_app_help(group: Any, ctx: Any, commands: Mapping[str, str]) -> None:
    """The app's --help, drawn as typer draws it (its rich_utils), with Rich's basic pieces only.

    typer.rich_utils imports Markdown, tracebacks and syntax highlighting at the top, about half
    of what `--help` would cost; the app's help needs none of them. A test checks that this draws
    exactly what typer draws (plain and in colour), so a typer release that changes the look is
    caught. Each command's own --help is typer's. `group` is the app's click group; `commands`
    the help line of each command shown, in order.
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

    shown = list(commands)
    rows = table(highlight=False)
    rows.add_column(style="bold cyan", no_wrap=True, width=max(map(len, shown)))
    rows.add_column("Description", justify="left", no_wrap=False, ratio=10)
    for name in shown:
        rows.add_row(Text(name), markup(commands[name].split("\n\n")[0].strip()))
    console.print(Panel(rows, border_style="dim", title="Commands", title_align="left"))

    if group.epilog:
        console.print(Padding(Align(markup(group.epilog), pad=False), 1))

"""The one stderr console, and the one-line messages every command writes there.

stdout is for results; progress, notes, warnings and errors go to stderr as plain lines that start
with the program's name (a user's value in a message is never read as Rich markup). Rich itself is
imported only when a live view or a progress bar asks for the console.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PROG = "autograd-check"


def note(message: str) -> None:
    """Progress and hints: `autograd-check: MESSAGE` on stderr."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    note(f"warning: {message}")


def error(message: str) -> None:
    """The one line a failed command leaves on stderr."""
    note(f"error: {message}")


def detail(title: str, text: str) -> None:
    """An indented block under an error (a job's log tail, say)."""
    print(f"{title}:", file=sys.stderr)
    for line in text.splitlines():
        print(f"  {line}", file=sys.stderr)
    sys.stderr.flush()


def stderr_console() -> Console:
    """The Rich console on stderr, for live lines and progress bars (only drawn on a terminal).

    Made anew on each call: it reads the terminal's width and NO_COLOR when it is made."""
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.console import Console

    return Console(stderr=True, highlight=False)

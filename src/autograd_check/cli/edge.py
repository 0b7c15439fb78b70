"""Where a command meets what can go wrong: a domain error becomes one line on stderr and its
exit code (`edge`, around each command), and Ctrl-C, SIGTERM, SIGHUP or a closed stdout end any
command the same way (`process_edge`, around all of them; see cli/app.py's LazyGroup)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import typer

from autograd_check.base.document import dumps, error_document
from autograd_check.base.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODE_SHORT,
    EXIT_INTERRUPTED,
    CheckError,
    JobState,
    WaitStopped,
)
from autograd_check.base.process import leave_if_copy
from autograd_check.render.console import detail, error, note

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODE_HELP = "Exit codes: " + " · ".join(f"{c} {text}" for c, text in EXIT_CODE_SHORT.items())
"""The epilog of `--help`, of the app and of each command: the one exit-code table, in short."""


def json_asked(args: Sequence[str] | None) -> bool:
    return "--json" in (sys.argv[1:] if args is None else args)


def print_json_error(code: int, message: str, **extra: Any) -> None:
    """When JSON was asked, stdout still gets a (plain JSON) error document."""
    leave_if_copy()
    print(dumps(error_document(code, message, **extra)), flush=True)


_STOPPED_BY: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
_stopped_by: list[str] = []
"""The signal that stopped this command, when not Ctrl-C (see stop_on_signals)."""


def _stop(signum: int, frame: object) -> None:
    _stopped_by.append(_STOPPED_BY.get(signum, f"signal {signum}"))
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
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
def process_edge(json_output: bool) -> Iterator[None]:
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


def cut_long_words(text: str, limit: int = 60) -> str:
    """A usage error echoes the value it refused: a 5,000-digit one is cut to its ends."""
    return re.sub(rf"\S{{{limit},}}",
                  lambda m: f"{m[0][:20]}...{m[0][-20:]} ({len(m[0])} characters)", text)


def edge(func: F) -> F:
    """Catch domain errors where the CLI meets the work: one line on stderr, the right exit code.

    A failed Slurm job adds its log tail on stderr. When JSON was asked, stdout still gets a
    (plain JSON) error document, with the job's state and log tail for a failed job.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WaitStopped as e:  # only the wait stopped: where the job is, as a note
            leave_if_copy()
            note(str(e))
            raise typer.Exit(e.exit_code) from None
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

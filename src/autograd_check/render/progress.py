"""Progress on stderr: the bar of --reference finite-diff, a local sweep's bar, a Slurm sweep's
live line (or, in a log file, one line per change). Bars are drawn only when stderr is a terminal.

The engine and the sweep runner never print: they call back (`progress(done, total)`,
`on_done(case, tally)`, `on_update(array_progress)`), and this module is where that becomes Rich
output. stdout stays for the result (and --json stays plain JSON).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from autograd_check.base.spec import CheckSpec
from autograd_check.render.console import note, stderr_console

if TYPE_CHECKING:
    import rich.live
    import rich.progress
    from rich.console import Console
    from rich.text import Text

    from autograd_check.references.finite_diff import Progress
    from autograd_check.slurm.arrays import ArrayProgress
    from autograd_check.slurm.commands import JobInfo
    from autograd_check.sweep.grid import Case
    from autograd_check.sweep.launch import LocalRun
    from autograd_check.sweep.runner import Tally


def progress_bar(
    console: Console,
    label: str,
    *,
    unit: str | None = None,
    eta: str | None = None,
    status: bool = False,
    transient: bool = False,
) -> rich.progress.Progress:
    """The one bar: LABEL, the bar, done/total [UNIT], elapsed, [ETA word] time left, [status]
    (a task field). Disabled (draws nothing) when the console is not a terminal."""
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if unit is not None:
        columns.append(TextColumn(unit))
    columns.append(TimeElapsedColumn())
    if eta is not None:
        columns.append(TextColumn(eta))
    columns.append(TimeRemainingColumn())
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Bar(*columns, console=console, transient=transient, disable=not console.is_terminal)


@contextmanager
def fd_progress(spec: CheckSpec, console: Console | None = None) -> Iterator[Progress | None]:
    """Yields the callback for execute(), or None when there is nothing to show or nowhere to
    show it (not finite-diff, stderr redirected or captured, a batch job's log)."""
    if spec.reference != "finite-diff":
        yield None
        return
    console = console if console is not None else stderr_console()
    if not console.is_terminal:
        yield None
        return
    # transient: the bar is gone when the result is printed, so it never mixes with it
    with progress_bar(console, "finite differences", unit="elements", transient=True) as bar:
        task = bar.add_task("finite differences", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- sweeps --------------------------------------------------------------------------------------
class SweepBar:
    """A local sweep's bar: cases done of all, time left, and the tally so far with the last case.
    Where stderr is not a terminal (a log file) nothing is drawn, and `summary` says in one line
    what ran."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.console = console if console is not None else stderr_console()
        self.drawn = self.console.is_terminal
        self._bar = progress_bar(self.console, "[bold]sweep", eta="eta", status=True)
        self._task = self._bar.add_task("sweep", total=total, status="")

    def __enter__(self) -> SweepBar:
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._bar.stop()

    def advance(self, case: Case, tally: Tally) -> None:
        """`run_local`'s on_done."""
        self._bar.update(self._task, advance=1, status=f"{tally.passed} passed, {tally.failed} "
                         f"failed, {tally.error} error · {case.key}")

    def summary(self, run: LocalRun) -> None:
        """One line on stderr when no bar was drawn (the bar itself said it all otherwise)."""
        if not self.drawn:
            t = run.tally
            note(f"ran {t.ran} case(s) here in {run.seconds:.1f} s: {t.passed} passed, "
                 f"{t.failed} failed, {t.error} error")


def array_line(p: ArrayProgress) -> Text:
    """A Slurm sweep's progress: tasks by state, records written, time spent."""
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.text import Text

    minutes, seconds = divmod(int(p.elapsed), 60)
    return Text(f"array: {p.pending} pending · {p.running} running · {p.done} done · "
                f"{p.failed} failed · records {p.recorded}/{p.cases} · "
                f"{minutes}:{seconds:02d} elapsed")


@contextmanager
def array_live(console: Console) -> Iterator[Callable[[ArrayProgress], None]]:
    """On a terminal: one line, redrawn as the array goes (it stays when the watch ends)."""
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.live import Live
    from rich.text import Text

    with Live(Text("array: submitted"), console=console, refresh_per_second=4) as live:
        yield lambda p: live.update(array_line(p))


@contextmanager
def array_log_lines(console: Console) -> Iterator[Callable[[ArrayProgress], None]]:
    """In a log file: a line for each change of the counts (not for the clock alone)."""
    seen: list[str] = []

    def changed(p: ArrayProgress) -> None:
        line = array_line(p)
        counts = line.plain.rsplit(" · ", 1)[0]
        if counts not in seen:
            seen.append(counts)
            console.print(line)

    yield changed


def array_progress(console: Console | None = None) -> contextlib.AbstractContextManager[
        Callable[[ArrayProgress], None]]:
    """`watch_sweep`'s on_update for `sweep --wait`: the live line, or log lines."""
    console = console if console is not None else stderr_console()
    return array_live(console) if console.is_terminal else array_log_lines(console)


JOB_STATE_STYLES = {
    "PENDING": "yellow",
    "CONFIGURING": "yellow",
    "RUNNING": "cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "green",
}


class JobProgress:
    """Where one Slurm job (or job step) is while `submit` or `result --wait` waits: a Rich live
    line on a terminal's stderr; otherwise one plain line on stderr each time the state changes
    (nothing fancy for logs and pipes). `update` is the watcher's callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.live: rich.live.Live | None = None
        self.last: tuple[str, str | None] | None = None
        self.latest: tuple[JobInfo, float] | None = None

    def __enter__(self) -> JobProgress:
        if self.tty:
            # rich loads only when this view is drawn: --help and --json never pay for it
            from rich.live import Live

            self.live = Live(console=stderr_console(), transient=True, refresh_per_second=8)
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if self.latest is not None:  # the live line was transient: leave its last word
                note(self._words(*self.latest))

    @property
    def elapsed(self) -> float | None:
        """Seconds waited at the last update (None before the first)."""
        return self.latest[1] if self.latest else None

    def _words(self, info: JobInfo, elapsed: float) -> str:
        where = f" on {info.node}" if info.node and info.state != "PENDING" else ""
        why = f" ({info.reason})" if info.reason and info.state == "PENDING" else ""
        return f"{self.label}: {info.state}{where}{why}, {elapsed:.1f} s"

    def update(self, info: JobInfo, elapsed: float) -> None:
        self.latest = (info, elapsed)
        if self.live is not None:
            # rich loads only when this view is drawn: --help and --json never pay for it
            from rich.spinner import Spinner
            from rich.text import Text

            style = JOB_STATE_STYLES.get(info.state, "red")
            self.live.update(Spinner("dots", text=Text(self._words(info, elapsed), style=style)))
            return
        key = (info.state, info.node)
        if key != self.last:
            self.last = key
            note(self._words(info, elapsed))

"""A progress bar on stderr for --reference finite-diff, only when stderr is a terminal.

The engine never prints: it calls `progress(done, total)` as batches finish, and this module is
where that becomes a Rich bar. stdout stays for the result (and --json stays plain JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from autograd_check.check.spec import CheckSpec

if TYPE_CHECKING:
    from rich.console import Console

    from autograd_check.check.finite_diff import Progress


@contextmanager
def fd_progress(spec: CheckSpec, console: Console | None = None) -> Iterator[Progress | None]:
    """Yields the callback for execute(), or None when there is nothing to show or nowhere to
    show it (not finite-diff, stderr redirected or captured, a batch job's log)."""
    if spec.reference != "finite-diff":
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console if console is not None else Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("finite differences"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elements"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # transient: the bar is gone when the result is printed, so it never mixes with it
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("finite differences", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update

"""`run --timeout` for a check in this process: the check is stopped where it is when it outlives
its time (a target that hangs), and a call that never comes back to Python is not waited for.

SIGALRM raises `TimedOut` wherever the check is: a BaseException that is neither an Exception
nor a SystemExit, so neither the target's own `except Exception` nor the tool's handling of a
target's errors takes it for the check's own failure (as a sweep's --case-timeout). A timeout
that falls inside an import waits for the import to finish (a torch import cut short leaves it
broken). Code that never returns to Python (a C call, signals blocked) cannot be interrupted
from its own thread: a watchdog thread calls `on_hung` HANG_GRACE_S after the timeout, and the
caller (the CLI) says so and ends the process.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

HANG_GRACE_S = 10.0
"""After the timeout, how long the check has to come back to Python before `on_hung`."""
IMPORT_RETRY_S = 0.05
"""How soon a timeout that came during an import looks again (run --timeout and a sweep's
--case-timeout alike: an import is a few hundred milliseconds at most)."""


class TimedOut(BaseException):
    """The check ran past --timeout (raised by SIGALRM's handler wherever it was)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:g} s (--timeout)")
        self.seconds = seconds

    def where(self) -> str | None:
        """'FILE:LINE in NAME' of the innermost frame it stopped, if known."""
        frames = [f for f in traceback.extract_tb(self.__traceback__) if f.filename != __file__]
        if not frames:
            return None
        last = frames[-1]
        return f"{last.filename}:{last.lineno} in {last.name}"


def importing(frame: FrameType | None) -> bool:
    """Whether the interrupted code is inside an import (importlib's frames on the stack): a
    torch import cut short leaves its C++ registrations half made, so a timeout waits for it."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextmanager
def time_limit(
    seconds: float | None, on_hung: Callable[[float], None], grace: float = HANG_GRACE_S
) -> Iterator[None]:
    """Bound the block to `seconds` (None: no bound; off the main thread, where no signal handler
    can be set, no bound either). `on_hung(seconds)` runs in a watchdog thread when the block is
    still running `grace` seconds after its time: it is expected to end the process."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    done = threading.Event()

    def alarm(signum: int, frame: FrameType | None) -> None:
        if done.is_set():
            return
        if importing(frame):
            signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY_S)
            return
        raise TimedOut(seconds)

    def watch() -> None:
        if not done.wait(seconds + grace):
            on_hung(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    watchdog = threading.Thread(target=watch, name="run-timeout", daemon=True)
    watchdog.start()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        done.set()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

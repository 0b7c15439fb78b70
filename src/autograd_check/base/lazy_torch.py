"""The one place torch is imported from at run time, so `--help` and bad input never pay for it."""

from __future__ import annotations

import contextlib
import gc
import sys
import warnings
from types import ModuleType
from typing import IO, Any, cast

NUMPY_NOTICE = "A module that was compiled using NumPy 1.x cannot be run in"
"""The start of numpy 2's notice (50 lines, a Traceback included) when a torch built for numpy 1
(torch < 2.3) loads beside numpy 2: torch goes on without numpy, which no check needs."""


class _WithoutNumpyNotice:
    """sys.stderr during torch's import, less numpy 2's notice. numpy writes the notice, its
    traceback included, in one write call: only that call is dropped, every other line passes."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if NUMPY_NOTICE in text:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _quiet_numpy_notice() -> contextlib.AbstractContextManager[object]:
    if sys.stderr is None:  # no stderr (pythonw, a closed fd 2): nothing to keep clean
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(cast("IO[str]", _WithoutNumpyNotice(sys.stderr)))


def import_torch() -> ModuleType:
    loaded = sys.modules.get("torch")
    if loaded is not None:
        return loaded
    # Importing torch creates ~160k long-lived objects and next to no garbage: the cyclic
    # collector's hundreds of passes over them cost ~10% of the import, and the full collection
    # they trigger later costs as much again. Pausing the collector, then moving what exists to
    # the permanent generation (gc.freeze), saves ~0.1 s per run (benchmarks/bench_run.py).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        # torch warns at import when numpy is missing or is numpy 2 beside a torch built for
        # numpy 1 (which numpy announces itself, at length); numpy is not needed here, and
        # stderr belongs to our own messages.
        with warnings.catch_warnings(), _quiet_numpy_notice():
            warnings.filterwarnings("ignore", message=r"Failed to initialize NumPy")
            # torch loads only when a check runs: --help and bad input never pay for it
            import torch
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
    return torch

"""The one place torch is imported from at run time, so `--help` and bad input never pay for it."""

from __future__ import annotations

import gc
import sys
import warnings
from types import ModuleType


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
        # torch warns at import when numpy is missing; numpy is not needed here, and stderr
        # belongs to our own messages.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Failed to initialize NumPy")
            # torch loads only when a check runs: --help and bad input never pay for it
            import torch
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
    return torch

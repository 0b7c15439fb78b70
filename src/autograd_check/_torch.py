"""The one place torch is imported from at run time, so `--help` and bad input never pay for it."""

from __future__ import annotations

import warnings
from types import ModuleType


def import_torch() -> ModuleType:
    # torch warns at import when numpy is missing; numpy is not needed here, and stderr belongs
    # to our own messages.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Failed to initialize NumPy")
        import torch
    return torch

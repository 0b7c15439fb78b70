"""Every JSON document the tool writes, on stdout or on disk, in one envelope.

    {"schema_version": 1, "tool": {"name": "autograd-check", "version": ...}, "kind": KIND, ...}

then the payload's own keys. Strict JSON has no NaN or infinity: they are spelled as the strings
"NaN", "Infinity" and "-Infinity" (as JavaScript names them) and read back as floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from autograd_check._version import __version__

SCHEMA_VERSION = 1
TOOL = {"name": "autograd-check", "version": __version__}
KINDS = (
    "check",  # run, submit, result, and each sweep record
    "error",  # any command that failed with --json (the error block, the job's state if any)
    "submit-plan",  # submit --dry-run: the sbatch script, or the srun line inside an allocation
    "submitted",  # submit --no-wait: the job id and where its files are
    "job",  # status: a job's state
    "tour",
    "tour-steps",  # tour --list
    "environment",  # env
    "sweep-plan",  # sweep --dry-run
    "sweep-submitted",  # sweep --slurm without --wait
    "report",  # report, and sweep --wait
    "manifest",  # a sweep's manifest.json
)
"""The kinds of document (docs/json.md describes each payload)."""


def envelope(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The document of this kind: schema_version, tool and kind, then the payload's keys."""
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    return {"schema_version": SCHEMA_VERSION, "tool": dict(TOOL), "kind": kind, **payload}


def error_document(exit_code: int, message: str, **extra: Any) -> dict[str, Any]:
    """What --json prints when a command fails: the exit code and its one-line message."""
    return envelope("error", {"error": {"exit_code": exit_code, "message": message}, **extra})


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def plain(obj: Any) -> Any:
    """NaN and infinities as strings, recursively: what strict JSON can hold."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def unplain(obj: Any) -> Any:
    """The inverse of `plain`: "NaN", "Infinity" and "-Infinity" back to floats."""
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: unplain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unplain(v) for v in obj]
    return obj


def dumps(doc: Any, indent: int | None = 2) -> str:
    """Plain, sorted JSON (no NaN literals)."""
    return json.dumps(plain(doc), indent=indent, sort_keys=True, allow_nan=False)

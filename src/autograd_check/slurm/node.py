"""The job itself, run on the node: `run_job(spec)` (what submitit pickles and runs), and its
answer as plain data turned back into a CheckResult (or the domain error) on this side."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Mapping
from typing import Any

from autograd_check.check.execute import execute
from autograd_check.check.host import slurm_ids
from autograd_check.check.result import CheckResult
from autograd_check.check.spec import build_spec
from autograd_check.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    CheckError,
    EnvironmentProblem,
    JobFailed,
)


def error_envelope(error: CheckError) -> dict[str, Any]:
    return {
        "outcome": "error",
        "kind": type(error).__name__,
        "exit_code": error.exit_code,
        "message": str(error),
        "host": socket.gethostname(),
        "slurm": slurm_ids(),
    }


def plain(result: CheckResult) -> dict[str, Any]:
    """The result document with plain types only, in its own key order.

    torch.__version__ is a torch class: pickled as is, loading the answer would import torch on
    the submitting side (seconds of waiting for nothing). JSON keeps str, not the subclass; no
    sort_keys, so the tensors keep the order the view shows them in (real, predicted, ...).
    """
    data: dict[str, Any] = json.loads(json.dumps(result.to_dict()))
    return data


def run_job(spec_data: dict[str, Any]) -> dict[str, Any]:
    """What submitit runs on the node: execute(spec), answered as plain data.

    Domain errors (a shape that does not fit the node's memory, no GPU on the node) come back as
    data with their exit code rather than as a traceback; the result is a plain dict, so reading
    it back needs no matching class versions.
    """

    try:
        result = execute(build_spec(spec_data))
    except CheckError as e:
        print(f"autograd-check: error: {e}", file=sys.stderr, flush=True)
        return error_envelope(e)
    verdict = "PASS" if result.passed else "FAIL"
    print(f"autograd-check: {verdict} on {result.environment.get('host')}", flush=True)
    return {"outcome": "result", "result": plain(result)}


def outcome_to_result(envelope: Mapping[str, Any], where: str) -> CheckResult:
    """The CheckResult of a job's answer, or its domain error raised again, here."""
    if envelope.get("outcome") == "result":
        return CheckResult.from_dict(envelope["result"])
    if envelope.get("outcome") == "error":
        kinds: dict[str, type[CheckError]] = {
            "BadInput": BadInput, "EnvironmentProblem": EnvironmentProblem, "JobFailed": JobFailed
        }
        error_class = kinds.get(str(envelope.get("kind")), CheckError)
        host = envelope.get("host") or "?"
        error = error_class(f"{envelope.get('message')} (on node {host}, {where})")
        if error_class is CheckError:
            error.exit_code = int(envelope.get("exit_code", EXIT_BAD_INPUT))
        raise error
    raise JobFailed(f"{where} answered something that is not a check result", state="FAILED")

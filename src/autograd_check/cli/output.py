"""Printing on stdout: a document as plain JSON for programs, a result as Rich for people."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autograd_check.base.document import dumps, envelope
from autograd_check.base.process import leave_if_copy

if TYPE_CHECKING:
    from autograd_check.base.result import CheckResult


def print_document(kind: str, payload: Mapping[str, Any]) -> None:
    """One JSON document of this kind (autograd_check.base.document's envelope) on stdout."""
    leave_if_copy()
    print(dumps(envelope(kind, payload)), flush=True)


def show_result(result: CheckResult, *, json_output: bool, show_tensors: bool | None) -> None:
    leave_if_copy()  # a fork made by the user's code shows nothing: one result, the original's
    if json_output:
        print(result.to_json())
        return
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.console import Console

    # rich loads only when this view is drawn: --help and --json never pay for it
    from autograd_check.render.result import print_result

    print_result(result, Console(highlight=False), show_tensors)

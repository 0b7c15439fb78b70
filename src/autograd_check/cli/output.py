"""Printing a result: Rich on stdout for people, plain JSON for programs."""

from __future__ import annotations

from autograd_check.check.result import CheckResult


def show_result(result: CheckResult, *, json_output: bool, show_tensors: bool | None) -> None:
    if json_output:
        print(result.to_json())
        return
    from rich.console import Console

    from autograd_check.render.result import print_result

    print_result(result, Console(highlight=False), show_tensors)

"""Rich views rendered deterministically (Console(record=True, width=100))."""

from __future__ import annotations

import json

from rich.console import Console

from autograd_check.base.result import CheckResult
from autograd_check.base.spec import build_spec
from autograd_check.execute import execute
from autograd_check.render.result import print_result


def text_of(result: CheckResult, show_tensors: bool | None = None) -> str:
    console = Console(record=True, width=100, color_system=None)
    print_result(result, console, show_tensors)
    return console.export_text()


def test_a_result_read_back_from_json_renders_like_the_original() -> None:
    result = execute(build_spec({"seed": 3}))
    again = CheckResult.from_dict(json.loads(result.to_json()))
    assert text_of(again) == text_of(result)
    out = text_of(again)
    order = [out.index(t) for t in ("─ real", "─ predicted", "─ manual gradient", "─ autograd")]
    assert order == sorted(order)


def test_user_text_is_not_read_as_markup() -> None:
    result = execute(build_spec({}))
    result.notes.append("see [bold]this[/bold] and [realₙ]")
    assert "see [bold]this[/bold] and [realₙ]" in text_of(result)

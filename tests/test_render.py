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


def test_a_long_job_id_or_host_name_does_not_fold_the_environment_row() -> None:
    """The host and Slurm job have a row of their own: the docs normalise job ids and host names
    after Rich has laid out the panel, so a row that folds on a 7-digit job id would differ."""
    result = execute(build_spec({}))
    short, long = dict(result.environment), dict(result.environment)
    short.update(host="vm", slurm={"job_id": "101", "step_id": "0"})
    long.update(host="gpu-node-0042.cluster", slurm={"job_id": "12345678", "step_id": "0"})
    rows = []
    for env in (short, long):
        result.environment = env
        lines = text_of(result).splitlines()
        at = next(i for i, line in enumerate(lines) if "│ environment" in line)
        rows.append(lines[at:at + 3])
    assert "host" in rows[0][1] and "vm · Slurm job 101 step 0" in rows[0][1]
    assert "gpu-node-0042.cluster · Slurm job 12345678 step 0" in rows[1][1]
    assert all("determinism" in r[2] for r in rows)  # neither host row took a second line
    assert rows[0][0] == rows[1][0]

"""`autograd-check env` for people: what is here, as a grid of facts and a table of partitions."""

from __future__ import annotations

import re
import sys
from typing import Any

_ANSI = r"\x1b\[[0-9;]*m"
_LINE_END = re.compile(rf"(?:{_ANSI}| )+$")


def _rstrip(line: str) -> str:
    """The line without its trailing spaces, also those among a styled line's closing codes."""
    end = _LINE_END.search(line)
    if end is None:
        return line
    return line[: end.start()] + "".join(re.findall(_ANSI, end.group(0)))


def _yes(value: object) -> str:
    return "yes" if value else "no"


def print_facts(facts: dict[str, Any]) -> None:
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich.console import Console

    console = Console(highlight=False)
    with console.capture() as captured:
        _print_tables(console, facts)
    # Rich pads every cell to its column's width, so each line would end in spaces up to the
    # widest line: noise in logs and diffs.
    lines = [_rstrip(line) for line in captured.get().splitlines()]
    print("\n".join(lines).rstrip("\n"))


def _print_tables(console: Any, facts: dict[str, Any]) -> None:
    # rich loads only when this view is drawn: --help and --json never pay for it
    from rich import box
    from rich.table import Table

    t = facts["torch"]
    s = facts["slurm"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("python", f"{facts['python']} ({sys.executable})")
    grid.add_row("torch", f"{t['version']} (CUDA build: {t['cuda_build'] or 'none'}, "
                          f"{t['threads']} CPU threads)")
    if t["devices"]:
        for d in t["devices"]:
            grid.add_row(f"cuda:{d['index']}",
                         f"{d['name']}, {d['memory_gib']} GiB, capability {d['capability']}")
    else:
        grid.add_row("CUDA", "no usable device" if t["cuda_build"] else "not in this torch build")
    for tool, path in s["tools"].items():
        grid.add_row(tool, path or "not found")
    acct = s["accounting"]
    grid.add_row("accounting", f"{_yes(acct['works'])} ({acct['detail']})"
                 + ("" if acct["works"] else "; states come from scontrol/squeue"))
    alloc = s["allocation"]
    if alloc is None:
        grid.add_row("allocation", "none (not inside salloc or a job)")
    else:
        step = f", step {alloc['step_id']}" if alloc["step_id"] else " (not in a step)"
        where = "on its node" if alloc["on_allocated_node"] else f"on {alloc['host']}, not its node"
        grid.add_row("allocation", f"job {alloc['job_id']}{step}, nodes "
                                   f"{','.join(alloc['nodes']) or '?'}, {where}")
    log = s["log_dir"]
    grid.add_row("log dir", f"{log['path']} ({log['from']}; "
                            f"{'exists' if log['exists'] else 'created on first submit'}; "
                            "must be on a filesystem the nodes share)")
    grid.add_row("submit would", s["submit_would"])
    console.print(grid)
    if s["partitions"]:
        table = Table(title="partitions (sinfo; * = default)", box=box.SIMPLE_HEAVY,
                      title_justify="left")
        for column in ("partition", "state", "time limit", "nodes", "CPUs", "MB", "GRES",
                       "node list"):
            table.add_column(column, no_wrap=column != "node list")
        for p in s["partitions"]:
            table.add_row(p["name"] + ("*" if p["default"] else ""),
                          f"{p['available']}/{p['state']}", p["time_limit"], str(p["nodes"]),
                          p["cpus_per_node"], p["memory_mb_per_node"], p["gres"] or "-",
                          p["node_list"])
        console.print(table)

"""The Slurm options shared by every command that sends checks to Slurm (submit, sweep).

Declared once and added to a command by `slurm_options`, like `check_options`: every default is
None ("not given"), so the [slurm] table of a --config file can fill it and flags override it.
The command receives them as one dict, `slurm_values`, whose keys are the [slurm] table's keys
(autograd_check.slurm.options.SLURM_KEYS); `config.slurm_from(slurm_values, config_path)`
validates them.

`submit` reads --log-dir also from $AUTOGRAD_CHECK_LOG_DIR (typer's envvar=, so the flag, then the
variable, then the config file); `sweep` does not: its logs default to its own DIR/logs.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from autograd_check.cli.options import option_group
from autograd_check.slurm.log_dir import DEFAULT_LOG_DIR, LOG_DIR_ENV
from autograd_check.slurm.options import DEFAULT_JOB_NAME, DEFAULT_TIME_MIN

PANEL = "Slurm options"

_P = inspect.Parameter
SLURM_PARAMETERS: list[inspect.Parameter] = [
    _P("partition", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Partition to queue in (sinfo lists them).", show_default="the cluster's default",
        rich_help_panel=PANEL)]),
    _P("time", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Time limit: minutes, or Slurm's [D-]HH:MM:SS.", metavar="TIME",
        show_default=f"{DEFAULT_TIME_MIN} minutes", rich_help_panel=PANEL)]),
    _P("gpus", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="GPUs per node.", metavar="N", show_default="1 with --device cuda, else 0",
        rich_help_panel=PANEL)]),
    _P("nodes", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Nodes for --ranks: one job of N tasks, N/M per node.", metavar="M",
        show_default="1", rich_help_panel=PANEL)]),
    _P("cpus", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="CPUs for the check (--cpus-per-task).", metavar="N",
        show_default="the cluster's default", rich_help_panel=PANEL)]),
    _P("mem", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Memory per node: 500M, 1G, ... (a bare number is MB).", metavar="SIZE",
        show_default="the cluster's default", rich_help_panel=PANEL)]),
    _P("account", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Account to charge.", show_default=False, rich_help_panel=PANEL)]),
    _P("qos", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Quality of service.", show_default=False, rich_help_panel=PANEL)]),
    _P("constraint", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None,
        typer.Option(help="Node features, e.g. 'v100|a100'.", show_default=False,
                     rich_help_panel=PANEL)]),
    _P("job_name", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        "--job-name", help="Job name (letters, digits, _ . @ + : -).",
        show_default=DEFAULT_JOB_NAME, rich_help_panel=PANEL)]),
    _P("setup", _P.KEYWORD_ONLY, default=None, annotation=Annotated[list[str] | None,
        typer.Option("--setup", metavar="LINE",
                     help="Shell line run before the check, e.g. 'module load cuda' or "
                     "'source .venv/bin/activate'. Repeatable.", show_default=False,
                     rich_help_panel=PANEL)]),
    _P("sbatch_args", _P.KEYWORD_ONLY, default=None, annotation=Annotated[list[str] | None,
        typer.Option("--sbatch-arg", metavar="KEY=VALUE",
                     help="Any other sbatch option, e.g. mail-type=END (KEY= for a flag). "
                     "Repeatable.", show_default=False, rich_help_panel=PANEL)]),
    _P("log_dir", _P.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None,
        typer.Option("--log-dir", metavar="DIR",
                     help="The array's job scripts and logs (mode 0700). Must be on a filesystem "
                     "the nodes share, not /tmp.",
                     show_default="--out DIR/logs", rich_help_panel=PANEL)]),
    _P("timeout", _P.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, typer.Option(
        help="Bound on every wait, in seconds (queueing included).", metavar="SECONDS",
        show_default="3600", rich_help_panel=PANEL)]),
]


def _log_dir_from_env(p: inspect.Parameter) -> inspect.Parameter:
    """The same --log-dir, also read from $AUTOGRAD_CHECK_LOG_DIR (shown in --help)."""
    return p.replace(annotation=Annotated[Path | None, typer.Option(
        "--log-dir", metavar="DIR", envvar=LOG_DIR_ENV,
        help="Job scripts, logs and results (mode 0700). Must be on a filesystem the nodes "
        "share, not /tmp.", show_default=DEFAULT_LOG_DIR, rich_help_panel=PANEL)])


slurm_options = option_group(SLURM_PARAMETERS, "slurm_values", empty_to_none=True)
"""Add the Slurm options to a command (sweep); it receives them as one dict, `slurm_values`."""

submit_slurm_options = option_group(
    [_log_dir_from_env(p) if p.name == "log_dir" else p for p in SLURM_PARAMETERS],
    "slurm_values",
    empty_to_none=True,
)
"""The Slurm options of `submit`: --log-dir also from $AUTOGRAD_CHECK_LOG_DIR."""

"""TOML profiles (configs/*.toml): check options and Slurm options, merged under the flags."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import BadInput
from autograd_check.base.spec import SPEC_KEYS, CheckSpec, build_spec
from autograd_check.losses.inputs import InputsTarget, find_target, load_any_target
from autograd_check.slurm.options import SLURM_KEYS, build_slurm_options

if TYPE_CHECKING:
    from autograd_check.slurm.options import SlurmOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SECTIONS = ("check", "slurm", "sweep")


def load_profile(path: Path) -> dict[str, dict[str, Any]]:
    """Read a profile; an unreadable file, bad TOML or an unknown section is BadInput naming it."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInput(f"config {str(path)!r} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise BadInput(f"config {str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"config {str(path)!r} is not valid TOML: {e}") from None
    except ValueError:  # an integer past Python's int-from-text limit (4300 digits)
        raise BadInput(
            f"config {str(path)!r} is not valid TOML: a number has more than "
            f"{sys.get_int_max_str_digits()} digits"
        ) from None
    for section, body in data.items():
        if section not in SECTIONS:
            raise BadInput(
                f"config {str(path)!r}: unknown key {section!r}; "
                f"expected tables {', '.join(f'[{s}]' for s in SECTIONS)}"
            )
        if not isinstance(body, dict):
            raise BadInput(f"config {str(path)!r}: {section!r} must be a table ([{section}])")
    return data


def section_values(
    path: Path | None, section: str, known: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the section's values, the whole profile), checking the section's keys against `known`."""
    if path is None:
        return {}, {}
    profile = load_profile(path)
    values = dict(profile.get(section, {}))
    for key in values:
        if key not in known:
            raise BadInput(
                f"config {str(path)!r}: unknown key {key!r} in [{section}]; "
                f"known keys: {', '.join(known)}"
            )
    return values, profile


def checked_table(
    path: Path | None,
    section: str,
    known: tuple[str, ...],
    validate: Callable[[dict[str, Any]], object],
) -> dict[str, Any]:
    """A table of --config, its keys checked against `known` and its values by `validate` (which
    raises BadInput); a problem names the file and the table: `config 'FILE' [check]: ...`."""
    values, _ = section_values(path, section, known)
    try:
        validate(values)
    except BadInput as e:
        raise BadInput(f"config {str(path)!r} [{section}]: {e}") from None
    return values


def check_table(path: Path | None) -> dict[str, Any]:
    """The [check] table of --config, validated as check options (every command reads it so)."""
    return checked_table(path, "check", SPEC_KEYS, build_spec)


def slurm_table(path: Path | None) -> dict[str, Any]:
    """The [slurm] table of --config, validated as Slurm options: also by the commands that do
    not use it (`run`, `sweep --local`), so that a misspelled key is exit 2 everywhere, as in
    [check], rather than a setting silently ignored until the day the file is used for Slurm."""
    return checked_table(path, "slurm", SLURM_KEYS, build_slurm_options)


def merge(flags: Mapping[str, Any], file_values: Mapping[str, Any]) -> dict[str, Any]:
    """Flags that were given (not None) override the file."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


def spec_from(check_values: Mapping[str, Any]) -> CheckSpec:
    """Build the CheckSpec from the check flags and the [check] table of --config, flags first."""
    values = dict(check_values)
    path = values.pop("config", None)
    merged = merge(values, check_table(path))
    spec = build_spec(merged)
    slurm_table(path)
    if spec.target is None:
        return spec
    if spec.ranks is not None:
        # Across ranks the target is made inside each rank, once torch.distributed is set up
        # (its __init__ may ask for the rank): here only its file and name are checked.
        own_inputs = find_target(spec.target)
    else:
        # Import the user's --target here, at the edge: a typo is exit 2 before a Slurm job is
        # queued, not a job that fails on the node (run imports it again from a cache).
        own_inputs = isinstance(load_any_target(spec.target), InputsTarget)
    ignored = [key for key in ("model", "shape") if merged.get(key) is not None]
    if own_inputs and ignored:
        raise BadInput(f"target {spec.target!r} gives its own inputs (inputs(generator, dtype, "
                       f"device)), so {' and '.join(ignored)} would be ignored: "
                       f"{'they apply' if len(ignored) > 1 else 'it applies'} only to a built-in "
                       "loss or a target with loss(predicted, real)")
    return spec


def slurm_from(slurm_values: Mapping[str, Any], path: Path | None) -> SlurmOptions:
    """Build SlurmOptions from the Slurm flags and the [slurm] table of --config, flags first."""

    return build_slurm_options(merge(slurm_values, slurm_table(path)))

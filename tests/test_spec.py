"""CheckSpec validation: every bad value is refused with a message naming it and what is allowed."""

from __future__ import annotations

import json

import pytest

from autograd_check.base.budget import ensure_fits, needed_bytes
from autograd_check.base.errors import BadInput
from autograd_check.base.spec import CheckSpec, build_spec, parse_shape


def test_defaults_reproduce_the_tutorial() -> None:
    spec = build_spec({})
    assert spec == CheckSpec()
    assert (spec.shape, spec.dtype, spec.device, spec.loss, spec.seed) == (
        (3, 8), "float32", "cpu", "mse-sum", 0,
    )
    assert spec.tolerances() == (1.3e-6, 1e-5)


@pytest.mark.parametrize(
    ("text", "shape"),
    [("3x8", (3, 8)), ("3,8", (3, 8)), ("7", (7,)), (" 2X3x4 ", (2, 3, 4)),
     ("1x1x1x1x1x1x1x2", (1,) * 7 + (2,)), ([4, 5], (4, 5)), (6, (6,))],
)
def test_shapes_accepted(text: object, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3x0", "dimension 2 is 0"),
        ("3x-2", "dimension 2 is -2"),
        ("3x2.5", "dimension 2 is '2.5', not an integer"),
        ("3x", "dimension 2 is missing"),
        ("x8", "dimension 1 is missing"),
        ("", "is empty"),
        ("1x1x1x1x1x1x1x1x1", "has 9 dimensions; at most 8"),
        ("abc", "dimension 1 is 'abc'"),
    ],
)
def test_bad_shapes_name_the_value(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message) as info:
        parse_shape(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dtype", "float8", "dtype 'float8' is not supported; choose one of float32, float64"),
        ("device", "tpu", "device 'tpu' is not known; choose cpu, cuda, cuda:N"),
        ("device", "cuda:-1", "device 'cuda:-1' is not known"),
        ("seed", "-1", "seed '-1' is not a non-negative integer"),
        ("seed", "1.5", "seed '1.5' is not a non-negative integer"),
        ("seed", str(2**64), "too large; seeds go from 0 to 2\\*\\*64 - 1"),
        ("rtol", "-1e-3", "rtol '-1e-3' is not allowed; expected a finite number >= 0"),
        ("atol", "abc", "atol 'abc' is not allowed"),
        ("atol", "nan", "atol 'nan' is not allowed"),
        ("loss", "hinge", "loss 'hinge' is not known"),
        ("exact", "yes", "exact 'yes' is not allowed; expected true or false"),
        ("colour", "red", "unknown check option 'colour'"),
        ("seed", True, "seed True is not a non-negative integer"),
        ("rtol", 10**400, "is not allowed; expected a finite number >= 0"),  # past float's range
        ("rtol", True, "rtol True is not allowed; expected a finite number >= 0"),
        ("delta", "0", "delta '0' is not allowed; Huber's delta is a finite number > 0"),
        ("delta", "inf", "delta 'inf' is not allowed; Huber's delta is a finite number > 0"),
        ("hidden", "0", "hidden '0' is not allowed; expected an integer, 1 to 65536"),
        ("hidden", "16.0", "hidden '16.0' is not allowed; expected an integer, 1 to 65536"),
        ("hidden", "65537", "hidden '65537' is not allowed; expected an integer, 1 to 65536"),
        ("repeat", "0", "repeat '0' is not allowed; expected an integer from 1 to 10000"),
        ("repeat", False, "repeat False is not allowed; expected an integer from 1 to 10000"),
        ("max_fd_elements", "1e3", "max_fd_elements '1e3' is not allowed; expected an integer"),
    ],
)
def test_bad_values(key: str, value: object, message: str) -> None:
    extra = {"delta": {"loss": "huber"}, "hidden": {"model": "mlp"}}.get(key, {})
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_spec({key: value, **extra})


def test_whole_numbers_arrive_as_ints_or_their_text() -> None:
    spec = build_spec({"seed": " 7 ", "model": "mlp", "hidden": "32", "repeat": "1_000",
                       "max_fd_elements": 4096})
    assert (spec.seed, spec.hidden, spec.repeat, spec.max_fd_elements) == (7, 32, 1000, 4096)
    spec = build_spec({"loss": "huber", "delta": "0.25", "rtol": 0, "atol": "1e-3"})
    assert (spec.delta, spec.rtol, spec.atol) == (0.25, 0.0, 1e-3)


def test_the_largest_seed_torch_takes() -> None:
    assert build_spec({"seed": str(2**64 - 1)}).seed == 2**64 - 1


def test_valid_values_normalised() -> None:
    spec = build_spec({"dtype": "torch.float64", "device": "CUDA:1", "seed": "42",
                       "rtol": "0", "atol": 1e-3, "exact": True})
    assert (spec.dtype, spec.device, spec.seed, spec.exact) == ("float64", "cuda:1", 42, True)
    assert spec.tolerances() == (0.0, 1e-3)


def test_one_tolerance_keeps_the_dtype_default_for_the_other() -> None:
    assert build_spec({"dtype": "bfloat16", "atol": "0.5"}).tolerances() == (1.6e-2, 0.5)


@pytest.mark.parametrize(
    "values",
    [
        {"shape": "2x3x4", "dtype": "float16", "seed": 7, "rtol": 0.1},
        {"loss": "huber", "delta": "0.5", "model": "mlp", "hidden": "8", "repeat": 3},
        {"reference": "finite-diff", "exact": True, "deterministic": True, "atol": 0},
    ],
)
def test_spec_round_trips_through_json(values: dict[str, object]) -> None:
    """What a Slurm node and a sweep's records do: to_dict, JSON, build_spec."""
    spec = build_spec(values)
    assert build_spec(json.loads(json.dumps(spec.to_dict()))) == spec


def test_memory_estimate_refuses_what_does_not_fit() -> None:
    spec = build_spec({"shape": "100000x100000"})
    assert needed_bytes(spec) == 7 * 10**10 * 4
    with pytest.raises(BadInput, match=r"needs about 260.8 GiB \(7 tensors .* has 1.0 GiB"):
        ensure_fits(spec, 1024**3, "this host")
    ensure_fits(build_spec({}), 1024**3, "this host")  # the tutorial's shape fits anywhere


@pytest.mark.parametrize(
    ("values", "tensors"),
    [
        ({}, 7),
        ({"loss": "huber"}, 9),
        ({"loss": "cross-entropy", "dtype": "float16"}, 18),
        ({"dtype": "bfloat16"}, 7),  # the tutorial's loss stays in its dtype
        ({"repeat": "3"}, 9),
    ],
)
def test_peak_depends_on_the_loss_dtype_and_repeat(values: dict[str, str], tensors: int) -> None:
    spec = build_spec({"shape": "1000", **values})
    assert needed_bytes(spec) == tensors * 1000 * spec.itemsize


@pytest.mark.parametrize(("ranks", "accumulate", "shape"), [
    ("2", "1", (4, 8)), ("3", "1", (3, 8)), ("2", "2", (8, 8)), ("1", "1", (3, 8))])
def test_ranks_without_a_shape_get_a_batch_that_splits(ranks: str, accumulate: str,
                                                       shape: tuple[int, ...]) -> None:
    """`run --ranks 2 --model mlp`, the first command a user types, needs no --shape."""
    spec = build_spec({"model": "mlp", "ranks": ranks, "accumulate": accumulate})
    assert spec.shape == shape


def test_a_shape_given_with_ranks_is_kept_or_refused() -> None:
    assert build_spec({"model": "mlp", "ranks": "2", "shape": "6x4"}).shape == (6, 4)
    with pytest.raises(BadInput, match="shape 3x8: its first dimension"):
        build_spec({"model": "mlp", "ranks": "2", "shape": "3x8"})

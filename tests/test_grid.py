"""Grid parsing and expansion: axes, seed ranges, keys, limits; no torch involved."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd_check.base.errors import BadInput
from autograd_check.sweep.grid import DEFAULT_MAX_CASES, Grid, build_grid, case_key, check_size


def grid(**values: object) -> Grid:
    return build_grid(values)


class TestAxes:
    def test_defaults_are_the_tutorial_case(self) -> None:
        g = grid()
        assert g.size == 1
        (case,) = list(g.cases())
        assert case.key == "3x8_float32_cpu_mse-sum_seed0"
        assert case.spec.shape == (3, 8) and case.spec.dtype == "float32"

    def test_flag_lists_expand_to_the_product(self) -> None:
        g = grid(shapes="3x8, 64x64,1024x1024", dtypes="float32,float64,bfloat16",
                 devices="cpu,cuda", seeds="0-9")
        assert g.shapes == ((3, 8), (64, 64), (1024, 1024))
        assert g.devices == ("cpu", "cuda")
        assert g.size == 3 * 3 * 2 * 10
        cases = list(g.cases())
        assert len(cases) == 180 and len({c.key for c in cases}) == 180
        assert [c.index for c in cases] == list(range(180))
        # seeds vary fastest, shapes slowest
        assert cases[0].key == "3x8_float32_cpu_mse-sum_seed0"
        assert cases[1].key == "3x8_float32_cpu_mse-sum_seed1"
        assert cases[-1].key == "1024x1024_bfloat16_cuda_mse-sum_seed9"

    def test_toml_lists_and_values(self) -> None:
        g = grid(shapes=["3x8", [4, 4], 5], dtypes=["float64"], seeds=[3, "5-6"])
        assert g.shapes == ((3, 8), (4, 4), (5,))
        assert g.seeds == (3, 5, 6)

    def test_singular_option_is_a_one_value_axis(self) -> None:
        g = grid(shape="2x2", dtype="float64", seed="4")
        assert (g.shapes, g.dtypes, g.seeds) == (((2, 2),), ("float64",), (4,))

    def test_shared_check_options_reach_every_case(self) -> None:
        g = grid(seeds="0-2", rtol="0.5", atol=0, exact=True)
        assert dict(g.common) == {"atol": 0.0, "exact": True, "rtol": 0.5}
        assert all(c.spec.rtol == 0.5 and c.spec.exact for c in g.cases())

    def test_delta_reaches_the_huber_cases_only(self) -> None:
        cases = list(grid(losses="mse-sum,huber", delta="0.5").cases())
        assert [(c.spec.loss, c.spec.delta) for c in cases] == [("mse-sum", None), ("huber", 0.5)]
        with pytest.raises(BadInput, match="delta applies only to loss huber, and the grid's"):
            grid(losses="mse-sum,l1", delta="0.5")
        with pytest.raises(BadInput, match="delta '-1' is not allowed"):
            grid(losses="huber", delta="-1")

    def test_hidden_reaches_every_case_of_an_mlp_grid(self) -> None:
        cases = list(grid(losses="mse-sum,huber", model="mlp", hidden="4").cases())
        assert {(c.spec.model, c.spec.hidden) for c in cases} == {("mlp", 4)}

    def test_seed_ranges_mix_and_deduplicate(self) -> None:
        assert grid(seeds="0-4,10,3,20-21").seeds == (0, 1, 2, 3, 4, 10, 20, 21)
        assert grid(seeds="7-7").seeds == (7,)

    def test_cuda_index_key_is_file_name_safe(self) -> None:
        (case,) = list(grid(devices="cuda:1").cases())
        assert case.key == "3x8_float32_cuda1_mse-sum_seed0" and ":" not in case.key
        spec = case.spec
        assert case_key(spec.shape, spec.dtype, spec.device, spec.loss, spec.seed) == case.key


class TestBadInput:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"seeds": "9-0"}, "seed range '9-0' runs backwards; write it lowest first (0-9)"),
            ({"shapes": ""}, "--shapes is empty"),
            ({"shapes": "3x8,,4x4"}, "--shapes '3x8,,4x4': item 2 is empty"),
            ({"shapes": []}, "shapes is an empty list"),
            ({"dtypes": "float32,float8"}, "--dtypes: dtype 'float8' is not supported"),
            ({"devices": "cpu,tpu"}, "--devices: device 'tpu' is not known"),
            ({"losses": "nope"}, "--losses: loss 'nope' is not known"),
            ({"shapes": "3x0"}, "dimension 2 is 0"),
            ({"seeds": "a-b"}, "seed 'a-b' is not a non-negative integer"),
            ({"seeds": "-1"}, "is not a non-negative integer"),
            ({"rtol": "-1"}, "rtol '-1' is not allowed"),
            ({"shape": "3x8", "shapes": "4x4"}, "give --shape or --shapes, not both"),
            ({"colour": "red"}, "unknown sweep option 'colour'"),
        ],
    )
    def test_refused_with_a_message(self, values: dict[str, object], message: str) -> None:
        with pytest.raises(BadInput) as e:
            build_grid(values)
        assert message in str(e.value)

    def test_more_cases_than_max_is_refused_before_expansion(self) -> None:
        g = grid(shapes="1,2,3,4,5,6,7,8,9,10", seeds=f"0-{DEFAULT_MAX_CASES // 10}")
        assert g.size > DEFAULT_MAX_CASES
        with pytest.raises(BadInput, match=r"above --max-cases 10000; narrow the grid"):
            check_size(g, DEFAULT_MAX_CASES)
        check_size(grid(seeds="0-19"), 20)
        assert len(list(grid(seeds="0-19").cases())) == 20
        with pytest.raises(BadInput, match=r"20 cases \(1 shape × 1 dtype × 1 device × 1 loss × "
                                           r"20 seeds\), above --max-cases 19"):
            check_size(grid(seeds="0-19"), 19)


class TestIdentity:
    def test_round_trip_through_the_manifest_form(self) -> None:
        g = grid(shapes="3x8,2x2x2", dtypes="float64,float16", seeds="1-3", rtol="1e-3")
        back = Grid.from_dict(g.to_dict())
        assert back == g and back.grid_id() == g.grid_id()

    def test_id_depends_on_every_axis_and_shared_option(self) -> None:
        base = grid(seeds="0-3")
        others = [grid(seeds="0-4"), grid(seeds="0-3", dtypes="float64"),
                  grid(seeds="0-3", rtol="0"), grid(seeds="0-3", shapes="3x9")]
        assert len({base.grid_id(), *(o.grid_id() for o in others)}) == 5

    def test_same_values_spelled_differently_are_the_same_grid(self) -> None:
        assert grid(seeds="0-2", dtypes="FLOAT32").grid_id() == grid(seeds=[0, 1, 2]).grid_id()


@given(st.integers(0, 500), st.integers(0, 50))
def test_range_is_inclusive_and_ordered(first: int, length: int) -> None:
    seeds = grid(seeds=f"{first}-{first + length}").seeds
    assert seeds == tuple(range(first, first + length + 1))


def test_case_key_format() -> None:
    assert case_key((2, 3, 4), "bfloat16", "cuda:0", "huber", 12) == \
        "2x3x4_bfloat16_cuda0_huber_seed12"


class TestTargets:
    """A sweep over a --target names the target in its cases, not the unused default loss."""

    def test_a_loss_form_target_stands_where_the_loss_does(self) -> None:
        (case,) = list(grid(target="examples/buggy_target.py:smooth_l1").cases())
        assert case.key == "3x8_float32_cpu_buggy_target.py-smooth_l1_seed0"

    def test_a_target_with_its_own_inputs_has_no_shape(self) -> None:
        g = build_grid({"target": "pkg.mod:Thing", "dtypes": "float32,float64"},
                       own_inputs=True)
        assert [c.key for c in g.cases()] == ["float32_cpu_pkg.mod-Thing_seed0",
                                              "float64_cpu_pkg.mod-Thing_seed0"]
        again = Grid.from_dict(g.to_dict())  # resumed from the manifest: the same names
        assert again.own_inputs and [c.key for c in again.cases()] == [
            c.key for c in g.cases()]
        assert "own_inputs" not in grid(target="pkg.mod:Thing").to_dict()

    @pytest.mark.parametrize("key", ["shapes", "shape"])
    def test_a_shape_for_a_target_with_its_own_inputs_is_refused(self, key: str) -> None:
        with pytest.raises(BadInput, match=f"gives its own inputs .* so --{key} would be "
                                           "ignored"):
            build_grid({"target": "pkg.mod:Thing", key: "4x4"}, own_inputs=True)

"""The INT8 policy's decisions beyond a CPU class's recipe (test_cpu_class.py): the accuracy guard's
steps and the repair a weight-only layer gets."""

from wae_deploy.convert.int8_policy import WEIGHT_ONLY_REPAIRS, guard_steps, int8_plan, pick_repair


def test_guard_keeps_one_part_more_at_a_time_only_for_an_int8_wae_or_dwt():
    assert guard_steps((), "int8", "wae") == [(), ("encoder-first",), ("encoder",), ("encoder", "high"),
                                              ("encoder", "high", "fusion")]
    # the recipe's first step is not repeated; the encoder holds its first convolution
    assert guard_steps(int8_plan("avx2", "wae")[0], "int8", "wae") == [
        ("encoder-first",), ("encoder",), ("encoder", "high"), ("encoder", "high", "fusion")]
    assert guard_steps(("encoder", "fusion"), "int8", "dwt") == [("encoder", "fusion"), ("encoder", "fusion", "high")]
    assert guard_steps(("x",), "int8", "plain") == [("x",)]
    assert guard_steps((), "fp16", "wae") == [()]  # a bound on FP16 is checked, nothing is kept in float


def test_a_weight_only_layer_gets_the_faster_of_the_repairs_that_worked():
    assert WEIGHT_ONLY_REPAIRS == ("fold-weight", "quantize-activation")
    assert pick_repair({"fold-weight": 0.31, "quantize-activation": 0.22}) == "quantize-activation"
    assert pick_repair({"fold-weight": 0.31}) == "fold-weight"

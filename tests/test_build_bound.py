"""The accuracy-bounded INT8 build (`build --max-accuracy-drop`): which step it stops at, and the
direction of the drop, on builds whose top-1 is known in advance.

A stand-in target plays the runtime: each artifact it writes answers correctly on a planned
number of the 200 held-out images, so every top-1 below is a literal (one image = 0.5 points).
The scoring (metrics.evaluate_runner) and the artifact writing are the real ones; real NNCF
builds under a bound are in test_targets.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import wae_deploy.convert.build as build_module
from wae_deploy.convert.targets.base import Target
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.backends.base import Runner
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.preprocess import Preprocessing

N = 200
SPEC = Preprocessing(resize=2, crop=2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
LABELS = np.arange(N) % 10
FIRST, ENC = ("encoder-first",), ("encoder",)
ENC_HIGH, ENC_HIGH_FUSION = ("encoder", "high"), ("encoder", "high", "fusion")
AC = "accuracy-control"


def held_out() -> ImageSet:
    """Image i is a flat grey of value i (i < 200 fits a byte), so a runner knows which image it sees."""
    images = np.repeat(np.arange(N, dtype=np.uint8)[:, None, None, None], 2, 1).repeat(2, 2).repeat(3, 3)
    return ImageSet(images, LABELS, [str(c) for c in range(10)])


class PlannedRunner(Runner):
    def __init__(self, correct: int):
        self.correct = correct

    def infer(self, batch: np.ndarray) -> np.ndarray:
        index = np.rint(batch[:, 0, 0, 0] * 255).astype(int)  # SPEC: x = pixel / 255
        answer = np.where(index < self.correct, LABELS[index], (LABELS[index] + 1) % 10)
        return np.eye(10, dtype=np.float32)[answer]


class PlannedTarget(Target):
    """Writes real artifact folders; `plan` says how many images each build gets right, by what it
    keeps in float (AC: NNCF's accuracy control)."""

    name = "planned"
    precisions = ("fp32", "int8")

    def __init__(self, plan: dict, accuracy_control: bool = True):
        self.plan, self.accuracy_control, self.calls = plan, accuracy_control, []

    def available(self):
        return True, "1"

    def build(self, onnx_path, precision, calib, out, keep_float=(), meta=None, accuracy_control=None):
        self.calls.append((precision, tuple(keep_float), accuracy_control))
        key = "fp32" if precision == "fp32" else AC if accuracy_control else tuple(keep_float)
        info = onnx_meta.read(onnx_path)
        control = {"float_layers": ["fusion.0/Conv"]} if accuracy_control else False
        with atomic.atomic_dir(out) as tmp:
            (tmp / "correct").write_text(str(self.plan[key]))
            manifest = artifact.new_manifest(onnx_path, info, self.name, precision, "1", **(meta or {}),
                                             keep_float=list(keep_float), accuracy_control=control)
            return artifact.write(tmp, out, manifest)

    def load(self, path, threads=None):
        return PlannedRunner(int((artifact.open(path, self.name, "1").path / "correct").read_text()))


def model(tmp_path, decomposition: str):
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 2, 2])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx_meta.write(m, onnx_meta.ModelInfo(arch="m", classes=[str(c) for c in range(10)], preprocessing=SPEC,
                                           config={"decomposition": decomposition}, checkpoint_sha256="",
                                           version="test", extra={}))
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    return path


def planned(monkeypatch, target):
    """Serve `target` for every name build() asks for (the FP32 reference is "ort"), and the sets;
    -> what build() asked for."""
    asked = []

    def calibration(spec, folder, size):
        asked.append(("calibration", spec, folder, size))
        return held_out(), {"size": N}

    def held(spec, folder, size, calib_dir=None, calib_size=0):
        asked.append(("held-out", spec, folder, size, calib_dir, calib_size))
        return held_out(), "planned"

    monkeypatch.setattr(build_module, "get_target", lambda name: asked.append(name) or target)
    monkeypatch.setattr(build_module, "held_out_set", held)
    monkeypatch.setattr(build_module, "calibration_set", calibration)
    return asked


def bounded_build(tmp_path, monkeypatch, plan, bound, decomposition="wae", accuracy_control=True, eval_dir="E"):
    """build(..., max_accuracy_drop=bound) on the planned target (bound None: the default guard)
    -> (artifact or UserError, target, out)."""
    target = PlannedTarget(plan, accuracy_control)
    asked = planned(monkeypatch, target)
    out = tmp_path / "a"
    try:
        result = build_module.build(model(tmp_path, decomposition), "planned", "int8", out, calib_dir="C",
                                    calib_size=77, max_accuracy_drop=bound, eval_dir=eval_dir, eval_size=N,
                                    log=lambda *a: None)
    except UserError as e:
        result = e
    assert asked == ["planned", ("calibration", SPEC, "C", 77), ("held-out", SPEC, eval_dir, N, "C", 77), "ort"]
    return result, target, out


def steps(art) -> list[tuple]:
    return [(s["keep_float"], s["top1"], s["drop"]) for s in art.manifest["accuracy_bound"]["steps"]]


def test_bound_met_by_the_fourth_step_stops_there(tmp_path, monkeypatch):
    # FP32 90%; INT8 60% (30 points lost), then 89.5% with the encoder and high branch in float
    plan = {"fp32": 180, (): 120, FIRST: 130, ENC: 150, ENC_HIGH: 179, ENC_HIGH_FUSION: 180, AC: 180}
    art, target, out = bounded_build(tmp_path, monkeypatch, plan, bound=0.5)
    assert steps(art) == [([], 60.0, 30.0), (["encoder-first"], 65.0, 25.0), (["encoder"], 75.0, 15.0),
                          (["encoder", "high"], 89.5, 0.5)]  # 0.5 meets a 0.5 bound
    assert [c[:2] for c in target.calls] == [("fp32", ()), ("int8", ()), ("int8", FIRST), ("int8", ENC),
                                              ("int8", ENC_HIGH)]
    bound = json.loads((out / "manifest.json").read_text())["accuracy_bound"]
    assert bound["max_drop"] == 0.5 and bound["fp32_top1"] == 90.0 and bound["held_out"] == N
    assert bound["guarded"] is True and bound["rule"] == "points"
    assert (out / "correct").read_text() == "179"  # the artifact left is the step that met the bound
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "m.onnx"]  # the FP32 reference is gone


def test_bound_met_only_by_the_last_step(tmp_path, monkeypatch):
    plan = {"fp32": 180, (): 120, FIRST: 120, ENC: 120, ENC_HIGH: 170, ENC_HIGH_FUSION: 178, AC: 180}
    art, target, out = bounded_build(tmp_path, monkeypatch, plan, bound=1.0)
    assert steps(art)[-2:] == [(["encoder", "high"], 85.0, 5.0), (["encoder", "high", "fusion"], 89.0, 1.0)]
    assert not any(c[2] for c in target.calls), "accuracy control ran although a step met the bound"
    assert (out / "correct").read_text() == "178"


def test_accuracy_control_runs_when_no_step_meets_the_bound(tmp_path, monkeypatch):
    plan = {"fp32": 180, (): 120, FIRST: 120, ENC: 120, ENC_HIGH: 150, ENC_HIGH_FUSION: 160, AC: 179}
    art, target, out = bounded_build(tmp_path, monkeypatch, plan, bound=0.5)
    held, bound = target.calls[-1][2]
    assert len(target.calls) == 7 and len(held) == N and bound == 0.5 and target.calls[-1][1] == ()
    last = art.manifest["accuracy_bound"]["steps"][-1]
    assert last == {"keep_float": "nncf-accuracy-control", "top1": 89.5, "drop": 0.5,
                    "float_layers": ["fusion.0/Conv"]}  # as the target reported NNCF's result
    assert art.manifest["accuracy_control"] == {"float_layers": ["fusion.0/Conv"]}


@pytest.mark.parametrize("accuracy_control", [True, False])
def test_thirty_points_lost_never_pass_a_half_point_bound(tmp_path, monkeypatch, accuracy_control):
    plan = {"fp32": 180, (): 120, AC: 120}  # a plain model: one step, then accuracy control if the target has it
    err, target, out = bounded_build(tmp_path, monkeypatch, plan, bound=0.5, decomposition="plain",
                                     accuracy_control=accuracy_control)
    assert isinstance(err, UserError) and err.exit_code == 1
    assert "cannot keep the top-1 drop within 0.5 points (best 30.00)" in str(err)
    assert len(target.calls) == (3 if accuracy_control else 2)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("bound,passes", [(9.5, False), (10.0, True), (10.5, True)])
def test_the_drop_is_fp32_minus_int8(tmp_path, monkeypatch, bound, passes):
    """FP32 90% > INT8 80% by exactly 10 points: a drop of +10, held against the bound as such."""
    result, _, out = bounded_build(tmp_path, monkeypatch, {"fp32": 180, (): 160, AC: 160}, bound,
                                   decomposition="plain")
    if passes:
        assert steps(result) == [([], 80.0, 10.0)] and out.is_dir()
    else:
        assert isinstance(result, UserError) and "best 10.00" in str(result) and not out.exists()


def test_int8_better_than_fp32_is_a_negative_drop(tmp_path, monkeypatch):
    result, _, _ = bounded_build(tmp_path, monkeypatch, {"fp32": 160, (): 170}, 0.0, decomposition="plain")
    assert steps(result) == [([], 85.0, -5.0)]


def test_fp32_and_unguarded_builds_are_not_scored(tmp_path, monkeypatch):
    target = PlannedTarget({"fp32": 1, ("fusion",): 1})
    asked = planned(monkeypatch, target)
    path = model(tmp_path, "wae")
    lines = []
    art = build_module.build(path, "planned", "fp32", tmp_path / "f", max_accuracy_drop=0.5, log=lambda *a: None)
    art2 = build_module.build(path, "planned", "int8", tmp_path / "i", keep_float=("fusion",), accuracy_guard=False,
                              log=lines.append)
    assert art.manifest["accuracy_bound"] is None
    assert art2.manifest["accuracy_bound"] == {"guarded": False, "why": "--no-accuracy-guard"}
    assert [x for x in lines if "unguarded" in x] == [
        "  INT8 build unguarded: --no-accuracy-guard; its top-1 was not checked against FP32"]
    assert art2.manifest["calibration"] == {"size": N} and art2.manifest["keep_float"] == ["fusion"]
    assert target.calls == [("fp32", (), None), ("int8", ("fusion",), None)]
    assert asked == ["planned", "planned", ("calibration", SPEC, None, 300)]  # the default calibration size


# The default guard: 99% of the FP32 top-1. FP32 90% on 200 images -> at most 0.9 points lost, so a
# 1.0-point drop (two images) fails it where `--max-accuracy-drop 1` would pass.
def test_default_guard_keeps_the_encoder_in_float_when_int8_costs_more_than_1_percent(tmp_path, monkeypatch):
    plan = {"fp32": 180, (): 176, FIRST: 178, ENC: 179, AC: 180}
    art, target, out = bounded_build(tmp_path, monkeypatch, plan, bound=None)
    assert steps(art) == [([], 88.0, 2.0), (["encoder-first"], 89.0, 1.0), (["encoder"], 89.5, 0.5)]
    bound = art.manifest["accuracy_bound"]
    assert bound["guarded"] is True and bound["rule"] == "fraction of FP32" and bound["fraction"] == 0.99
    assert bound["max_drop"] == 0.9 and bound["held_out"] == N and bound["held_out_source"] == "planned"
    assert (out / "correct").read_text() == "179"


def test_default_guard_stops_at_the_recipe_when_it_keeps_99_percent(tmp_path, monkeypatch):
    art, target, _ = bounded_build(tmp_path, monkeypatch, {"fp32": 180, (): 179}, bound=None)
    assert steps(art) == [([], 89.5, 0.5)] and len(target.calls) == 2


def test_default_guard_reads_held_out_photos_beside_the_calibration_sample(tmp_path, monkeypatch):
    """No --eval: held_out_set is asked for the calibration source and size, to draw past that sample."""
    art, _, _ = bounded_build(tmp_path, monkeypatch, {"fp32": 180, (): 180}, bound=None, eval_dir=None)
    assert art.manifest["accuracy_bound"]["guarded"] is True


def test_guard_that_cannot_be_met_exits_1_and_writes_nothing(tmp_path, monkeypatch):
    plan = {"fp32": 180, (): 170, FIRST: 170, ENC: 170, ENC_HIGH: 170, ENC_HIGH_FUSION: 170, AC: 170}
    err, _, out = bounded_build(tmp_path, monkeypatch, plan, bound=None)
    assert isinstance(err, UserError) and err.exit_code == 1 and "within 0.9 points" in str(err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_untrained_weights_and_too_few_held_out_photos_build_unguarded(tmp_path, monkeypatch):
    target = PlannedTarget({(): 1})
    planned(monkeypatch, target)
    untrained = model(tmp_path, "wae")
    m = onnx.load(untrained)
    info = onnx_meta.from_model(m, str(untrained))
    onnx_meta.write(m, onnx_meta.ModelInfo(**{**info.__dict__, "extra": {"untrained": True}}))
    onnx.save(m, untrained)
    lines = []
    art = build_module.build(untrained, "planned", "int8", tmp_path / "u", log=lines.append)
    assert art.manifest["accuracy_bound"] == {"guarded": False, "why": "untrained weights have no accuracy to keep"}
    assert sum("unguarded" in x for x in lines) == 1 and [c[0] for c in target.calls] == ["int8"]

    monkeypatch.setattr(build_module, "held_out_set", lambda *a, **k: (held_out().sample(99), "C (train)"))
    art = build_module.build(model(tmp_path, "wae"), "planned", "int8", tmp_path / "v", log=lines.append)
    assert art.manifest["accuracy_bound"]["guarded"] is False
    assert "no held-out photos: 99 left in C (train)" in art.manifest["accuracy_bound"]["why"]


def test_guard_flags_that_contradict_and_unknown_cpu_classes_are_refused(tmp_path):
    with pytest.raises(UserError, match="--no-accuracy-guard turns it off") as e:
        build_module.build(tmp_path / "m.onnx", "ort", "int8", max_accuracy_drop=1, accuracy_guard=False)
    assert e.value.exit_code == 2
    with pytest.raises(UserError, match="^unknown CPU class 'avx3'; known: avx2, avx512, avx512-vnni, avx-vnni, amx$"):
        build_module.build(tmp_path / "m.onnx", "ort", "int8", cpu="avx3")


def test_default_output_name_and_unknown_precision(tmp_path, monkeypatch):
    target = PlannedTarget({"fp32": 1})
    planned(monkeypatch, target)
    path = model(tmp_path, "plain")
    assert build_module.build(path, "planned", "fp32", log=lambda *a: None).path == tmp_path / "m.planned-fp32"
    with pytest.raises(UserError, match="^target planned cannot build bf16; it builds fp32, int8$"):
        build_module.build(path, "planned", "bf16")
    with pytest.raises(UserError, match="output folder does not exist"):
        build_module.build(path, "planned", "fp32", tmp_path / "no" / "a")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a wae-deploy artifact"):  # checked before any work
        build_module.build(path, "planned", "fp32", tmp_path / "mine")


@pytest.mark.parametrize("bad", [-0.1, math.nan])
def test_negative_or_nan_bound_is_refused(tmp_path, bad):
    with pytest.raises(UserError, match="must be zero or more"):
        build_module.build(tmp_path / "m.onnx", "ort", "int8", max_accuracy_drop=bad)


def test_fp32_reference_is_scored_once_for_builds_that_share_a_score_dict(tmp_path, monkeypatch):
    """A bench builds INT8 for two runtimes from one model: the FP32 reference is built and scored once."""
    target = PlannedTarget({"fp32": 180, (): 180})
    planned(monkeypatch, target)
    path, scores = model(tmp_path, "plain"), {}
    for out in ("a", "b"):
        build_module.build(path, "planned", "int8", tmp_path / out, fp32_scores=scores, log=lambda *a: None)
    assert [c[0] for c in target.calls] == ["fp32", "int8", "int8"] and list(scores.values()) == [90.0]

"""Export verification: a graph that disagrees with PyTorch is refused (exit 1, nothing written), and
the refusal sits exactly at the documented tolerance.

The exporter runs once per module; each test then hands export() a copy of that graph with a
known change, as if the exported graph had gone wrong, and export verifies it against PyTorch
on 16 real images as usual. The tolerance is a literal here, not imported from the code.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from fixtures_small import assert_clean_error, plain_ckpt  # noqa: F401 - session fixture
from onnx import helper, numpy_helper

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.training import export as export_mod
from wae_deploy.training.export import _passes, export, parity, verified

TOLERANCE = 1e-4  # max |logit difference| the README promises between the ONNX graph and PyTorch


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def raw_graph(plain_ckpt, tmp_path_factory):  # noqa: F811
    """The exporter's own graph of plain_ckpt, before any change."""
    seen = []
    real = export_mod.to_onnx

    def capture(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_mod, "to_onnx", capture)
        result = export(plain_ckpt, tmp_path_factory.mktemp("raw") / "m.onnx", simplifier="none", verify=16, log=_quiet)
    assert result.manifest["parity"]["max_abs_diff"] < TOLERANCE / 10  # the untouched graph is far inside
    return seen[0].SerializeToString()


def offset_logits(raw: bytes, delta: float) -> onnx.ModelProto:
    """The graph with `delta` added to every logit: each output differs from PyTorch by delta."""
    model = onnx.ModelProto.FromString(raw)
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o + "_before_offset" if o == out else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(delta, np.float32), "offset"))
    model.graph.node.append(helper.make_node("Add", [out + "_before_offset", "offset"], [out], name="offset/Add"))
    return model


def changed_weights(raw: bytes) -> onnx.ModelProto:
    """The graph with one weight tensor changed after export, as a broken exporter or simplifier might."""
    model = onnx.ModelProto.FromString(raw)
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 64)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
    return model


def export_graph(monkeypatch, plain_ckpt, out, graph, *args):  # noqa: F811
    monkeypatch.setattr(export_mod, "to_onnx", lambda *a, **k: graph)
    return CliRunner().invoke(main, ["export", str(plain_ckpt), "-o", str(out), "--verify", "16", *args])


@pytest.mark.parametrize("simplifier", ["none", "onnxslim"])
def test_graph_with_changed_weights_is_refused_and_nothing_written(raw_graph, plain_ckpt, tmp_path, monkeypatch,  # noqa: F811
                                                                   simplifier):
    out = tmp_path / "m.onnx"
    res = export_graph(monkeypatch, plain_ckpt, out, changed_weights(raw_graph), "--simplifier", simplifier)
    assert_clean_error(res.exit_code, res.stdout, res.stderr, 1, "exported graph disagrees with PyTorch")
    assert "nothing written" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delta,accepted", [(0.8 * TOLERANCE, True), (1.2 * TOLERANCE, False)])
def test_refusal_sits_at_the_tolerance(raw_graph, plain_ckpt, tmp_path, monkeypatch, delta, accepted):  # noqa: F811
    out = tmp_path / "m.onnx"
    res = export_graph(monkeypatch, plain_ckpt, out, offset_logits(raw_graph, delta), "--simplifier", "none")
    if accepted:
        assert res.exit_code == 0, res.output
        p = json.loads(out.with_suffix(".json").read_text())["parity"]
        assert delta * 0.9 <= p["max_abs_diff"] <= TOLERANCE and p["top1_agreement"] == 1.0 and p["n"] == 16
        assert onnx.load(str(out)).graph.node[-1].name == "offset/Add"  # the changed graph is what was written
    else:
        assert_clean_error(res.exit_code, res.stdout, res.stderr, 1, "exported graph disagrees with PyTorch")
        assert list(tmp_path.iterdir()) == []


def test_parity_and_its_verdict_by_hand():
    ref = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]], np.float32)
    cand = np.array([[1.0, 2.5, 0.0], [0.0, 3.1, 1.0]], np.float32)
    p = parity(ref, cand)
    assert p["n"] == 2 and p["top1_agreement"] == 0.5 and p["max_abs_diff"] == pytest.approx(3.1)
    assert parity(ref, ref) == {"max_abs_diff": 0.0, "top1_agreement": 1.0, "n": 2}
    assert _passes({"max_abs_diff": 0.9 * TOLERANCE, "top1_agreement": 1.0})
    assert _passes({"max_abs_diff": TOLERANCE, "top1_agreement": 1.0})
    assert not _passes({"max_abs_diff": 1.1 * TOLERANCE, "top1_agreement": 1.0})
    assert not _passes({"max_abs_diff": 0.0, "top1_agreement": 0.999})  # one flipped answer is a refusal


# verified() alone, on a model small enough to build its graph by hand: flatten, then a linear layer.
LINEAR = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval()
with torch.no_grad():
    LINEAR[1].weight.copy_(torch.linspace(-1, 1, 48).reshape(4, 12))
    LINEAR[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
IMAGES = np.random.default_rng(0).standard_normal((300, 3, 2, 2)).astype(np.float32)  # > 256: two torch chunks


def linear_graph(offset: float = 0.0) -> onnx.ModelProto:
    """LINEAR as ONNX, with `offset` added to its bias (so to every logit)."""
    w = LINEAR[1].weight.detach().numpy()
    b = LINEAR[1].bias.detach().numpy() + np.float32(offset)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)], "linear",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b.astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("batch", [None, 4])
def test_verified_passes_a_faithful_graph(batch):
    raw = linear_graph()
    final, used, note, check = verified(LINEAR, raw, raw, "none", IMAGES, batch)
    assert final is raw and used == "none" and note is None
    assert check["n"] == 300 and check["top1_agreement"] == 1.0 and check["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("delta,accepted", [(0.8 * TOLERANCE, True), (1.2 * TOLERANCE, False)])
def test_verified_refuses_at_the_tolerance(delta, accepted):
    graph = linear_graph(delta)
    if accepted:
        assert verified(LINEAR, graph, graph, "none", IMAGES, None)[3]["max_abs_diff"] == pytest.approx(delta, rel=0.1)
    else:
        with pytest.raises(UserError, match="disagrees with PyTorch .*nothing written") as e:
            verified(LINEAR, graph, graph, "none", IMAGES, None)
        assert e.value.exit_code == 1


def test_verified_keeps_a_faithful_simplification_and_drops_a_broken_one():
    raw, good, broken = linear_graph(), linear_graph(), linear_graph(1.0)
    assert verified(LINEAR, raw, good, "onnxslim", IMAGES, None)[:3] == (good, "onnxslim", None)
    final, used, note, check = verified(LINEAR, raw, broken, "onnxslim", IMAGES, None)
    assert final is raw and used == "none" and check["max_abs_diff"] < 1e-5
    assert note.startswith("onnxslim broke parity (max |diff| 1.00e+00") and "kept the unsimplified graph" in note
    with pytest.raises(UserError, match="disagrees with PyTorch"):  # the raw export broken too: nothing to keep
        verified(LINEAR, linear_graph(1.0), broken, "onnxslim", IMAGES, None)


def test_verified_messages_give_the_measured_agreement():
    swapped = linear_graph()  # the first two logits swapped: top-1 moves wherever one of them was best
    for init in swapped.graph.initializer:  # the weight rows and the bias
        swapped_values = np.ascontiguousarray(numpy_helper.to_array(init)[[1, 0, 2, 3]])
        init.CopyFrom(numpy_helper.from_array(swapped_values, init.name))
    with torch.no_grad():
        ref = LINEAR(torch.from_numpy(IMAGES)).numpy()
    agreement = 100 * np.mean(ref.argmax(1) == ref[:, [1, 0, 2, 3]].argmax(1))
    assert 0 < agreement < 100
    note = verified(LINEAR, linear_graph(), swapped, "onnxslim", IMAGES, None)[2]
    assert f"top-1 agreement {agreement:.1f}%); kept the unsimplified graph" in note
    with pytest.raises(UserError, match=rf"top-1 agreement {agreement:.1f}%\); nothing written"):
        verified(LINEAR, swapped, swapped, "none", IMAGES, None)

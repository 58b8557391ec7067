"""The validation callback NNCF's accuracy control calls: raw items are indices, in any order."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_small import reference_export
from onnx import TensorProto, helper

from wae_deploy.convert.int8_policy import PARTS
from wae_deploy.convert.quantize import _top1_validator
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.preprocess import CIFAR

MODELS = Path(__file__).resolve().parents[1] / "models"

LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], dtype=np.int64)


def _held_out() -> ImageSet:
    """Image i is a flat grey of 20 * label: a model can read the label off the pixels."""
    images = np.repeat((LABELS * 20).astype(np.uint8)[:, None, None, None], 8, 1).repeat(8, 2).repeat(3, 3)
    return ImageSet(images, LABELS, [str(c) for c in range(10)])


def _reference_grey() -> np.ndarray:
    """Channel 0 of each class's flat grey image after normalisation."""
    flat = (np.arange(10) * 20).astype(np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)
    return CIFAR.normalize(flat)[:, 0, 0, 0]


def oracle(x: np.ndarray, wrong: set[int] = frozenset()) -> np.ndarray:
    """Logits that pick the class whose grey x shows, except for the classes in `wrong`."""
    logits = -np.abs(x[:, 0].mean((1, 2))[:, None] - _reference_grey()[None, :])
    best = logits.argmax(1)
    for i, c in enumerate(best):
        if c in wrong:
            logits[i, c] = -1e9
    return logits


def test_openvino_style_model_scores_the_items_it_is_given():
    validate = _top1_validator(_held_out(), CIFAR, batch=5)
    top1, hits = validate(lambda x: [oracle(x)], range(len(LABELS)))
    assert top1 == 1.0 and hits == [1.0] * len(LABELS)
    items = [11, 0, 5, 2, 7]  # a subset, out of order, as NNCF passes while ranking layers
    top1, hits = validate(lambda x: [oracle(x, wrong={8})], iter(items))  # only image 11 is an 8
    assert hits == [0.0, 1.0, 1.0, 1.0, 1.0] and top1 == 0.8
    assert validate(lambda x: [oracle(x)], []) == (0.0, [])


def test_onnx_model_gets_a_session():
    ref = _reference_grey().astype(np.float32)
    # logits = -|mean(channel 0) - ref|, as an ONNX graph
    graph = helper.make_graph(
        [helper.make_node("Slice", ["images", "s", "e", "ax"], ["c0"]),
         helper.make_node("ReduceMean", ["c0", "axes"], ["m"], keepdims=0),
         helper.make_node("Sub", ["m", "ref"], ["d"]), helper.make_node("Abs", ["d"], ["a"]),
         helper.make_node("Neg", ["a"], ["logits"])], "oracle",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[helper.make_tensor(n, TensorProto.INT64, [len(v)], v)
                     for n, v in (("s", [0]), ("e", [1]), ("ax", [1]), ("axes", [2, 3]))]
        + [helper.make_tensor("ref", TensorProto.FLOAT, [10], ref)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    top1, hits = _top1_validator(_held_out(), CIFAR, batch=4)(model, range(len(LABELS)))
    assert top1 == 1.0 and len(hits) == len(LABELS)


def _two_convs_one_quantized():
    """images -> conv "q/Conv" (weight through DequantizeLinear) -> conv "f/Conv" (float weight) -> logits."""
    w = helper.make_tensor("w", TensorProto.INT8, [3, 3, 1, 1], [1] * 9)
    f = helper.make_tensor("f", TensorProto.FLOAT, [3, 3, 1, 1], [0.5] * 9)
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wq"], name="q/DequantizeLinear"),
         helper.make_node("Conv", ["images", "wq"], ["h"], name="q/Conv"),
         helper.make_node("Conv", ["h", "f"], ["logits"], name="f/Conv")], "two",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 2, 2])], initializer=[w, f, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_float_layers_are_those_without_a_quantized_weight():
    from wae_deploy.convert.quantize import float_layers

    assert float_layers(_two_convs_one_quantized()) == ["f/Conv"]


def test_accuracy_control_is_reported_from_what_nncf_returned(monkeypatch):
    """quantize_to_bound calls NNCF's accuracy control (not plain quantization) and reads the layers
    left in float off the model it returned."""
    import nncf

    from wae_deploy.convert.quantize import quantize_to_bound

    calls = []

    def accuracy_control(model, calibration, validation, validate, **kwargs):
        calls.append(kwargs)
        return _two_convs_one_quantized()

    def plain(*_a, **_k):
        raise AssertionError("plain quantization instead of NNCF's accuracy control")

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", accuracy_control)
    monkeypatch.setattr(nncf, "quantize", plain)
    held_out = _held_out()
    model, report = quantize_to_bound("the model", held_out, CIFAR, held_out, 0.5, keep_float=("encoder",))
    assert len(calls) == 1 and calls[0]["max_drop"] == 0.005 and calls[0]["subset_size"] == len(LABELS)
    assert [p for p in calls[0]["ignored_scope"].patterns] == [PARTS["encoder"]]
    assert report == {"max_drop": 0.5, "held_out": len(LABELS), "float_layers": ["f/Conv"]}
    assert model.graph.name == "two"


@pytest.mark.parametrize("checkpoint", ["wae-resnet20.pt", "resnet20-dwt.pt"])
def test_parts_name_every_operation_of_their_module_and_nothing_else(checkpoint, tmp_path_factory):
    """--keep-float encoder/encoder-first/high/fusion on real exports: the DWT's one convolution is named
    "decomposer/Conv", the WAE's "decomposer.body.0/Conv"; a pattern that misses either keeps
    nothing in float without a word (NNCF's ignored scope is not validated)."""
    path = reference_export(tmp_path_factory, checkpoint.removesuffix(".pt"))
    names = [n.name for n in onnx.load(str(path)).graph.node]
    owner = {"encoder": ("decomposer",), "high": ("high", "norm_high"), "fusion": ("fusion",)}
    for part, pattern in PARTS.items():
        matched = {n for n in names if re.search(pattern, n)}
        if part == "encoder-first":  # the WAE's first convolution, the DWT's only one: a single Conv
            assert [n for n in matched if n.endswith("Conv")] == [next(n for n in names if n.endswith("Conv"))]
            assert matched <= {n for n in names if re.search(PARTS["encoder"], n)}, matched
            continue
        expected = {n for n in names if n.split("/")[0].split(".")[0] in owner[part]}
        assert matched == expected and any(n.endswith(("Conv", "Gemm")) for n in matched), (part, matched)

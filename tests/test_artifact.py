"""The artifact manifest: one set of keys, written last, and refused when old, partial or foreign."""

from __future__ import annotations

import json

import pytest

from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact
from wae_deploy.runtime.onnx_meta import ModelInfo
from wae_deploy.runtime.preprocess import CIFAR

INFO = ModelInfo(arch="wae-resnet20", classes=["a", "b"], preprocessing=CIFAR, config={}, checkpoint_sha256="",
                 version="test", extra={})


@pytest.fixture
def built(tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(b"any bytes")  # the manifest only records the source's name and hash
    folder = tmp_path / "m.ort-fp32"
    folder.mkdir()
    manifest = artifact.new_manifest(source, INFO, "ort", "fp32", "1.2.3", executed={"Conv": 3})
    return artifact.write(folder, folder, manifest)


def test_written_manifest_has_every_key_and_reads_back(built):
    assert set(built.manifest) == set(artifact.KEYS)
    opened = artifact.open(built.path, "ort", "1.2.3")
    assert opened == built and opened.classes == ["a", "b"] and opened.preprocessing == CIFAR
    assert (opened.target, opened.precision, opened.manifest["calibration"]) == ("ort", "fp32", None)
    again = opened.updated(note="rewritten")
    assert artifact.open(built.path).manifest["note"] == "rewritten" == again.manifest["note"]


def test_unknown_keys_are_a_programming_error(built, tmp_path):
    with pytest.raises(ValueError, match="not artifact manifest keys"):
        artifact.new_manifest(tmp_path / "m.onnx", INFO, "ort", "fp32", "1", gpu="x")
    with pytest.raises(ValueError, match="not artifact manifest keys"):
        built.updated(gpu="x")


@pytest.mark.parametrize("edit,match", [
    (lambda m: {k: v for k, v in m.items() if k not in ("format", "schema_version")}, "older wae-deploy"),
    (lambda m: {k: v for k, v in m.items() if k != "classes"}, "lacks classes"),
    (lambda m: {**m, "preprocessing": {"resize": -1}}, "invalid preprocessing spec"),
    (lambda m: {**m, "classes": "ab"}, "malformed classes"),
    (lambda m: {**m, "runtime_version": "9.9"}, "built with ort 9.9"),
    (lambda m: {**m, "target": "openvino"}, "built for target 'openvino'"),
    (lambda m: [m], "corrupt artifact manifest"),
])
def test_bad_manifests_are_refused_with_one_clear_error(built, edit, match):
    (built.path / artifact.MANIFEST).write_text(json.dumps(edit(built.manifest)))
    with pytest.raises(UserError, match=match):
        artifact.open(built.path, "ort", "1.2.3")


def test_an_artifact_built_before_source_metadata_still_opens(built):
    """Keys added later (artifact.ADDED_KEYS) may be missing from artifacts already on devices."""
    older = {k: v for k, v in built.manifest.items() if k != "source_metadata"}
    (built.path / artifact.MANIFEST).write_text(json.dumps(older))
    assert artifact.open(built.path, "ort", "1.2.3").source_metadata == {}

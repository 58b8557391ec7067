"""Checkpoints: an exact round trip, and a clean one-line refusal of everything else.

Every refusal is a UserError with exit status 2 and a one-line message (the CLI prints it
as is); a checkpoint that carries pickled code is refused without running that code.
"""

from __future__ import annotations

import os
import pickle
import shlex

import numpy as np
import pytest
import torch

from wae_deploy import __version__
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.data import CIFAR10_CLASSES
from wae_deploy.runtime.preprocess import CIFAR
from wae_deploy.training import checkpoint
from wae_deploy.training.models import create_model, list_archs

CIFAR_ARCHS = [a for a in list_archs() if "resnet20" in a]


def _trained_like(arch, num_classes=10, input_size=32, seed=0):
    """A model whose BatchNorm statistics have moved off their initial values, as after training."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, input_size=input_size)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, input_size, input_size) * 2 + 0.5)
    return model.eval()


def _ckpt(arch="resnet20", num_classes=10, input_size=32, model=None):
    model = model or _trained_like(arch, num_classes, input_size)
    classes = CIFAR10_CLASSES if num_classes == 10 else [f"c{i}" for i in range(num_classes)]
    return checkpoint.Checkpoint(
        arch=arch, config={"num_classes": num_classes, "input_size": input_size, "lambda_energy": 1.0, "gamma": 1e-3},
        state_dict=model.state_dict(), classes=list(classes), preprocessing=CIFAR,
        metrics={"test": {"top1": 12.5, "top5": 50.0, "n": 200}}, provenance={"note": "made by a test"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real resnet20 checkpoint file and its raw bytes."""
    path = tmp_path_factory.mktemp("ckpt") / "resnet20.pt"
    checkpoint.save(_ckpt(), path)
    return path, path.read_bytes()


def _raw(saved):
    return torch.load(saved[0], map_location="cpu", weights_only=True)


def refused(path, *fragments) -> str:
    with pytest.raises(UserError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert msg and "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


# --------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_round_trip_gives_identical_logits(tmp_path, arch):
    model = _trained_like(arch)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    ckpt = _ckpt(arch, model=model)
    path = tmp_path / f"{arch}.pt"
    checkpoint.save(ckpt, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temporary left behind

    back = checkpoint.load(path)
    assert back.arch == arch and back.config == ckpt.config and back.classes == CIFAR10_CLASSES
    assert back.preprocessing == CIFAR
    assert back.metrics == ckpt.metrics
    assert back.provenance["note"] == "made by a test" and back.provenance["wae_deploy"] == __version__
    assert back.state_dict.keys() == model.state_dict().keys()
    rebuilt = back.build_model()
    assert not rebuilt.training
    with torch.no_grad():
        got = rebuilt(x)
    assert torch.equal(got, expected)


def test_round_trip_keeps_class_count_and_input_size(tmp_path):
    model = _trained_like("wae-resnet20", num_classes=5, input_size=48)
    path = tmp_path / "five.pt"
    checkpoint.save(_ckpt("wae-resnet20", 5, 48, model=model), path)
    back = checkpoint.load(path)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(back.build_model()(x), model(x))
    assert back.classes == [f"c{i}" for i in range(5)]
    # Saving again over the file replaces it whole.
    checkpoint.save(_ckpt("resnet20"), path)
    assert checkpoint.load(path).arch == "resnet20"


# --------------------------------------------------------------------------- refusals

def test_missing_file(tmp_path):
    refused(tmp_path / "absent.pt", "not found", "absent.pt")
    refused(tmp_path, "not found")  # a folder is not a checkpoint file either


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"hello, I am a text file\n",
                                     b"PK\x03\x04" + bytes(100)], ids=["random", "empty", "text", "zip-header"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    msg = refused(path, "junk.pt", "not a readable checkpoint")
    assert "code" not in msg  # garbage is not reported as a security refusal


class Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle-2", "pickle-4"])
def test_pickled_code_is_refused_not_run(tmp_path, saved, how):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if how == "torch.save":  # a well-formed checkpoint with a payload hidden in its metrics
        raw = _raw(saved)
        raw["metrics"] = {"test": Payload(marker)}
        torch.save(raw, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(Payload(marker), f, protocol=int(how[-1]))
    refused(path, "refusing", "evil.pt")
    assert not marker.exists(), "loading the checkpoint ran the code in it"
    # The control: the payload is live, an unrestricted unpickler would have run it.
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("fraction", [0.5, 0.01, 0.9, 0.999])
def test_truncated_file(tmp_path, saved, fraction):
    data = saved[1]
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    msg = refused(path, "truncated or corrupt", "cut.pt")
    assert "code" not in msg


@pytest.mark.parametrize("key", checkpoint.REQUIRED[1:])
def test_missing_key(tmp_path, saved, key):
    raw = _raw(saved)
    del raw[key]
    path = tmp_path / "partial.pt"
    torch.save(raw, path)
    refused(path, f"lacks {key}")


@pytest.mark.parametrize("obj", [{"weight": torch.zeros(3)}, [1, 2, 3], torch.zeros(2), {"format": "something-else"}],
                         ids=["state-dict", "list", "tensor", "other-format"])
def test_readable_but_not_ours(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    refused(path, "not a wae-deploy checkpoint")


def test_unknown_architecture(tmp_path, saved):
    raw = _raw(saved)
    raw["arch"] = "resnet21"
    path = tmp_path / "arch.pt"
    torch.save(raw, path)
    msg = refused(path, "unknown architecture 'resnet21'")
    for known in list_archs():
        assert known in msg


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r.update(schema_version=99), "schema version 99"),
    (lambda r: r.update(config={"num_classes": 10}), "num_classes/input_size"),
    (lambda r: r.update(config=[10, 32]), "num_classes/input_size"),
    (lambda r: r.update(state_dict=torch.zeros(3)), "no weights"),
    (lambda r: r["preprocessing"].pop("crop"), "invalid preprocessing spec"),
], ids=["schema", "config-key", "config-type", "state-dict-type", "preprocessing"])
def test_malformed_fields(tmp_path, saved, change, fragment):
    raw = _raw(saved)
    change(raw)
    path = tmp_path / "bad.pt"
    torch.save(raw, path)
    refused(path, fragment)


@pytest.mark.parametrize("arch, num_classes, fragment", [
    ("wae-resnet20", 10, "Missing key"),      # plain ResNet-20 weights under a WAE name
    ("resnet20-dwt", 10, "Missing key"),
    ("resnet20", 100, "size mismatch"),       # the right net, the wrong number of classes
])
def test_weights_that_do_not_fit_the_architecture(tmp_path, saved, arch, num_classes, fragment):
    raw = _raw(saved)
    raw["arch"], raw["config"]["num_classes"] = arch, num_classes
    path = tmp_path / "misfit.pt"
    torch.save(raw, path)
    ckpt = checkpoint.load(path)  # the file itself is well formed ...
    with pytest.raises(UserError) as e:
        ckpt.build_model()  # ... but its weights are not this architecture's
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert f"do not fit {arch}" in msg and fragment in msg

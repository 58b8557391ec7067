"""The streaming ImageNet-layout reader: listing, on-the-fly crops, bad input, and a streamed training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import CIFAR
from wae_deploy.training import stream
from wae_deploy.training.train import TrainConfig, train

WNIDS = ["n01", "n02", "n03"]


def _jpeg(path: Path, seed: int, size=(48, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def imagenet_tree(root: Path, per_class=8, flat_val=False) -> Path:
    for c, w in enumerate(WNIDS):
        for i in range(per_class):
            _jpeg(root / "train" / w / f"{w}_{i}.JPEG", 100 * c + i)
        for i in range(2):
            name = f"val_{c}_{i}.JPEG"
            _jpeg(root / "val" / (name if flat_val else f"{w}/{name}"), 1000 + 10 * c + i)
    if flat_val:
        (root / "val_labels.txt").write_text("".join(f"val_{c}_{i}.JPEG {w}\n" for c, w in enumerate(WNIDS)
                                                     for i in range(2)))
    return root


@pytest.mark.parametrize("flat", [False, True])
def test_listing_of_both_val_layouts(tmp_path, flat):
    root = imagenet_tree(tmp_path, per_class=3, flat_val=flat)
    tr, va = stream.list_split(root, "train"), stream.list_split(root, "test")
    assert tr.classes == va.classes == WNIDS
    assert len(tr) == 9 and list(tr.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(zip((Path(f).name for f in va.files), va.labels)) == \
        [(f"val_{c}_{i}.JPEG", c) for c in range(3) for i in range(2)]


def test_crops_are_seeded_per_image_and_epoch(tmp_path):
    root = imagenet_tree(tmp_path, per_class=2)
    data = stream.list_split(root, "train")
    ds = stream.StreamSet(data, CIFAR, train=True, seed=5)
    a = ds[1][0]
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, stream.StreamSet(data, CIFAR, train=True, seed=5)[1][0])
    ds.epoch = 1
    assert not np.array_equal(a, ds[1][0])
    # Evaluation: the spec's resize and centre crop, as the in-memory path decodes.
    ev = stream.StreamSet(data, CIFAR, train=False)
    assert np.array_equal(ev[0][0], CIFAR.load_image(data.files[0]))


def _cli(args):
    return CliRunner().invoke(main, ["train", "--arch", "resnet20", "--stream", *map(str, args)])


def _one_line_exit_2(result, match):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("error: ") and match in err, err


def test_empty_class_folder_is_one_line(tmp_path):
    root = imagenet_tree(tmp_path / "d", per_class=2)
    (root / "train" / "n04").mkdir()
    result = _cli(["--data", root, "-o", tmp_path / "x.pt"])
    _one_line_exit_2(result, "empty class folder")
    assert not list(tmp_path.glob("x.*"))


def test_val_labels_naming_an_unknown_class_is_one_line(tmp_path):
    root = imagenet_tree(tmp_path / "d", per_class=2, flat_val=True)
    with open(root / "val_labels.txt", "a") as f:
        f.write("val_0_0.JPEG n99\n")
    result = _cli(["--data", root, "-o", tmp_path / "x.pt"])
    _one_line_exit_2(result, "unknown class 'n99'")
    assert not list(tmp_path.glob("x.*"))


def _config(root, out, **kw):
    kw.setdefault("stream", True)
    return TrainConfig(arch="resnet20", out=str(out), data=str(root), epochs=1, batch_size=8,
                       lr=0.05, amp="off", device="cpu", **kw)


@pytest.mark.parametrize("flat, memory, reason", [
    (False, 10**12, None),
    (False, 150_000, "into memory would take"),  # 30 images x 32 x 32 x 3 bytes = 92 kB > half of 150 kB
    (False, 200_000, None),
    (True, 10**12, "has no class folders"),
])
def test_training_streams_by_itself_what_memory_cannot_hold(tmp_path, monkeypatch, flat, memory, reason):
    import wae_deploy.training.train as train_module
    monkeypatch.setattr(train_module, "memory_bytes", lambda: memory)
    root = imagenet_tree(tmp_path / "d", flat_val=flat)
    logs = []
    ckpt = train(_config(root, tmp_path / "run.pt", stream=False, workers=0), log=logs.append)
    said = [line for line in logs if "streaming it from disk (--stream)" in line]
    assert ckpt.metrics["test"]["n"] == 6 and ckpt.classes == WNIDS
    if reason is None:
        assert not said
    else:
        assert len(said) == 1 and reason in said[0]


@pytest.mark.slow
def test_streamed_training_skips_a_bad_image_and_fails_past_the_limit(tmp_path, capsys):
    root = imagenet_tree(tmp_path / "d")
    (root / "train" / "n02" / "n02_3.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "run.pt"
    ckpt = train(_config(root, out, workers=2, max_bad_images=1), log=lambda _: None)
    assert "warning: skipped an image that failed to decode (1 of at most 1)" in capsys.readouterr().err
    assert ckpt.classes == WNIDS and ckpt.metrics["test"]["n"] == 6
    assert np.isfinite(ckpt.metrics["history"][0]["train_loss"])
    out2 = tmp_path / "fails.pt"
    with pytest.raises(UserError, match="more than 0 images failed to decode") as e:
        train(_config(root, out2, workers=0, max_bad_images=0), log=lambda _: None)
    assert e.value.exit_code == 2
    assert not list(tmp_path.glob("fails*")) and not list(tmp_path.glob(".fails*"))

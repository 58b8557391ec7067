"""The Imagenette family: its registry entries, the data layout (val split, classes.txt), the
checked download, the random-resized crops, and a few-batch training run on real photos."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import imagenette
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.runtime.preprocess import IMAGENETTE
from wae_deploy.training import checkpoint
from wae_deploy.training.models import create_model, default_preprocessing, list_archs, parse_arch
from wae_deploy.training.models.flops import count
from wae_deploy.training.train import random_resized_crop

SHARED = Path(__file__).resolve().parents[2] / "shared/data/imagenette-160"
NETTE = ["vgg16-imagenette", "vgg16-imagenette-resized", "vgg16-imagenette-dwt", "wae-vgg16-imagenette"]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """Four real photos per class and split of the shared Imagenette, in its own layout."""
    if not SHARED.is_dir():
        pytest.skip(f"no Imagenette at {SHARED}")
    root = tmp_path_factory.mktemp("nette")
    for split, n in (("train", 4), ("val", 2)):
        for wnid in sorted(p.name for p in (SHARED / split).iterdir()):
            (root / split / wnid).mkdir(parents=True)
            for f in sorted((SHARED / split / wnid).iterdir())[:n]:
                shutil.copy(f, root / split / wnid / f.name)
    shutil.copy(SHARED / "classes.txt", root / "classes.txt")
    return root


def test_every_entry_is_registered_with_its_own_preprocessing():
    for arch in NETTE:
        assert arch in list_archs()
        assert default_preprocessing(arch) == IMAGENETTE
        assert parse_arch(arch)[1].num_classes == 10
    assert (IMAGENETTE.resize, IMAGENETTE.crop) == (146, 128)


def test_the_wae_needs_well_under_half_the_baselines_multiply_adds():
    base = count(create_model("vgg16-imagenette"), 128).total_macs
    wae = count(create_model("wae-vgg16-imagenette"), 128)
    # 3/8-width VGG16-BN at 128 pixels: 711.7 M multiply-adds by hand (sum of conv layers + fc)
    assert 0.70e9 < base < 0.72e9
    assert 2.5 < base / wae.total_macs < 2.7
    assert wae.macs["encoder"] == 128 * 128 * 9 * (3 * 16 + 16 * 16 + 16 * 16) + 2 * 64 * 64 * 9 * 16 * 3


def test_val_is_the_evaluation_split_and_names_come_from_classes_txt(mini):
    test = load_split(mini, "test", IMAGENETTE, use_cache=False)
    assert len(test) == 20 and test.images.shape[1:] == (128, 128, 3)
    assert test.classes[0] == "tench" and test.classes[-1] == "parachute"
    assert np.bincount(test.labels).tolist() == [2] * 10


def test_without_classes_txt_the_names_are_the_wnids(mini, tmp_path):
    root = tmp_path / "nette"
    shutil.copytree(mini, root)
    (root / "classes.txt").unlink()
    assert load_split(root, "train", IMAGENETTE, use_cache=False).classes[0] == "n01440764"


def test_a_malformed_classes_txt_is_one_clear_error(mini, tmp_path):
    root = tmp_path / "nette"
    shutil.copytree(mini, root)
    (root / "classes.txt").write_bytes(b"\xff\xfe not text")
    with pytest.raises(UserError, match="malformed .*classes.txt"):
        load_split(root, "train", IMAGENETTE, use_cache=False)


def test_the_shared_copy_is_the_default(monkeypatch):
    monkeypatch.delenv("WAE_DATA", raising=False)
    if not SHARED.is_dir():
        pytest.skip("no shared Imagenette")
    assert default_data_root(IMAGENETTE).resolve() == SHARED.resolve()


def _archive(tmp_path: Path, mini: Path, extra: dict[str, bytes] | None = None) -> Path:
    path = tmp_path / "imagenette2-160.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(mini.rglob("*.JPEG")) + sorted(mini.rglob("*.jpg")):
            tar.add(f, arcname=f"imagenette2-160/{f.relative_to(mini)}")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_download_is_checked_unpacked_safely_and_named(mini, tmp_path):
    archive = _archive(tmp_path, mini, {"../evil.jpg": b"x", "imagenette2-160/noisy_imagenette.csv": b"a,b"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = imagenette.download_imagenette(tmp_path / "cache", url=archive.as_uri(), sha256=digest)
    assert sorted(p.name for p in root.iterdir()) == ["classes.txt", "train", "val"]
    assert not (tmp_path / "evil.jpg").exists()
    data = load_split(root, "test", IMAGENETTE, use_cache=False)
    assert len(data) == 20 and data.classes[1] == "English springer"


def test_a_download_that_fails_its_checksum_leaves_nothing(mini, tmp_path):
    archive = _archive(tmp_path, mini)
    with pytest.raises(UserError, match="SHA-256"):
        imagenette.download_imagenette(tmp_path / "cache", url=archive.as_uri(), sha256="0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []


def test_random_resized_crops_keep_content_and_flip():
    # A horizontal ramp: every crop is a (possibly flipped) monotone ramp within the source's range.
    ramp = torch.linspace(-1, 1, 160).expand(4, 3, 160, 160).contiguous()
    out = random_resized_crop(ramp, 128, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 128, 128)
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
    diffs = out[:, 0, 64, 1:] - out[:, 0, 64, :-1]
    increasing = (diffs >= -1e-5).all(1)
    decreasing = (diffs <= 1e-5).all(1)
    assert (increasing | decreasing).all()
    spans = out[:, 0, 64, -1] - out[:, 0, 64, 0]
    assert (spans.abs() > 0.4).all() and (spans.abs() <= 2 + 1e-5).all()  # between the smallest and the whole crop


@pytest.mark.slow
def test_a_few_batches_of_training_on_photos_write_a_loadable_fp16_checkpoint(mini, tmp_path):
    out = tmp_path / "wae.pt"
    args = ["train", "--arch", "wae-vgg16-imagenette", "--data", str(mini), "--epochs", "1", "--joint-epochs", "1",
            "--wae-epochs", "1", "--batch-size", "8", "--wae-lr", "3e-4", "--lr", "0.0167", "--half-weights",
            "--threads", "1", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ckpt = checkpoint.load(out)
    assert ckpt.classes[0] == "tench" and ckpt.preprocessing == IMAGENETTE
    assert all(v.dtype == torch.float16 for v in ckpt.state_dict.values() if v.is_floating_point())
    model = ckpt.build_model()
    assert next(model.parameters()).dtype == torch.float32
    test = ckpt.metrics["test"]
    assert test["n"] == 20 and test["psnr_db"] > 30  # the Haar start survives a gentle stage 1
    assert "split start: haar" in out.with_suffix(".md").read_text()

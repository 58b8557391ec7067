"""`wae-deploy inspect`: the decomposition picture and the per-branch cost table, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wae_deploy.cli import main
from wae_deploy.training import checkpoint
from wae_deploy.training.inspection import first_of_each_class, inspect, stretch
from wae_deploy.training.models import create_model, default_preprocessing

CLASSES = ["cat", "dog"]


def _save_ckpt(path, arch):
    import torch

    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(CLASSES))
    ckpt = checkpoint.Checkpoint(arch=arch, config={"num_classes": len(CLASSES), "input_size": 32},
                                 state_dict=model.state_dict(), classes=CLASSES,
                                 preprocessing=default_preprocessing(arch))
    checkpoint.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return {arch: _save_ckpt(d / f"{arch}.pt", arch) for arch in ("wae-resnet20", "resnet20-dwt", "resnet20")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny ImageFolder evaluation split: 2 classes x 3 images of 32x32."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "test" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "test" / c / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WAE_CACHE", str(tmp_path / "cache"))


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("count, wide", [(2, True), (6, False)])
def test_wae_checkpoint_writes_png(ckpts, data, tmp_path, count, wide):
    out = tmp_path / "wae.png"
    r = _run("inspect", ckpts["wae-resnet20"], "--data", data, "--count", count, "-o", out)
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.format == "PNG"
        w, h = im.size
    # five columns (input, I_L, I_H, reconstruction, difference), one row per image
    assert (w > h) if wide else (h > w)
    assert "theoretical speed-up over resnet20" in r.stdout
    for branch in ("WAE encoder", "main network on I_L", "high-frequency branch on I_H", "fusion head"):
        assert branch in r.stdout
    assert "decoder (training only" in r.stdout
    assert r.stdout.count("reconstruction PSNR") == count
    # the first image of each class in turn
    assert "cat (test #0)" in r.stdout and "dog (test #3)" in r.stdout
    assert not _leftovers(tmp_path)


def test_image_files_and_default_output_name(ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save("wide.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).convert("L").save("grey.png")
    r = _run("inspect", ckpts["wae-resnet20"], "--image", "wide.jpg", "--image", "grey.png")
    assert r.exit_code == 0, r.output
    png = tmp_path / "wae-resnet20-inspect.png"
    assert png.is_file()
    with Image.open(png) as im:
        assert im.size[0] > im.size[1]
    assert "wide.jpg: reconstruction PSNR" in r.stdout and "grey.png" in r.stdout


def test_result_numbers(ckpts, tmp_path):
    from wae_deploy.training.models.flops import count

    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img)
    res = inspect(ckpts["wae-resnet20"], images=[img], out=tmp_path / "x.png")
    c = count(create_model("wae-resnet20", num_classes=len(CLASSES)), 32)
    assert res.total_macs == c.total_macs and res.total_params == c.total_params
    assert [b.key for b in res.branches] == ["encoder", "main", "high", "fusion"]
    assert 2 < res.speedup < 4  # ResNet-20 on the half-resolution I_L, plus the encoder's full-resolution convs
    assert res.decoder_params > 0 and res.png == tmp_path / "x.png"
    (stats,) = res.images
    assert 0 < stats.high_energy_share < 1 and np.isfinite(stats.psnr_db) and -1 <= stats.edge_corr <= 1


def test_dwt_checkpoint_has_no_reconstruction(ckpts, data, tmp_path):
    out = tmp_path / "dwt.png"
    r = _run("inspect", ckpts["resnet20-dwt"], "--data", data, "--count", 2, "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file()
    assert "no decoder" in r.stdout and "reconstruction PSNR" not in r.stdout
    assert "9/7 wavelet" in r.stdout


def test_baseline_checkpoint_gives_table_and_note(ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _run("inspect", ckpts["resnet20"])
    assert r.exit_code == 0, r.output
    assert "no decomposition to picture" in r.stdout
    assert "speed-up over resnet20: 1.00x" in r.stdout
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("make", ["missing", "not_an_image", "folder"])
def test_bad_image_is_one_line_exit_2(ckpts, tmp_path, make):
    bad = tmp_path / "bad.png"
    if make == "not_an_image":
        bad.write_text("hello, not a picture")
    elif make == "folder":
        bad.mkdir()
    out = tmp_path / "out.png"
    r = _run("inspect", ckpts["wae-resnet20"], "--image", bad, "-o", out)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.png" in lines[0]
    assert "Traceback" not in r.output
    assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize("args, words", [
    (["inspect", "nope.pt"], "checkpoint not found"),
    (["inspect", "{wae}", "-o", "{tmp}/x.jpg"], ".png"),
    (["inspect", "{wae}", "-o", "{tmp}/no/such/dir/x.png"], "output folder does not exist"),
    (["inspect", "{wae}", "--data", "{tmp}/no-data"], "data folder does not exist"),
])
def test_bad_arguments_exit_2(ckpts, tmp_path, args, words):
    args = [a.format(wae=ckpts["wae-resnet20"], tmp=tmp_path) for a in args]
    r = _run(*args)
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr


def test_first_of_each_class():
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert first_of_each_class(labels, 6).tolist() == [0, 3, 5, 1, 4, 2]
    assert first_of_each_class(labels, 2).tolist() == [0, 3]


def test_stretch():
    flat = stretch(np.zeros((3, 4, 4)))
    assert flat.shape == (4, 4, 3) and np.all(flat == 0.5)
    a = np.random.default_rng(0).normal(size=(3, 8, 8)) * np.array([1, 10, 100])[:, None, None]
    for per_channel in (False, True):
        s = stretch(a, per_channel=per_channel)
        assert s.shape == (8, 8, 3) and s.min() >= 0 and s.max() <= 1
    # channel by channel, every channel uses the whole range
    s = stretch(a, per_channel=True)
    assert all(s[..., c].max() == 1 and s[..., c].min() == 0 for c in range(3))

"""Shared fixtures: the real CIFAR-10 data (read in place, decoded once) and small samples of it.

The decoded-data cache under ~/.cache/wae-deploy (or $WAE_CACHE) is reused: the first
run on a machine decodes the JPEGs once, later runs load an .npz in about a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import settings
from run_cache import once
from seeds import FAULT_SEED, FUZZ_SEED, IN_CI

from wae_deploy.runtime.data import ImageSet, default_data_root, load_split
from wae_deploy.runtime.preprocess import CIFAR

# CI: the same hypothesis examples on every run (they depend only on the test), so a red CI is
# never a roll of the dice; elsewhere they come from WAE_FUZZ_SEED (tests/seeds.py).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if IN_CI else "dev")
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one xdist worker per core: two threads each would contend for the same cores


def _seeds() -> str:
    fuzz = "hypothesis derandomized (CI=true)" if IN_CI else f"WAE_FUZZ_SEED={FUZZ_SEED}"
    return f"seeds: WAE_FAULT_SEED={FAULT_SEED} {fuzz} (set them to replay this run)"


def pytest_report_header(config):
    return _seeds()


def pytest_terminal_summary(terminalreporter):  # `pytest -q` (make test) hides the header
    terminalreporter.write_line(_seeds())


def to_tensor(images: ImageSet, spec=CIFAR) -> torch.Tensor:
    """uint8 N x H x W x 3 -> normalised float N x 3 x H x W, as the network sees it."""
    return torch.from_numpy(spec.normalize(images.images))


@pytest.fixture(scope="session")
def data_root():
    root = default_data_root()
    if not (root / "train").is_dir() and not (root / "cifar-10-python.tar.gz").is_file():
        pytest.skip(f"no CIFAR-10 data at {root}")
    return root


@pytest.fixture(scope="session")
def cifar_train(data_root) -> ImageSet:
    return load_split(data_root, "train", CIFAR)


@pytest.fixture(scope="session")
def cifar_test(data_root) -> ImageSet:
    return load_split(data_root, "test", CIFAR)


@pytest.fixture(scope="session")
def train_sample(cifar_train) -> ImageSet:
    """8,000 training images, a fixed random sample in a fixed random order (the split itself,
    and ImageSet.sample, are sorted by class: consecutive images would all be airplanes)."""
    sample = cifar_train.sample(8000, seed=1)
    return sample.subset(np.random.default_rng(1).permutation(len(sample)))


@pytest.fixture(scope="session")
def train_images(train_sample) -> torch.Tensor:
    """train_sample, normalised."""
    return to_tensor(train_sample)


@pytest.fixture(scope="session")
def heldout_images(cifar_test) -> torch.Tensor:
    """256 normalised images of the test split: never seen in any training done by the tests."""
    return to_tensor(cifar_test.sample(256, seed=2))  # all ten classes


@pytest.fixture(scope="session")
def _split_memo(cifar_train, cifar_test, data_root):
    return {(str(data_root), "train"): cifar_train, (str(data_root), "test"): cifar_test}


def _memo_loader(memo: dict, real):
    """load_split that serves the session's decoded CIFAR splits of the default root from memory."""
    def load(root, split, spec, use_cache=True):
        hit = memo.get((str(root), split))
        if hit is not None and spec == CIFAR:
            return hit
        return real(root, split, spec, use_cache=use_cache)
    return load


@pytest.fixture(scope="module")
def fast_load_split(_split_memo):
    """Make wae_deploy.training.train reuse the session's decoded splits instead of reloading them per call.

    Only CIFAR splits of the default root are served from memory; anything else goes to the
    real load_split. train() never writes into the arrays it gets, so sharing them is safe.
    """
    import wae_deploy.training.train as train_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "load_split", _memo_loader(_split_memo, train_mod.load_split))
        yield train_mod.load_split


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory, _split_memo) -> Path:
    """The run's wae.pt (WAE-ResNet20) and plain.pt (ResNet-20), each trained for three batches, made once
    for every worker (run_cache): a folder to copy from, not to write in."""
    import wae_deploy.training.train as train_mod

    def make(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_mod, "load_split", _memo_loader(_split_memo, train_mod.load_split))
            for key, arch in {"wae": "wae-resnet20", "plain": "resnet20"}.items():
                train_mod.train(train_mod.TrainConfig(arch=arch, out=str(folder / f"{key}.pt"), epochs=1,
                                                      wae_epochs=1, joint_epochs=0, limit_batches=3, limit_eval=100),
                                log=lambda *_a, **_k: None)

    return once(tmp_path_factory, "trained-pair", make)


# Shared by the TensorRT tests (test_tensorrt.py, test_trt_standin.py).
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A small conv net exported the way the project exports: dynamo, opset 18, dynamic batch."""
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()
    with torch.no_grad():   # give BatchNorm non-trivial statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    prog = torch.onnx.export(
        net, (torch.randn(2, 3, 16, 16),), dynamo=True, opset_version=18, external_data=False,
        input_names=["images"], output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
    )
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(described(prog.model_proto), path)
    return path


def described(model: onnx.ModelProto) -> onnx.ModelProto:
    """The wae_deploy metadata export writes: an artifact carries its preprocessing and class names."""
    from wae_deploy.runtime import onnx_meta
    from wae_deploy.runtime.preprocess import Preprocessing

    spec = Preprocessing(resize=16, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    onnx_meta.write(model, onnx_meta.ModelInfo(arch="tiny", classes=[str(i) for i in range(10)], preprocessing=spec,
                                               config={}, checkpoint_sha256="", version="test", extra={}))
    return model


# The files that cost over ten seconds of a worker's time, longest first (measured with --durations
# on the avx2 host). `make test` hands whole files to its two workers in collection order
# (--no-loadscope-reorder: xdist would otherwise order files by their number of tests), so these
# go first and the short files fill the gaps, instead of one long file starting last while the
# other worker idles.
LONGEST_FIRST = ("test_targets.py", "test_distributed.py", "test_faults.py", "test_train.py", "test_caffe.py",
                 "test_models.py", "test_bench_suite.py", "test_export.py", "test_weights.py", "test_trt_standin.py",
                 "test_predict.py", "test_bench_artifacts.py", "test_loadgen.py", "test_export_parity.py",
                 "test_cpu_class.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order

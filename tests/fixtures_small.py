"""Shared helpers: small real checkpoints and exports made once per run (run_cache), and a way to
run the CLI as a user would (a real process, so a stray traceback or warning on stderr would be seen).

Import the fixtures into a test module with `from fixtures_small import tiny_ckpt, tiny_onnx`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cli_process
import numpy as np
import pytest
from PIL import Image
from run_cache import once

REPO = Path(__file__).resolve().parents[1]


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m wae_deploy.cli`."""
    script = Path(sys.executable).parent / "wae-deploy"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "wae_deploy.cli"]


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a CLI subprocess: one thread (the machine is shared), no debug tracebacks."""
    env = {k: v for k, v in os.environ.items() if k != "WAE_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(args: list, cwd: Path | None = None, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """`wae-deploy ARGS` in a process of its own: forked from this worker's warm parent (cli_process),
    or started cold when `env` changes what the parent's imports may have read."""
    full, usual = cli_env(**env), cli_env()
    if cli_process.needs_cold(full, usual):
        return subprocess.run(cli_command() + [str(a) for a in args], cwd=cwd, env=full,
                              capture_output=True, text=True, timeout=timeout)
    return cli_process.start(args, full, cwd).wait(timeout)


def listing(*folders: Path) -> set[str]:
    """Every path (files and folders, hidden ones included) under the folders."""
    out = set()
    for folder in folders:
        for p in Path(folder).rglob("*"):
            out.add(str(p))
    return out


def assert_clean_error(code: int, stdout: str, stderr: str, expected_code: int = 2, match: str | None = None):
    """The documented failure: an exit status, exactly one line on stderr starting 'error:', no traceback."""
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert code == expected_code, f"exit {code}, expected {expected_code}; stderr: {stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    assert lines[0].startswith("error:"), lines[0]
    assert "internal error" not in lines[0], lines[0]
    if match:
        assert match.lower() in lines[0].lower(), f"{match!r} not in {lines[0]!r}"


def write_images(folder: Path, classes: int = 2, per_class: int = 2, size: int = 32, seed: int = 0) -> Path:
    """A tiny ImageFolder tree of valid PNGs: folder/<class>/<i>.png."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"c{c}" / f"{i}.png")
    return folder


def _quiet(*_args, **_kw) -> None:
    pass


def _make_tiny(folder: Path) -> None:
    from wae_deploy.training.export import export
    from wae_deploy.training.train import TrainConfig, train

    train(TrainConfig(arch="wae-resnet20", out=str(folder / "w.pt"), epochs=1, wae_epochs=1, joint_epochs=0,
                      limit_batches=2, limit_eval=64), log=_quiet)
    export(folder / "w.pt", folder / "w.onnx", verify=16, log=_quiet)


def _copy(shared: Path, names: tuple[str, ...], dest: Path) -> None:
    for name in names:
        shutil.copyfile(shared / name, dest / name)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A real WAE-ResNet20 checkpoint, trained for two batches; this worker's own copy of the run's one."""
    folder = tmp_path_factory.mktemp("tiny")
    _copy(once(tmp_path_factory, "tiny", _make_tiny), ("w.pt",), folder)
    return folder / "w.pt"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_ckpt) -> Path:
    """tiny_ckpt exported (with parity checked on 16 real images), beside it."""
    _copy(once(tmp_path_factory, "tiny", _make_tiny), ("w.onnx", "w.json"), tiny_ckpt.parent)
    return tiny_ckpt.with_suffix(".onnx")


@pytest.fixture(scope="session")
def plain_ckpt(tmp_path_factory, trained_pair) -> Path:
    """The run's plain ResNet-20 (trained_pair's plain.pt), this worker's copy. For tests of what export
    does around the exporter (writes, parity checks): that holds for any network, and a ResNet-20
    exports in half the time of a WAE."""
    folder = tmp_path_factory.mktemp("plain")
    shutil.copyfile(trained_pair / "plain.pt", folder / "p.pt")
    return folder / "p.pt"


def reference_export(tmp_path_factory, name: str) -> Path:
    """models/<name>.pt exported the way bench exports it (default options), once per run, with the
    checkpoint beside it: <shared>/<name>.onnx, .json and .pt. Copy it (copy_export) before writing near it."""
    def make(folder: Path) -> None:
        from wae_deploy.training.export import export

        shutil.copyfile(REPO / "models" / f"{name}.pt", folder / f"{name}.pt")
        export(folder / f"{name}.pt", folder / f"{name}.onnx", log=_quiet)

    return once(tmp_path_factory, f"export-{name}", make) / f"{name}.onnx"


def copy_export(onnx_path: Path, folder: Path, stem: str | None = None, checkpoint: bool = True) -> Path:
    """An export (model, manifest and, with `checkpoint`, the .pt the torch target reads) copied into `folder`."""
    stem = stem or onnx_path.stem
    for suffix in (".onnx", ".json", ".pt") if checkpoint else (".onnx", ".json"):
        shutil.copyfile(onnx_path.with_suffix(suffix), folder / f"{stem}{suffix}")
    return folder / f"{stem}.onnx"

"""DDP on CPU: two gloo processes (one thread each) against one process with the same global batch."""

from __future__ import annotations

import pytest
from fixtures_small import assert_clean_error, listing, run_cli

from wae_deploy import checkpoint

# One step per epoch, so each epoch's train_loss is one step's loss.
ARGS = ["--arch", "resnet20", "--epochs", "2", "--batch-size", "32", "--limit-batches", "1", "--limit-eval", "50",
        "--eval-every", "10", "--amp", "off", "--threads", "1", "--lr", "0.05"]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(data_root, tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    for out, extra in ((one, []), (two, ["--nproc", "2", "--sync-bn"])):
        proc = run_cli(["train", *ARGS, "--data", data_root, "-o", out, *extra], cwd=tmp_path, timeout=180)
        assert proc.returncode == 0, proc.stderr
    a, b = (checkpoint.load(p).metrics["history"] for p in (one, two))
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-3, (ra, rb)
    # Rank 0 alone wrote: the checkpoint and its card, no training state left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.md", "one.pt", "two.md", "two.pt"]


def test_cuda_without_cuda_is_one_line(tmp_path):
    proc = run_cli(["train", "--arch", "resnet20", "--device", "cuda", "-o", tmp_path / "x.pt"], cwd=tmp_path)
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, match="--device cuda")
    assert listing(tmp_path) == set()


def test_fp16_on_a_cpu_is_one_line(data_root, tmp_path):
    proc = run_cli(["train", "--arch", "resnet20", "--device", "cpu", "--amp", "fp16", "--data", data_root,
                    "-o", tmp_path / "x.pt"], cwd=tmp_path)
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, match="--amp fp16")
    assert listing(tmp_path) == set()

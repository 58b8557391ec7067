"""DDP on CPU: two gloo processes (one thread each) against one process with the same global batch;
a rank killed mid-run, and --resume after it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import cli_process
import pytest
from fixtures_small import assert_clean_error, cli_env, listing, run_cli, write_images

from wae_deploy.training import checkpoint

# One step per epoch, so each epoch's train_loss is one step's loss. Two steps only: from the third on,
# this training amplifies rounding differences ~30-fold a step, and one process on 2 threads drifts
# from itself on 1 thread as far as two ranks do (benchmarks/ddp-agreement.json).
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


def _steps(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["stage"], r["epoch"], r["step"]): r["loss"] for r in rows}


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The worker process of `rank` among the launcher's children (its environment names the rank)."""
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
    return None


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_resume_continues_it(tmp_path):
    # 4 classes of 32 random images: 4 steps an epoch, decoded in milliseconds.
    data = tmp_path / "data"
    for split in ("train", "val"):
        write_images(data / split, classes=4, per_class=32 if split == "train" else 4, seed=len(split))
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"WAE_CACHE": str(tmp_path / "cache")}
    args = ["train", "--arch", "resnet20", "--data", data, "--epochs", "3", "--batch-size", "32", "--lr", "0.05",
            "--amp", "off", "--threads", "1", "--nproc", "2", "--sync-bn"]

    straight = runs / "straight.pt"
    proc = run_cli([*args, "-o", straight, "--step-log", runs / "straight.jsonl"], cwd=tmp_path, timeout=300, **env)
    assert proc.returncode == 0, proc.stderr

    out, log = runs / "killed.pt", runs / "killed.jsonl"
    state = Path(f"{out}.train-state.pt")
    run = cli_process.start([*args, "-o", out, "--step-log", log], cli_env(**env), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = _rank_pid(run.pid, 1)
        assert victim is not None and state.exists(), "the run ended before its first epoch was saved"
        os.kill(victim, signal.SIGKILL)  # rank 1 dies mid-run (after epoch 1, before the run's end)
        ended = run.wait(timeout=120)  # no hang: the launcher stops rank 0
    finally:
        if run.poll() is None:
            run.kill()
            run.poll(30)
    assert_clean_error(ended.returncode, ended.stdout, ended.stderr, expected_code=1,
                       match="rank 1 was killed by SIGKILL")
    done = len(checkpoint.load(out).metrics["history"])
    assert 1 <= done < 3
    # Only whole files: the last finished epoch's checkpoint, the resume state, the step log.
    assert {p.name for p in runs.iterdir()} >= {"killed.pt", state.name}
    assert not [p for p in listing(runs) if p.endswith(".partial")]

    proc = run_cli([*args, "-o", out, "--step-log", log, "--resume"], cwd=tmp_path, timeout=300, **env)
    assert proc.returncode == 0, proc.stderr
    assert not state.exists()
    a, b = _steps(runs / "straight.jsonl"), _steps(log)
    assert a.keys() == b.keys() and len(a) == 3 * 4
    for key in a:
        assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    ha, hb = (checkpoint.load(p).metrics["history"] for p in (straight, out))
    assert [r["epoch"] for r in hb] == [1, 2, 3]
    assert all(abs(ra["train_loss"] - rb["train_loss"]) < 1e-5 for ra, rb in zip(ha, hb))


@pytest.mark.slow
def test_resume_without_state_is_one_line_from_all_ranks(tmp_path):
    data = write_images(tmp_path / "data" / "train", classes=2, per_class=2).parent
    write_images(data / "val", classes=2, per_class=1)
    proc = run_cli(["train", "--arch", "resnet20", "--data", data, "--nproc", "2", "--resume", "--threads", "1",
                    "-o", tmp_path / "x.pt"], cwd=tmp_path, timeout=300, WAE_CACHE=str(tmp_path / "cache"))
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, match="--resume: no training state")
    assert not [p for p in listing(tmp_path) if p.endswith((".pt", ".partial"))]


def test_cuda_without_cuda_is_one_line(tmp_path):
    proc = run_cli(["train", "--arch", "resnet20", "--device", "cuda", "-o", tmp_path / "x.pt"], cwd=tmp_path)
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, match="--device cuda")
    assert listing(tmp_path) == set()


def test_fp16_on_a_cpu_is_one_line(data_root, tmp_path):
    proc = run_cli(["train", "--arch", "resnet20", "--device", "cpu", "--amp", "fp16", "--data", data_root,
                    "-o", tmp_path / "x.pt"], cwd=tmp_path)
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, match="--amp fp16")
    assert listing(tmp_path) == set()

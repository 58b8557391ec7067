"""Training throughput of 2 gloo DDP processes (1 thread each) against 1 process (1 thread), same global batch.

    .venv/bin/python benchmarks/ddp_throughput.py [STEPS] [ROUNDS]   -> benchmarks/ddp-throughput.json

ResNet-20 on CIFAR-10, batch 128, --amp off; the pair with and without --sync-bn. Each run trains 2 epochs
of STEPS steps (default 100) through the CLI; the second epoch's training time (train()'s
per-epoch `elapsed_s`, which leaves out start-up and evaluation) gives images per second, and
the final checkpoint's top-1 on the whole 10,000-image test split is recorded beside it.
The three settings alternate ROUNDS times (default 2); the ratio of medians is recorded with
the load average before and after, since the machine is shared.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wae_deploy.training import checkpoint

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "ddp-throughput.json"
BATCH = 128
SETTINGS = {"one_process": [], "two_gloo_processes_sync_bn": ["--nproc", "2", "--sync-bn"],
            "two_gloo_processes": ["--nproc", "2"]}


def one_run(tmp: str, extra: list[str], steps: int) -> tuple[float, float, float]:
    """(images per wall second of the timed epoch, CPU seconds of the whole run with start-up, final top-1)."""
    out = f"{tmp}/r-{time.monotonic_ns()}.pt"
    args = ["--arch", "resnet20", "--epochs", "2", "--batch-size", str(BATCH), "--limit-batches", str(steps),
            "--eval-every", "10", "--amp", "off", "--threads", "1", "--device", "cpu", "-o", out, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "wae_deploy", "train", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    metrics = checkpoint.load(out).metrics
    seconds = metrics["history"][1]["elapsed_s"] - metrics["history"][0]["elapsed_s"]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (steps * BATCH / seconds, round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 1),
            metrics["test"]["top1"])


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    load_before = os.getloadavg()
    rates, cpu, top1 = ({k: [] for k in SETTINGS} for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, extra in SETTINGS.items():
                rate, seconds, score = one_run(tmp, extra, steps)
                rates[name].append(round(rate, 1))
                cpu[name].append(seconds)
                top1[name].append(round(score, 2))
                print(name, rates[name][-1], "images/s,", seconds, "CPU s, top-1", top1[name][-1], flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    record = {"command": f".venv/bin/python benchmarks/ddp_throughput.py {steps} {rounds}",
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "setup": f"resnet20, CIFAR-10, global batch {BATCH}, 2 epochs of {steps} steps per run (the second "
                       "timed), 1 thread per process, --amp off",
              "images_per_second": rates, "cpu_seconds_per_run": cpu,
              "speedup_of_medians": {k: round(median[k] / median["one_process"], 3) for k in SETTINGS
                                     if k != "one_process"},
              "goal": 1.7,
              "final_top1": {**top1, "steps": 2 * steps, "goal": "within 0.5 points of one_process",
                             "difference_of_medians": {k: round(statistics.median(v) - statistics.median(
                                 top1["one_process"]), 2) for k, v in top1.items() if k != "one_process"}},
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "machine": "2 cores, shared: see the load averages (a value near 2 or above means other work ran)"}
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput of 2 gloo DDP processes (1 thread each) against 1 process (1 thread), same global batch.

    .venv/bin/python benchmarks/ddp_throughput.py [STEPS] [ROUNDS]   -> benchmarks/ddp-throughput.json

ResNet-20 on CIFAR-10, batch 128, --amp off, --sync-bn for the pair. Each run trains 2 epochs
of STEPS steps (default 100) through the CLI; the second epoch's training time (train()'s
per-epoch `elapsed_s`, which leaves out start-up and evaluation) gives images per second, and
the final checkpoint's top-1 on the whole 10,000-image test split is recorded beside it.
The two settings alternate ROUNDS times (default 2); the ratio of medians is recorded with
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

from wae_deploy import checkpoint

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "ddp-throughput.json"
BATCH = 128


def one_run(tmp: str, nproc: int, steps: int) -> tuple[float, float, float]:
    """(images per wall second of the timed epoch, CPU seconds of the whole run with start-up, final top-1)."""
    out = f"{tmp}/r{nproc}-{time.monotonic_ns()}.pt"
    args = ["--arch", "resnet20", "--epochs", "2", "--batch-size", str(BATCH), "--limit-batches", str(steps),
            "--eval-every", "10", "--amp", "off", "--threads", "1", "--device", "cpu", "-o", out]
    if nproc > 1:
        args += ["--nproc", str(nproc), "--sync-bn"]
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
    rates, cpu, top1 = {1: [], 2: []}, {1: [], 2: []}, {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for n in (1, 2):
                rate, seconds, score = one_run(tmp, n, steps)
                rates[n].append(round(rate, 1))
                cpu[n].append(seconds)
                top1[n].append(round(score, 2))
                print(n, "process(es):", rates[n][-1], "images/s,", seconds, "CPU s, top-1", top1[n][-1], flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    record = {"command": f".venv/bin/python benchmarks/ddp_throughput.py {steps} {rounds}",
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "setup": f"resnet20, CIFAR-10, global batch {BATCH}, {steps} timed steps per run, 1 thread per process, "
                       "--amp off; the pair with --sync-bn",
              "images_per_second": {"one_process": rates[1], "two_gloo_processes": rates[2]},
              "cpu_seconds_per_run": {"one_process": cpu[1], "two_gloo_processes": cpu[2]},
              "speedup_of_medians": round(two / one, 3), "goal": 1.7,
              "final_top1": {"one_process": top1[1], "two_gloo_processes": top1[2],
                             "difference_of_medians": round(statistics.median(top1[2]) - statistics.median(top1[1]), 2),
                             "goal": "within 0.5 points", "steps": 2 * steps},
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "machine": "2 cores, shared: see the load averages (a value near 2 or above means other work ran)"}
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""How much two single-thread processes get out of this machine's cores, against one: the ceiling of any
2-process speed-up here (DDP included), with no communication at all.

    .venv/bin/python benchmarks/cpu_scaling.py [STEPS] [ROUNDS]   -> benchmarks/cpu-scaling.json

Each process trains ResNet-20 (FP32, 1 thread, channels_last as `train` does, random 32x32 inputs)
for STEPS steps after 5 warm-up steps and reports images per second. Settings: one process at
batch 128 (DDP's single-process reference), one at 64, and two at once at 64 each (a 2-rank DDP
run's per-rank share of a global batch of 128), started together through a barrier so they
overlap. The settings alternate ROUNDS times; ratios of the medians (a pair's rates summed) are
recorded.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "cpu-scaling.json"
SETTINGS = {"alone_batch_128": (1, 128), "alone_batch_64": (1, 64), "two_at_once_batch_64": (2, 64)}


def worker(steps: int, batch: int, barrier, out) -> None:
    import torch
    torch.set_num_threads(1)
    from wae_deploy.training.models import create_model
    model = create_model("resnet20", num_classes=10, input_size=32).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    out.put(steps * batch / (time.perf_counter() - start))


def run(n: int, batch: int, steps: int) -> list[float]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(steps, batch, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    load_before = os.getloadavg()
    rates = {k: [] for k in SETTINGS}
    for _ in range(rounds):
        for name, (n, batch) in SETTINGS.items():
            rates[name].append(round(sum(run(n, batch, steps)), 1))
            print(name, rates[name][-1], "images/s", flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    record = {"command": f".venv/bin/python benchmarks/cpu_scaling.py {steps} {rounds}",
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "setup": "ResNet-20 FP32 training steps, 1 thread per process, channels_last, no communication; "
                       "a pair's rate is the sum of its two processes'",
              "images_per_second": rates,
              "two_at_64_over_one_at_128": round(median["two_at_once_batch_64"] / median["alone_batch_128"], 3),
              "two_at_64_over_one_at_64": round(median["two_at_once_batch_64"] / median["alone_batch_64"], 3),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "cpu": {"logical": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))}}
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

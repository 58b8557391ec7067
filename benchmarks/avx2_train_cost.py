"""What the routes around oneDNN's broken AVX2 kernel cost on this CPU: training images/s, interleaved.

    taskset -c 1 .venv/bin/python benchmarks/avx2_train_cost.py   -> benchmarks/avx2-train-cost.json

One thread. A training step as train() takes it (batch 128, SGD with momentum) on random CIFAR-sized
images, in alternating rounds of these routes (wae_deploy.training.train.onednn_training):
  onednn    oneDNN, channels-last (torch's default; the broken kernel where the model has it)
  nchw      oneDNN, channels-last, but the 1x1 stride-2 convolutions with input channels not a
            multiple of 8 in NCHW (train.nchw_convolutions: what train() does on AVX2-only CPUs)
  all-nchw  oneDNN, the whole model and input in NCHW (contiguous), for comparison
  native    no oneDNN convolutions (torch.backends.mkldnn.enabled = False), channels-last
for ResNet-20 (its 1x1 convolutions have 16 and 32 input channels: nchw changes nothing, and oneDNN
channels-last is correct), WAE-ResNet-20's stage 1 (encoder + decoder, no 1x1 convolution) and its
joint step (the I_H branch's 4 -> 8 shortcut: onednn aborts on this CPU, benchmarks/avx2_conv_backward.py,
so it is not timed there).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wae_deploy.runtime.machine import cpu_class, cpu_features, cpu_flags, parse_cpuinfo, read
from wae_deploy.training.models import create_model
from wae_deploy.training.models.wae import init_haar, wae_loss
from wae_deploy.training.train import nchw_convolutions

BATCH, STEPS, ROUNDS = 128, 6, 4


def step_fn(arch: str, stage: str, route: str):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, input_size=32)
    if arch.startswith("wae-"):
        init_haar(model.decomposer, model.decoder)
    fmt = torch.contiguous_format if route == "all-nchw" else torch.channels_last
    model = model.to(memory_format=fmt).train()
    if route == "nchw":
        nchw_convolutions(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        if stage == "wae":
            low, high = model.decompose(x)
            loss = wae_loss(x, model.decoder(low, high), high, 1.0)[0]
        elif stage == "joint":
            low, high = model.decompose(x)
            main, fusion = model.heads(low, high)
            loss = sum(F.cross_entropy(z, y) for z in (main + fusion, main, fusion))
            loss = loss + 1e-3 * wae_loss(x, model.decoder(low, high), high, 1.0)[0]
        else:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def images_per_s(step, route: str) -> float:
    torch.backends.mkldnn.enabled = route != "native"
    step()  # warm-up (primitive creation)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        step()
    return BATCH * STEPS / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(1)
    every = ("onednn", "nchw", "all-nchw", "native")
    cases = [("resnet20", "classifier", every), ("wae-resnet20", "wae", every),
             ("wae-resnet20", "joint", every[1:])]
    results = []
    for arch, stage, routes in cases:
        steps = {r: step_fn(arch, stage, r) for r in routes}
        runs = {r: [] for r in routes}
        for _ in range(ROUNDS):
            for r in routes:
                runs[r].append(images_per_s(steps[r], r))
        row = {"arch": arch, "stage": stage}
        for r, v in runs.items():
            row[r] = {"median_images_per_s": round(statistics.median(v), 1), "rounds": [round(x, 1) for x in v]}
        base = "onednn" if "onednn" in routes else "nchw"
        row["slowdown_vs_" + base] = {r: round(row[base]["median_images_per_s"] / row[r]["median_images_per_s"], 2)
                                      for r in routes if r != base}
        results.append(row)
        print(json.dumps(row), flush=True)
    torch.backends.mkldnn.enabled = True
    info = parse_cpuinfo(read(Path("/"), "proc/cpuinfo"))
    feats = cpu_features(cpu_flags())
    out = {
        "what": "training images/s by convolution route (see the script's docstring), interleaved rounds, 1 thread",
        "command": "taskset -c 1 .venv/bin/python benchmarks/avx2_train_cost.py",
        "host": {"cpu_model": info["model"], "cpu_class": cpu_class(cpu_flags()),
                 "avx2": "avx2" in info["flags"], "avx512f": feats["avx512"], "vnni": feats["vnni"],
                 "machine": platform.machine(), "threads": 1},
        "torch": torch.__version__, "onednn": torch.backends.mkldnn.is_available() and "v3.12.0",
        "batch": BATCH, "steps_per_round": STEPS, "rounds": ROUNDS, "results": results,
    }
    path = Path(__file__).with_name("avx2-train-cost.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

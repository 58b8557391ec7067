"""What training without oneDNN convolutions costs on this CPU: images/s with and without, interleaved.

    taskset -c 1 .venv/bin/python benchmarks/avx2_train_cost.py   -> benchmarks/avx2-train-cost.json

One thread. A training step as train() takes it (channels-last, batch 128, SGD with momentum) on random
CIFAR-sized images: ResNet-20 (its 1x1 convolutions have 16 and 32 input channels, which the broken
kernel gets right, so oneDNN can be timed) and WAE-ResNet-20's stage 1 (encoder + decoder, no 1x1
convolution) with oneDNN on and off, in alternating rounds; WAE-ResNet-20's joint step only without
oneDNN (with it, this CPU aborts: benchmarks/avx2_conv_backward.py).
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

from wae_deploy.machine import cpu_features, cpu_flags, parse_cpuinfo, read
from wae_deploy.models import create_model
from wae_deploy.models.wae import init_haar, wae_loss

BATCH, STEPS, ROUNDS = 128, 6, 4


def step_fn(arch: str, stage: str):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, input_size=32)
    if arch.startswith("wae-"):
        init_haar(model.decomposer, model.decoder)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=torch.channels_last)
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


def images_per_s(step, onednn: bool) -> float:
    torch.backends.mkldnn.enabled = onednn
    step()  # warm-up (primitive creation)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        step()
    return BATCH * STEPS / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(1)
    cases = [("resnet20", "classifier", (True, False)), ("wae-resnet20", "wae", (True, False)),
             ("wae-resnet20", "joint", (False,))]
    results = []
    for arch, stage, modes in cases:
        step = step_fn(arch, stage)
        runs = {m: [] for m in modes}
        for _ in range(ROUNDS):
            for m in modes:
                runs[m].append(images_per_s(step, m))
        row = {"arch": arch, "stage": stage}
        for m, v in runs.items():
            row["onednn" if m else "native"] = {"median_images_per_s": round(statistics.median(v), 1),
                                                "rounds": [round(r, 1) for r in v]}
        if len(modes) == 2:
            speeds = row["onednn"]["median_images_per_s"], row["native"]["median_images_per_s"]
            row["native_slowdown"] = round(speeds[0] / speeds[1], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
    torch.backends.mkldnn.enabled = True
    info = parse_cpuinfo(read(Path("/"), "proc/cpuinfo"))
    feats = cpu_features(cpu_flags())
    out = {
        "what": "training images/s with oneDNN convolutions and without (native), interleaved rounds, 1 thread",
        "command": "taskset -c 1 .venv/bin/python benchmarks/avx2_train_cost.py",
        "host": {"cpu_model": info["model"], "cpu_class": "AVX2-only AMD EPYC (no AVX-512, no VNNI)"
                 if not feats["avx512"] and "avx2" in info["flags"] else "see flags",
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

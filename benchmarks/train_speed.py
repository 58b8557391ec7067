"""Training time of each reference model on the quiet machine (2 threads), per epoch and per schedule.

    .venv/bin/python benchmarks/train_speed.py     -> benchmarks/train-speed.json
Times 60 training batches of each stage (after 5 warm-up batches) and scales to the
`make train-reference` schedule (20 epochs; 3 more WAE-alone epochs for WAE models).
"""

import json
import tempfile
from pathlib import Path

import torch

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"resnet20": {}, "resnet20-resized": {}, "resnet20-dwt": {}, "wae-resnet20": {"wae_epochs": 3}}
BATCHES, STEPS_PER_EPOCH, EPOCHS = 60, 391, 20


def stage_seconds(arch: str, **kw) -> dict:
    """Seconds per batch of each stage, from the elapsed times train() records per epoch."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for limit in (5, 5 + BATCHES):
            cfg = TrainConfig(arch=arch, out=f"{tmp}/m-{limit}.pt", epochs=4, joint_epochs=1 if "wae" in arch else None,
                              limit_batches=limit, limit_eval=10, **kw)
            history = train(cfg, log=lambda s: None).metrics["history"]
            prev = 0.0
            for row in history:
                out.setdefault(row["stage"], {})[limit] = row["elapsed_s"] - prev
                prev = row["elapsed_s"]
    # the difference of the two runs is BATCHES batches without start-up costs
    return {s: (v[5 + BATCHES] - v[5]) / BATCHES for s, v in out.items()}


def main() -> None:
    torch.set_num_threads(2)
    rows = {}
    for arch, kw in MODELS.items():
        per_batch = stage_seconds(arch, **kw)
        joint = 5 if "wae" in arch else 0
        epochs = {"wae": kw.get("wae_epochs", 0), "classifier": EPOCHS - joint, "joint": joint}
        total = sum(per_batch.get(s, 0) * STEPS_PER_EPOCH * n for s, n in epochs.items())
        rows[arch] = {"seconds_per_batch": {k: round(v, 4) for k, v in per_batch.items()},
                      "schedule_minutes": round(total / 60, 1), "within_30_min": total <= 1800}
        print(arch, rows[arch], flush=True)
    (ROOT / "benchmarks/train-speed.json").write_text(json.dumps(
        {"what": "training time per batch (128 images) by stage, scaled to the make train-reference schedule; "
                 "2 threads, nothing else running", "command": "python benchmarks/train_speed.py",
         "results": rows, "environment": fingerprint(2)}, indent=2) + "\n")


if __name__ == "__main__":
    main()

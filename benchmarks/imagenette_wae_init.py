"""Haar start against random start for the Imagenette WAE: the issue's "measure both, choose by numbers".

    .venv/bin/python benchmarks/imagenette_wae_init.py HAAR.pt RANDOM.pt  -> benchmarks/imagenette-wae-init.json

Both checkpoints come from the same recipe except `--wae-init` and stage 1's Adam rate (3e-4
keeps the Haar split, a random start needs the 3e-3 it gets on CIFAR-10). The recorded file
compares the 10-epoch pair of commit 6e37afe (models/wae-vgg16-imagenette-nokd.pt and
models/wae-vgg16-imagenette-random.pt there); at 30 epochs the pair is
    make models/wae-vgg16-imagenette.pt models/wae-vgg16-imagenette-random.pt THREADS=1
Scored on all 3,925 val photos; the split's edge measures on 500 of them (benchmarks/ih_edges.py).
"""

import json
import sys
from pathlib import Path

from ih_edges import measure as edges

from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.training import checkpoint
from wae_deploy.training.train import evaluate

ROOT = Path(__file__).resolve().parent.parent


def row(path: str) -> dict:
    ck = checkpoint.load(path)
    tc = ck.provenance.get("train_config", {})
    data = load_split(default_data_root(ck.preprocessing), "test", ck.preprocessing)
    acc = evaluate(ck.build_model(), data, ck.preprocessing)
    stage1 = next(h for h in ck.metrics["history"] if h["stage"] == "wae")
    return {"wae_init": tc.get("wae_init"), "wae_lr": tc.get("wae_lr"), "top1": round(acc["top1"], 2),
            "top5": round(acc["top5"], 2), "top1_main_head": round(acc["top1_main_head"], 2),
            "psnr_after_stage1_db": round(stage1["psnr_db"], 1), **edges(path), "n": acc["n"],
            "train_minutes": round(ck.metrics.get("train_time_s", 0) / 60, 1)}


def main(paths: list[str]) -> None:
    rows = {Path(p).name: row(p) for p in paths}
    for name, r in rows.items():
        print(name, r)
    (ROOT / "benchmarks/imagenette-wae-init.json").write_text(json.dumps(
        {"what": "WAE-VGG16 (Imagenette, 128 px) from a Haar split vs from random weights, same recipe otherwise",
         "command": "python benchmarks/imagenette_wae_init.py " + " ".join(paths), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

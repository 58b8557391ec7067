"""Is a decomposition's high-frequency part edge-like? A number for what `inspect` pictures.

    .venv/bin/python benchmarks/ih_edges.py [CKPT ...]      -> benchmarks/ih-edges.json
Default checkpoints: the reference WAE, the no-energy WAE and the fixed-wavelet baseline. On
500 CIFAR-10 test images: the per-image correlation of |I_H - mean| (summed over channels)
with the gradient magnitude of the 2x2-averaged image, and with the detail that the 2x2
averaging loses (what a lossless split must put into I_H). The 9/7 wavelet's high bands are
the reference for "edge-like". The recorded run adds the reference WAEs from before the Haar
start (`--wae-init random`), taken from git:
    mkdir -p build/random-start
    git show 6a58162:models/wae-resnet20.pt > build/random-start/wae-resnet20.pt   (same for -noenergy)
"""

import json
import sys
from pathlib import Path

import torch

from wae_deploy import checkpoint
from wae_deploy.data import default_data_root, load_split
from wae_deploy.models.wae import edge_correlation

ROOT = Path(__file__).resolve().parent.parent

DEFAULT = ["models/wae-resnet20.pt", "models/wae-resnet20-noenergy.pt", "models/resnet20-dwt.pt"]


def measure(path: str) -> dict:
    ck = checkpoint.load(path)
    model = ck.build_model()
    data = load_split(default_data_root(ck.preprocessing), "test", ck.preprocessing).sample(500, seed=1)
    x = torch.from_numpy(ck.preprocessing.normalize(data.images))
    with torch.no_grad():
        low, high = model.decompose(x)
    r = edge_correlation(x, high)
    row = {"arch": ck.arch}
    if ck.arch.startswith("wae-"):  # checkpoints from before the option started from random weights
        row["wae_init"] = ck.provenance.get("train_config", {}).get("wae_init", "random")
    return {**row,
            "corr_with_gradient": round(float(r["gradient"].mean()), 3),
            "corr_with_lost_detail": round(float(r["lost_detail"].mean()), 3),
            "high_energy_share": round(float(high.pow(2).sum() / (low.pow(2).sum() + high.pow(2).sum())), 4)}


def main(paths: list[str]) -> None:
    rows = {p: measure(str(ROOT / p) if not Path(p).is_absolute() else p) for p in paths}
    for p, r in rows.items():
        print(p, r)
    (ROOT / "benchmarks/ih-edges.json").write_text(json.dumps(
        {"what": "per-image correlation of |I_H - mean| with edges (gradient of the 2x2-averaged image) and with "
                 "the detail 2x2 averaging loses, 500 CIFAR-10 test images",
         "command": "python benchmarks/ih_edges.py " + " ".join(paths), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)

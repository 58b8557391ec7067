"""Is a decomposition's high-frequency part edge-like? A number for what `inspect` pictures.

    .venv/bin/python benchmarks/ih_edges.py [CKPT ...]      -> benchmarks/ih-edges.json
Default checkpoints: the reference WAE, the no-energy WAE and the fixed-wavelet baseline. On
500 CIFAR-10 test images: the per-image correlation of |I_H - mean| (summed over channels)
with the gradient magnitude of the 2x2-averaged image, and with the detail that the 2x2
averaging loses (what a lossless split must put into I_H). The 9/7 wavelet's high bands are
the reference for "edge-like".
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from wae_deploy import checkpoint
from wae_deploy.data import default_data_root, load_split
from wae_deploy.models.assemble import create_model

ROOT = Path(__file__).resolve().parent.parent

DEFAULT = ["models/wae-resnet20.pt", "models/wae-resnet20-noenergy.pt", "models/resnet20-dwt.pt"]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]))


def measure(path: str) -> dict:
    ck = checkpoint.load(path)
    model = create_model(ck.arch, ck.config["num_classes"], ck.config["input_size"])
    model.load_state_dict(ck.state_dict)
    model.eval()
    data = load_split(default_data_root(ck.preprocessing), "test", ck.preprocessing).sample(500, seed=1)
    x = ck.preprocessing.normalize(data.images)
    with torch.no_grad():
        low, high = (t.numpy() for t in model.decompose(torch.from_numpy(x)))
    n, c, h, w = x.shape
    half = x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))
    gx, gy = np.zeros_like(half), np.zeros_like(half)
    gx[..., :, 1:-1] = half[..., :, 2:] - half[..., :, :-2]
    gy[..., 1:-1, :] = half[..., 2:, :] - half[..., :-2, :]
    gradient = np.sqrt((gx ** 2 + gy ** 2).sum(1))
    up = half.repeat(2, 2).repeat(2, 3)
    lost = np.sqrt(((x - up) ** 2).sum(1)).reshape(n, h // 2, 2, w // 2, 2).mean((2, 4))
    mag = np.sqrt(((high - high.mean((2, 3), keepdims=True)) ** 2).sum(1))
    return {"arch": ck.arch, "corr_with_gradient": round(_corr(mag, gradient), 3),
            "corr_with_lost_detail": round(_corr(mag, lost), 3),
            "high_energy_share": round(float((high ** 2).sum() / ((low ** 2).sum() + (high ** 2).sum())), 4)}


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

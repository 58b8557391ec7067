"""Is a decomposition's high-frequency part edge-like? A number for what `inspect` pictures.

    .venv/bin/python benchmarks/ih_edges.py [CKPT ...]      -> benchmarks/ih-edges.json
Default: the reference WAE, the no-energy WAE, the fixed-wavelet baseline and `haar-start`
(the untrained WAE as `--wae-init haar` sets it up, before any training step). On
500 CIFAR-10 test images: the per-image correlation of |I_H - mean| (summed over channels)
with the gradient magnitude of the 2x2-averaged image, and with the detail that the 2x2
averaging loses (what a lossless split must put into I_H); also the share of the energy in I_H
and, for a WAE, the decoder's reconstruction PSNR. The 9/7 wavelet's high bands are
the reference for "edge-like". The recorded run adds the reference WAEs from before the Haar
start (`--wae-init random`), taken from git:
    mkdir -p build/random-start
    git show 6a58162:models/wae-resnet20.pt > build/random-start/wae-resnet20.pt   (same for -noenergy)
"""

import json
import sys
from pathlib import Path

import torch

from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.training import checkpoint
from wae_deploy.training.models import create_model, default_preprocessing
from wae_deploy.training.models.wae import decomposition_stats, edge_correlation, init_haar

ROOT = Path(__file__).resolve().parent.parent

HAAR_START = "haar-start"  # not a file: the untrained WAE straight after init_haar
DEFAULT = ["models/wae-resnet20.pt", "models/wae-resnet20-noenergy.pt", "models/resnet20-dwt.pt", HAAR_START]


def _haar_start():
    """The untrained wae-resnet20 straight after init_haar: what stage 1 starts from."""
    model = create_model("wae-resnet20")
    init_haar(model.decomposer, model.decoder)
    return "wae-resnet20", model.eval(), default_preprocessing("wae-resnet20"), "haar (untrained)"


def _checkpoint(path: str):
    ck = checkpoint.load(path)
    # Checkpoints from before --wae-init started from random weights.
    init = ck.provenance.get("train_config", {}).get("wae_init", "random") if ck.arch.startswith("wae-") else None
    return ck.arch, ck.build_model(), ck.preprocessing, init


def measure(path: str) -> dict:
    arch, model, spec, init = _haar_start() if path == HAAR_START else _checkpoint(path)
    data = load_split(default_data_root(spec), "test", spec).sample(500, seed=1)
    x = torch.from_numpy(spec.normalize(data.images))
    with torch.no_grad():
        low, high = model.decompose(x)
        recon = model.decoder(low, high) if getattr(model, "decoder", None) is not None else None
    r = edge_correlation(x, high)
    row = {"arch": arch, **({"wae_init": init} if init else {}),
           "corr_with_gradient": round(float(r["gradient"].mean()), 3),
           "corr_with_lost_detail": round(float(r["lost_detail"].mean()), 3)}
    stats = decomposition_stats(x, low, high, x if recon is None else recon, spec.unit_std)
    row["high_energy_share"] = round(stats["high_energy_share"], 4)
    if recon is not None:
        row["psnr_db"] = round(stats["psnr_db"], 1)
    return row


def main(paths: list[str]) -> None:
    rows = {p: measure(p if p == HAAR_START or Path(p).is_absolute() else str(ROOT / p)) for p in paths}
    for p, r in rows.items():
        print(p, r)
    (ROOT / "benchmarks/ih-edges.json").write_text(json.dumps(
        {"what": "per-image correlation of |I_H - mean| with edges (gradient of the 2x2-averaged image) and with "
                 "the detail 2x2 averaging loses, 500 CIFAR-10 test images",
         "command": "python benchmarks/ih_edges.py " + " ".join(paths), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)

"""models/README.md: the CIFAR-10 counterpart of the paper's Tables 2 and 3, measured from the checkpoints.

    python -m wae_deploy.reference_table models > models/README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import checkpoint
from .data import default_data_root, load_split
from .models import create_model
from .models.flops import baseline_of, count
from .train import evaluate

# (row label, checkpoint stem, score) in the paper's order; "main" scores the classifier head alone.
ROWS = [
    ("Full resolution (baseline)", "resnet20", "sum"),
    ("Resized input (16x16)", "resnet20-resized", "sum"),
    ("Wavelet (9/7 DWT) + CNN", "resnet20-dwt", "sum"),
    ("Decomposition without energy loss (lambda = 0)", "wae-resnet20-noenergy", "sum"),
    ("I_L alone (WAE classifier head)", "wae-resnet20", "main"),
    ("WAE (ours: I_L + I_H)", "wae-resnet20", "sum"),
]


def measure(folder: Path) -> list[dict]:
    rows, cache = [], {}
    for label, stem, score in ROWS:
        path = folder / f"{stem}.pt"
        if not path.is_file():
            rows.append({"label": label, "stem": stem, "missing": True})
            continue
        ckpt = cache.setdefault(stem, checkpoint.load(path))
        model = ckpt.build_model()
        spec = ckpt.preprocessing
        size = ckpt.config["input_size"]
        data = load_split(default_data_root(spec), "test", spec)
        acc = evaluate(model, data, spec)
        if score == "main":  # the classifier head alone: the paper's "I_L alone" row
            acc = {"top1": acc["top1_main_head"], "top5": acc["top5_main_head"], "n": acc["n"]}
        macs = count(model, size)
        base_model = create_model(baseline_of(ckpt.arch), num_classes=ckpt.config["num_classes"], input_size=size)
        base = count(base_model, size)
        main_only = macs.macs.get("encoder", 0) + macs.macs.get("main", 0) if score == "main" else macs.total_macs
        rows.append({"label": label, "stem": stem, "top1": acc["top1"], "top5": acc["top5"], "n": acc["n"],
                     "macs": main_only, "speedup": base.total_macs / main_only,
                     "minutes": ckpt.metrics.get("train_time_s", 0) / 60,
                     "epochs": ckpt.provenance.get("train_config", {}).get("epochs")})
    return rows


def render(rows: list[dict]) -> str:
    out = ["# Reference checkpoints (CIFAR-10)", "",
           "Trained by `make train-reference` on the CIFAR-10 train split (50,000 JPEG re-encoded images) on a",
           "2-core x86 CPU; scored on the 10,000-image test split by `python -m wae_deploy.reference_table models`.",
           "Each checkpoint has a model card (`<name>.md`) with the exact command. Multiply-adds are per 32x32",
           "image; the theoretical speed-up is the full-resolution ResNet-20's multiply-adds over the model's.", "",
           "| model | checkpoint | top-1 % | top-5 % | top-1 err % | top-5 err % | MACs (M) | theoretical speed-up "
           "| train min |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("missing"):
            out.append(f"| {r['label']} | `{r['stem']}.pt` (not trained yet) | | | | | | | |")
            continue
        out.append(f"| {r['label']} | `{r['stem']}.pt` | {r['top1']:.2f} | {r['top5']:.2f} | {100 - r['top1']:.2f} | "
                   f"{100 - r['top5']:.2f} | {r['macs'] / 1e6:.2f} | {r['speedup']:.2f}x | {r['minutes']:.1f} |")
    full = next((r for r in rows if r["stem"] == "resnet20" and not r.get("missing")), None)
    wae = next((r for r in rows if r["label"].startswith("WAE") and not r.get("missing")), None)
    if full and wae:
        others = [r for r in rows if r["stem"] in ("resnet20-resized", "resnet20-dwt") and not r.get("missing")]
        out += ["", "## Goals", "",
                f"- full-resolution baseline at least 88% top-1: {full['top1']:.2f}% "
                f"({'met' if full['top1'] >= 88 else 'missed'})",
                f"- WAE within 2 points of it: {full['top1'] - wae['top1']:+.2f} points "
                f"({'met' if full['top1'] - wae['top1'] <= 2 else 'missed'})",
                f"- WAE at most a third of its multiply-adds: {wae['macs'] / full['macs']:.3f} of them "
                f"({'met' if wae['macs'] <= full['macs'] / 3 else 'missed'})",
                "- WAE above the resized and DWT baselines: " + ", ".join(
                    f"{r['stem']} {r['top1']:.2f}% ({'met' if wae['top1'] > r['top1'] else 'missed'})" for r in others)]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else Path("models")
    sys.stdout.write(render(measure(folder)))
    notes = folder / "NOTES.md"
    if notes.is_file():
        sys.stdout.write("\n" + notes.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])

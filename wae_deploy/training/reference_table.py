"""models/README.md: the counterpart of the paper's Tables 2 and 3 for each reference family.

    python -m wae_deploy.training.reference_table models > models/README.md

Every number is measured from the checkpoints in the folder on the family's evaluation split;
each family's notes (what was tried, which goals were missed) follow its table. Which checkpoint
fills which row is the registry's (core.registry: a suite, each checkpoint's role in it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from wae_deploy.core import registry
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.training import checkpoint
from wae_deploy.training.models import create_model
from wae_deploy.training.models.flops import baseline_of, count
from wae_deploy.training.train import evaluate


@dataclass(frozen=True)
class Table:
    title: str
    suite: str          # the registry's tag of the family's checkpoints
    about: str          # how the checkpoints were made and scored
    notes: str          # file beside the checkpoints with what was tried
    within: float       # goal: the WAE at most this many points below the baseline
    margin: float       # goal: the WAE this many points above the resized and DWT rows

    @property
    def net(self) -> str:
        """The family (resnet20, vgg16-imagenette): the other recipes' checkpoints are named after it."""
        return registry.entries(self.suite)[0].family

    def stem(self, role: str) -> str:
        """The checkpoint of a role (wae, baseline, resized, dwt, noenergy), without .pt."""
        return Path(registry.entries(self.suite, (role,))[0].file).stem


TABLES = [
    Table("Imagenette (VGG16-BN, 128 pixels)", "imagenette",
          "Trained by `make train-imagenette` on the Imagenette train split (9,469 photos, "
          "`../shared/data/imagenette-160`) on a 2-core x86 CPU; scored on all 3,925 val photos.",
          "NOTES-imagenette.md", within=1.5, margin=2.0),
    Table("CIFAR-10 (ResNet-20, 32 pixels)", "cifar10",
          "Trained by `make train-reference` on the CIFAR-10 train split (50,000 JPEG re-encoded images) "
          "on a 2-core x86 CPU; scored on the 10,000-image test split.",
          "NOTES.md", within=2.0, margin=0.0),
]


# (row label, registry role, score) in the paper's order; "main" scores the classifier head alone.
ROWS = [
    ("Full resolution (baseline)", "baseline", "sum"),
    ("Resized input (half side)", "resized", "sum"),
    ("Wavelet (9/7 DWT) + CNN", "dwt", "sum"),
    ("Decomposition without energy loss (lambda = 0)", "noenergy", "sum"),
    ("I_L alone (WAE classifier head)", "wae", "main"),
    ("WAE (ours: I_L + I_H)", "wae", "sum"),
]


# Other recipes, each its own row where its checkpoint exists (not the paper's rows).
RECIPE_ROWS = [
    ("WAE, distilled from the baseline (`--teacher`)", "wae-{net}-kd", "sum"),
    ("WAE from a random start (`--wae-init random`)", "wae-{net}-random", "sum"),
    ("Resized input, distilled from the baseline (`--teacher`)", "{net}-resized-kd", "sum"),
    ("Wavelet (9/7 DWT) + CNN, distilled from the baseline (`--teacher`)", "{net}-dwt-kd", "sum"),
]


def measure(folder: Path, table: Table) -> list[dict]:
    rows, cache = [], {}
    paper = [(label, table.stem(role), score) for label, role, score in ROWS]
    recipes = [(label, stem.format(net=table.net), score) for label, stem, score in RECIPE_ROWS]
    for label, stem, score in paper + [r for r in recipes if (folder / f"{r[1]}.pt").is_file()]:
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
                     "macs": main_only, "speedup": base.total_macs / main_only, "size": size,
                     "minutes": ckpt.metrics.get("train_time_s", 0) / 60,
                     "epochs": ckpt.provenance.get("train_config", {}).get("epochs")})
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def render(table: Table, rows: list[dict]) -> str:
    size = next((r["size"] for r in rows if not r.get("missing")), None)
    out = [f"## {table.title}", "", table.about + " Each checkpoint has a model card (`<name>.md`) with the exact "
           f"command. Multiply-adds are per {size}x{size} image; the theoretical speed-up is the full-resolution "
           "baseline's multiply-adds over the model's.", "",
           "| model | checkpoint | top-1 % | top-5 % | top-1 err % | top-5 err % | MACs (M) | theoretical speed-up "
           "| epochs | train min |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("missing"):
            out.append(f"| {r['label']} | `{r['stem']}.pt` (not trained yet) | | | | | | | | |")
            continue
        out.append(f"| {r['label']} | `{r['stem']}.pt` | {r['top1']:.2f} | {r['top5']:.2f} | {100 - r['top1']:.2f} | "
                   f"{100 - r['top5']:.2f} | {r['macs'] / 1e6:.2f} | {r['speedup']:.2f}x | {r['epochs'] or ''} | "
                   f"{r['minutes']:.1f} |")
    by_stem = {r["stem"]: r for r in rows if not r.get("missing")}
    full, wae = by_stem.get(table.stem("baseline")), by_stem.get(table.stem("wae"))
    if full and wae:
        wae = next(r for r in rows if r["label"].startswith("WAE") and not r.get("missing"))
        others = [by_stem[s] for s in (table.stem("resized"), table.stem("dwt")) if s in by_stem]
        gap = full["top1"] - wae["top1"]
        out += ["", "Goals:", "",
                f"- full-resolution baseline at least 88% top-1: {full['top1']:.2f}% ({_met(full['top1'] >= 88)})",
                f"- WAE within {table.within:g} points of it: {gap:+.2f} points ({_met(gap <= table.within)})",
                f"- WAE at most a third of its multiply-adds: {wae['macs'] / full['macs']:.3f} of them "
                f"({_met(wae['macs'] <= full['macs'] / 3)})",
                f"- WAE at least {table.margin:g} points above the resized and DWT baselines: " + ", ".join(
                    f"{r['stem']} {r['top1']:.2f}% ({_met(wae['top1'] - r['top1'] >= table.margin)})"
                    if table.margin else f"{r['stem']} {r['top1']:.2f}% ({_met(wae['top1'] > r['top1'])})"
                    for r in others)]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    folder = Path(argv[0]) if argv else Path("models")
    sys.stdout.write("# Reference checkpoints\n\nWritten by `python -m wae_deploy.training.reference_table models`.\n")
    for table in TABLES:
        sys.stdout.write("\n" + render(table, measure(folder, table)))
        notes = folder / table.notes
        if notes.is_file():
            sys.stdout.write("\n" + notes.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])

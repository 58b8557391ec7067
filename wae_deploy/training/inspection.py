"""`wae-deploy inspect`: see what a checkpoint's split does, and what it costs.

For a WAE checkpoint: one PNG with a row per image (the input, I_L, I_H, the decoder's
reconstruction and the amplified difference), each row with the reconstruction PSNR, the
share of the energy in I_H and how edge-like I_H is (models.wae.edge_correlation). For a DWT
checkpoint: the fixed wavelet's cA and its three high bands (there is no decoder, so no
reconstruction). For every checkpoint, baselines
included: parameters and multiply-adds per branch and the theoretical speed-up over the
full-resolution baseline.

The sub-images are in arbitrary units (a learned linear-ish map of normalised pixels):
each is contrast-stretched per image (1st-99th percentile) to be seen; the difference is
in [0, 1] pixel units, amplified by a fixed factor so rows and models compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.training import checkpoint

DIFF_GAIN = 10  # |I - I'| is multiplied by this before display (fixed: comparable across images)
STRETCH_PERCENTILES = (1, 99)

BRANCH_LABELS = {
    "wae": {"encoder": "WAE encoder (I -> I_L, I_H)", "main": "main network on I_L",
            "high": "high-frequency branch on I_H", "fusion": "fusion head"},
    "dwt": {"encoder": "9/7 wavelet, fixed (I -> cA, cH/cV/cD)", "main": "main network on cA",
            "high": "high-frequency branch on cH/cV/cD", "fusion": "fusion head"},
    "plain": {"main": "network, full resolution"},
    "resized": {"main": "network on the 2x-downsampled image"},
}


@dataclass
class Branch:
    key: str          # encoder | main | high | fusion
    label: str
    params: int
    macs: int


@dataclass
class ImageStats:
    name: str
    high_energy_share: float
    psnr_db: float | None  # None without a decoder (DWT)
    edge_corr: float       # correlation of |I_H| with the image's edges (models.wae.edge_correlation)


@dataclass
class InspectResult:
    checkpoint: Path
    arch: str
    kind: str                     # wae | dwt | plain | resized
    input_size: int
    branches: list[Branch]
    baseline_arch: str
    baseline_params: int
    baseline_macs: int
    decoder_params: int | None    # WAE only: trained, never deployed, not counted
    images: list[ImageStats] = field(default_factory=list)
    png: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(b.params for b in self.branches)

    @property
    def total_macs(self) -> int:
        return sum(b.macs for b in self.branches)

    @property
    def speedup(self) -> float:
        return self.baseline_macs / self.total_macs if self.total_macs else float("nan")


def si(n: float) -> str:
    """1234567 -> '1.23 M' (k, M, G)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def inspect(ckpt_path: str | Path, images: tuple[str, ...] | list[str] = (), out: str | Path | None = None,
            data: str | Path | None = None, count: int = 4) -> InspectResult:
    """Count the branches of `ckpt_path` and, for WAE/DWT checkpoints, draw the decomposition."""
    ckpt_path = Path(ckpt_path)
    ckpt = checkpoint.load(ckpt_path)
    from wae_deploy.training.models import parse_arch

    kind = parse_arch(ckpt.arch)[0]
    png = Path(out) if out else Path.cwd() / f"{ckpt_path.stem}-inspect.png"
    if kind in ("wae", "dwt"):
        if png.suffix.lower() != ".png":
            raise UserError(f"-o must name a .png file, got {png}")
        parent = png.parent if str(png.parent) else Path(".")
        if not parent.is_dir():
            raise UserError(f"output folder does not exist: {parent}")
        if count < 1:
            raise UserError(f"--count must be at least 1, got {count}")
        for f in images:  # fail on a bad --image before any work
            if not Path(f).is_file():
                raise UserError(f"image not found: {f}" if not Path(f).exists() else f"not an image file: {f}")

    model = ckpt.build_model()
    result = _counts(ckpt, model, kind)
    result.checkpoint = ckpt_path
    if kind not in ("wae", "dwt"):
        result.notes.append(f"{ckpt.arch} is a baseline ({kind}): there is no decomposition to picture; no PNG written")
        if images or out:
            result.notes.append("--image/-o are ignored for a baseline checkpoint")
        return result

    pixels, names = _images(ckpt, images, data, count)
    result.images, panels = _decompose(ckpt, model, pixels, names)
    if kind == "dwt":
        result.notes.append("fixed 9/7 wavelet: there is no decoder, so no reconstruction column; "
                            "the high bands are cH, cV, cD (each stretched)")
    _draw(result, panels, png)
    result.png = png
    return result


def _counts(ckpt, model, kind: str) -> InspectResult:
    from wae_deploy.training.models import create_model
    from wae_deploy.training.models.flops import baseline_of, count

    size = int(ckpt.config["input_size"])
    counts = count(model, size)
    labels = BRANCH_LABELS[kind]
    branches = [Branch(k, labels.get(k, k), counts.params.get(k, 0), counts.macs.get(k, 0))
                for k in ("encoder", "main", "high", "fusion") if k in counts.macs or k in counts.params]
    base_arch = baseline_of(ckpt.arch)
    base = count(create_model(base_arch, num_classes=int(ckpt.config["num_classes"]), input_size=size), size)
    decoder = getattr(model, "decoder", None)
    return InspectResult(
        checkpoint=Path(), arch=ckpt.arch, kind=kind, input_size=size, branches=branches,
        baseline_arch=base_arch, baseline_params=base.total_params, baseline_macs=base.total_macs,
        decoder_params=sum(p.numel() for p in decoder.parameters()) if decoder is not None else None)


def _images(ckpt, files, data, count: int) -> tuple[np.ndarray, list[str]]:
    """N x H x W x 3 uint8 (in the spec's channel order) and a name per image."""
    spec = ckpt.preprocessing
    if files:
        return np.stack([spec.load_image(f) for f in files]), [Path(f).name for f in files]
    from wae_deploy.runtime.data import default_data_root, load_split

    root = Path(data) if data else default_data_root(spec)
    split = load_split(root, "test", spec)
    idx = first_of_each_class(split.labels, count)
    def label(i):
        c = int(split.labels[i])
        return split.classes[c] if 0 <= c < len(split.classes) else str(c)

    names = [f"{label(i)} (test #{i})" for i in idx]
    return split.images[idx], names


def first_of_each_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first image of each class in turn, then the second of each, ...

    Evaluation folders are often sorted by class: the plain first `count` images would all
    be airplanes. This order stays deterministic and shows different content.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise UserError("the evaluation split has no images")
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    key = rank * (int(labels.max()) + 1) + (labels - labels.min())
    return np.argsort(key, kind="stable")[:count]


def _decompose(ckpt, model, pixels: np.ndarray, names: list[str]):
    import torch

    from wae_deploy.training.models.wae import decomposition_stats, edge_correlation

    spec = ckpt.preprocessing
    x = torch.from_numpy(spec.normalize(pixels))
    with torch.no_grad():
        low, high = model.decompose(x)
        recon = model.decoder(low, high) if getattr(model, "decoder", None) is not None else None
    edges = edge_correlation(x, high)["gradient"]
    stats, panels = [], []
    for i, name in enumerate(names):
        sl = slice(i, i + 1)
        s = decomposition_stats(x[sl], low[sl], high[sl], recon[sl] if recon is not None else x[sl],
                                spec.unit_std)
        psnr = s["psnr_db"] if recon is not None else None
        stats.append(ImageStats(name, s["high_energy_share"], psnr, float(edges[i])))
        learned = recon is not None
        row = {"input": _to_display(x[i], spec), "low": stretch(low[i].numpy(), per_channel=learned)}
        if recon is None:  # DWT: 9 channels = colour c x band b at c * 3 + b (cH, cV, cD)
            h = high[i].numpy()
            for b, band in enumerate(("cH", "cV", "cD")):
                row[band] = stretch(h[[b, 3 + b, 6 + b]])
        else:
            row["high"] = magnitude(high[i].numpy())
            rec = _to_display(recon[i], spec)
            row["recon"] = rec
            row["diff"] = np.clip(np.abs(row["input"] - rec) * DIFF_GAIN, 0, 1)
        panels.append(row)
    return stats, panels


def _to_display(t, spec) -> np.ndarray:
    """One normalised 3 x H x W tensor -> H x W x 3 RGB floats in [0, 1]."""
    a = t.numpy().astype(np.float64).transpose(1, 2, 0)
    a = (a * np.asarray(spec.std) + np.asarray(spec.mean)) / (255 * spec.scale)
    if spec.channel_order == "BGR":
        a = a[..., ::-1]
    return np.clip(a, 0, 1)


def magnitude(chw: np.ndarray) -> np.ndarray:
    """Where a sub-image departs from its mean, as stretched grey: |I_H - mean| over channels.

    I_H's three channels are arbitrary mixes; its local energy is what shows whether it
    holds edges and detail, so that is what is drawn.
    """
    a = np.asarray(chw, np.float64)
    m = np.sqrt(((a - a.mean(axis=(1, 2), keepdims=True)) ** 2).sum(0, keepdims=True))
    return stretch(np.repeat(m, 3, axis=0))


def stretch(chw: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """C x H x W (C = 3) -> H x W x 3 in [0, 1]: the 1st-99th percentile mapped to 0-1.

    One range for all channels keeps the colour balance of a sub-image that is RGB (the
    wavelet's bands). The learned I_L and I_H are three channels of the encoder's own
    choosing, with their own offsets and scales: they are stretched channel by channel.
    """
    a = np.asarray(chw, np.float64)
    if per_channel:
        return np.stack([stretch(c[None])[..., 0] for c in a], axis=-1)
    lo, hi = np.percentile(a, STRETCH_PERCENTILES)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.full(a.shape[1:] + (3,), 0.5)
    return np.clip((a - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)


def _draw(result: InspectResult, panels: list[dict], png: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError(f"inspect needs matplotlib, which is not installed: {install_command('matplotlib')}") from e

    wae = result.kind == "wae"
    columns = ["input", "low", "high", "recon", "diff"] if wae else ["input", "low", "cH", "cV", "cD"]
    rows = len(panels)
    fig = Figure(figsize=(2.1 * len(columns), 2.3 * rows + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r, (row, st) in enumerate(zip(panels, result.images)):
        share = f"{100 * st.high_energy_share:.3g}%"
        titles = {
            "input": st.name,
            "low": "I_L (stretched)" if wae else "cA (stretched)",
            "high": f"|I_H| (stretched)\n{share} of energy, edge r {st.edge_corr:.2f}",
            "recon": f"reconstruction I'\nPSNR {st.psnr_db:.1f} dB" if st.psnr_db is not None else "",
            "diff": f"|I - I'| x{DIFF_GAIN}",
            "cH": f"cH (stretched)\n{share} of energy, edge r {st.edge_corr:.2f}",
            "cV": "cV (stretched)", "cD": "cD (stretched)",
        }
        for c, key in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(row[key], interpolation="nearest")
            ax.set_title(titles[key], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    n = result.input_size
    share = 100 * np.mean([s.high_energy_share for s in result.images])
    edges = np.mean([s.edge_corr for s in result.images])
    if wae:
        psnr = np.mean([s.psnr_db for s in result.images])
        head = (f"{result.checkpoint.name} ({result.arch}, {n}x{n}): learned split; "
                f"mean PSNR {psnr:.1f} dB, I_H energy {share:.3g}%, edge r {edges:.2f}")
    else:
        head = (f"{result.checkpoint.name} ({result.arch}, {n}x{n}): fixed 9/7 wavelet, no decoder "
                f"(no reconstruction); high bands hold {share:.3g}% of the energy, edge r {edges:.2f}")
    fig.suptitle(head, fontsize=9)
    with atomic.atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")


def render_table(result: InspectResult):
    """A rich Table of parameters and multiply-adds per branch, with the baseline."""
    from rich.table import Table
    from rich.text import Text

    n = result.input_size
    table = Table(title=Text(f"{result.arch} at {n}x{n}: per-branch cost (one image)"),
                  caption=Text(f"theoretical speed-up over {result.baseline_arch}: {result.speedup:.2f}x"))
    table.add_column("branch")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("share", justify="right")
    total = result.total_macs or 1
    for b in result.branches:
        table.add_row(Text(b.label), si(b.params), si(b.macs), f"{100 * b.macs / total:.1f}%")
    table.add_row(Text("total (deployed)"), si(result.total_params), si(result.total_macs), "100.0%",
                  end_section=True)
    table.add_row(Text(f"baseline {result.baseline_arch} (full resolution)"), si(result.baseline_params),
                  si(result.baseline_macs), "")
    return table


def summary_lines(result: InspectResult) -> list[str]:
    """The plain-text lines printed after the table."""
    lines = []
    if result.decoder_params is not None:
        lines.append(f"decoder (training only, not deployed, not counted): {si(result.decoder_params)} params")
    for s in result.images:
        psnr = f"reconstruction PSNR {s.psnr_db:5.1f} dB, " if s.psnr_db is not None else ""
        lines.append(f"  {s.name}: {psnr}energy in the high-frequency part {100 * s.high_energy_share:.3g}%, "
                     f"edge correlation {s.edge_corr:.2f}")
    if result.images:
        lines.append("edge correlation: of |I_H| with the gradient of the 2x2-averaged image (a wavelet's high "
                     "bands: ~0.35-0.6, noise: 0)")
    lines += [f"note: {n}" for n in result.notes]
    if result.png is not None:
        lines.append(f"wrote {result.png}")
    return lines

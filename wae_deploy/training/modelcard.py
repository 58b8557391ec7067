"""Model cards: what a checkpoint is, how well it does, what it costs, and how it was made."""

from __future__ import annotations

from pathlib import Path

from wae_deploy.core import atomic
from wae_deploy.training.checkpoint import Checkpoint
from wae_deploy.training.models import create_model
from wae_deploy.training.models.flops import baseline_of, count


def _count(n, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n if n is not None else '?'} {noun}s"


def render(ckpt: Checkpoint, path: str | Path, command: str) -> str:
    size = ckpt.config["input_size"]
    model = ckpt.build_model()
    counts = count(model, size)
    base = count(create_model(baseline_of(ckpt.arch), num_classes=ckpt.config["num_classes"], input_size=size), size)
    test = ckpt.metrics.get("test", {})
    lines = [f"# {Path(path).name}", "",
             f"- architecture: `{ckpt.arch}` ({ckpt.config['num_classes']} classes, {size}x{size} input)"]
    source = ckpt.provenance.get("source")
    if source:  # converted weights: say where they came from and what nobody here has checked
        lines += [
            f"- weights: converted from `{source}` ({ckpt.provenance.get('source_format')}, "
            f"{ckpt.provenance.get('source_layout')} layout), sha256 `{ckpt.provenance.get('source_sha256')}`; "
            "not trained by wae-deploy",
            "- accuracy: not measured (unknown until `wae-deploy bench --models` scores it on labelled images)",
            "- training data, recipe and (for a WAE) lambda and gamma: unknown",
            *([f"- note: {ckpt.provenance['note']}"] if ckpt.provenance.get("note") else []),
        ]
    else:
        lines += [
            f"- energy weight lambda: {ckpt.config.get('lambda_energy')}, gamma: {ckpt.config.get('gamma')}"
            if ckpt.arch.startswith("wae-") else "- trained with cross-entropy (no WAE losses)",
            f"- test top-1: {test.get('top1', float('nan')):.2f}%, top-5: {test.get('top5', float('nan')):.2f}% "
            f"({test.get('n', 0)} images)",
        ]
        tc = ckpt.provenance.get("train_config", {})
        if ckpt.arch.startswith("wae-") and "wae_init" in tc:
            lines.append(f"- split start: {tc['wae_init']} (stage 1: {_count(tc.get('wae_epochs'), 'epoch')}, Adam "
                         f"{tc.get('wae_lr', 3e-3):g})")
        if tc.get("teacher"):
            lines.append(f"- distilled from `{Path(tc['teacher']).name}` (weight {tc.get('kd_weight', 1.0):g}, "
                         f"temperature {tc.get('kd_temp', 4.0):g}) in the classifier and joint stages")
    if "top1_main_head" in test:
        lines.append(f"- classifier head alone (I_L alone): top-1 {test['top1_main_head']:.2f}%")
    if "psnr_db" in test:
        lines.append(f"- reconstruction PSNR {test['psnr_db']:.1f} dB; share of energy in I_H "
                     f"{100 * test['high_energy_share']:.3f}%")
    lines += [
        f"- multiply-adds: {counts.total_macs / 1e6:.2f} M ("
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.macs.items())
        + f"); parameters {counts.total_params / 1e6:.3f} M",
        f"- theoretical speed-up over `{baseline_of(ckpt.arch)}`: {base.total_macs / counts.total_macs:.2f}x",
        *([] if source else [f"- training time: {ckpt.metrics.get('train_time_s', 0) / 60:.1f} min on "
                             f"{_count(ckpt.provenance.get('threads'), 'thread')}; "
                             f"data: `{ckpt.provenance.get('data', '?')}`"]),
        f"- preprocessing: resize {ckpt.preprocessing.resize}, crop {ckpt.preprocessing.crop}, "
        f"mean {list(ckpt.preprocessing.mean)}, std {list(ckpt.preprocessing.std)}, {ckpt.preprocessing.channel_order}",
        "", "Made with:", "", f"    {command}", "",
    ]
    return "\n".join(lines)


def write(ckpt: Checkpoint, path: str | Path, command: str) -> Path:
    card = Path(path).with_suffix(".md")
    atomic.write_text(card, render(ckpt, path, command))
    return card

"""`wae-deploy build`."""

from __future__ import annotations

import click


@click.command()
@click.argument("model", type=click.Path())
@click.option("--target", "target_name", required=True, help="ort, openvino, trt or torch.")
@click.option("--precision", required=True, type=click.Choice(["fp32", "fp16", "bf16", "int8"]))
@click.option("--calib", type=click.Path(), help="Calibration images [default: the model's training split].")
@click.option("--calib-size", default=300, show_default=True)
@click.option("--max-accuracy-drop", type=float,
              help="Top-1 points INT8 may lose on held-out photos [default: 1% of the FP32 top-1].")
@click.option("--no-accuracy-guard", is_flag=True,
              help="Do not score INT8 against FP32 (unlabelled calibration data); the manifest says so.")
@click.option("--eval", "eval_dir", type=click.Path(),
              help="Held-out labelled images for the guard [default: calibration photos not in the sample].")
@click.option("--eval-size", type=click.IntRange(1), help="Held-out photos the guard scores on [default: 5000].")
@click.option("--keep-float", multiple=True,
              help="Part (encoder-first, encoder, high, fusion) or node pattern kept in float.")
@click.option("--cpu", "cpu_class", help="CPU class the INT8 build is for: avx2, avx512, avx512-vnni, avx-vnni "
                                         "or amx [default: this host's].")
@click.option("-o", "--out", type=click.Path(), help="Artifact folder [default: MODEL stem + .TARGET-PRECISION].")
def build(model, target_name, precision, calib, calib_size, max_accuracy_drop, no_accuracy_guard, eval_dir,
          eval_size, keep_float, cpu_class, out):
    """Build a runtime artifact (FP32/FP16/BF16/INT8) from an exported ONNX model.

    An INT8 build keeps at least 99% of the FP32 top-1 on held-out photos by default, keeping
    parts in float until it does (exit 1, nothing written, when it cannot).
    """
    from wae_deploy.convert.build import build as run

    art = run(model, target_name, precision, out, calib_dir=calib, calib_size=calib_size,
              max_accuracy_drop=max_accuracy_drop, eval_dir=eval_dir, keep_float=tuple(keep_float), cpu=cpu_class,
              accuracy_guard=not no_accuracy_guard, log=click.echo,
              **({"eval_size": eval_size} if eval_size else {}))  # the default is build.EVAL_SIZE's
    seconds = art.manifest["build_seconds"]
    click.echo(f"wrote {art.path} ({art.target} {art.precision}"
               + (f", {seconds:.1f} s)" if seconds is not None else ")"))
    for kind, counts in art.manifest["executed"].items():
        click.echo(f"  {kind}: {counts}")
    if art.manifest["note"]:
        click.echo(f"  note: {art.manifest['note']}")
    bound = art.manifest["accuracy_bound"]
    if bound and bound.get("guarded"):
        last = bound["steps"][-1]
        kept = last["keep_float"] if isinstance(last["keep_float"], str) else ", ".join(last["keep_float"]) or "nothing"
        click.echo(f"  accuracy guard: top-1 {last['top1']:.2f}% against FP32 {bound['fp32_top1']:.2f}% on "
                   f"{bound['held_out']} held-out photos (drop {last['drop']:+.2f}, bound {bound['max_drop']:g}); "
                   f"in float: {kept}")

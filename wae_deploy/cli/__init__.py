"""The wae-deploy command line: parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from wae_deploy.core import __version__
from wae_deploy.core.errors import UserError

# Packages of the optional installs (pyproject.toml), by the extra that brings them.
EXTRAS = {"torch": "train", "onnxscript": "train", "onnxslim": "train", "openvino": "openvino", "nncf": "openvino",
          "matplotlib": "plot"}


class Group(click.Group):
    """Turns UserError (and stray OS errors) into one line on stderr and a documented exit status."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # no command at all: the help text, as usual
        except click.UsageError as e:  # a bad option before the command
            click.echo(f"error: {_one_line(e.format_message())} (see '{info_name} --help')", err=True)
            sys.exit(e.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {_one_line(str(e))}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            # Usage errors too (bad option values, missing arguments, unknown commands): one line, exit 2.
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            click.echo(f"error: {_one_line(e.format_message())}{hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug must still not spill a traceback on users
            if isinstance(e, ModuleNotFoundError) and e.name in EXTRAS:  # a base install running `export`
                click.echo(f"error: this command needs {e.name}: pip install 'wae-deploy[{EXTRAS[e.name]}]'", err=True)
                sys.exit(2)
            if os.environ.get("WAE_DEBUG"):
                raise
            click.echo(f"error: internal error: {type(e).__name__}: {_one_line(str(e))} "
                       "(set WAE_DEBUG=1 for a traceback)", err=True)
            sys.exit(3)


def _one_line(message: str) -> str:
    """Messages from libraries can span lines; the user gets one."""
    return " ".join(message.split())


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wae-deploy")
def main():
    """Train, export, build and benchmark WAE-accelerated image classifiers."""


@main.command()
@click.option("--arch", required=True, help="e.g. wae-vgg16-imagenette, vgg16-imagenette, wae-resnet20, "
              "resnet20-resized, resnet20-dwt (wae-deploy flops --list names them all).")
@click.option("--data", type=click.Path(),
              help="Data root [default: $WAE_DATA, the model's data set under ../shared/data, or a download].")
@click.option("-o", "--out", type=click.Path(), help="Checkpoint path [default: ./<arch>.pt].")
@click.option("--epochs", default=20, show_default=True, help="Classifier + joint epochs.")
@click.option("--wae-epochs", default=3, show_default=True, help="Stage 1: WAE alone (WAE models only).")
@click.option("--joint-epochs", type=int, help="Stage 3: joint fine-tuning [default: a quarter of --epochs].")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.2, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--lambda", "lambda_energy", default=1.0, show_default=True,
              help="Weight of the energy loss on I_H; 0 is the paper's no-energy ablation.")
@click.option("--wae-init", type=click.Choice(["haar", "random"]), default="haar", show_default=True,
              help="Start the WAE from a Haar split, or from random weights.")
@click.option("--gamma", default=1e-3, show_default=True, help="Weight of the WAE loss in joint training.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA where present, else the CPU.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision. auto: bf16 on a CPU with AVX512-BF16 or a GPU that has it, else fp16 "
              "with loss scaling on CUDA, else FP32.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Train with DDP on N local processes (through torch.distributed.run; or launch "
              "'torchrun ... -m wae_deploy train' yourself).")
@click.option("--sync-bn", is_flag=True, help="Distributed: BatchNorm statistics over the global batch.")
@click.option("--threads", type=int, help="Torch threads [default: all cores].")
@click.option("--wae-lr", default=3e-3, show_default=True, help="Adam learning rate of stage 1 (the WAE alone).")
@click.option("--eval-every", default=1, show_default=True, type=click.IntRange(1),
              help="Score the test split every N epochs (and at the end of each stage).")
@click.option("--half-weights", is_flag=True, help="Store the weights in FP16 (half the file; loaded as FP32).")
@click.option("--teacher", type=click.Path(), help="Distil from this checkpoint's logits (same classes and input).")
@click.option("--kd-weight", default=1.0, show_default=True, help="Weight of the distillation loss.")
@click.option("--kd-temp", default=4.0, show_default=True, help="Softmax temperature of the distillation loss.")
@click.option("--stream", is_flag=True, help="Decode an ImageNet layout (train/<class>/, val/) on the fly in "
              "worker processes instead of into memory (data sets that do not fit in memory).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0),
              help="--stream: decoding processes per training process.")
@click.option("--max-bad-images", default=10, show_default=True, type=click.IntRange(0),
              help="--stream: undecodable images are skipped with a warning up to this many, then the run fails.")
@click.option("--limit-batches", type=int, hidden=True)
@click.option("--limit-eval", type=int, hidden=True)
@click.option("--step-log", type=click.Path(), hidden=True, help="Append each step's global-batch loss (JSON lines).")
@click.option("--resume", is_flag=True, help="Continue from <out>.train-state.pt.")
def train(arch, data, out, threads, nproc, **kw):
    """Train a WAE model (three stages) or a baseline; writes a checkpoint and a model card."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wae_deploy.training import distributed, modelcard
    from wae_deploy.training.models import parse_arch
    from wae_deploy.training.train import TrainConfig
    from wae_deploy.training.train import train as run

    parse_arch(arch)
    if nproc != 1 and "WORLD_SIZE" not in os.environ:
        # Checked here, before N processes start, so a bad request is one line, not N.
        distributed.check_nproc(nproc, distributed.resolve_device(kw["device"]))
        distributed.launch(nproc, _without_nproc(sys.argv[1:]))
        return
    if threads:
        torch.set_num_threads(threads)
    out = out or f"{arch}.pt"
    cfg = TrainConfig(arch=arch, out=out, data=data, **kw)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as progress:
        ckpt = run(cfg, log=progress.console.print if sys.stderr.isatty() else click.echo, progress=progress)
    if ckpt is None:  # a rank other than 0: rank 0 writes the files
        return
    command = "wae-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = modelcard.write(ckpt, out, command)
    click.echo(f"wrote {out} and {card}")


def _without_nproc(args: list[str]) -> list[str]:
    """The command line for every rank: this one less --nproc (each rank is one process)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@main.command()
@click.argument("arch", required=False)
@click.option("--size", type=int, help="Input size [default: the architecture's].")
def flops(arch, size):
    """Multiply-adds and parameters per branch, and the theoretical speed-up over the baseline."""
    from wae_deploy.training.models import create_model, list_archs, parse_arch
    from wae_deploy.training.models.flops import baseline_of, count

    for name in [arch] if arch else list_archs():
        family = parse_arch(name)[1]
        s = size or family.preprocessing.crop
        c = count(create_model(name, input_size=s), s)
        base = count(create_model(baseline_of(name), input_size=s), s)
        branches = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in c.macs.items())
        click.echo(f"{name:<18} {s:>4}px  {c.total_macs / 1e9:7.3f} G MACs ({branches})  "
                   f"{c.total_params / 1e6:7.2f} M params  speed-up {base.total_macs / c.total_macs:.2f}x")


class BatchType(click.ParamType):
    name = "dynamic|N"

    def convert(self, value, param, ctx):
        if value in (None, "dynamic") or isinstance(value, int):
            return None if value == "dynamic" else value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'dynamic' nor an integer", param, ctx)
        if n < 1:
            self.fail(f"batch must be positive, got {n}", param, ctx)
        return n


def _weights_options(f):
    """Options that name the model for weights wae-deploy did not write (export and convert)."""
    options = [
        click.option("--arch", help="The model the weights are for (a state_dict, .safetensors or .caffemodel); "
                     "a wae-deploy checkpoint names its own."),
        click.option("--num-classes", type=click.IntRange(1), help="[default: the architecture's]"),
        click.option("--input-size", type=click.IntRange(2), help="[default: the preprocessing's crop]"),
        click.option("--preprocessing", "preprocessing_spec", metavar="imagenet|cifar10|FILE.json",
                     help="[default: the architecture's]"),
        click.option("--classes", type=click.Path(), help="Class names, one per line [default: 0..N-1]."),
        click.option("--prototxt", type=click.Path(), help="The Caffe net definition beside a .caffemodel."),
        click.option("--allow-nonfinite", is_flag=True, help="Take NaN/Inf weights with a warning."),
        click.option("--verbose", is_flag=False, flag_value="-", metavar="[=FILE]",
                     help="On a mismatch, list every key (on stderr, or in FILE)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _foreign(weights, arch, prototxt, verbose, **kw):
    """A checkpoint in memory from foreign weights; on a mismatch the full key list goes where --verbose says."""
    from wae_deploy.core import atomic
    from wae_deploy.training.weights import WeightsMismatch, foreign_checkpoint

    state, fmt = None, None
    if Path(weights).suffix == ".caffemodel" or prototxt:
        from wae_deploy.training import caffe

        arch = arch or caffe.ARCH
        state, fmt = caffe.read(weights, prototxt, arch), "caffemodel"
        classes, size = caffe.net_config(prototxt)
        kw["num_classes"], kw["input_size"] = kw["num_classes"] or classes, kw["input_size"] or size
    if not arch:
        raise UserError(f"{weights}: name the model these weights are for with --arch NAME")
    try:
        ckpt = foreign_checkpoint(weights, arch, state=state, source_format=fmt,
                                  warn=lambda m: click.echo(m, err=True), **kw)
        if fmt == "caffemodel":
            ckpt.provenance["note"] = caffe.DECODER_NOTE
        return ckpt
    except WeightsMismatch as e:
        if verbose == "-":
            for line in e.details:
                click.echo(line, err=True)
        elif verbose:
            atomic.write_text(verbose, "\n".join(e.details) + "\n")
        raise


@main.command()
@click.argument("ckpt", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="ONNX path [default: CKPT with .onnx].")
@click.option("--opset", default=18, show_default=True, type=int)
@click.option("--batch", default="dynamic", type=BatchType(), show_default=True, help="'dynamic' or a fixed batch.")
@click.option("--simplifier", default="onnxslim", show_default=True,
              type=click.Choice(["onnxslim", "onnxsim", "none"]))
@click.option("--verify", default=64, show_default=True, help="Real images compared against PyTorch (0: skip).")
@click.option("--data", type=click.Path(), help="Images for verification [default: the model's evaluation set].")
@click.option("--parts", is_flag=True, help="Also export the encoder alone (outputs I_L and I_H).")
@_weights_options
def export(ckpt, out, opset, batch, simplifier, verify, data, parts, arch, prototxt, verbose, **weights):
    """Export a checkpoint, or plain weights with --arch, to a simplified, verified ONNX model."""
    from wae_deploy.training.export import export as run

    foreign = None
    if arch or prototxt or Path(ckpt).suffix in (".safetensors", ".caffemodel"):
        foreign = _foreign(ckpt, arch, prototxt, verbose, **weights)
    result = run(ckpt, out, opset=opset, batch=batch, simplifier=simplifier, verify=verify, data=data, parts=parts,
                 ckpt=foreign)
    m = result.manifest
    click.echo(f"wrote {result.path} ({m['bytes'] / 1e6:.2f} MB, opset {m['opset']}, batch {m['batch']}) "
               f"in {m['seconds']:.1f} s")
    click.echo(f"  nodes {m['nodes_before']} -> {m['nodes_after']} ({m['simplifier']})")
    if m["parity"]:
        p = m["parity"]
        click.echo(f"  ONNX Runtime vs PyTorch on {p['n']} real images: max |diff| {p['max_abs_diff']:.1e}, "
                   f"top-1 agreement {100 * p['top1_agreement']:.1f}%")
    if m["note"]:
        click.echo(f"  note: {m['note']}")
    for part in m["parts"]:
        click.echo(f"  wrote {Path(result.path).with_name(part)}")
    click.echo(f"  manifest {Path(result.path).with_suffix('.json')}")


@main.command()
@click.argument("weights", type=click.Path())
@click.option("-o", "--out", type=click.Path(), required=True, help="The wae-deploy checkpoint to write (.pt).")
@_weights_options
def convert(weights, out, arch, prototxt, verbose, **kw):
    """Turn foreign weights (state_dict, .safetensors, the authors' .caffemodel) into a wae-deploy checkpoint.

    The checkpoint names its architecture, preprocessing and classes and the source's sha256, so
    export, build and bench need no flags; a model card (.md) beside it says what is not known.
    """
    from wae_deploy.training import checkpoint, modelcard

    if Path(out).resolve() == Path(weights).resolve():
        raise UserError(f"-o {out} would overwrite the weights being converted")
    if Path(out).suffix == ".md":
        raise UserError(f"-o {out}: the model card is written beside the checkpoint; name the checkpoint .pt")
    ckpt = _foreign(weights, arch, prototxt, verbose, **kw)
    checkpoint.save(ckpt, out)
    card = modelcard.write(ckpt, out, "wae-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    click.echo(f"wrote {out} ({ckpt.arch}, {ckpt.config['num_classes']} classes, "
               f"{ckpt.provenance['source_layout']} layout) and {card}")


@main.command(name="inspect")
@click.argument("ckpt", type=click.Path())
@click.option("--image", "images", multiple=True, type=click.Path(), metavar="FILE",
              help="An image to decompose (repeatable) [default: images of the evaluation split].")
@click.option("-o", "--out", type=click.Path(), help="PNG path [default: ./<ckpt stem>-inspect.png].")
@click.option("--data", type=click.Path(), help="Data root for the evaluation split [default: the model's].")
@click.option("--count", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Images from the evaluation split without --image (the first of each class in turn).")
def inspect_command(ckpt, images, out, data, count):
    """Picture a WAE checkpoint's split (I_L, I_H, reconstruction) and its cost per branch."""
    from rich.console import Console

    from wae_deploy.training.inspection import inspect as run
    from wae_deploy.training.inspection import render_table, summary_lines

    result = run(ckpt, images=images, out=out, data=data, count=count)
    Console(highlight=False).print(render_table(result))
    for line in summary_lines(result):
        click.echo(line)


@main.command()
@click.option("--target", "targets", multiple=True, metavar="T[:PRECISION]",
              help="A target that must be ready (repeatable): torch, ort, openvino, trt, optionally :fp16 etc.; "
                   "exit 1 when one is not.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(targets, as_json):
    """What this machine can run: each target and precision, and for what it cannot, why and the fix."""
    from wae_deploy.runtime.doctor import diagnose, footer_lines, header_lines, render_table

    report = diagnose(targets)
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        from rich.console import Console

        for line in header_lines(report):
            click.echo(line)
        wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120  # CI logs: no needless wrapping
        Console(highlight=False, width=wide).print(render_table(report))
        for line in footer_lines(report):
            click.echo(line)
    sys.exit(report.exit_code)


@main.command()
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


@main.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--target", "target_name", default="auto", show_default=True,
              help="auto: the runtime the artifact was built for (ONNX Runtime for an .onnx model).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Classes shown per image.")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1), help="Images per inference call.")
@click.option("--threads", type=click.IntRange(1), help="Runtime threads [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict(model, images, target_name, top_k, batch, threads, as_json):
    """Classify images (files or folders) with an artifact or an exported ONNX model."""
    import json
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wae_deploy.runtime.predict import image_files, load, predict_files

    files = list(image_files(images))
    bar = sys.stderr.isatty() and len(files) > 1
    failed = 0
    with load(model, target_name, threads) as m, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                     console=Console(stderr=True, highlight=False), transient=True, disable=not bar) as progress:
        def warn(line: str) -> None:
            if bar:  # through the bar's console while it is drawn, so the line does not tear it
                progress.console.print(line, markup=False)
            else:
                click.echo(line, err=True)

        task = progress.add_task("classifying", total=len(files))
        t0 = time.perf_counter()
        for result in predict_files(m, files, top_k, batch):
            progress.advance(task)
            if isinstance(result, UserError):
                if len(files) == 1:
                    raise result
                failed += 1
                warn(f"error: {_one_line(str(result))}")
            elif as_json:
                click.echo(json.dumps(result.to_dict()))
            else:
                click.echo(f"{result.source}: " + ", ".join(f"{c} {p:.3f}" for c, p in result.top))
        seconds = time.perf_counter() - t0
    done = len(files) - failed
    if len(files) > 1:
        click.echo(f"{done} images in {seconds:.2f} s ({done / seconds:.1f} images/s, decoding included) on "
                   f"{m.target} {m.precision}" + (f"; {failed} unreadable" if failed else ""), err=True)
    if failed:
        raise UserError(f"{failed} of {len(files)} images could not be read (listed above)")


def _csv(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return [kind(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {kind.__name__}") from None
    return parse


SUITES = {
    "cifar10": ["models/wae-resnet20.pt", "models/resnet20.pt", "models/resnet20-resized.pt",
                "models/resnet20-dwt.pt", "models/wae-resnet20-noenergy.pt"],
    "imagenette": ["models/wae-vgg16-imagenette.pt", "models/vgg16-imagenette.pt",
                   "models/vgg16-imagenette-resized.pt", "models/vgg16-imagenette-dwt.pt",
                   "models/wae-vgg16-imagenette-noenergy.pt"],
    "paper": ["wae-vgg16", "vgg16", "wae-resnet50", "resnet50"],
}



@main.command()
@click.option("--target", "targets", multiple=True, required=True, help="ort, openvino, trt, torch (repeatable).")
@click.option("--models", callback=_csv(str), help="Checkpoints, ONNX models or artifact folders, comma-separated "
              "[default: the --suite's]. An artifact runs on its own target and precision.")
@click.option("--suite", type=click.Choice(list(SUITES)), default="cifar10", show_default=True,
              help="cifar10 / imagenette: the reference checkpoints; paper: untrained 224-pixel VGG16/ResNet-50 "
              "(speed only; checkpoints among --models are scored too).")
@click.option("--precision", "precisions", callback=_csv(str), help="Comma-separated [default: all the target builds].")
@click.option("--batch", "batches", callback=_csv(int), default="1,8", show_default=True)
@click.option("--data", type=click.Path(), help="Evaluation images [default: a checkpoint's test split; ONNX "
              "models and artifacts are timed on synthetic input, without accuracy].")
@click.option("--eval-size", type=int, help="Evaluate on a sample of this many images [default: all].")
@click.option("--calib-size", default=300, show_default=True)
@click.option("--workdir", type=click.Path(), default="build/bench", show_default=True)
@click.option("--threads", type=int, help="Runtime threads [default: all cores].")
@click.option("--min-time", default=3.0, show_default=True, help="Seconds of timing per target/precision/batch.")
@click.option("--out", type=click.Path(), help="Results JSON.")
@click.option("--markdown", type=click.Path(), help="Markdown report.")
@click.option("--plot", type=click.Path(), help="PNG: top-1 against latency.")
@click.option("--junit", type=click.Path(), help="JUnit XML for CI.")
@click.option("--compare", "recorded", type=click.Path(), help="Recorded results to gate against.")
@click.option("--max-accuracy-drop", type=float, help="Top-1 points [default: from the recorded noise].")
@click.option("--max-slowdown", type=float, help="Fraction, 0.1 = 10% [default: from the recorded noise].")
@click.option("--allow-env-mismatch", is_flag=True, help="Compare results from another environment anyway.")
@click.option("--update", is_flag=True, help="Write this run as the new recorded baseline (--compare's file).")
@click.option("--profile", "profile_runs", is_flag=False, flag_value=10, default=0, type=click.IntRange(0),
              metavar="[RUNS]", help="Also record each runtime's per-layer profile (10 runs unless given).")
def bench(targets, models, suite, precisions, batches, data, eval_size, calib_size, workdir, threads, min_time,
          out, markdown, plot, junit, recorded, max_accuracy_drop, max_slowdown, allow_env_mismatch, update,
          profile_runs):
    """Measure accuracy and interleaved latency of WAE models against their baselines; gate on regressions.

    Checkpoints are exported and built in --workdir for each --target; ONNX models are built there too;
    artifact folders run as they are on their own target.
    """
    from wae_deploy.benchmark import gate as G
    from wae_deploy.benchmark import report
    from wae_deploy.benchmark import results as R
    from wae_deploy.benchmark.suite import BenchConfig, run

    previous = R.load(recorded) if recorded and not update else None  # a bad file fails before any work
    if update and not recorded:
        raise UserError("--update needs --compare FILE: the recorded results to replace")
    workdir = Path(workdir)
    models = models or [_reference(m) for m in SUITES[suite]]
    given = any(_is_path(m) for m in models)  # e.g. converted released weights: score them
    if suite == "paper":  # architecture names stand for untrained checkpoints (speed only)
        models = [m if _is_path(m) else _untrained(m, workdir) for m in models]
    cfg = BenchConfig(targets=list(targets), models=models, precisions=precisions, batches=batches, data=data,
                      eval_size=eval_size, calib_size=calib_size, accuracy=suite != "paper" or given, workdir=workdir,
                      threads=threads, min_time_s=min_time, suite=suite, profile_runs=profile_runs)
    results = run(cfg, log=click.echo)
    results["command"] = "wae-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    verdict = G.compare(results, previous, max_accuracy_drop, max_slowdown, allow_env_mismatch) if previous else None
    report.print_table(results)
    for c in results["comparisons"]:
        click.echo(f"speed-up {c['b']} over {c['a']} ({c['target']} {c['precision']} batch {c['batch']}): "
                   f"{c['ratio']:.2f}x (95% CI {c['ci95'][0]:.2f}-{c['ci95'][1]:.2f})")
    for line in report.headline(results):
        click.echo(line)
    if out:
        R.save(results, out)
    if update:
        R.save(results, recorded)
        click.echo(f"recorded a new baseline in {recorded}")
    if markdown:
        report.write_markdown(results, markdown, verdict)
    if plot:
        report.write_plot(results, plot)
    if junit:
        report.write_junit(junit, verdict, results)
    if verdict:
        for line in verdict.lines():
            click.echo(line, err=not verdict.ok)
        click.echo("gate: " + ("passed" if verdict.ok else "FAILED"))
        sys.exit(verdict.exit_code)


@main.command(name="profile")
@click.argument("model", type=click.Path())
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1), help="Images per call.")
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1), help="Profiled runs after warm-up.")
@click.option("--threads", type=click.IntRange(1), help="Runtime threads [default: all cores].")
@click.option("--top", default=15, show_default=True, type=click.IntRange(1), help="Slowest layers shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON (every layer).")
def profile_command(model, batch, runs, threads, top, as_json):
    """Per-layer time, executed precision and kernel of an artifact (or an .onnx on ONNX Runtime)."""
    import json

    from wae_deploy.runtime.layer_profile import profile, table_lines

    prof = profile(model, batch, runs, threads)
    if as_json:
        click.echo(json.dumps(prof.to_dict(top=None), indent=1))
    else:
        click.echo("\n".join(table_lines(prof, top)))


def _reference(model: str) -> str:
    """A suite's checkpoint as found from the working directory, else in this checkout's models/."""
    if not model.startswith("models/") or Path(model).is_file():
        return model
    return str(Path(__file__).resolve().parent.parent / model)


def _is_path(model: str) -> bool:
    """A checkpoint, ONNX model or artifact folder, as opposed to an architecture name."""
    return model.endswith((".pt", ".onnx")) or Path(model).is_dir()


def _untrained(arch: str, workdir: Path) -> str:
    from wae_deploy.training import checkpoint

    path = workdir / f"{arch}.pt"
    if not path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint.save(checkpoint.untrained(arch), path)
    return str(path)


if __name__ == "__main__":
    main()

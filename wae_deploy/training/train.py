"""Training: the paper's three stages for WAE models, cross-entropy alone for baselines.

    stage "wae"        the WAE encoder + decoder alone on L_t = l_r + lambda * l_e, from a Haar
                       split (models.wae.init_haar) unless wae_init is "random"
    stage "classifier" the classifier, high-frequency branch and fusion on the frozen split
    stage "joint"      everything, on L = L_c + gamma * L_t (encoder/decoder at 0.1x LR)

With a teacher (an already trained checkpoint of the same classes and input), the classifier and
joint stages add kd_weight * T^2 * KL(teacher || student) on the deployed logits at temperature T
(Hinton et al. 2015): the full-resolution baseline, trained anyway, teaches the split model.

Baselines (plain, resized, dwt) run the "classifier" stage only. Each epoch writes the
checkpoint and a resumable training state; the same seed gives the same numbers.

On several ranks (torchrun; see distributed.py) each rank takes its slice of every global
batch; its mean loss is weighted by its share of the batch times the world size, so DDP's
gradient average is the gradient of the global batch's mean loss: the same steps as one process
(with --sync-bn the same BatchNorm statistics too). Augmentation draws its random numbers for
the whole global batch and each rank applies its rows, so crops do not depend on the number of
ranks; the global RNG (dropout) is seeded per rank. Rank 0 alone evaluates and writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.data import ImageSet, default_data_root, load_split
from wae_deploy.runtime.machine import cpu_flags, cpu_has, memory_bytes
from wae_deploy.runtime.metrics import accuracy
from wae_deploy.runtime.preprocess import Preprocessing
from wae_deploy.training import checkpoint, distributed, stream
from wae_deploy.training.models import Decomposed, create_model, default_preprocessing, parse_arch
from wae_deploy.training.models.wae import decomposition_stats, init_haar, wae_loss


@dataclass
class TrainConfig:
    arch: str
    out: str
    data: str | None = None
    epochs: int = 20              # classifier + joint epochs (the reference recipe)
    wae_epochs: int = 3           # stage 1 (WAE models only)
    joint_epochs: int | None = None  # stage 3; default a quarter of `epochs`
    batch_size: int = 128
    lr: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    lambda_energy: float = 1.0
    wae_init: str = "haar"        # "haar" or "random": where stage 1 starts (models.wae.init_haar)
    wae_lr: float = 3e-3          # stage 1's Adam rate; photos need less, or the Haar start is lost
    gamma: float = 1e-3
    seed: int = 0
    device: str = "auto"          # cpu, cuda, or auto (CUDA where present)
    amp: str = "auto"             # bf16, fp16 (CUDA, with a GradScaler), off; auto: see _precision
    sync_bn: bool = False         # BatchNorm statistics over the global batch (distributed runs)
    limit_batches: int | None = None  # cap batches per epoch (smoke tests)
    limit_eval: int | None = None     # cap evaluation images (smoke tests)
    eval_every: int = 1           # score the test split every N epochs (and at each stage's end)
    half_weights: bool = False    # store the checkpoint's weights in FP16 (loaded back as FP32)
    teacher: str | None = None    # a checkpoint whose logits the classifier stages also learn (distillation)
    kd_weight: float = 1.0        # weight of the distillation term
    kd_temp: float = 4.0          # softmax temperature of the distillation term
    step_log: str | None = None   # append each step's global-batch loss here, one JSON line (checks)
    stream: bool = False          # decode an ImageNet layout on the fly in worker processes (stream.py)
    workers: int = 2              # --stream: decoding processes per rank
    max_bad_images: int = 10      # --stream: images that fail to decode are skipped up to this many
    resume: bool = False


def stages(cfg: TrainConfig) -> list[tuple[str, int]]:
    kind, _ = parse_arch(cfg.arch)
    if kind != "wae":
        return [("classifier", cfg.epochs)]
    joint = cfg.joint_epochs if cfg.joint_epochs is not None else max(1, cfg.epochs // 4)
    if not 0 <= joint <= cfg.epochs:
        raise UserError(f"--joint-epochs must be between 0 and --epochs ({cfg.epochs})")
    plan = [("wae", cfg.wae_epochs), ("classifier", cfg.epochs - joint), ("joint", joint)]
    return [(s, n) for s, n in plan if n > 0]


def augment(batch: torch.Tensor, gen: torch.Generator, part: tuple[int, int] | None = None) -> torch.Tensor:
    """Random crop with zero padding of 1/8 of the side, and horizontal flip; N x 3 x H x W uint8.

    `part` (start, global size): the batch is rows start... of a global batch whose random numbers
    are drawn, so a distributed rank's slice gets the crops one process would give it."""
    n, _, h, w = batch.shape
    total, mine = _rows(n, part)
    pad = h // 8
    padded = F.pad(batch, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[mine]
    ox = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[mine]
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(total, generator=gen)[mine] < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _rows(n: int, part: tuple[int, int] | None) -> tuple[int, slice]:
    """(global batch size, this batch's rows in it) for an augmentation's `part` (start, global size)."""
    start, total = part or (0, n)
    return total, slice(start, start + n)


def random_resized_crop(batch: torch.Tensor, size: int, gen: torch.Generator,
                        scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), part: tuple[int, int] | None = None) -> torch.Tensor:
    """Inception-style crops (a random area share and aspect ratio), resized to size x size, and
    horizontal flips, as one batched affine resampling of an N x 3 x H x W float batch.
    `part` as in augment."""
    n = batch.shape[0]
    total, mine = _rows(n, part)
    area = torch.empty(total).uniform_(*scale, generator=gen)
    log_r = torch.empty(total).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = log_r.exp()
    sx, sy = (area * r).sqrt().clamp(max=1), (area / r).sqrt().clamp(max=1)  # half-extents in [-1, 1] units
    tx = (torch.rand(total, generator=gen) * 2 - 1) * (1 - sx)
    ty = (torch.rand(total, generator=gen) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(total, generator=gen) < 0.5, -1.0, 1.0)
    sx, sy, tx, ty, flip = sx[mine], sy[mine], tx[mine], ty[mine], flip[mine]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta.to(batch.device), (n, 3, size, size), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class Normalizer:
    def __init__(self, spec: Preprocessing):
        self.scale = spec.scale
        self.mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std).view(1, 3, 1, 1)

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        dev = batch_uint8.device  # uint8 goes to the GPU (a quarter of the bytes), is normalised there
        return (batch_uint8.float() * self.scale - self.mean.to(dev)) / self.std.to(dev)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, spec: Preprocessing, batch: int = 500,
             device: torch.device | str = "cpu") -> dict:
    """Top-1/top-5 in FP32; for WAE/DWT models also the classifier head alone and split stats.
    `data`: an ImageSet, or (N x 3 x H x W uint8 tensor, labels) batches (stream.eval_batches)."""
    model.eval()
    norm = Normalizer(spec)
    batches = data
    if isinstance(data, ImageSet):
        images = torch.from_numpy(data.images).permute(0, 3, 1, 2)
        batches = ((images[i:i + batch], data.labels[i:i + batch]) for i in range(0, len(data), batch))
    logits, main_logits, stats, labels = [], [], [], []
    for i, (pixels, y) in enumerate(batches):
        labels.append(y)
        x = norm(pixels).to(device)
        if isinstance(model, Decomposed):
            low, high = model.decompose(x)
            main, fusion = model.heads(low, high)
            logits.append((main + fusion).cpu())
            main_logits.append(main.cpu())
            if model.decoder is not None and i == 0:
                stats.append(decomposition_stats(x, low, high, model.decoder(low, high), spec.unit_std))
        else:
            logits.append(model(x).cpu())
    labels = np.concatenate(labels)
    result = accuracy(torch.cat(logits).numpy(), labels)
    if main_logits:
        head = accuracy(torch.cat(main_logits).numpy(), labels)
        result["top1_main_head"], result["top5_main_head"] = head["top1"], head["top5"]
    if stats:
        result.update(stats[0])
    return result


def _param_groups(model, stage: str, lr: float):
    split = [p for n, p in model.named_parameters() if n.startswith(("decomposer.", "decoder."))]
    rest = [p for n, p in model.named_parameters() if not n.startswith(("decomposer.", "decoder."))]
    if stage == "wae":
        return [{"params": split, "lr": lr}]
    if stage == "classifier":
        return [{"params": rest, "lr": lr}]
    # Joint: the tiny encoder's outputs are amplified by the normalising BatchNorm; a full
    # learning rate on it diverges (NaN), a tenth of it does not.
    return [{"params": rest, "lr": lr}, {"params": split, "lr": lr * 0.1}]


def _optimizer(model, stage: str, cfg: TrainConfig, steps: int):
    if stage == "wae":
        opt = torch.optim.Adam(_param_groups(model, stage, cfg.wae_lr))
        peak = [cfg.wae_lr]
    else:
        lr = cfg.lr if stage == "classifier" else cfg.lr * 0.1
        groups = _param_groups(model, stage, lr)
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        peak = [g["lr"] for g in groups]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=max(1, steps),
                                                pct_start=0.25 if stage == "classifier" else 0.1)
    return opt, sched


def distillation(student: torch.Tensor, teacher: torch.Tensor, temp: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean: the T^2 keeps the
    gradient's scale independent of T."""
    return F.kl_div(F.log_softmax(student.float() / temp, 1), F.log_softmax(teacher.float() / temp, 1),
                    reduction="batchmean", log_target=True) * temp * temp


def _loss(model, stage: str, x, y, cfg: TrainConfig, teacher=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (loss, logits or None)."""
    loss, logits = _task_loss(model, stage, x, y, cfg)
    if teacher is not None and logits is not None:
        with torch.no_grad():
            target = teacher(x)
        loss = loss + cfg.kd_weight * distillation(logits, target, cfg.kd_temp)
    return loss, logits


def _task_loss(model, stage: str, x, y, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(model, Decomposed):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing), logits
    # Stage 2 trains on a fixed split (the frozen WAE, or the wavelet that has no weights).
    with torch.no_grad() if stage == "classifier" else contextlib.nullcontext():
        low, high = model.decompose(x)
    if stage == "wae":
        return wae_loss(x, model.decoder(low, high), high, cfg.lambda_energy)[0], None
    main, fusion = model.heads(low, high)
    logits = main + fusion
    # The deployed score is the sum; each head also gets its own loss (the released net scores all three).
    ce = sum(F.cross_entropy(z, y, label_smoothing=cfg.label_smoothing) for z in (logits, main, fusion))
    if stage == "joint":
        ce = ce + cfg.gamma * wae_loss(x, model.decoder(low, high), high, cfg.lambda_energy)[0]
    return ce, logits


def _state_path(out: str) -> Path:
    return Path(f"{out}.train-state.pt")


class _StageLoss(torch.nn.Module):
    """A stage's loss as a module's forward: DDP prepares its gradient all-reduce in forward, and
    the stages call the model's parts (decompose, heads, decoder), not its forward."""

    def __init__(self, model: torch.nn.Module, stage: str, cfg: TrainConfig, teacher=None):
        super().__init__()
        self.model, self.stage, self.cfg = model, stage, cfg
        self._teacher = [teacher]  # in a list: not a submodule, so DDP neither syncs nor checks it

    def forward(self, x, y):
        return _loss(self.model, self.stage, x, y, self.cfg, self._teacher[0])


def _train_only(model, stage: str, lr: float) -> None:
    """Gradients for the stage's parameters alone: DDP fails on parameters that need a gradient
    and get none (the frozen split in stage 2, the classifier in stage 1); one process is unchanged,
    as those parameters got no gradient and are in no optimizer group."""
    trained = {id(p) for g in _param_groups(model, stage, lr) for p in g["params"]}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast type: auto is bf16 on a CPU with AVX512-BF16 (1.25-1.75x faster here, same
    accuracy) and on CUDA devices that support it, else fp16 on CUDA (with a GradScaler), else FP32."""
    cuda = device.type == "cuda"
    if cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        if not cuda:
            raise UserError("--amp fp16 needs --device cuda (on a CPU use bf16 or off)")
        return torch.float16
    if cfg.amp == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise UserError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bf16; use fp16")
        return torch.bfloat16
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has("avx512_bf16") else None


# torch 2.13.0's oneDNN (v3.12) AVX2 kernel for the weight gradient of a 1x1 convolution,
# jit_avx2_1x1_convolution_bwd_weights, writes past its buffers when the convolution has stride 2,
# channels-last tensors and input channels that are not a multiple of 8 (the WAE's quarter-width I_H
# branch: 4 -> 8): heap corruption ("double free or corruption"), hangs with 2+ threads, and runs that
# depend on what the heap held (docs/avx2-training.md, benchmarks/avx2_conv_backward.py). In NCHW the
# same kernel gets its source reordered into oneDNN's zero-padded 8-channel blocks and is correct.
# CPUs with AVX-512 take other kernels. On AVX2-only x86 hosts training runs just those convolutions
# (1x1, stride > 1, input channels per group not a multiple of 8) in NCHW, the rest channels-last
# with oneDNN as everywhere else.
ONEDNN_ENV = "WAE_TRAIN_ONEDNN"
# WAE_TRAIN_ONEDNN: unset/auto: the route below where the kernel is broken, oneDNN everywhere else;
# nchw: that route on any CPU; 1/on: oneDNN channels-last for every convolution even where broken;
# 0/off: no oneDNN convolutions in training on any CPU (PyTorch's native kernels, 2.6-3.6x slower here).
_X86 = ("x86_64", "amd64", "i386", "i686")
_AVX2_ONLY_ISAS = ("AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
# Measured on the AVX2-only AMD EPYC, 1 thread (benchmarks/avx2-train-cost.json): the log line says it.
NCHW_COST = "no measured speed cost against oneDNN all channels-last; 2.4-3.4x faster than native kernels"


def onednn_training(flags: set[str], arch: str, env: dict) -> tuple[str, str | None]:
    """(the route for training's CPU convolutions, the one log line saying why, or None).
    Routes: "onednn" (oneDNN, channels-last: torch's default), "nchw" (oneDNN, with the 1x1 stride-2
    convolutions whose input channels are not a multiple of 8 in NCHW: nchw_convolutions), "native"
    (no oneDNN convolutions). `flags`: the CPU flags (machine.cpu_flags); `arch`: platform.machine();
    `env`: os.environ."""
    raw = env.get(ONEDNN_ENV, "")
    forced = raw.strip().lower()
    if forced in _OFF:
        return "native", f"oneDNN convolutions off for training: {ONEDNN_ENV}={raw}"
    if forced not in ("", "auto", "nchw") + _ON:
        raise UserError(f"{ONEDNN_ENV}={raw!r}: use auto (or unset), nchw, 1 or 0")
    isa_cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    avx2_only = arch.lower() in _X86 and "avx2" in flags and ("avx512f" not in flags or isa_cap in _AVX2_ONLY_ISAS)
    why = ("this x86 CPU has AVX2 but no AVX-512 (avx512f)" if "avx512f" not in flags
           else f"ONEDNN_MAX_CPU_ISA={isa_cap} limits oneDNN to AVX2")
    if forced in _ON:
        return "onednn", (f"oneDNN convolutions channels-last for training ({ONEDNN_ENV}={raw}) although {why}: "
                          "torch 2.13's AVX2 1x1 convolution backward may corrupt memory or hang "
                          "(docs/avx2-training.md)") if avx2_only else None
    if forced == "nchw" or avx2_only:
        reason = f"{ONEDNN_ENV}={raw}" if forced == "nchw" else (
            f"{why}, where torch {torch.__version__.split('+')[0]}'s oneDNN 1x1 stride-2 convolution backward "
            "(jit_avx2_1x1) corrupts memory or hangs in channels-last")
        return "nchw", (f"oneDNN convolutions for training with 1x1 stride-2 ones of < 8-multiple input channels "
                        f"in NCHW: {reason} ({NCHW_COST}; {ONEDNN_ENV}=0 turns oneDNN off, =1 forces "
                        "channels-last; docs/avx2-training.md)")
    return "onednn", None


def nchw_affected(module: torch.nn.Module) -> bool:
    """A convolution the broken kernel would take: 1x1, stride > 1, input channels per group not a
    multiple of oneDNN's 8-channel AVX2 block."""
    return (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
            and (module.in_channels // module.groups) % 8 != 0)


def _to_nchw(_module, args):
    return (args[0].contiguous(), *args[1:])


def _to_channels_last(_module, _args, out):
    return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out


def nchw_convolutions(model: torch.nn.Module) -> list:
    """Hooks that run the convolutions nchw_affected picks in NCHW (input made contiguous, output back
    to channels-last), so their weight gradient takes oneDNN's padded-block path; returns the hook
    handles. Call it after the model's last .to(memory_format=...): a 1x1 weight holds the same numbers
    in both formats, but channels-last strides (C, 1, C, C) alone would still make torch pick the
    channels-last kernel, so the weight gets NCHW strides here."""
    handles = []
    for m in model.modules():
        if nchw_affected(m):
            m.weight.data = m.weight.data.clone(memory_format=torch.contiguous_format)
            handles += [m.register_forward_pre_hook(_to_nchw), m.register_forward_hook(_to_channels_last)]
    return handles


@contextlib.contextmanager
def _convolution_backend(device: torch.device, log: Callable[[str], None]):
    """Training's CPU convolutions go around the broken oneDNN kernel where it is (see ONEDNN_ENV);
    yields the route (onednn_training)."""
    if device.type != "cpu":
        yield "onednn"
        return
    route, line = onednn_training(cpu_flags(), platform.machine(), os.environ)
    if line:
        log(line)
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = previous and route != "native"
    try:
        yield route
    finally:
        torch.backends.mkldnn.enabled = previous


def train(cfg: TrainConfig, log: Callable[[str], None] = print, progress=None) -> checkpoint.Checkpoint | None:
    """Train on this process's share (all of it without torchrun); rank 0 returns the checkpoint,
    other ranks None."""
    kind, family = parse_arch(cfg.arch)
    if cfg.amp not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"--amp must be auto, bf16, fp16 or off, not {cfg.amp!r}")
    if cfg.kd_temp <= 0 or cfg.kd_weight < 0:  # before any data is decoded
        raise UserError("--kd-temp must be above 0 and --kd-weight at least 0")
    ctx = distributed.setup(cfg.device)
    log = log if ctx.main else (lambda _: None)
    try:
        with _convolution_backend(ctx.device, log) as route:
            return _train(cfg, kind, family, ctx, log, progress if ctx.main else None, route)
    except torch.distributed.DistError as e:
        raise distributed.peer_lost(e, ctx) from e
    finally:
        distributed.teardown(ctx)


def _must_stream(cfg, root: Path, crop: int, ctx: distributed.Context, log) -> bool:
    """An ImageNet layout the in-memory path cannot take streams without --stream: one whose decoded
    pixels (one copy per local rank) would fill more than half the memory, or one with a flat val/."""
    if cfg.stream or not stream.is_imagenet_layout(root):
        return False

    def check() -> str | None:
        if not any(d.is_dir() for d in (root / "val").iterdir()):
            return f"{root / 'val'} has no class folders"
        memory = memory_bytes()
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        need = ranks * (stream.count_images(root / "train") + stream.count_images(root / "val")) * crop * crop * 3
        if memory and need > memory // 2:
            return f"decoding {root} into memory would take {need / 1e6:,.0f} MB of the {memory / 1e6:,.0f} MB here"
        return None

    reason = distributed.from_main(check, ctx)
    if reason:
        log(f"{reason}: streaming it from disk (--stream)")
    return reason is not None


@dataclass
class _Data:
    """The training and test splits: in memory (images as one tensor), or file lists decoded in worker
    processes (--stream: stream.py), with the count of images that failed to decode."""

    train: ImageSet | stream.FileList
    test: ImageSet | stream.FileList
    images: torch.Tensor | None = None        # in memory: N x 3 x H x W uint8
    labels: torch.Tensor | None = None        # in memory
    streamed: stream.StreamSet | None = None  # --stream
    bad: stream.BadImages | None = None       # --stream


@dataclass
class _Run:
    """One training run: what is fixed once it is set up, and what it has done so far."""

    cfg: TrainConfig
    ctx: distributed.Context
    log: Callable[[str], None]
    progress: object | None      # a rich Progress on rank 0, or None
    spec: Preprocessing
    random_crops: bool           # photo models: random-resized crops; CIFAR: padded crops (augment)
    root: Path
    data: _Data
    model: torch.nn.Module
    teacher: torch.nn.Module | None
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    plan: list[tuple[str, int]]
    steps_per_epoch: int
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    result: dict | None = None   # the last test score
    norm: Normalizer = field(init=False)

    def __post_init__(self):
        self.norm = Normalizer(self.spec)

    @property
    def state_file(self) -> Path:
        """Where the resumable state is written after each epoch."""
        return _state_path(self.cfg.out)


@dataclass
class _Tally:
    """One epoch's training numbers on this rank."""

    loss: float = 0.0            # summed over this rank's images
    correct: int = 0
    seen: int = 0
    step_sums: list[float] = field(default_factory=list)  # each step's loss summed over this rank's images
    step_sizes: list[int] = field(default_factory=list)   # each step's global batch size

    def add(self, loss_sum: float, global_size: int, images: int, logits, y) -> None:
        """One step: its loss summed over this rank's images, the global batch's size, this rank's
        images, and their hits where the stage has logits (not stage 1)."""
        self.step_sums.append(loss_sum)
        self.step_sizes.append(global_size)
        self.loss += loss_sum
        self.seen += images
        if logits is not None:
            self.correct += int((logits.argmax(1) == y).sum())


def _train(cfg, kind, family, ctx: distributed.Context, log, progress,
           route: str = "onednn") -> checkpoint.Checkpoint | None:
    """The run set up, resumed where asked, then each stage's epochs in turn."""
    run = _setup(cfg, kind, family, ctx, log, progress, route)
    start_stage, start_epoch, saved = _resume(run) if run.cfg.resume else (0, 0, None)
    global_epoch = sum(n for _, n in run.plan[:start_stage]) + start_epoch
    for si in range(start_stage, len(run.plan)):
        first = start_epoch if si == start_stage else 0
        global_epoch = _train_stage(run, si, first, saved if si == start_stage and first > 0 else None, global_epoch)
    if not ctx.main:
        return None
    if run.result is None:
        raise UserError("nothing to train: every stage has zero epochs")
    run.state_file.unlink(missing_ok=True)
    return checkpoint.load(run.cfg.out)


def _setup(cfg, kind, family, ctx: distributed.Context, log, progress, route: str) -> _Run:
    """Everything before the first step: precision, data, model, teacher, loss scaler and stage plan."""
    amp = _precision(cfg, ctx.device)
    if cfg.sync_bn and ctx.world == 1:
        log("--sync-bn: one process, BatchNorm is already over the whole batch")
    spec = default_preprocessing(cfg.arch)
    root = Path(cfg.data) if cfg.data else default_data_root(spec)
    cfg, data = _load_data(cfg, spec, family, root, ctx, log)
    model = _build_model(cfg, kind, len(data.train.classes), spec, ctx, route)
    teacher = _teacher(cfg, spec, data.train.classes, ctx.device)
    plan = stages(cfg)
    # fp16 gradients underflow without loss scaling; for bf16 and FP32 the scaler passes through.
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp is torch.float16)
    return _Run(cfg, ctx, log, progress, spec, bool(family.train_size), root, data, model, teacher, amp, scaler,
                plan, _steps_per_epoch(cfg, len(data.train), ctx.world))


def _load_data(cfg, spec: Preprocessing, family, root: Path, ctx: distributed.Context,
               log) -> tuple[TrainConfig, _Data]:
    """The splits, streamed when asked or when memory is short (_must_stream); -> (the config as run, the data)."""
    # Photo models train on random-resized crops of a larger decode; CIFAR on padded crops.
    train_spec = (dataclasses.replace(spec, resize=family.train_size, crop=family.train_size)
                  if family.train_size else spec)
    if _must_stream(cfg, root, train_spec.crop, ctx, log):
        cfg = dataclasses.replace(cfg, stream=True)
    data = _streamed_data(cfg, root, spec) if cfg.stream else _memory_data(cfg, root, spec, train_spec)
    if len(data.train.classes) != len(data.test.classes):
        raise UserError(f"train and test splits of {root} have different classes")
    return cfg, data


def _streamed_data(cfg, root: Path, spec: Preprocessing) -> _Data:
    """--stream: the splits' file lists; --limit-eval keeps a seeded sample of the test files."""
    train_set, test_set = stream.list_split(root, "train"), stream.list_split(root, "test")
    if cfg.limit_eval and cfg.limit_eval < len(test_set):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(test_set))[:cfg.limit_eval])
        test_set = stream.FileList([test_set.files[i] for i in keep], test_set.labels[keep], test_set.classes)
    bad = stream.BadImages(cfg.max_bad_images)
    return _Data(train_set, test_set, streamed=stream.StreamSet(train_set, spec, train=True, seed=cfg.seed), bad=bad)


def _memory_data(cfg, root: Path, spec: Preprocessing, train_spec: Preprocessing) -> _Data:
    """The splits decoded into memory; --limit-eval keeps a seeded sample of the test images."""
    train_set, test_set = load_split(root, "train", train_spec), load_split(root, "test", spec)
    if cfg.limit_eval:
        test_set = test_set.sample(cfg.limit_eval, seed=cfg.seed)
    images = torch.from_numpy(train_set.images).permute(0, 3, 1, 2).contiguous()
    return _Data(train_set, test_set, images=images, labels=torch.from_numpy(train_set.labels))


def _build_model(cfg, kind: str, num_classes: int, spec: Preprocessing, ctx: distributed.Context,
                 route: str) -> torch.nn.Module:
    """The seeded network on the device, channels-last: a WAE from the Haar split unless asked otherwise,
    BatchNorm synced over the ranks with --sync-bn."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=num_classes, input_size=spec.crop)
    if kind == "wae" and cfg.wae_init == "haar":
        init_haar(model.decomposer, model.decoder)
    if cfg.sync_bn and ctx.world > 1:
        model = distributed.sync_batchnorm(model, ctx)
    model = model.to(ctx.device, memory_format=torch.channels_last)  # ~1.2x faster convolutions on this CPU
    if route == "nchw":  # around oneDNN's broken AVX2 kernel (ONEDNN_ENV); hooks stay with this model only
        nchw_convolutions(model)
    return model


def _steps_per_epoch(cfg, images: int, world: int) -> int:
    """Global batches per epoch, at most --limit-batches."""
    # A last global batch too small to give every rank an image is dropped (one process keeps it).
    full, rest = divmod(images, cfg.batch_size)
    steps = full + (rest >= world)
    return min(steps, cfg.limit_batches) if cfg.limit_batches else steps


def _resume(run: _Run) -> tuple[int, int, dict]:
    """--resume: the saved model, history, time and loss scale put back; -> (stage index, epoch in it, the state)."""
    state = distributed.from_main(lambda: _read_state(run.cfg, run.state_file), run.ctx)
    run.model.load_state_dict(state["model"])
    run.history, run.elapsed = state["history"], state["elapsed"]
    start_stage, start_epoch = state["stage_index"], state["epoch_in_stage"]
    if "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    stage = run.plan[start_stage][0] if start_stage < len(run.plan) else "done"
    run.log(f"resuming at stage {stage}, epoch {start_epoch + 1}")
    return start_stage, start_epoch, state


def _train_stage(run: _Run, si: int, first: int, saved: dict | None, global_epoch: int) -> int:
    """Stage `si` of the plan from its epoch `first`: its optimizer and schedule (as `saved` left them, on a
    resume mid-stage), then its epochs; -> the global epoch after it."""
    stage, n_epochs = run.plan[si]
    opt, sched = _optimizer(run.model, stage, run.cfg, n_epochs * run.steps_per_epoch)
    _train_only(run.model, stage, run.cfg.lr)
    step_loss = distributed.wrap(_StageLoss(run.model, stage, run.cfg, run.teacher), run.ctx)
    if saved is not None:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
    for epoch in range(first, n_epochs):
        t0 = time.perf_counter()
        tally = _train_epoch(run, stage, epoch, n_epochs, global_epoch, opt, sched, step_loss)
        sums = distributed.sum_over_ranks([tally.loss, tally.correct, tally.seen, *tally.step_sums], run.ctx)
        run.elapsed += time.perf_counter() - t0
        global_epoch += 1
        if run.ctx.main:
            last = epoch + 1 == n_epochs
            _end_epoch(run, stage, epoch, last, sums, tally.step_sizes)
            _save_state(run, opt, sched, *((si + 1, 0) if last else (si, epoch + 1)))
    return global_epoch


def _train_epoch(run: _Run, stage: str, epoch: int, n_epochs: int, global_epoch: int, opt, sched,
                 step_loss) -> _Tally:
    """One epoch's steps on this rank's share of every global batch, in the epoch's seeded order."""
    cfg, ctx = run.cfg, run.ctx
    seed = cfg.seed * 100_003 + global_epoch
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1_000_003 * ctx.rank)  # dropout: rank 0 draws what one process does
    order = torch.randperm(len(run.data.train), generator=gen)
    run.model.train()
    tally = _Tally()
    label = f"{cfg.arch} {stage} {epoch + 1}/{n_epochs}"
    task = run.progress.add_task(label, total=run.steps_per_epoch) if run.progress else None
    batches = [order[step * cfg.batch_size:(step + 1) * cfg.batch_size] for step in range(run.steps_per_epoch)]
    decoded = _decoded(run, batches, global_epoch) if cfg.stream else None
    for batch in batches:
        x, y, images = _inputs(run, batch, gen, decoded, stage, epoch)
        # DDP averages the ranks' gradients: weighting each rank's mean by its share of the
        # global batch (x world) makes that average the gradient of the global mean loss.
        loss, logits = _step(run, step_loss, opt, sched, x, y, images * ctx.world / len(batch), stage, epoch)
        tally.add(loss.item() * images, len(batch), images, logits, y)
        if run.progress:
            run.progress.update(task, advance=1, description=f"{label} loss {tally.loss / tally.seen:.3f}")
    if run.progress:
        run.progress.remove_task(task)
    return tally


def _decoded(run: _Run, batches: list[torch.Tensor], global_epoch: int):
    """--stream: this rank's slice of each batch, decoded, cropped and flipped by the worker processes."""
    run.data.streamed.epoch = global_epoch
    return iter(stream.loader(run.data.streamed, [distributed.shard(b, run.ctx)[1].tolist() for b in batches],
                              run.cfg.workers))


def _inputs(run: _Run, batch: torch.Tensor, gen: torch.Generator, decoded, stage: str,
            epoch: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's slice of a global batch, augmented and normalised on the device: -> (x, labels, images)."""
    start, idx = distributed.shard(batch, run.ctx)
    part = (start, len(batch))
    dev, norm = run.ctx.device, run.norm
    if run.cfg.stream:  # cropped and flipped in the workers; some images may have failed
        pixels, y, failed = next(decoded)
        run.data.bad(failed)
        if not len(y):
            raise UserError(f"no image of a batch could be decoded (stage {stage}, epoch {epoch + 1})")
        # counts are of the images that decoded
        return norm(pixels.to(dev)).contiguous(memory_format=torch.channels_last), y.to(dev), len(y)
    if run.random_crops:
        x = random_resized_crop(norm(run.data.images[idx].to(dev)), run.spec.crop, gen, part=part)
    else:
        x = norm(augment(run.data.images[idx], gen, part=part).to(dev))
    return x.contiguous(memory_format=torch.channels_last), run.data.labels[idx].to(dev), len(idx)


def _step(run: _Run, step_loss, opt, sched, x, y, weight: float, stage: str, epoch: int):
    """One optimizer step on the loss times `weight`; -> (loss, logits or None). A loss that is not
    finite stops the run."""
    dev = run.ctx.device
    with torch.autocast(dev.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
        loss, logits = step_loss(x, y)
    if not torch.isfinite(loss):
        raise UserError(f"training diverged (loss {loss.item()}) in stage {stage}, epoch {epoch + 1}; lower --lr")
    opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss * weight).backward()
    run.scaler.step(opt)
    run.scaler.update()
    sched.step()
    return loss, logits


def _end_epoch(run: _Run, stage: str, epoch: int, last: bool, sums: list, step_sizes: list[int]) -> None:
    """Rank 0 after an epoch: its history row (with a test score at a stage's end, the first epoch run and
    every --eval-every), the log line, the step log and the checkpoint."""
    cfg = run.cfg
    loss_sum, correct, seen, *step_sums = sums
    row = {"stage": stage, "epoch": epoch + 1, "train_loss": loss_sum / seen,
           "train_top1": 100.0 * correct / seen if correct else None}
    if last or run.result is None or (epoch + 1) % cfg.eval_every == 0:
        run.result = _test_score(run)
        row.update({k: v for k, v in run.result.items() if k != "n"})
    row["elapsed_s"] = round(run.elapsed, 1)
    run.history.append(row)
    run.log(_format_row(row))
    if cfg.step_log:
        _append_steps(cfg.step_log, stage, epoch + 1, [t / n for t, n in zip(step_sums, step_sizes)])
    ckpt = _checkpoint(cfg, run.model, run.data.train.classes, run.spec, run.result, run.history, run.elapsed,
                       run.root)
    checkpoint.save(ckpt, cfg.out)


def _test_score(run: _Run) -> dict:
    """evaluate on the test split; under --stream the worker processes decode it."""
    data = run.data.test
    if run.cfg.stream:
        data = stream.eval_batches(data, run.spec, 500, run.cfg.workers, run.data.bad)
    return evaluate(run.model, data, run.spec, device=run.ctx.device)


def _save_state(run: _Run, opt, sched, next_stage: int, next_epoch: int) -> None:
    """The resumable training state: where to go on, and the model, optimizer, schedule and scaler as they are."""
    with atomic.atomic_path(run.state_file) as tmp:
        torch.save({"model": run.model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": run.scaler.state_dict(),
                    "stage_index": next_stage, "epoch_in_stage": next_epoch, "history": run.history,
                    "elapsed": run.elapsed, "config": dataclasses.asdict(run.cfg)}, tmp)


def _read_state(cfg: TrainConfig, state_file: Path) -> dict:
    if not state_file.is_file():
        raise UserError(f"--resume: no training state at {state_file}")
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is one clean error
        raise UserError(f"--resume: unreadable training state {state_file}") from e
    saved = state["config"]
    for key in ("arch", "epochs", "wae_epochs", "joint_epochs", "seed", "batch_size", "lr", "wae_init",
                "teacher", "kd_weight", "kd_temp"):
        if saved.get(key) != getattr(cfg, key):
            raise UserError(f"--resume: {key} was {saved.get(key)!r}, now {getattr(cfg, key)!r}")
    return state


def _teacher(cfg: TrainConfig, spec: Preprocessing, classes: list[str], dev) -> torch.nn.Module | None:
    """The distillation teacher, frozen in eval mode; it must read the student's input as it is."""
    if cfg.teacher is None:
        return None
    ck = checkpoint.load(cfg.teacher)
    if ck.preprocessing != spec:
        raise UserError(f"--teacher {cfg.teacher}: its preprocessing differs from {cfg.arch}'s "
                        f"({ck.preprocessing} against {spec})")
    if list(ck.classes) != list(classes):
        raise UserError(f"--teacher {cfg.teacher}: its {len(ck.classes)} classes are not the training data's")
    model = ck.build_model().to(dev, memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _append_steps(path: str, stage: str, epoch: int, losses: list[float]) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps({"stage": stage, "epoch": epoch, "step": i + 1, "loss": v}) + "\n"
                     for i, v in enumerate(losses))


def _format_row(row: dict) -> str:
    parts = [f"{row['stage']:<10} epoch {row['epoch']:>3}", f"loss {row['train_loss']:.4f}"]
    if "top1" in row:
        parts += [f"test top-1 {row['top1']:.2f}%", f"top-5 {row['top5']:.2f}%"]
    if "top1_main_head" in row:
        parts.append(f"I_L head {row['top1_main_head']:.2f}%")
    if "psnr_db" in row:
        parts.append(f"PSNR {row['psnr_db']:.1f} dB, I_H energy {100 * row['high_energy_share']:.3f}%")
    parts.append(f"{row['elapsed_s']:.0f} s")
    return " | ".join(parts)


def _checkpoint(cfg, model, classes, spec, result, history, elapsed, root) -> checkpoint.Checkpoint:
    return checkpoint.Checkpoint(
        arch=cfg.arch,
        config={"num_classes": len(classes), "input_size": spec.crop, "lambda_energy": cfg.lambda_energy,
                "gamma": cfg.gamma},
        state_dict={k: v.detach().to("cpu", torch.float16 if cfg.half_weights and v.is_floating_point() else v.dtype,
                                    copy=True)
                    for k, v in model.state_dict().items()},
        classes=list(classes), preprocessing=spec,
        metrics={"test": result, "train_time_s": round(elapsed, 1), "history": history},
        provenance={"train_config": {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None},
                    "data": str(root), "threads": torch.get_num_threads(), "host_cpus": os.cpu_count(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )

"""Training: tiny real runs on CIFAR-10 that learn, repeat exactly, and resume exactly; the CLI's errors."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from fixtures_small import run_cli

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.training import checkpoint
from wae_deploy.training.models import create_model, list_archs
from wae_deploy.training.train import TrainConfig, augment, distillation, stages, train

# Small enough for seconds on one thread, big enough to learn something.
CONFIGS = {
    # one stage of three epochs: a resume inside the stage restores the SGD and one-cycle state
    "resnet20": dict(arch="resnet20", epochs=3, batch_size=32, limit_batches=8, limit_eval=200, lr=0.05),
    # stage "wae" (2 epochs, Adam) then "joint" (1 epoch): a resume inside stage 1 that runs on into stage 3
    "wae-resnet20": dict(arch="wae-resnet20", wae_epochs=2, epochs=1, joint_epochs=1, batch_size=32,
                         limit_batches=6, limit_eval=100),
}


def _config(name, out, **changes) -> TrainConfig:
    return TrainConfig(out=str(out), **{**CONFIGS[name], **changes})


@pytest.fixture(scope="module")
def straight(fast_load_split, tmp_path_factory):
    """Uninterrupted runs, made once per configuration and shared by the tests below."""
    runs = {}

    def get(name):
        if name not in runs:
            out = tmp_path_factory.mktemp(name) / f"{name}.pt"
            logs = []
            runs[name] = (train(_config(name, out), log=logs.append), out, logs)
        return runs[name]

    return get


def _history(ckpt):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in ckpt.metrics["history"]]


def assert_same_run(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint):
    assert _history(a) == _history(b)
    assert a.state_dict.keys() == b.state_dict.keys()
    differ = [k for k in a.state_dict if not torch.equal(a.state_dict[k], b.state_dict[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.mark.slow
def test_training_lowers_the_loss(straight, train_images, train_sample):
    ckpt, out, logs = straight("resnet20")
    history = ckpt.metrics["history"]
    assert [(r["stage"], r["epoch"]) for r in history] == [("classifier", 1), ("classifier", 2), ("classifier", 3)]
    epochs = [line for line in logs if not line.startswith("oneDNN convolutions")]  # the AVX2 note (train.py)
    assert len(epochs) == 3 and all("classifier" in line and "test top-1" in line for line in epochs)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # The same images, through the initial and the trained weights (batch statistics for both).
    x, y = train_images[:512], torch.from_numpy(train_sample.labels[:512])
    torch.manual_seed(0)  # train() builds its model right after seeding with cfg.seed
    before = create_model("resnet20")
    after = ckpt.build_model()
    losses = []
    for model in (before, after):
        model.train()
        with torch.no_grad():
            losses.append(F.cross_entropy(model(x), y).item())
    assert losses[1] < losses[0] - 0.2, losses
    # What train() leaves behind: the checkpoint and nothing else.
    assert out.is_file() and not Path(f"{out}.train-state.pt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert ckpt.metrics["test"]["n"] == 200 and ckpt.arch == "resnet20"
    assert ckpt.provenance["train_config"]["limit_batches"] == 8


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers(straight, tmp_path):
    first = straight("resnet20")[0]
    again = train(_config("resnet20", tmp_path / "again.pt"), log=lambda _: None)
    assert_same_run(first, again)


@pytest.mark.slow
def test_wae_stage_starts_from_the_haar_split(straight, tmp_path):
    haar = straight("wae-resnet20")[0]
    assert haar.provenance["train_config"]["wae_init"] == "haar"
    random = train(_config("wae-resnet20", tmp_path / "random.pt", wae_init="random", epochs=0, joint_epochs=0),
                   log=lambda _: None)
    psnr = {name: c.metrics["history"][1]["psnr_db"] for name, c in (("haar", haar), ("random", random))}
    # 12 Adam steps: the Haar start (42 dB before any step, 46 dB after 3 full epochs) stays far ahead.
    assert psnr["haar"] > psnr["random"] + 10, psnr


class Interrupt:
    """Stands in for rich's Progress and raises KeyboardInterrupt (Ctrl-C) after `at` training steps."""

    def __init__(self, at: int):
        self.at, self.steps, self.tasks = at, 0, 0

    def add_task(self, description, total=None):
        self.tasks += 1
        return self.tasks

    def update(self, task, advance=0, description=None):
        self.steps += advance
        if self.steps == self.at:
            raise KeyboardInterrupt

    def remove_task(self, task):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs_done", [("resnet20", 1), ("wae-resnet20", 1)])
def test_resume_continues_exactly(straight, tmp_path, name, epochs_done):
    out = tmp_path / f"{name}.pt"
    state = Path(f"{out}.train-state.pt")
    cfg = _config(name, out)
    # Killed three steps into the epoch after `epochs_done` finished epochs.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=lambda _: None, progress=Interrupt(epochs_done * cfg.limit_batches + 3))
    assert state.is_file()
    assert len(checkpoint.load(out).metrics["history"]) == epochs_done  # the last finished epoch's checkpoint
    # A resume must not mix two configurations.
    with pytest.raises(UserError, match="--resume: lr was") as e:
        train(dataclasses.replace(cfg, resume=True, lr=cfg.lr / 2), log=lambda _: None)
    assert e.value.exit_code == 2
    logs = []
    resumed = train(dataclasses.replace(cfg, resume=True), log=logs.append)
    assert [line for line in logs if not line.startswith("oneDNN convolutions")][0].startswith("resuming at stage")
    assert not state.exists()
    assert_same_run(resumed, straight(name)[0])


def test_resume_without_a_state_file(fast_load_split, tmp_path):
    with pytest.raises(UserError, match="no training state") as e:
        train(_config("resnet20", tmp_path / "none.pt", resume=True), log=lambda _: None)
    assert e.value.exit_code == 2


def test_stage_plan():
    cfg = lambda **kw: TrainConfig(out="x.pt", **kw)  # noqa: E731
    assert stages(cfg(arch="resnet20", epochs=30)) == [("classifier", 30)]
    assert stages(cfg(arch="resnet20-dwt", epochs=5)) == [("classifier", 5)]
    assert stages(cfg(arch="wae-resnet20", epochs=30, wae_epochs=2)) == [("wae", 2), ("classifier", 23), ("joint", 7)]
    assert stages(cfg(arch="wae-resnet20", epochs=2, wae_epochs=0, joint_epochs=2)) == [("joint", 2)]
    with pytest.raises(UserError, match="--joint-epochs"):
        stages(cfg(arch="wae-resnet20", epochs=4, joint_epochs=5))


def test_augment_is_a_seeded_crop_and_flip():
    batch = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = augment(batch, torch.Generator().manual_seed(3))
    assert a.shape == batch.shape and a.dtype == torch.uint8
    assert torch.equal(a, augment(batch, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment(batch, torch.Generator().manual_seed(4)))
    # Each output is a window of the zero-padded input, maybe mirrored.
    padded = F.pad(batch, (4, 4, 4, 4))
    for i in range(16):
        windows = [padded[i, :, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)


# --------------------------------------------------------------------------- the command line

def test_cli_unknown_arch_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["train", "--arch", "nope", "-o", str(tmp_path / "x.pt")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip()
    assert err.startswith("error: unknown architecture 'nope'; known: ") and "\n" not in err
    assert all(a in err for a in list_archs())
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_arch_in_a_real_process(tmp_path):
    proc = run_cli(["train", "--arch", "nope"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: unknown architecture 'nope'")
    assert list(tmp_path.iterdir()) == []


def test_distillation_term_by_hand():
    # Teacher p = (1/4, 3/4) (logits 0, ln 3), student q = (1/2, 1/2) at T = 1:
    # KL(p || q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...; at T = 2 the logits halve and T^2 = 4 scales it.
    teacher = torch.tensor([[0.0, 1.0986122886681098]])
    student = torch.zeros(1, 2)
    assert distillation(student, teacher, 1.0).item() == pytest.approx(0.1308120, abs=1e-6)
    # T = 2: p = softmax(0, ln 3 / 2) = (1 / (1 + sqrt 3), sqrt 3 / (1 + sqrt 3)) = (0.366025, 0.633975)
    p = (0.3660254, 0.6339746)
    by_hand = 4 * (p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5))
    assert distillation(student, teacher, 2.0).item() == pytest.approx(by_hand, abs=1e-5)
    assert distillation(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.slow
def test_teacher_changes_the_run_only_through_its_term(straight, tmp_path):
    """kd_weight 0 gives the teacher-less run bit for bit; weight 1 moves the student toward the teacher."""
    plain = straight("resnet20")[0]
    teacher = str(Path(__file__).resolve().parent.parent / "models/resnet20.pt")
    zero = train(_config("resnet20", tmp_path / "zero.pt", teacher=teacher, kd_weight=0.0), log=lambda _: None)
    assert_same_run(zero, plain)
    taught = train(_config("resnet20", tmp_path / "kd.pt", teacher=teacher), log=lambda _: None)
    assert taught.provenance["train_config"]["teacher"] == teacher
    assert taught.metrics["history"][0]["train_loss"] > plain.metrics["history"][0]["train_loss"]


def test_teacher_with_other_preprocessing_is_refused(fast_load_split, tmp_path):
    teacher = str(Path(__file__).resolve().parent.parent / "models/vgg16-imagenette.pt")
    with pytest.raises(UserError, match="preprocessing differs") as e:
        train(_config("resnet20", tmp_path / "x.pt", teacher=teacher), log=lambda _: None)
    assert e.value.exit_code == 2
    assert not (tmp_path / "x.pt").exists()


# --------------------------------------------------------------------------- the AVX2 oneDNN route

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 ssse3 sse4_1 avx f16c fma avx2 bmi2\n"
AVX512 = AVX2_EPYC.replace("avx2 bmi2", "avx2 bmi2 avx512f avx512bw avx512_bf16")


class Watch(Interrupt):
    """Records whether oneDNN convolutions are enabled at each training step."""

    def __init__(self):
        super().__init__(at=-1)
        self.onednn = []

    def update(self, task, advance=0, description=None):
        self.onednn.append(torch.backends.mkldnn.enabled)


@pytest.mark.parametrize("cpuinfo, env, route", [(AVX2_EPYC, None, "nchw"), (AVX512, None, "onednn"),
                                                 (AVX2_EPYC, "0", "native")])
def test_avx2_only_cpu_takes_the_nchw_route(fast_load_split, tmp_path, monkeypatch, cpuinfo, env, route):
    import wae_deploy.training.train as train_mod
    from wae_deploy.runtime import machine

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(train_mod, "cpu_flags", lambda: machine.cpu_flags(tmp_path))
    monkeypatch.setattr(train_mod.platform, "machine", lambda: "x86_64")
    if env is None:
        monkeypatch.delenv(train_mod.ONEDNN_ENV, raising=False)
    else:
        monkeypatch.setenv(train_mod.ONEDNN_ENV, env)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    hooked, real = [], train_mod.nchw_convolutions
    monkeypatch.setattr(train_mod, "nchw_convolutions", lambda model: hooked.append(model) or real(model))
    before = torch.backends.mkldnn.enabled
    logs, watch = [], Watch()
    train(_config("resnet20", tmp_path / "x.pt", epochs=1, limit_batches=2, limit_eval=20), log=logs.append,
          progress=watch)
    assert watch.onednn == [route != "native" and before] * 2
    assert len(hooked) == (route == "nchw")
    notes = [line for line in logs if line.startswith("oneDNN convolutions")]
    if route == "onednn":
        assert notes == []
    else:
        assert len(notes) == 1 and logs[0] == notes[0]  # one line, before any epoch line
    if route == "nchw":
        assert "AVX2 but no AVX-512" in notes[0] and "NCHW" in notes[0] and train_mod.ONEDNN_ENV in notes[0]
        assert train_mod.NCHW_COST in notes[0]
    if route == "native":
        assert notes[0] == f"oneDNN convolutions off for training: {train_mod.ONEDNN_ENV}=0"
    assert torch.backends.mkldnn.enabled == before  # put back after training


def test_nchw_convolutions_take_only_the_broken_shape():
    from wae_deploy.training.train import nchw_affected, nchw_convolutions
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1, 2, bias=False),
                              torch.nn.Conv2d(8, 16, 1, 2, bias=False), torch.nn.Conv2d(16, 6, 1, bias=False),
                              torch.nn.Conv2d(6, 8, 1, 2, bias=False))
    assert [nchw_affected(m) for m in net] == [False, True, False, False, True]
    ref = copy.deepcopy(net)
    net = net.to(memory_format=torch.channels_last)
    assert len(nchw_convolutions(net)) == 4
    seen = []
    for m in net:  # registered after the route's hooks: sees what the convolution gets and gives
        m.register_forward_pre_hook(lambda m, a: seen.append(("in", a[0].is_contiguous())))
        m.register_forward_hook(lambda m, a, out: seen.append(("out", out.is_contiguous(
            memory_format=torch.channels_last))))
    assert net[1].weight.stride() == (4, 1, 1, 1) and net[4].weight.stride() == (6, 1, 1, 1)  # NCHW strides
    x = torch.randn(4, 3, 16, 16)
    net(x.contiguous(memory_format=torch.channels_last)).sum().backward()
    assert [s for s in seen if s[0] == "in"] == [("in", c) for c in (False, True, False, False, True)]
    assert all(channels_last for _, channels_last in seen[1::2])
    with torch.backends.mkldnn.flags(enabled=False):
        ref(x).sum().backward()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)


def test_onednn_route_decision():
    from wae_deploy.training.train import ONEDNN_ENV, onednn_training
    avx2 = {"avx", "avx2", "fma"}
    avx512 = avx2 | {"avx512f"}
    route, line = onednn_training(avx2, "x86_64", {})
    assert route == "nchw" and "AVX2 but no AVX-512" in line and "NCHW" in line and "\n" not in line
    assert onednn_training(avx512, "x86_64", {}) == ("onednn", None)
    assert onednn_training({"asimd", "asimddp"}, "aarch64", {}) == ("onednn", None)
    assert onednn_training(set(), "x86_64", {}) == ("onednn", None)  # flags unreadable: torch's default
    assert onednn_training({"avx"}, "x86_64", {}) == ("onednn", None)  # no AVX2 kernel to reach
    assert onednn_training(avx512, "x86_64", {ONEDNN_ENV: "auto"}) == ("onednn", None)
    # ONEDNN_MAX_CPU_ISA=AVX2 sends a big CPU to the AVX2 kernels too.
    route, line = onednn_training(avx512, "x86_64", {"ONEDNN_MAX_CPU_ISA": "avx2"})
    assert route == "nchw" and "ONEDNN_MAX_CPU_ISA=AVX2" in line
    # The overrides, each with a line where it matters.
    route, line = onednn_training(avx2, "x86_64", {ONEDNN_ENV: "1"})
    assert route == "onednn" and line.startswith("oneDNN convolutions channels-last") and "\n" not in line
    assert onednn_training(avx512, "x86_64", {ONEDNN_ENV: "1"}) == ("onednn", None)
    route, line = onednn_training(avx512, "x86_64", {ONEDNN_ENV: "0"})
    assert route == "native" and line.startswith("oneDNN convolutions off")
    route, line = onednn_training(avx512, "x86_64", {ONEDNN_ENV: "nchw"})
    assert route == "nchw" and f"{ONEDNN_ENV}=nchw" in line
    with pytest.raises(UserError, match=ONEDNN_ENV):
        onednn_training(avx2, "x86_64", {ONEDNN_ENV: "maybe"})

"""Faults: SIGKILL at a random point, two builders at once, a full disk, and hostile paths.

Nothing here may leave a file that a later run would trust: an output is either absent or
complete and valid; unfinished work survives only as a hidden `.NAME.*.partial` (or
`.NAME.*.old`) entry that no command ever picks up.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import cli_process
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fixtures_small import assert_clean_error, cli_command, cli_env, listing, plain_ckpt, run_cli, tiny_ckpt, tiny_onnx  # noqa: F401
from seeds import FAULT_SEED as SEED

from wae_deploy.cli import main
from wae_deploy.convert.targets import get_target
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import data as data_mod
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.preprocess import CIFAR

HIDDEN_LEFTOVER = re.compile(r"^\..+\.(partial|old)$")


def leftovers_are_hidden(folder: Path, expected: set[str]) -> list[str]:
    """Names in `folder` beyond `expected`; each must be a hidden unfinished entry."""
    extra = sorted(p.name for p in folder.iterdir() if p.name not in expected)
    bad = [n for n in extra if not HIDDEN_LEFTOVER.match(n)]
    assert not bad, f"unexpected files after a kill: {bad} (seed {SEED})"
    return extra


def check_onnx_export(path: Path) -> None:
    """A complete, valid export: metadata readable, ONNX checker passes, ONNX Runtime runs it."""
    import onnxruntime as ort

    info = onnx_meta.read(path)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (2, len(info.classes))
    manifest = path.with_suffix(".json")
    if manifest.exists():  # written after the model: if there, it describes this very file
        m = json.loads(manifest.read_text())
        assert m["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def check_artifact(path: Path) -> None:
    target = get_target("ort")
    with target.load(path) as runner:
        assert runner.infer(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)


# The CLI with a pause in the middle of its output, reported on stdout: the test kills it there.
# file N K: the N-th atomic file write pauses after K of its 10 chunks; folder manifest: the
# artifact folder has its model files but no manifest yet; folder swap: it is complete, not renamed.
KILL_POINT = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(Path(__file__).parent)!r})  # file_proxy
    from wae_deploy.runtime import artifact
    from wae_deploy.core import atomic

    kind, where, chunk, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

    def tell(*words):
        print(*words, flush=True)
        time.sleep(120)
        sys.exit(3)

    if kind == "file":
        from file_proxy import FileProxy
        writes = []

        class Chunked(FileProxy):
            def __init__(self, *a):
                super().__init__(*a)
                writes.append(self.f.name)

            def write(self, data):
                step = -(-len(data) // 10)
                for i in range(10):
                    self.f.write(data[i * step:(i + 1) * step])
                    self.f.flush()
                    if len(writes) - 1 == int(where) and i + 1 == chunk:
                        tell("writing", self.f.name, min((i + 1) * step, len(data)), len(data))

        atomic.open = Chunked
    elif where == "manifest":
        artifact.write = lambda folder, final, manifest: tell("writing", folder)
    else:
        atomic._swap_in = lambda tmp, final, parent: tell("writing", tmp)
    from wae_deploy.cli import main
    main(args, prog_name="wae-deploy")
""")


def kill_at(kind: str, where: str, chunk: int, args: list) -> list[str]:
    """Run the CLI with KILL_POINT, SIGKILL it when it reports the pause; assert the kill landed there."""
    call = cli_process.start([kind, where, chunk, *args], cli_env(), code=KILL_POINT, argv0="-c")
    try:
        report, end = [], time.monotonic() + 120
        while call.poll(0.02) is None and time.monotonic() < end:
            # past the command's own log lines (an INT8 build's recipe, its guard) to the pause
            report = next((line.split() for line in call.stdout().splitlines(keepends=True)
                           if line.startswith("writing ") and line.endswith("\n")), [])  # whole lines only
            if report:
                break
        call.kill()
        call.wait(timeout=30)
        assert report and report[0] == "writing", f"no pause reached (seed {SEED}): {call.stderr()[-2000:]}"
        assert call.returncode == -signal.SIGKILL, call.returncode
        return report[1:]
    finally:
        if call.poll() is None:
            call.kill()
            call.poll(30)


# ----------------------------------------------------------------------------- (a) SIGKILL

def test_export_killed_mid_write_leaves_nothing_trusted(plain_ckpt, tmp_path):  # noqa: F811
    """Killed in the model's write, then (a second export) in the manifest's: neither leaves a file a
    later run trusts, and a third export over both kills' leftovers completes."""
    out = tmp_path / "m.onnx"
    args = ["export", plain_ckpt, "-o", out, "--verify", "16"]
    chunk = random.Random(SEED).randint(1, 9)
    left = []
    for write, nth in (("model", "0"), ("manifest", "1")):
        partial, written, total = kill_at("file", nth, chunk, args)
        # the kill landed inside the write: the hidden temporary holds the first chunks only
        assert Path(partial).parent == tmp_path and 0 < int(written) < int(total)
        assert Path(partial).stat().st_size == int(written) and HIDDEN_LEFTOVER.match(Path(partial).name)
        left.append(Path(partial).name)
        assert leftovers_are_hidden(tmp_path, {"m.onnx", "m.json"}) == sorted(left)
        if write == "model":
            assert not out.exists() and not out.with_suffix(".json").exists()
        else:  # the model was complete and renamed in; its manifest was not
            check_onnx_export(out)
            assert not out.with_suffix(".json").exists()
    proc = run_cli(args, timeout=180)
    assert proc.returncode == 0, proc.stderr
    check_onnx_export(out)
    print(f"seed {SEED}: killed in the model and the manifest writes after chunk {chunk}, hidden leftovers {left}")


@pytest.mark.parametrize("where", ["manifest", "swap"])
def test_build_killed_mid_write_leaves_nothing_trusted(tiny_onnx, tmp_path, where):  # noqa: F811
    out = tmp_path / "a"
    # the folder's atomic write is the same for every precision: FP32 builds in seconds, INT8 in ~25 s
    args = ["build", tiny_onnx, "--target", "ort", "--precision", "fp32", "-o", out]
    (partial,) = kill_at("folder", where, 0, args)
    # the kill landed while the folder was being written: its model is there, unpublished
    assert Path(partial).parent == tmp_path and (Path(partial) / "model.onnx").is_file()
    assert (Path(partial) / "manifest.json").is_file() == (where == "swap")
    assert leftovers_are_hidden(tmp_path, {"a"}) == [Path(partial).name] and not out.exists()
    proc = run_cli(args, timeout=180)
    assert proc.returncode == 0, proc.stderr
    check_artifact(out)
    assert json.loads((out / "manifest.json").read_text())["precision"] == "fp32"


def test_leftover_partial_is_never_picked_up(tiny_onnx, tmp_path):  # noqa: F811
    """A half-written artifact folder from a killed build is not loadable under its real name,
    and a later build into the same place succeeds beside it."""
    out = tmp_path / "a"
    stale = tmp_path / ".a.x1y2z3.partial"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half a model")
    with pytest.raises(UserError):
        get_target("ort").load(out)
    r = CliRunner().invoke(main, ["build", str(tiny_onnx), "--target", "ort", "--precision", "fp32", "-o", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    check_artifact(out)


# ----------------------------------------------------------------------------- (b) two builders at once

def test_two_builds_of_the_same_artifact_at_once(tiny_onnx, tmp_path):  # noqa: F811
    out = tmp_path / "a"
    args = ["build", tiny_onnx, "--target", "ort", "--precision", "fp32", "-o", out]   # as above: FP32
    procs = [subprocess.Popen(cli_command() + [str(a) for a in args], env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    check_artifact(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no partial or old folders left


HAMMER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from wae_deploy.core import atomic
    final, me = Path(sys.argv[1]), sys.argv[2]
    for i in range(200):  # no pauses: the swaps of the four writers overlap as often as possible
        with atomic.atomic_dir(final) as tmp:
            (tmp / "model.bin").write_bytes(f"{me}-{i}".encode() * 1000)
            (tmp / "manifest.json").write_text(f"{me}-{i}")
    print("ok")
""")


def test_atomic_dir_survives_concurrent_writers(tmp_path):
    """Four processes replacing one artifact folder 200 times each: every swap succeeds, and what is
    left is one writer's complete folder."""
    final = tmp_path / "art"
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, str(final), f"w{k}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli_env()) for k in range(4)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0 and stdout.strip() == "ok", stderr
    tag = (final / "manifest.json").read_text()
    assert (final / "model.bin").read_bytes() == tag.encode() * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


# ----------------------------------------------------------------------------- (c) a full disk

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullDiskFile(io.BytesIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_write_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "open", lambda *a, **k: _FullDiskFile(), raising=False)
    with pytest.raises(UserError, match="No space left on device"):
        atomic.write_bytes(tmp_path / "x.onnx", b"0" * 1000)
    assert list(tmp_path.iterdir()) == []


class _OsWithFullDisk:
    """The os module as wae_deploy.core.atomic sees it, with rename failing as on a full disk."""

    def __getattr__(self, name):
        return _enospc if name == "replace" else getattr(os, name)


def test_full_disk_export_is_a_clean_error(plain_ckpt, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(atomic, "open", lambda *a, **k: _FullDiskFile(), raising=False)
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export", str(plain_ckpt), "--verify", "0", "-o", str(out)], catch_exceptions=False)
    assert_clean_error(r.exit_code, r.stdout, r.stderr, 2, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_build_is_a_clean_error(tiny_onnx, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(atomic, "os", _OsWithFullDisk())
    out = tmp_path / "a"
    r = CliRunner().invoke(main, ["build", str(tiny_onnx), "--target", "ort", "--precision", "fp32", "-o", str(out)],
                           catch_exceptions=False)
    assert_clean_error(r.exit_code, r.stdout, r.stderr, 2, "No space left on device")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 kB file system (root only): writing a 1.3 MB model to it fills it."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected write errors above cover this")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_really_full_disk(plain_ckpt, tiny_onnx, tiny_tmpfs):  # noqa: F811
    proc = run_cli(["export", plain_ckpt, "--verify", "0", "-o", tiny_tmpfs / "m.onnx"])
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, 2, "No space left on device")
    assert list(tiny_tmpfs.iterdir()) == []
    proc = run_cli(["build", tiny_onnx, "--target", "ort", "--precision", "fp32", "-o", tiny_tmpfs / "a"])
    assert_clean_error(proc.returncode, proc.stdout, proc.stderr, 2, "No space left on device")
    assert list(tiny_tmpfs.iterdir()) == []


# ----------------------------------------------------------------------------- (d) hostile paths

def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def test_cifar_archive_with_escaping_names_writes_nothing(tmp_path, monkeypatch):
    """Members named '../evil', '/abs/evil', links out of the tree: the reader reads the two it
    names into memory and never extracts anything."""
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    batch = pickle.dumps({b"data": np.full((3, 3072), 7, np.uint8), b"labels": [1, 2, 3]}, protocol=2)
    archive = work / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _member(tar, "../evil.txt", b"pwned")
        _member(tar, "../../outside/evil2.txt", b"pwned")
        _member(tar, str(outside / "abs-evil.txt"), b"pwned")
        _member(tar, "cifar-10-batches-py/link", type=tarfile.SYMTYPE, linkname=str(outside / "linked"))
        _member(tar, "cifar-10-batches-py/hard", type=tarfile.LNKTYPE, linkname="../../outside/hard")
        _member(tar, "cifar-10-batches-py/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _member(tar, "../../outside/cifar-10-batches-py/test_batch", batch)
    monkeypatch.chdir(work)
    before = listing(tmp_path)
    data = data_mod.load_split(work, "test", CIFAR)
    assert len(data) == 3 and list(data.labels) == [1, 2, 3] and (data.images == 7).all()
    assert listing(tmp_path) == before
    assert not list(outside.iterdir())


def test_cifar_archive_refuses_code_and_bombs(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _member(tar, "test_batch", pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load"):
        data_mod.load_split(archive, "test", CIFAR)
    assert not (tmp_path / "PWNED").exists()

    with tarfile.open(archive, "w:gz") as tar:  # a member of 200 MB of zeros: refused before it is read
        info = tarfile.TarInfo("test_batch")
        info.size = 200 << 20
        tar.addfile(info, _Zeros(info.size))
    assert archive.stat().st_size < 1_000_000
    with pytest.raises(UserError, match="claims"):
        data_mod.load_split(archive, "test", CIFAR)


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self):
        return True


def test_dotdot_output_lands_where_the_user_said(tiny_onnx, tmp_path):  # noqa: F811
    (tmp_path / "sub").mkdir()
    out = tmp_path / "sub" / ".." / "a"
    r = CliRunner().invoke(main, ["build", str(tiny_onnx), "--target", "ort", "--precision", "fp32", "-o", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert os.path.realpath(out) == str(tmp_path / "a")
    check_artifact(tmp_path / "a")
    assert list((tmp_path / "sub").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "sub"]

    atomic.write_bytes(tmp_path / "sub" / ".." / "x.bin", b"here")
    assert (tmp_path / "x.bin").read_bytes() == b"here" and list((tmp_path / "sub").iterdir()) == []


def test_symlinked_output_file_is_replaced_not_written_through(plain_ckpt, tmp_path):  # noqa: F811
    victim = tmp_path / "elsewhere" / "precious.onnx"
    victim.parent.mkdir()
    victim.write_bytes(b"do not touch")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    link = out_dir / "m.onnx"
    link.symlink_to(victim)
    r = CliRunner().invoke(main, ["export", str(plain_ckpt), "--verify", "0", "-o", str(link)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert victim.read_bytes() == b"do not touch"
    assert not link.is_symlink() and link.is_file()
    check_onnx_export(link)

    link2 = out_dir / "n.bin"  # the same at the file layer
    link2.symlink_to(victim)
    atomic.write_bytes(link2, b"new")
    assert victim.read_bytes() == b"do not touch" and not link2.is_symlink() and link2.read_bytes() == b"new"


def test_symlinked_output_folder_is_replaced_not_emptied(tiny_onnx, tmp_path):  # noqa: F811
    """`-o link` where link points at someone's folder: the link goes, the folder stays whole."""
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    link = tmp_path / "a"
    link.symlink_to(victim, target_is_directory=True)
    r = CliRunner().invoke(main, ["build", str(tiny_onnx), "--target", "ort", "--precision", "fp32", "-o", str(link)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"] and (victim / "keep.txt").read_text() == "mine"
    assert not link.is_symlink() and link.is_dir()
    check_artifact(link)


def test_output_over_a_user_folder_is_refused_and_kept(tiny_onnx, tmp_path, monkeypatch):  # noqa: F811
    """`-o .` or `-o models` must never swap away (and delete) the user's folder."""
    mine = tmp_path / "models"
    mine.mkdir()
    (mine / "wae.pt").write_bytes(b"weights")
    monkeypatch.chdir(mine)
    for target in (mine, Path(".")):
        r = CliRunner().invoke(main, ["build", str(tiny_onnx), "--target", "ort", "--precision", "fp32",
                                      "-o", str(target)], catch_exceptions=False)
        assert_clean_error(r.exit_code, r.stdout, r.stderr, 2, "not a wae-deploy artifact")
    assert (mine / "wae.pt").read_bytes() == b"weights"

"""Atomic output (wae_deploy/core/atomic.py): a reader sees the old file or folder, or the new one, never
part of one; and a process killed in the middle of a write leaves the old one or nothing.

The kill tests stop a child process *during* the write: the child writes in chunks (files) or
file by file (folders), says where it is on a pipe, and waits; the parent kills it with SIGKILL
at that moment and checks that the kill landed (the child died of it, the unfinished temporary
entry is there) before checking what a reader would find. The chunk and the point of the kill
come from WAE_FAULT_SEED (printed in pytest's header; set it to replay a run).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from file_proxy import FileProxy
from seeds import FAULT_SEED

from wae_deploy.core import atomic

HIDDEN_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[^.]+\.partial$")
HIDDEN_OLD = re.compile(r"^\..+\.old$")
REPO = Path(__file__).resolve().parents[1]


class WatchedFile(FileProxy):
    """A file object that checks, at every write, that the final name is not the one being written."""

    def __init__(self, path, mode, final: Path, old: bytes | None, seen: list):
        super().__init__(path, mode)
        self.path, self.final, self.old, self.seen = Path(path), final, old, seen

    def write(self, data):
        self.seen.append(self.path)
        assert self.path.parent.resolve() == self.final.parent.resolve(), "temporary file in another folder"
        match = HIDDEN_PARTIAL.match(self.path.name)
        assert match and match["name"] == self.final.name, f"written under {self.path.name}, not a hidden partial"
        # meanwhile a reader of the final name finds the old file, whole, or nothing
        assert (self.final.read_bytes() if self.final.exists() else None) == self.old
        return self.f.write(data)


@pytest.mark.parametrize("old", [None, b"the old model"])
def test_file_is_written_under_a_hidden_name_then_renamed(tmp_path, monkeypatch, old):
    final, seen = tmp_path / "m.onnx", []
    if old is not None:
        final.write_bytes(old)
    monkeypatch.setattr(atomic, "open", lambda path, mode="r": WatchedFile(path, mode, final, old, seen),
                        raising=False)
    atomic.write_bytes(final, b"new model " * 1000)
    assert len(seen) == 1 and final.read_bytes() == b"new model " * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # the temporary name is gone
    assert oct(final.stat().st_mode & 0o777) == oct(0o666 & ~atomic._UMASK)  # a normal file's mode


@pytest.mark.parametrize("old", [False, True])
def test_folder_is_filled_beside_then_swapped_in(tmp_path, old):
    final = tmp_path / "a"
    if old:
        final.mkdir()
        (final / "manifest.json").write_text("old")
        (final / "model.onnx").write_text("old model")
    with atomic.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and HIDDEN_PARTIAL.match(tmp.name)["name"] == "a"
        (tmp / "model.onnx").write_text("new model")
        (tmp / "manifest.json").write_text("new")
        # nothing of the new folder shows under the final name before the block ends
        if old:
            assert (final / "model.onnx").read_text() == "old model" and (final / "manifest.json").read_text() == "old"
        else:
            assert not final.exists()
    assert (final / "model.onnx").read_text() == "new model" and (final / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_failed_block_leaves_the_old_folder_and_no_temporary(tmp_path):
    final = tmp_path / "a"
    final.mkdir()
    (final / "manifest.json").write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_dir(final) as tmp:
        (tmp / "manifest.json").write_text("half")
        raise RuntimeError("build failed")
    assert (final / "manifest.json").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "f") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("write failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# ----------------------------------------------------------------------------- SIGKILL mid-write

CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from wae_deploy.core import atomic

    mode, final, stop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

    def tell(*words):  # the parent kills us once it has read this line
        print(*words, flush=True)
        time.sleep(60)
        print("not killed", flush=True)
        sys.exit(3)

    if mode == "file":  # 10 chunks of 1000 bytes; the pause comes after chunk `stop`
        from file_proxy import FileProxy

        class Chunked(FileProxy):
            def write(self, data):
                for i in range(10):
                    self.f.write(data[i * 1000:(i + 1) * 1000])
                    self.f.flush()
                    if i + 1 == stop:
                        tell("writing", self.f.name, (i + 1) * 1000)

        atomic.open = Chunked
        atomic.write_bytes(final, b"n" * 10_000)
    elif mode == "folder":  # 4 files; the pause comes after file `stop` (4: after the last, before the swap)
        with atomic.atomic_dir(final) as tmp:
            for i in range(4):
                (tmp / f"part{i}").write_bytes(b"n" * 1000)
                if i + 1 == stop:
                    tell("writing", tmp, i + 1)
    else:  # "swap": an old folder is there; pause once it was moved aside, before the new one is renamed in
        real_replace = os.replace

        class Os:
            def __getattr__(self, name):
                return getattr(os, name)

            def replace(self, src, dst):
                real_replace(src, dst)
                if str(dst).endswith(".old/x"):
                    tell("swapping", src, dst)

        atomic.os = Os()
        with atomic.atomic_dir(final) as tmp:
            (tmp / "part0").write_bytes(b"n")
    print("finished", flush=True)
""")


def kill_mid_write(mode: str, final: Path, stop: int) -> list[str]:
    """Run CHILD, SIGKILL it when it reports that it is in the middle of the write; -> its report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(final), str(stop)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        report = proc.stdout.readline().split()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # the kill landed during the write: the child said where it was, and SIGKILL is what ended it
        assert report and report[0] in ("writing", "swapping"), (report, proc.stderr.read())
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        return report
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def leftovers(folder: Path, expected: set[str]) -> list[str]:
    extra = sorted(p.name for p in folder.iterdir() if p.name not in expected)
    assert all(HIDDEN_PARTIAL.match(n) or HIDDEN_OLD.match(n) for n in extra), f"{extra} (seed {FAULT_SEED})"
    return extra


@pytest.mark.parametrize("old", [None, b"old model"])
def test_kill_during_a_file_write_leaves_the_old_file_or_nothing(tmp_path, old):
    final = tmp_path / "m.onnx"
    if old is not None:
        final.write_bytes(old)
    stop = random.Random(FAULT_SEED).randint(1, 9)
    _, partial, written = kill_mid_write("file", final, stop)
    # the kill landed mid-file: the temporary holds exactly the chunks written so far
    assert Path(partial).read_bytes() == b"n" * int(written) == b"n" * 1000 * stop, f"seed {FAULT_SEED}"
    assert leftovers(tmp_path, {"m.onnx"}) == [Path(partial).name]
    assert (final.read_bytes() if final.exists() else None) == old, f"seed {FAULT_SEED}"


@pytest.mark.parametrize("old", [False, True])
def test_kill_during_a_folder_write_leaves_the_old_folder_or_nothing(tmp_path, old):
    final = tmp_path / "a"
    if old:
        final.mkdir()
        (final / "manifest.json").write_text("old")
    stop = random.Random(FAULT_SEED + 1).randint(1, 4)
    _, partial, written = kill_mid_write("folder", final, stop)
    assert sorted(p.name for p in Path(partial).iterdir()) == [f"part{i}" for i in range(int(written))]
    assert int(written) == stop and leftovers(tmp_path, {"a"}) == [Path(partial).name], f"seed {FAULT_SEED}"
    if old:
        assert sorted(p.name for p in final.iterdir()) == ["manifest.json"]
        assert (final / "manifest.json").read_text() == "old"
    else:
        assert not final.exists()


def test_kill_between_moving_the_old_folder_aside_and_renaming_the_new_in(tmp_path):
    final = tmp_path / "a"
    final.mkdir()
    (final / "manifest.json").write_text("old")
    _, moved, aside = kill_mid_write("swap", final, 0)
    # the old folder is gone from its name, the new one not yet there: nothing, not a mixture
    assert moved == str(final) and not final.exists() and (Path(aside) / "manifest.json").read_text() == "old"
    left = leftovers(tmp_path, set())
    partial, old = (next(n for n in left if n.endswith(end)) for end in (".partial", ".old"))
    assert len(left) == 2
    assert sorted(p.name for p in (tmp_path / partial).iterdir()) == ["part0"] and Path(aside).parent.name == old
    atomic.write_text(tmp_path / "b", "x")  # leftovers do not stand in the way of later writes
    with atomic.atomic_dir(final) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert (final / "manifest.json").read_text() == "new"

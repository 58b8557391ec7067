"""The bad-input catalogue: every case goes through the CLI end to end.

Each case must give the documented exit status (2 for bad input), exactly one line on
stderr starting with "error:", no traceback anywhere, and leave no new file behind (no
output, no `*.partial`). About half run as real processes (`wae-deploy ...`), so a stray
traceback or library warning on stderr would be seen; the rest use click's CliRunner
in-process, which is cheaper.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fixtures_small import assert_clean_error, listing, run_cli, tiny_ckpt, tiny_onnx, write_images  # noqa: F401
from seeds import FUZZ_SEED

from wae_deploy.cli import main

# ----------------------------------------------------------------------------- bad files, made per case

class Ctx:
    """What a case may use: its own empty folder, and the session's tiny checkpoint and ONNX model."""

    def __init__(self, tmp: Path, ckpt: Path, onnx_path: Path):
        self.tmp, self.ckpt, self.onnx = tmp, ckpt, onnx_path

    def file(self, name: str, data: bytes) -> Path:
        p = self.tmp / name
        p.write_bytes(data)
        return p

    def random_bytes(self, name: str, n: int = 4096) -> Path:
        return self.file(name, random.Random(f"{FUZZ_SEED}-{name}").randbytes(n))  # replayable: seeds.py

    def copy(self, src: Path, name: str) -> Path:
        return self.file(name, src.read_bytes())

    def truncated(self, src: Path, name: str) -> Path:
        return self.file(name, src.read_bytes()[: src.stat().st_size // 3])

    def pickled_code(self, name: str) -> Path:
        """A plain pickle whose loading would run a shell command (it must never run)."""
        return self.file(name, pickle.dumps({"state_dict": _Evil(self.tmp / "PWNED")}, protocol=4))

    def torch_pickled_code(self, name: str) -> Path:
        """The same, inside a real torch zip checkpoint."""
        p = self.tmp / name
        torch.save({"format": "wae-deploy-checkpoint", "state_dict": _Evil(self.tmp / "PWNED")}, p)
        return p

    def unknown_arch(self, name: str) -> Path:
        raw = torch.load(self.ckpt, weights_only=True)
        raw["arch"] = "wae-nope50"
        p = self.tmp / name
        torch.save(raw, p)
        return p

    def foreign_weights(self, name: str) -> Path:
        raw = torch.load(self.ckpt, weights_only=True)
        raw["state_dict"] = {"x": torch.zeros(1)}
        p = self.tmp / name
        torch.save(raw, p)
        return p

    def onnx_without_metadata(self, name: str) -> Path:
        import onnx

        m = onnx.load(str(self.onnx))
        del m.metadata_props[:]
        p = self.tmp / name
        onnx.save(m, str(p))
        return p

    def results(self, name: str, doc) -> Path:
        return self.file(name, (doc if isinstance(doc, str) else json.dumps(doc)).encode())

    def folder(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir()
        return p

    def unreadable_images(self, name: str) -> Path:
        p = self.tmp / name
        for c, ext in (("a", "jpg"), ("b", "png")):
            (p / c).mkdir(parents=True)
            (p / c / f"x.{ext}").write_bytes(random.Random(f"{FUZZ_SEED}-{name}-{c}").randbytes(700))
        return p

    def images(self, name: str) -> Path:
        return write_images(self.tmp / name)

    def bomb_images(self, name: str) -> Path:
        """A calibration folder with one PNG whose header claims 30000 x 30000 pixels."""
        p = write_images(self.tmp / name)
        png = bytearray((p / "c0" / "0.png").read_bytes())
        png[16:24] = struct.pack(">II", 30000, 30000)
        png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
        (p / "c0" / "0.png").write_bytes(bytes(png))
        return p


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- the catalogue

@dataclass
class Case:
    id: str
    args: Callable[[Ctx], list]
    match: str                                  # a piece of the one-line message
    sub: bool = False                           # run as a real process (else CliRunner)
    env: Callable[[Ctx], dict] = field(default=lambda c: {})
    code: int = 2
    skip: Callable[[], str | None] = field(default=lambda: None)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


CASES = [
    # --- files
    Case("missing-checkpoint", lambda c: ["export", c.tmp / "nope.pt", "-o", c.tmp / "m.onnx"],
         "checkpoint not found", sub=True),
    Case("random-bytes-checkpoint", lambda c: ["export", c.random_bytes("r.pt"), "-o", c.tmp / "m.onnx"],
         "not a readable checkpoint", sub=True),
    Case("truncated-checkpoint", lambda c: ["export", c.truncated(c.ckpt, "t.pt"), "-o", c.tmp / "m.onnx"],
         "truncated or corrupt", sub=True),
    Case("pickled-code-checkpoint", lambda c: ["export", c.pickled_code("evil.pt"), "-o", c.tmp / "m.onnx"],
         "pickled objects or code", sub=True),
    Case("pickled-code-in-torch-zip", lambda c: ["export", c.torch_pickled_code("evil.pt"), "-o", c.tmp / "m.onnx"],
         "pickled objects or code"),
    Case("checkpoint-unknown-arch", lambda c: ["export", c.unknown_arch("u.pt"), "-o", c.tmp / "m.onnx"],
         "unknown architecture 'wae-nope50'", sub=True),
    Case("checkpoint-foreign-weights", lambda c: ["export", c.foreign_weights("f.pt"), "--verify", "0",
                                                  "-o", c.tmp / "m.onnx"], "weights do not fit"),
    Case("empty-checkpoint", lambda c: ["export", c.file("e.pt", b""), "-o", c.tmp / "m.onnx"],
         "not a readable checkpoint"),
    Case("folder-as-checkpoint", lambda c: ["export", c.folder("d.pt"), "-o", c.tmp / "m.onnx"],
         "checkpoint not found"),
    Case("checkpoint-as-onnx", lambda c: ["build", c.ckpt, "--target", "ort", "--precision", "fp32",
                                          "-o", c.tmp / "a"], "not a readable ONNX model"),
    Case("corrupt-onnx", lambda c: ["build", c.truncated(c.onnx, "c.onnx"), "--target", "ort",
                                    "--precision", "fp32", "-o", c.tmp / "a"], "not a readable ONNX model", sub=True),
    Case("onnx-without-metadata", lambda c: ["build", c.onnx_without_metadata("n.onnx"), "--target", "ort",
                                             "--precision", "fp32", "-o", c.tmp / "a"], "not a wae-deploy export",
         sub=True),
    Case("empty-onnx", lambda c: ["build", c.file("e.onnx", b""), "--target", "openvino", "--precision", "fp32",
                                  "-o", c.tmp / "a"], "not a readable ONNX model"),
    Case("folder-as-onnx", lambda c: ["build", c.folder("d.onnx"), "--target", "ort", "--precision", "fp32",
                                      "-o", c.tmp / "a"], "ONNX model not found"),
    Case("results-corrupt-json", lambda c: ["bench", "--target", "ort", "--compare",
                                            c.results("r.json", '{"format": "wae-deploy-bench", "sch')],
         "not valid JSON", sub=True),
    Case("results-other-schema", lambda c: ["bench", "--target", "ort", "--compare", c.results(
        "r.json", {"format": "wae-deploy-bench", "schema_version": 99, "entries": []})], "schema version 99"),
    Case("results-other-format", lambda c: ["bench", "--target", "ort", "--compare", c.results(
        "r.json", {"format": "something-else", "schema_version": 1})], "not a wae-deploy bench results file"),
    Case("results-deeply-nested", lambda c: ["bench", "--target", "ort", "--compare",
                                             c.results("r.json", "[" * 100_000)], "corrupt"),
    Case("results-folder", lambda c: ["bench", "--target", "ort", "--compare", c.folder("r.json")],
         "cannot read results file"),
    Case("inspect-random-bytes", lambda c: ["inspect", c.random_bytes("r.pt"), "-o", c.tmp / "i.png"],
         "not a readable checkpoint"),
    # --- folders
    Case("calib-folder-empty", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                          "--calib", c.folder("cal"), "-o", c.tmp / "a"], "no images found", sub=True),
    Case("calib-folder-unreadable-images", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                                      "--calib", c.unreadable_images("cal"), "-o", c.tmp / "a"],
         "unreadable image"),
    Case("calib-decompression-bomb", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                                "--calib", c.bomb_images("cal"), "-o", c.tmp / "a"], "image too large",
         sub=True),
    Case("data-folder-missing", lambda c: ["export", c.ckpt, "--data", c.tmp / "nowhere", "-o", c.tmp / "m.onnx"],
         "data folder does not exist"),
    Case("output-under-a-file", lambda c: ["export", c.ckpt, "--verify", "0",
                                           "-o", c.file("plain", b"x") / "out.onnx"], "output folder does not exist",
         sub=True),
    Case("output-folder-missing", lambda c: ["export", c.ckpt, "--verify", "0", "-o", c.tmp / "no" / "m.onnx"],
         "output folder does not exist"),
    Case("output-is-a-folder", lambda c: ["export", c.ckpt, "--verify", "0", "-o", c.folder("m.onnx")],
         "is a folder"),
    Case("output-folder-not-writable", lambda c: ["export", c.ckpt, "--verify", "0", "-o", "/proc/x.onnx"],
         "output folder is not writable", sub=True),
    Case("export-over-its-checkpoint", lambda c: ["export", c.copy(c.ckpt, "w.pt"), "--verify", "0",
                                                  "-o", c.tmp / "w.pt"], "would overwrite the checkpoint"),
    Case("export-to-json-name", lambda c: ["export", c.ckpt, "--verify", "0", "-o", c.tmp / "m.json"],
         "the manifest is written beside the model"),
    Case("artifact-over-its-own-model", lambda c: ["build", c.copy(c.onnx, "m.onnx"), "--target", "ort",
                                                   "--precision", "fp32", "-o", c.tmp / "m.onnx"], "it is a file"),
    Case("artifact-under-a-file", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "fp32",
                                             "-o", c.file("plain", b"x") / "a"], "output folder does not exist"),
    Case("artifact-over-user-folder", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "fp32",
                                                 "-o", c.images("mine")], "not a wae-deploy artifact"),
    Case("artifact-over-user-file", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "fp32",
                                               "-o", c.file("notes.txt", b"keep me")], "it is a file"),
    Case("train-data-missing", lambda c: ["train", "--arch", "resnet20", "--data", c.tmp / "nowhere",
                                          "-o", c.tmp / "t.pt"], "data folder does not exist"),
    # --- arguments
    Case("unknown-target", lambda c: ["build", c.onnx, "--target", "tpu", "--precision", "fp32", "-o", c.tmp / "a"],
         "unknown target 'tpu'", sub=True),
    Case("unknown-precision", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "fp64",
                                         "-o", c.tmp / "a"], "'fp64' is not one of"),
    Case("precision-target-cannot-do", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "bf16",
                                                  "-o", c.tmp / "a"], "cannot build bf16", sub=True),
    Case("export-batch-zero", lambda c: ["export", c.ckpt, "--batch", "0", "-o", c.tmp / "m.onnx"],
         "batch must be positive"),
    Case("export-batch-word", lambda c: ["export", c.ckpt, "--batch", "lots", "-o", c.tmp / "m.onnx"],
         "neither 'dynamic' nor an integer", sub=True),
    Case("export-opset-9", lambda c: ["export", c.ckpt, "--opset", "9", "-o", c.tmp / "m.onnx"],
         "opset 9 cannot be produced", sub=True),
    Case("simplifier-not-installed", lambda c: ["export", c.ckpt, "--simplifier", "onnxsim", "-o", c.tmp / "m.onnx"],
         "simplifier onnxsim is not installed", skip=lambda: "onnxsim is installed" if _installed("onnxsim") else None),
    Case("train-unknown-arch", lambda c: ["train", "--arch", "nope", "-o", c.tmp / "t.pt"],
         "unknown architecture 'nope'"),
    Case("calib-size-negative", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                           "--calib", c.images("cal"), "--calib-size", "-5", "-o", c.tmp / "a"],
         "--calib-size must be positive"),
    Case("accuracy-drop-negative", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                              "--max-accuracy-drop", "-3", "-o", c.tmp / "a"],
         "--max-accuracy-drop must be zero or more", sub=True),
    Case("bench-batch-list-bad", lambda c: ["bench", "--target", "ort", "--models", c.onnx, "--batch", "1,x"],
         "not a comma-separated list of int"),
    Case("bench-batch-zero", lambda c: ["bench", "--target", "ort", "--models", c.onnx, "--batch", "0",
                                        "--workdir", c.tmp / "w"], "batch sizes must be positive"),
    Case("bench-update-without-compare", lambda c: ["bench", "--target", "ort", "--update"], "--update needs"),
    Case("unknown-command", lambda c: ["deploy-everything"], "no such command"),
    Case("unknown-option", lambda c: ["--turbo", "build"], "no such option", sub=True),
    # --- environment
    Case("tensorrt-not-available", lambda c: ["build", c.onnx, "--target", "trt", "--precision", "fp16",
                                              "-o", c.tmp / "a"], "is not available here", sub=True,
         skip=lambda: "tensorrt is installed" if _installed("tensorrt") else None),
    Case("wae-data-points-nowhere", lambda c: ["export", c.ckpt, "-o", c.tmp / "m.onnx"], "data folder does not exist",
         sub=True, env=lambda c: {"WAE_DATA": str(c.tmp / "nowhere")}),
    Case("wae-cache-is-a-file", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                           "--calib", c.images("cal"), "-o", c.tmp / "a"],
         "cannot use the cache folder",
         sub=True, env=lambda c: {"WAE_CACHE": str(c.file("cachefile", b"x"))}),
    Case("home-is-a-file", lambda c: ["build", c.onnx, "--target", "ort", "--precision", "int8",
                                      "--calib", c.images("cal"), "-o", c.tmp / "a"], "cannot use the cache folder",
         sub=True, env=lambda c: {"HOME": str(c.file("homefile", b"x")), "WAE_CACHE": None}),
]


def test_catalogue_is_big_enough():
    assert len(CASES) >= 25
    assert sum(c.sub for c in CASES) >= len(CASES) / 3
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, tiny_ckpt, tiny_onnx, monkeypatch):  # noqa: F811 - fixtures
    why = case.skip()
    if why:
        pytest.skip(why)
    work = tmp_path / "case"
    work.mkdir()
    ctx = Ctx(work, tiny_ckpt, tiny_onnx)
    args = [str(a) for a in case.args(ctx)]
    env = case.env(ctx)
    watched = (work, tiny_ckpt.parent)
    before = listing(*watched)
    user_files = {p: Path(p).read_bytes() for p in before if Path(p).is_file()}

    if case.sub:
        proc = run_cli(args, cwd=work, **env)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        monkeypatch.chdir(work)
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
        code, out, err = result.exit_code, result.stdout, result.stderr

    assert_clean_error(code, out, err, case.code, case.match)
    assert len(err.strip()) < 600, f"a one-line message, not a listing: {len(err)} characters"
    after = listing(*watched)
    assert after - before == set(), f"left behind: {sorted(after - before)}"
    assert not [p for p in after if ".partial" in p or p.endswith(".old")]
    assert not (work / "PWNED").exists(), "a pickled checkpoint ran code"
    for p, data in user_files.items():  # nothing the user had was changed or removed
        assert Path(p).read_bytes() == data, f"{p} was modified"


# ----------------------------------------------------------------------------- beyond the CLI

def test_artifact_for_another_runtime_version_is_refused(tiny_onnx, tmp_path):  # noqa: F811
    """An artifact built with another runtime version (or for another target) is never loaded."""
    from wae_deploy.convert.targets import get_target
    from wae_deploy.core.errors import UserError

    target = get_target("ort")
    art = tmp_path / "a"
    target.build(tiny_onnx, "fp32", None, art)
    manifest = json.loads((art / "manifest.json").read_text())
    for change, match in (({"runtime_version": "0.0.1"}, "was built with ort 0.0.1"),
                          ({"target": "openvino"}, "built for target 'openvino'")):
        (art / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(UserError, match=match):
            target.load(art)
    (art / "manifest.json").write_text("{ not json")
    with pytest.raises(UserError, match="corrupt artifact manifest"):
        target.load(art)
    (art / "manifest.json").unlink()
    with pytest.raises(UserError, match="not a wae-deploy artifact"):
        target.load(art)


def test_usage_errors_are_one_line_and_help_still_works():
    r = CliRunner().invoke(main, [], catch_exceptions=False)
    assert "Usage:" in r.output and "Commands:" in r.output  # bare command: the help, as before
    r = CliRunner().invoke(main, ["build", "--help"], catch_exceptions=False)
    assert r.exit_code == 0 and "--precision" in r.stdout
    r = CliRunner().invoke(main, ["export"], catch_exceptions=False)
    assert_clean_error(r.exit_code, r.stdout, r.stderr, 2, "missing argument 'CKPT'")

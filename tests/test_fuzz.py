"""Fuzz the loaders with truncated, mutated and random bytes (hypothesis, bounded).

The only exception any loader may raise is wae_deploy.core.errors.UserError (the CLI turns it
into one line and exit status 2); nothing may hang (each example runs under an alarm).
Decompression bombs are refused before decoding, within a small memory bound.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fixtures_small import tiny_ckpt, tiny_onnx  # noqa: F401 - session fixtures
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from PIL import Image
from seeds import FUZZ_SEED, IN_CI

from wae_deploy.benchmark import results as R
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import data as data_mod
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.preprocess import CIFAR, IMAGENET, MAX_IMAGE_PIXELS
from wae_deploy.training import checkpoint

# WAE_FUZZ_EXAMPLES=2000 for a deeper hunt than CI needs.
FUZZ = settings(max_examples=int(os.environ.get("WAE_FUZZ_EXAMPLES", 50)), deadline=None,
                suppress_health_check=list(HealthCheck))
EXAMPLE_TIMEOUT_S = 20


class Hang(BaseException):
    """Not an Exception (and not an OSError like TimeoutError): no loader can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: int = EXAMPLE_TIMEOUT_S):
    def fire(signum, frame):
        raise Hang(f"loader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def only_user_errors(fn, *args, **kwargs):
    """Run a loader: it either succeeds or raises UserError with a one-line message."""
    with time_limit(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            assert str(e) and "\n" not in str(e).strip(), repr(str(e))
            return None
        finally:  # a warning would reach the user's terminal as extra lines on stderr
            assert not caught, [str(w.message) for w in caught]


def fuzz(*strategies, min_examples: int = 20):
    """Run the decorated body on hypothesis examples now, and check that enough of them ran."""
    def run_now(body):
        seen = []

        @FUZZ
        @given(st.tuples(*strategies))
        def check(args):
            seen.append(1)
            body(*args)

        if not IN_CI:  # an explicit seed would override the CI profile's derandomize
            check = seed(FUZZ_SEED)(check)
        check()
        assert len(seen) >= min_examples, f"only {len(seen)} examples ran"
        return body
    return run_now


def mutate(base: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """`base` cut to `cut` bytes, then with some bytes overwritten (positions taken modulo the length)."""
    buf = bytearray(base[:cut])
    for pos, value in flips:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf)


def mutations(base: bytes):
    return st.builds(mutate, st.just(base), st.integers(0, len(base)),
                     st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=8))


def fuzz_bytes(base: bytes):
    """Random bytes, plain truncations of a valid file, and truncated + mutated copies of it."""
    return st.one_of(st.binary(max_size=2048), st.builds(lambda n: base[:n], st.integers(0, len(base))),
                     mutations(base))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------------------- checkpoints

def _tiny_checkpoint_bytes(tmp: Path) -> bytes:
    ckpt = checkpoint.Checkpoint(arch="wae-resnet20", config={"num_classes": 10, "input_size": 32},
                                 state_dict={"w": torch.arange(6.0)}, classes=[str(i) for i in range(10)],
                                 preprocessing=CIFAR)
    checkpoint.save(ckpt, tmp / "base.pt")
    assert checkpoint.load(tmp / "base.pt").arch == "wae-resnet20"
    return (tmp / "base.pt").read_bytes()


@pytest.fixture(scope="module")
def ckpt_bytes(work) -> bytes:
    return _tiny_checkpoint_bytes(work)


def test_fuzz_checkpoint_bytes(work, ckpt_bytes):
    @fuzz(fuzz_bytes(ckpt_bytes))
    def check(blob):
        p = work / "fuzz.pt"
        p.write_bytes(blob)
        only_user_errors(checkpoint.load, p)



JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10, 1 << 40) | st.floats() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=4), max_leaves=12)


def test_fuzz_checkpoint_fields(work):
    """Well-formed torch files whose fields hold the wrong things: a clean error, never a crash later."""
    good = {"format": "wae-deploy-checkpoint", "schema_version": 1, "arch": "wae-resnet20",
            "config": {"num_classes": 10, "input_size": 32}, "state_dict": {"w": torch.zeros(2)},
            "classes": ["a", "b"], "preprocessing": CIFAR.to_dict(), "metrics": {}, "provenance": {}}

    @fuzz(st.sampled_from(sorted(good)), JSONISH, st.booleans())
    def check(key, value, drop):
        raw = dict(good)
        if drop:
            raw.pop(key)
        else:
            raw[key] = value
        p = work / "fields.pt"
        torch.save(raw, p)
        ckpt = only_user_errors(checkpoint.load, p)
        if ckpt is not None:  # what loads must be usable: the config and preprocessing are sound
            assert ckpt.config["num_classes"] > 0 and ckpt.preprocessing.crop > 0



# ----------------------------------------------------------------------------- ONNX models

def _tiny_onnx() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["images"], ["p"]),
                               helper.make_node("Flatten", ["p"], ["logits"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx_meta.write(model, onnx_meta.ModelInfo(arch="wae-resnet20", classes=["a", "b", "c"], preprocessing=CIFAR,
                                               config={"num_classes": 3, "input_size": 4}, checkpoint_sha256="0" * 64,
                                               version="0", extra={"metrics": {"top1": 1.0}}))
    return model


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return _tiny_onnx().SerializeToString()


def test_fuzz_onnx_bytes(work, onnx_bytes):
    @fuzz(fuzz_bytes(onnx_bytes))
    def check(blob):
        p = work / "fuzz.onnx"
        p.write_bytes(blob)
        only_user_errors(onnx_meta.load_model, p)
        only_user_errors(onnx_meta.read, p)



def test_metadata_that_is_not_utf8_is_ignored_or_refused(work, onnx_bytes):
    """Found by test_fuzz_onnx_bytes: protobuf hands back bytes for a string field that is not UTF-8.
    A foreign key of that kind is not ours and is skipped; one of our values is malformed metadata."""
    for old, new, ok in [(b"wae_deploy.metrics", b"\x80ae_deploy.metrics", True),
                         (b"wae-resnet20", b"\x80ae-resnet20", False)]:
        assert onnx_bytes.count(old) == 1
        path = work / "not-utf8.onnx"
        path.write_bytes(onnx_bytes.replace(old, new))
        if ok:
            info = onnx_meta.read(path)
            assert info.arch == "wae-resnet20" and "metrics" not in info.extra
        else:
            with pytest.raises(UserError, match="malformed wae_deploy metadata: a value is not UTF-8 text"):
                onnx_meta.read(path)


def test_fuzz_onnx_metadata_values(work):
    """A valid graph whose wae_deploy metadata values are arbitrary strings."""
    keys = ["arch", "classes", "preprocessing", "config", "metrics"]

    @fuzz(st.sampled_from(keys), st.one_of(st.text(max_size=40), JSONISH.map(json.dumps)))
    def check(key, value):
        model = _tiny_onnx()
        for p in model.metadata_props:
            if p.key == onnx_meta.PREFIX + key:
                p.value = value
        path = work / "meta.onnx"
        path.write_bytes(model.SerializeToString())
        info = only_user_errors(onnx_meta.read, path)
        if info is not None:
            assert isinstance(info.classes, list) and isinstance(info.config, dict)



def test_real_export_truncated(work, tiny_onnx):  # noqa: F811 - fixture
    blob = tiny_onnx.read_bytes()
    for frac in (0.0, 0.01, 0.3, 0.7, 0.999):
        p = work / "cut.onnx"
        p.write_bytes(blob[: int(len(blob) * frac)])
        with pytest.raises(UserError):
            with time_limit():
                onnx_meta.read(p)


# ----------------------------------------------------------------------------- recorded results

@pytest.fixture(scope="module")
def results_bytes() -> bytes:
    entry = R.make_entry(model="m", target="ort", precision="fp32", batch=1,
                         latency={"median_ms": 1.0, "p90_ms": 1.2}, accuracy={"top1": 90.0, "top5": 99.0, "n": 10})
    doc = R.new_results(environment={"cpu": "x"}, suite={"name": "t"}, entries=[entry])
    return json.dumps(doc).encode()


def test_fuzz_results_bytes(work, results_bytes):
    @fuzz(st.one_of(fuzz_bytes(results_bytes),
                     st.sampled_from([b"[" * 100_000, b"1" * 5000, b'{"a": NaN}', b"\xff\xfe{}", b"null"])))
    def check(blob):
        p = work / "results.json"
        p.write_bytes(blob)
        only_user_errors(R.load, p)



def test_fuzz_results_structure(work, results_bytes):
    """Valid JSON, wrong shapes: any field of the document or of an entry replaced by anything."""
    doc = json.loads(results_bytes)

    @fuzz(st.sampled_from(sorted(doc) + [f"entries.0.{k}" for k in sorted(doc["entries"][0])]), JSONISH)
    def check(key, value):
        d = json.loads(results_bytes)
        if key.startswith("entries.0."):
            d["entries"][0][key.split(".", 2)[2]] = value
        else:
            d[key] = value
        p = work / "structure.json"
        p.write_text(json.dumps(d))
        only_user_errors(R.load, p)



# ----------------------------------------------------------------------------- images

def _image_corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    out = {}
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("BMP", {}), ("WEBP", {}), ("PPM", {}),
                    ("TIFF", {})):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        out[fmt] = b.getvalue()
    return out


CORPUS = _image_corpus()
IMAGE_BYTES = st.one_of(st.binary(max_size=1024),
                        st.sampled_from(sorted(CORPUS)).flatmap(lambda f: mutations(CORPUS[f])))


def test_fuzz_load_image(work):
    @fuzz(IMAGE_BYTES, st.sampled_from([CIFAR, IMAGENET]))
    def check(blob, spec):
        p = work / "fuzz.png"
        p.write_bytes(blob)
        arr = only_user_errors(spec.load_image, p)
        if arr is not None:
            assert arr.shape == (spec.crop, spec.crop, 3) and arr.dtype == np.uint8



def test_fuzz_load_split(work):
    """A folder of one good and one fuzzed image, read as a calibration/evaluation split."""
    root = work / "split"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
    (root / "train" / "a" / "good.png").write_bytes(CORPUS["PNG"])

    @fuzz(IMAGE_BYTES, st.sampled_from(["x.png", "x.jpg", "x.webp"]))
    def check(blob, name):
        for old in (root / "train" / "b").iterdir():
            old.unlink()
        (root / "train" / "b" / name).write_bytes(blob)
        data = only_user_errors(data_mod.load_split, root, "train", CIFAR, use_cache=False)
        if data is not None:
            assert data.images.shape == (2, 32, 32, 3) and list(data.labels) == [0, 1]



def test_fuzz_cifar_archive(work):
    """Random and mutated bytes where the CIFAR-10 python archive is expected."""
    base = _cifar_archive(work / "base.tar.gz", {"test_batch": _batch(4)})
    assert len(data_mod.load_split(base, "test", CIFAR)) == 4

    @fuzz(fuzz_bytes(base.read_bytes()))
    def check(blob):
        p = work / "cifar-10-python.tar.gz"
        p.write_bytes(blob)
        only_user_errors(data_mod.load_split, p, "test", CIFAR)



def _batch(n: int, override: dict | None = None) -> bytes:
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n)), **(override or {})}
    return pickle.dumps(batch, protocol=2)


def _cifar_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.mark.parametrize("batch", [pickle.dumps([1, 2, 3]), pickle.dumps({b"data": "text", b"labels": [0]}),
                                   _batch(2, {b"labels": [0]}), pickle.dumps({b"data": np.zeros(7, np.uint8),
                                                                                b"labels": []})],
                         ids=["not-a-dict", "data-not-array", "label-count", "bad-shape"])
def test_cifar_archive_wrong_contents(tmp_path, batch):
    archive = _cifar_archive(tmp_path / "c.tar.gz", {"cifar-10-batches-py/test_batch": batch})
    with pytest.raises(UserError, match="not a valid CIFAR-10 python archive"):
        data_mod.load_split(archive, "test", CIFAR)


# ----------------------------------------------------------------------------- decompression bombs

def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is patched to claim width x height pixels (CRC fixed)."""
    b = io.BytesIO()
    Image.new("L", (16, 16)).save(b, "PNG")
    png = bytearray(b.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _real_bomb(path: Path) -> Path:
    """9000 x 9000 pixels (81 M, over the 64 M limit) that compress to about 80 kB."""
    Image.new("L", (9000, 9000)).save(path, "PNG", optimize=True)
    return path


BOMB_PROBE = textwrap.dedent("""
    import json, resource, sys
    from wae_deploy.core.errors import UserError
    from wae_deploy.runtime.preprocess import CIFAR
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        CIFAR.load_image(sys.argv[1])
        outcome = "loaded"
    except UserError as e:
        outcome = "error: " + str(e)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "grew_mb": (after - before) / 1024}))
""")


@pytest.mark.parametrize("kind", ["header-30000x30000", "header-1x60000000", "real-9000x9000"])
def test_decompression_bomb_refused_within_memory_bound(tmp_path, kind):
    path = tmp_path / "bomb.png"
    if kind == "real-9000x9000":
        _real_bomb(path)
        assert path.stat().st_size < 200_000
    elif kind == "header-30000x30000":
        path.write_bytes(_png_claiming(30000, 30000))
    else:  # under the pixel limit, but resizing its short side to 32 would make 1.9 G pixels
        path.write_bytes(_png_claiming(1, 60_000_000))
    # A fresh process, so that ru_maxrss (a high-water mark) measures this load alone.
    proc = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # no DecompressionBombWarning either
    result = json.loads(proc.stdout)
    assert result["outcome"].startswith("error: "), result
    assert "too large" in result["outcome"] or "too elongated" in result["outcome"]
    assert result["grew_mb"] < 40, result  # decoding 81 M pixels to RGB alone would take 240 MB


def test_bomb_in_a_calibration_folder_fails_cleanly(tmp_path):
    root = tmp_path / "cal"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(CORPUS["PNG"])
    (root / "a" / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    with pytest.raises(UserError, match="too large"):
        data_mod.load_split(root, "train", CIFAR, use_cache=False)


def test_pixel_limit_is_applied_to_pil():
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


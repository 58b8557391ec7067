"""Checkpoint -> ONNX: the inference graph only, simplified, verified, and self-describing.

The decoder is training-only and never reaches the graph. The ONNX metadata carries the
architecture, classes and preprocessing, so build and bench need no checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from wae_deploy.core import __version__, atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.training import checkpoint
from wae_deploy.training.models import Decomposed
from wae_deploy.training.models.flops import baseline_of, count

MIN_OPSET = 18  # the dynamo exporter's floor; older opsets need the retired TorchScript path
MAX_ABS_DIFF = 1e-4
SIMPLIFIERS = ("onnxslim", "onnxsim", "none")


@dataclass
class ExportResult:
    path: Path
    manifest: dict = field(default_factory=dict)


class _Encoder(torch.nn.Module):
    """The split alone (outputs I_L, I_H), for looking at the decomposition on the device."""

    def __init__(self, model: Decomposed):
        super().__init__()
        self.decomposer = model.decomposer

    def forward(self, x):
        return self.decomposer(x)


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def _check_request(opset: int, simplifier: str) -> None:
    if not MIN_OPSET <= opset <= max_opset():
        raise UserError(f"opset {opset} cannot be produced by this torch/onnx (supported: {MIN_OPSET}-{max_opset()})")
    if simplifier not in SIMPLIFIERS:
        raise UserError(f"unknown simplifier {simplifier!r}; choose one of {', '.join(SIMPLIFIERS)}")
    module = {"onnxsim": "onnxsim", "onnxslim": "onnxslim"}.get(simplifier)
    if module and importlib.util.find_spec(module) is None:
        hint = install_command(module)
        raise UserError(f"simplifier {simplifier} is not installed ({hint})")


def to_onnx(module: torch.nn.Module, example: torch.Tensor, opset: int, batch: int | None,
            output_names: list[str]) -> onnx.ModelProto:
    """torch.export-based exporter; batch None makes the batch axis dynamic."""
    dynamic = None if batch else {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}
    # The exporter narrates its progress on stdout and warns about internals users cannot act on.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                        input_names=[onnx_meta.INPUT], output_names=output_names,
                                        dynamic_shapes=dynamic, external_data=False, verbose=False)
        except Exception as e:  # noqa: BLE001 - exporter failures come in many types
            raise UserError(f"torch could not export the model at opset {opset}: {str(e).splitlines()[0]}") from e
        finally:
            quiet.setLevel(level)
    model = program.model_proto
    model.producer_name, model.producer_version = "wae-deploy", __version__
    _name_nodes_by_module(model)
    return model


def _name_nodes_by_module(model: onnx.ModelProto) -> None:
    """Name each node after the torch module that made it ("decomposer.body.0/Conv").

    Runtimes then report layers by a name a user can map to the model, quantizers can keep
    whole branches in float by name pattern, and the exporter's per-node metadata (stack
    traces with local paths) is dropped, so the same checkpoint gives the same bytes anywhere.
    """
    seen: dict[str, int] = {}
    params = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        parts = [s.strip(" '") for s in scopes.strip("[]").split(",") if s.strip(" '")]
        module = parts[-2] if len(parts) >= 2 else "graph"
        # The exporter folds an eval-mode BatchNorm into the convolution before it and the fused
        # node carries the BatchNorm's scope; its weight keeps the convolution's own name. Without
        # this, decomposer.low/high (followed by norm_low/norm_high) fell out of the "encoder" part.
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else ""
        if weight.endswith(".weight") and weight in params:
            module = weight[: -len(".weight")]
        base = f"{module}/{node.op_type}"
        seen[base] = seen.get(base, -1) + 1
        node.name = base if seen[base] == 0 else f"{base}_{seen[base]}"
        del node.metadata_props[:]


def simplify(model: onnx.ModelProto, simplifier: str) -> onnx.ModelProto:
    if simplifier == "onnxslim":
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()):
            return onnxslim.slim(model)
    if simplifier == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise ValueError("onnxsim's own check failed")
        return simplified
    return model


def ort_logits(model: onnx.ModelProto, batch: np.ndarray, chunk: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    chunk = chunk or len(batch)
    return np.concatenate([sess.run(None, {name: batch[i:i + chunk]})[0] for i in range(0, len(batch), chunk)])


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    return {"max_abs_diff": float(np.abs(reference - candidate).max()),
            "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
            "n": int(len(reference))}


def verified(model: torch.nn.Module, raw: onnx.ModelProto, final: onnx.ModelProto, used: str, images: np.ndarray,
             batch: int | None) -> tuple[onnx.ModelProto, str, str | None, dict]:
    """Check `final` (simplified by `used`) against torch on `images`: -> (graph, simplifier, note, parity).

    A simplified graph that breaks parity gives way to the raw export (the note says so); a graph
    that still disagrees is refused with exit status 1, before anything is written.
    """
    chunk = 256 if batch is None else batch
    with torch.no_grad():
        reference = torch.cat([model(torch.from_numpy(images[i:i + 256])) for i in range(0, len(images), 256)]).numpy()
    check, note = parity(reference, ort_logits(final, images, chunk)), None
    if used != "none" and not _passes(check):
        note = (f"{used} broke parity (max |diff| {check['max_abs_diff']:.2e}, top-1 agreement "
                f"{100 * check['top1_agreement']:.1f}%); kept the unsimplified graph")
        final, used = raw, "none"
        check = parity(reference, ort_logits(final, images, chunk))
    if not _passes(check):
        raise UserError(f"exported graph disagrees with PyTorch (max |diff| {check['max_abs_diff']:.2e}, "
                        f"top-1 agreement {100 * check['top1_agreement']:.1f}%); nothing written", exit_code=1)
    return final, used, note, check


def graph_hash(model: onnx.ModelProto) -> str:
    """Hash of the graph and weights (not producer fields), for checking that exports repeat."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def export(ckpt_path: str | Path, out: str | Path | None = None, opset: int = MIN_OPSET, batch: int | None = None,
           simplifier: str = "onnxslim", verify: int = 64, data: str | Path | None = None,
           parts: bool = False, log=print, ckpt: checkpoint.Checkpoint | None = None) -> ExportResult:
    """Export the checkpoint at `ckpt_path`, or `ckpt` made from foreign weights at that path."""
    t0 = time.perf_counter()
    _check_request(opset, simplifier)
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got {batch}")
    ckpt_path = Path(ckpt_path)
    ckpt = ckpt or checkpoint.load(ckpt_path)
    out = _output_path(ckpt_path, out)
    model = ckpt.build_model()
    size = ckpt.config["input_size"]
    images = _verification_images(ckpt.preprocessing, size, verify, data)
    example = torch.from_numpy(images[:2] if batch is None else np.resize(images, (batch, 3, size, size)))
    raw = to_onnx(model, example, opset, batch, ["logits"])
    info = _model_info(ckpt, ckpt_path, model)
    final, used, note = _simplified(raw, simplifier)
    check = {}
    if verify > 0:
        final, used, broke, check = verified(model, raw, final, used, images, batch)
        note = broke or note
    data_bytes = _write_checked(final, info, out)
    written = [out]
    if parts and isinstance(model, Decomposed):
        written.append(_write_encoder(model, example, opset, batch, info, out))
    elif parts:
        note = (note + "; " if note else "") + f"--parts: {ckpt.arch} has no decomposition to export"

    manifest = {
        "file": out.name, "bytes": len(data_bytes), "sha256": hashlib.sha256(data_bytes).hexdigest(),
        "graph_sha256": graph_hash(final), "opset": opset, "batch": batch or "dynamic",
        "input": {"name": onnx_meta.INPUT, "shape": ["N" if batch is None else batch, 3, size, size],
                  "dtype": "float32"},
        "output": {"name": "logits", "classes": len(ckpt.classes)},
        "nodes_before": len(raw.graph.node), "nodes_after": len(final.graph.node),
        "simplifier": used, "note": note, "parity": check, "parts": [p.name for p in written[1:]],
        "seconds": round(time.perf_counter() - t0, 2), "metadata": {k: v for k, v in info.to_props().items()},
        "torch": str(torch.__version__), "onnx": onnx.__version__,
    }
    atomic.write_text(out.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out, manifest)


def _output_path(ckpt_path: Path, out: str | Path | None) -> Path:
    """Where the model goes (default: beside the checkpoint); refuses a path whose model or manifest
    would overwrite the checkpoint, or a .json name the manifest would take."""
    out = Path(out) if out else ckpt_path.with_suffix(".onnx")
    atomic.check_writable(out, "file")
    if out.suffix == ".json":
        raise UserError(f"-o {out}: the manifest is written beside the model as {out.stem}.json; "
                        "give the model another name (e.g. .onnx)")
    for written in (out, out.with_suffix(".json")):
        if written.resolve() == ckpt_path.resolve():
            raise UserError(f"-o {out} would overwrite the checkpoint {ckpt_path}")
    return out


def _verification_images(spec, size: int, verify: int, data: str | Path | None) -> np.ndarray:
    """Real images for verification: the model's own evaluation split, through its own preprocessing;
    without verification, two random ones (the exporter still needs an example input)."""
    if verify > 0:
        root = Path(data) if data else default_data_root(spec)
        return spec.normalize(load_split(root, "test", spec).sample(verify, seed=0).images)
    return np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32)


def _model_info(ckpt: checkpoint.Checkpoint, ckpt_path: Path, model: torch.nn.Module) -> onnx_meta.ModelInfo:
    """The ONNX metadata: what build and bench need to know without the checkpoint."""
    return onnx_meta.ModelInfo(
        arch=ckpt.arch, classes=ckpt.classes, preprocessing=ckpt.preprocessing,
        config={**ckpt.config, "decomposition": getattr(model, "kind", "plain")},
        checkpoint_sha256=checkpoint.sha256(ckpt_path), version=__version__,
        extra={"metrics": ckpt.metrics.get("test", {}),
               # so that `bench` can report GFLOP/s and pair a WAE with its baseline without torch
               "macs": count(model, ckpt.config["input_size"]).total_macs, "baseline_arch": baseline_of(ckpt.arch),
               **({"untrained": True} if ckpt.metrics.get("untrained") else {})})


def _simplified(raw: onnx.ModelProto, simplifier: str) -> tuple[onnx.ModelProto, str, str | None]:
    """-> (the graph, the simplifier that made it, a note): a failing simplifier leaves the raw export."""
    if simplifier == "none":
        return raw, "none", None
    try:
        return simplify(raw, simplifier), simplifier, None
    except Exception as e:  # noqa: BLE001 - a failing simplifier must not stop the export
        return raw, "none", f"{simplifier} failed ({str(e).splitlines()[0][:120]}); kept the unsimplified graph"


def _write_checked(final: onnx.ModelProto, info: onnx_meta.ModelInfo, out: Path) -> bytes:
    """Write the model with its metadata to `out` once the ONNX checker passes it; -> the bytes written."""
    onnx_meta.write(final, info)
    try:
        onnx.checker.check_model(final)
    except onnx.checker.ValidationError as e:
        raise UserError(f"exported graph fails the ONNX checker: {str(e).splitlines()[0]}") from e
    data_bytes = final.SerializeToString(deterministic=True)
    atomic.write_bytes(out, data_bytes)
    return data_bytes


def _write_encoder(model: Decomposed, example: torch.Tensor, opset: int, batch: int | None,
                   info: onnx_meta.ModelInfo, out: Path) -> Path:
    """--parts: the decomposition alone (outputs low, high) beside the model as <stem>.encoder.onnx."""
    enc = to_onnx(_Encoder(model), example, opset, batch, ["low", "high"])
    onnx_meta.write(enc, info)
    enc_path = out.with_name(out.stem + ".encoder.onnx")
    atomic.write_bytes(enc_path, enc.SerializeToString(deterministic=True))
    return enc_path


def _passes(check: dict) -> bool:
    return check["max_abs_diff"] <= MAX_ABS_DIFF and check["top1_agreement"] == 1.0

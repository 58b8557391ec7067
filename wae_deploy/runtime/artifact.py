"""The artifact folder: a runtime's model files plus manifest.json, the same keys on every target.

    manifest = artifact.new_manifest(onnx_path, info, "ort", "fp32", runtime_version, executed=...)
    art = artifact.write(tmp_folder, final_folder, manifest)      # a target's build, last step
    art = artifact.open(folder, "ort", runtime_version)           # a target's load, first step

The manifest carries the preprocessing and class names, so a device needs nothing beside the
artifact (no ONNX next to a TensorRT engine, no checkpoint). Torch-free: it is read on devices.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from wae_deploy.core import __version__, atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256
from wae_deploy.runtime import machine
from wae_deploy.runtime.preprocess import Preprocessing

MANIFEST = atomic.ARTIFACT_MARKER
FORMAT = "wae-deploy-artifact"
SCHEMA_VERSION = 1
# Every target writes every key (None or empty where it has nothing to say), so readers need no
# per-target cases; what only one runtime knows (GPU, cache key, compute precision) is in "details".
KEYS = ("format", "schema_version", "target", "precision", "runtime_version", "arch", "classes", "preprocessing",
        "source", "source_sha256", "wae_deploy_version", "tool_versions", "created", "calibration",
        "keep_float", "accuracy_control", "accuracy_bound", "executed", "note", "details", "build_seconds",
        "source_metadata", "cpu", "quantization")
# Keys added after schema 1 shipped: written by every build, tolerated when missing from older artifacts.
# "cpu": {"class": the CPU class the build is for, "measured_on": the class of the host that built and
# scored it} (None for a GPU artifact); "quantization": the INT8 recipe (convert.int8_policy.int8_plan).
ADDED_KEYS = ("source_metadata", "cpu", "quantization")
_TOOLS = ("onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "torch")


def tool_versions() -> dict:
    """Installed versions (any distribution of the package: tensorrt-cu12 counts as tensorrt)."""
    versions = {pkg: machine.package_version(pkg) for pkg in _TOOLS}
    return {pkg: v for pkg, v in versions.items() if v}


def new_manifest(onnx_path: Path, info, target: str, precision: str, runtime_version: str, **fields) -> dict:
    """The full manifest of an artifact built from `onnx_path` (its onnx_meta.ModelInfo is `info`)."""
    unknown = set(fields) - set(KEYS)
    if unknown:
        raise ValueError(f"not artifact manifest keys: {sorted(unknown)}")
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "target": target, "precision": precision,
                "runtime_version": runtime_version, "arch": info.arch, "classes": list(info.classes),
                "preprocessing": info.preprocessing.to_dict(), "source": Path(onnx_path).name,
                "source_sha256": sha256(onnx_path), "wae_deploy_version": __version__,
                "tool_versions": tool_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "calibration": None, "keep_float": [], "accuracy_control": False, "accuracy_bound": None,
                "executed": {}, "note": None, "details": {}, "build_seconds": None,
                "source_metadata": dict(info.extra), "cpu": None, "quantization": None}
    return {**manifest, **fields}


@dataclass(frozen=True)
class Artifact:
    """An artifact folder and its manifest, as written by a target's build."""

    path: Path
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def runtime_version(self) -> str:
        return self.manifest["runtime_version"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def source_metadata(self) -> dict:
        """The source ONNX's extra metadata (onnx_meta.ModelInfo.extra: macs, baseline_arch, ...); {} if older."""
        meta = self.manifest.get("source_metadata")
        return dict(meta) if isinstance(meta, dict) else {}

    def file(self, name: str) -> Path:
        """A model file of the artifact; a missing one is named (a half-copied folder), not left to the runtime."""
        path = self.path / name
        if not path.is_file():
            raise UserError(f"{self.path} lacks its model file {name}: copy the whole folder, or rebuild it "
                            "with `wae-deploy build`")
        return path

    def check_runtime(self, target: str, runtime_version: str | None) -> None:
        """Refuse an artifact built for another target or with another runtime version."""
        if self.target != target:
            raise UserError(f"{self.path} was built for target {self.target!r}, not {target!r}")
        if self.runtime_version != runtime_version:
            raise UserError(f"{self.path} was built with {target} {self.runtime_version}, this machine has "
                            f"{runtime_version}; rebuild it with `wae-deploy build`")

    def updated(self, **fields) -> Artifact:
        """Rewrite the manifest of a finished artifact (atomically) with some keys changed."""
        unknown = set(fields) - set(KEYS)
        if unknown:
            raise ValueError(f"not artifact manifest keys: {sorted(unknown)}")
        manifest = {**self.manifest, **fields}
        atomic.write_text(self.path / MANIFEST, _dumps(manifest))
        return Artifact(self.path, manifest)


def cpu_mismatch(art: Artifact, host_class: str | None) -> str | None:
    """A warning when an INT8 CPU artifact runs on a CPU class other than the one it was scored on.

    INT8 kernels differ by class (16-bit saturating sums without VNNI), so its top-1 holds for the
    class it was measured on. FP32 and GPU artifacts compute the same everywhere: None.
    """
    cpu = art.manifest.get("cpu")
    if art.precision != "int8" or (cpu is None and art.target not in ("ort", "openvino")):
        return None
    measured = (cpu or {}).get("measured_on")
    if measured not in machine.CPU_CLASSES:
        return (f"warning: {art.path.name} records no known CPU class ({measured or 'none'}): its INT8 accuracy "
                f"was measured on an unknown CPU; this host's class is {host_class or 'unknown'}")
    if measured != host_class:
        return (f"warning: {art.path.name} was built and scored on a CPU of class {measured}; this host's class is "
                f"{host_class or 'unknown'}: its INT8 accuracy was measured on {measured} and may differ here")
    return None


def _dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, default=str) + "\n"


def write(folder: Path, final: Path, manifest: dict) -> Artifact:
    """Write the manifest into the artifact's temporary `folder`, last: no manifest, no artifact."""
    missing = [k for k in KEYS if k not in manifest]
    if missing:
        raise ValueError(f"artifact manifest lacks {missing}")
    (Path(folder) / MANIFEST).write_text(_dumps(manifest))
    return Artifact(Path(final), json.loads(_dumps(manifest)))


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open(path: str | Path, target: str | None = None, runtime_version: str | None = None) -> Artifact:
    """The artifact at `path`, verified; with `target`, also refused when built for another runtime."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise UserError(f"not a wae-deploy artifact (no {MANIFEST}): {path}")
    try:
        manifest = json.loads(file.read_text())
        if not isinstance(manifest, dict):
            raise TypeError("not an object")
        str(manifest["target"]), str(manifest["runtime_version"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserError(f"corrupt artifact manifest: {file}") from e
    art = Artifact(path, manifest)
    if target is not None:  # first: "another runtime" is the more useful message for an old artifact
        art.check_runtime(target, runtime_version)
    if manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path} was built by an older wae-deploy (manifest schema "
                        f"{manifest.get('schema_version', 'none')}, this one reads {SCHEMA_VERSION}); "
                        "rebuild it with `wae-deploy build`")
    missing = [k for k in KEYS if k not in manifest and k not in ADDED_KEYS]
    if missing:
        raise UserError(f"corrupt artifact manifest: {file} lacks {', '.join(missing)}")
    if not isinstance(manifest["classes"], list) or not isinstance(manifest["preprocessing"], dict):
        raise UserError(f"corrupt artifact manifest: {file} has malformed classes or preprocessing")
    art.preprocessing  # noqa: B018 - a malformed spec fails here, at open, not at the first image
    return art

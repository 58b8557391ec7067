"""Engine identity and the engine cache: what makes an engine valid here, and engines on disk.

Engines are not portable across TensorRT versions or GPUs, so each build is cached under a key of
(ONNX hash, TensorRT version, GPU name, compute capability, SM count, precision, profiles, build
options), and every engine carries a JSON sidecar (<name>.plan.json) written after it; an engine
whose sidecar is missing, stale or for another key is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from wae_deploy.core import atomic
from wae_deploy.core.cache import cache_dir
from wae_deploy.core.errors import UserError


def cc_str(compute_capability) -> str:
    """(8, 7) or "8.7" -> "8.7"."""
    if isinstance(compute_capability, (tuple, list)):
        return ".".join(str(int(v)) for v in compute_capability)
    return str(compute_capability)


def engine_cache_key(onnx_bytes_sha256: str, trt_version: str, gpu_name: str, compute_capability,
                     precision: str, profile_shapes: list[dict], sm_count: int, build_options: dict) -> str:
    """A stable hash of everything that makes an engine valid; any change means a new engine.

    The SM count is there because every Orin module reports the same name and compute capability;
    build_options (workspace, flags) change which kernels the builder may pick; profile_shapes is one
    {input: (min, opt, max)} per optimisation profile.
    """
    fields = {
        "onnx": onnx_bytes_sha256, "trt": str(trt_version), "gpu": gpu_name, "sm": cc_str(compute_capability),
        "sms": int(sm_count), "options": build_options, "precision": precision,
        "profiles": [{name: [[int(d) for d in shape] for shape in shapes] for name, shapes in profile.items()}
                     for profile in profile_shapes],
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_engine(path: Path, plan: bytes, meta: dict) -> None:
    """Engine first, sidecar last (both atomic): a crash in between leaves an engine nobody loads."""
    sidecar_path(path).unlink(missing_ok=True)
    atomic.write_bytes(path, plan)
    stamped = {**meta, "engine_sha256": hashlib.sha256(plan).hexdigest()}
    atomic.write_text(sidecar_path(path), json.dumps(stamped, indent=2, sort_keys=True) + "\n")


def read_engine(path: Path) -> tuple[bytes, dict]:
    """(plan, sidecar) or UserError when the engine is missing, unstamped or not the one stamped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no TensorRT engine at {path}")
    try:
        meta = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} has no readable sidecar {sidecar_path(path).name} ({e}); rebuild it") from e
    plan = path.read_bytes()
    if meta.get("engine_sha256") != hashlib.sha256(plan).hexdigest():
        raise UserError(f"{path} does not match its sidecar (stale or partly written); rebuild it")
    return plan, meta


def check_engine_identity(meta: dict, trt_version: str, gpu_name: str, compute_capability, sm_count: int,
                          path="engine") -> None:
    """An engine runs only on the TensorRT version and GPU (model and SM count) that built it."""
    built = (meta.get("tensorrt"), meta.get("gpu"), meta.get("compute_capability"), meta.get("sm_count"))
    here = (str(trt_version), gpu_name, cc_str(compute_capability), int(sm_count))
    if built != here:
        raise UserError(f"{path} was built by TensorRT {built[0]} for {built[1]} (sm {built[2]}, {built[3]} SMs), "
                        f"but this machine has TensorRT {here[0]} on {here[1]} (sm {here[2]}, {here[3]} SMs): "
                        "engines are not portable, rebuild it here")


class EngineCache:
    """Engines under <root>/<key>.plan (+ sidecar), and one timing cache per TensorRT version and GPU."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_dir() / "trt"

    def get(self, key: str) -> bytes | None:
        try:
            plan, meta = read_engine(self.root / f"{key}.plan")
        except UserError:
            return None
        return plan if meta.get("key") == key else None

    def put(self, key: str, plan: bytes, meta: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_engine(self.root / f"{key}.plan", plan, {**meta, "key": key})

    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability, sm_count: int) -> Path:
        gpu = re.sub(r"[^A-Za-z0-9.]+", "-", gpu_name).strip("-")
        return self.root / f"timing-{trt_version}-{gpu}-sm{cc_str(compute_capability)}-{int(sm_count)}sms.cache"

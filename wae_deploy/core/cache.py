"""The user's cache folder, shared by decoded data sets, TensorRT engines and downloaded reference models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$WAE_CACHE, else ~/.cache/wae-deploy."""
    return Path(os.environ.get("WAE_CACHE", Path.home() / ".cache" / "wae-deploy"))

"""Made once per test run, shared by every pytest-xdist worker: trained checkpoints and exports.

On the avx2 host an export costs 4-11 s of torch.export (a ResNet-20 to a WAE-ResNet-20) and an
NNCF INT8 quantization 3-7 s (timed over a whole `make test`); test files that only need "a
trained tiny model" or "the reference model as ONNX" share one copy instead of making their own.
The first worker to ask makes it under a file lock, the others wait and reuse it. Users copy what
they modify: the shared folder is read-only by convention.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def run_root(tmp_path_factory) -> Path:
    """A folder of this run that every worker sees: under xdist each worker's basetemp is
    <run>/popen-gwN, so <run> is shared; without xdist the basetemp itself."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def once(tmp_path_factory, key: str, make: Callable[[Path], None]) -> Path:
    """The folder `make(folder)` filled: made by the first caller of the run, reused by the rest."""
    folder = run_root(tmp_path_factory) / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)   # a maker that failed midway
            folder.mkdir()
            make(folder)
            (folder / ".done").touch()
    return folder

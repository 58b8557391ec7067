"""The streaming reader (wae_deploy/training/stream.py): photos per second per worker, and memory on 50k files.

    .venv/bin/python benchmarks/stream_reader.py rate     -> benchmarks/stream-reader.json ("rate")
    .venv/bin/python benchmarks/stream_reader.py memory   -> benchmarks/stream-reader.json ("memory")

rate: train-time decoding + random-resized crop + flip of Imagenette-160 photos to the
Imagenette family's 128-pixel crop, in this process (photos per CPU second: what one worker
does with a core of its own) and through a DataLoader with one worker (photos per wall second).
memory: a synthetic ImageNet layout of 50,000 small JPEGs (1,000 classes of 50) is listed and
read for one whole epoch by a DataLoader with 2 workers; the peak resident memory of the main
process plus its workers is sampled every 20 batches.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wae_deploy.runtime.data import default_data_root
from wae_deploy.runtime.preprocess import IMAGENETTE
from wae_deploy.training import stream

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "stream-reader.json"
SHARED = ("shared machine: 2 cores, two trainings and other helpers' tests running beside it; "
          "the per-CPU-second rate is the figure that does not depend on the load")


def rate(n: int = 1500) -> dict:
    data = stream.list_split(default_data_root(IMAGENETTE), "train")
    pick = np.random.default_rng(0).permutation(len(data))[:n].tolist()
    ds = stream.StreamSet(data, IMAGENETTE, train=True)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in pick:
        ds[i]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    batches = [pick[i:i + 64] for i in range(0, n, 64)]
    t = time.perf_counter()
    seen = sum(len(y) for _, y, _ in stream.loader(ds, batches, workers=1))
    one_worker = time.perf_counter() - t
    return {"photos": n, "crop": IMAGENETTE.crop, "source": "imagenette-160 train",
            "photos_per_cpu_second_in_process": round(n / cpu, 1),
            "photos_per_wall_second_in_process": round(n / wall, 1),
            "photos_per_wall_second_one_worker": round(seen / one_worker, 1), "goal_per_worker": 400}


def _rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (the DataLoader workers), in MB."""
    total = 0
    pids = [str(pid)] + [c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def memory(classes: int = 1000, per_class: int = 50, batch: int = 256) -> dict:
    with tempfile.TemporaryDirectory(prefix="stream-50k-") as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        tiles = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(16)]
        t = time.perf_counter()
        for c in range(classes):
            folder = root / "train" / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                tiles[(c + i) % 16].save(folder / f"n{c:08d}_{i}.JPEG", quality=85)
        (root / "val" / "n00000000").mkdir(parents=True)
        tiles[0].save(root / "val" / "n00000000" / "v.JPEG")
        made = time.perf_counter() - t
        before = _rss_mb(os.getpid())
        data = stream.list_split(root, "train")
        listed = _rss_mb(os.getpid())
        ds = stream.StreamSet(data, IMAGENETTE, train=True)
        order = np.random.default_rng(0).permutation(len(data)).tolist()
        peak, seen, t = listed, 0, time.perf_counter()
        for k, (_, y, _) in enumerate(stream.loader(ds, [order[i:i + batch] for i in range(0, len(order), batch)], 2)):
            seen += len(y)
            if k % 20 == 0:
                peak = max(peak, _rss_mb(os.getpid()))
        return {"files": len(data), "jpeg_size": "64x48", "crop": IMAGENETTE.crop, "workers": 2, "batch": batch,
                "seconds_to_make_files": round(made, 1), "epoch_seconds": round(time.perf_counter() - t, 1),
                "photos_read": seen, "rss_mb_before_listing": round(before), "rss_mb_after_listing": round(listed),
                "peak_rss_mb_main_plus_workers": round(peak), "goal_mb": 2048}


def main() -> None:
    what = sys.argv[1]
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    record[what] = {"command": f".venv/bin/python benchmarks/stream_reader.py {what}", "machine": SHARED,
                    "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **(rate() if what == "rate" else memory())}
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record[what], indent=2))


if __name__ == "__main__":
    main()

"""Benchmark history: one results file per run in a folder, with the commit and host it ran on.

    append(results, "bench-history/")          # -> bench-history/20261126T045953Z-a42d7d2c1f3e-5b0c9e1a.json
    runs = read("bench-history/", warn=print)   # every readable run, oldest first; one line per skipped file

A history file is a results file (results.py, SCHEMA.md) with one more top-level object,
`history`: {"commit": the git commit the bench ran at, or "unknown", "host": host_id(environment)}.
So it stays readable by everything that reads results (`bench --compare` included), and the
host fingerprint and every metric are the run's own. The layout is in docs/history.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wae_deploy.benchmark import results as results_file
from wae_deploy.benchmark.environment import fingerprint_key
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import machine

UNKNOWN = "unknown"


def host_id(environment: dict) -> str:
    """Eight hex digits naming the machine: the comparable fields of the fingerprint, runtime
    versions left out, so that an upgraded runtime shows as a step in the host's line rather
    than as a new host."""
    key = fingerprint_key(environment, targets=())
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def host_label(environment: dict) -> str:
    """What a reader recognises the machine by: 'AMD EPYC (avx2), 2 cores, 2 threads'. The ISA class
    is in it because one CPU model name covers hosts of several (cloud 'AMD EPYC')."""
    key = fingerprint_key(environment, targets=())
    isa = machine.cpu_class(set(key["cpu.isa"].split()))
    parts = [(key["cpu.model"] or "unknown CPU") + (f" ({isa})" if isa else ""), f"{key['cpu.physical_cores']} cores",
             f"{key['threads.bench']} threads" if key["threads.bench"] else "all threads"]
    if key["gpu.name"]:
        parts.insert(1, key["gpu.name"])
    if key["jetson.power_mode"]:
        parts.append(f"power mode {key['jetson.power_mode']}")
    return ", ".join(str(p) for p in parts)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The checked-out commit (full hash), or "unknown" outside a git work tree or without git."""
    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    out = p.stdout.strip()
    return out if p.returncode == 0 and out else UNKNOWN


def check_folder(folder: str | os.PathLike) -> Path:
    """A usable history folder (it may not exist yet); the bench checks before its work, not after."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"history folder {folder} is a file, not a folder")
    return folder


def append(results: dict, folder: str | os.PathLike, commit: str | None = None) -> Path:
    """Write `results` as a new run in `folder` (created if missing); never replaces a run."""
    folder = check_folder(folder)
    commit = commit or git_commit()
    host = host_id(results.get("environment") or {})
    run = {**results, "history": {"commit": commit, "host": host}}
    stamp = str(results.get("created") or "").replace("-", "").replace(":", "") or "undated"
    name = f"{stamp}-{commit[:12]}-{host}"
    path, n = folder / f"{name}.json", 1
    while path.exists():  # two runs in the same second on one commit and host
        n += 1
        path = folder / f"{name}-{n}.json"
    folder.mkdir(parents=True, exist_ok=True)
    return results_file.save(run, path)


@dataclass
class Run:
    path: Path
    results: dict
    commit: str
    host: str
    host_label: str

    @property
    def created(self) -> str:
        return str(self.results.get("created") or "")

    @property
    def suite(self) -> str:
        return str((self.results.get("suite") or {}).get("name") or "")


def read(folder: str | os.PathLike, warn=print) -> list[Run]:
    """Every run in `folder`'s *.json files, oldest first. A file that is not a readable results
    file (another format or schema version, corrupt JSON) is skipped with one `warn` line, so one
    old or foreign file never hides the rest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"history folder not found: {folder}")
    runs = []
    for path in sorted(folder.glob("*.json")):
        try:
            r = results_file.load(path)
        except UserError as e:
            warn(f"skipped {e}")  # the message names the file and what is wrong with it
            continue
        env = r.get("environment") or {}
        meta = r.get("history") if isinstance(r.get("history"), dict) else {}
        runs.append(Run(path, r, str(meta.get("commit") or UNKNOWN), host_id(env), host_label(env)))
    return sorted(runs, key=lambda run: (run.created, run.path.name))

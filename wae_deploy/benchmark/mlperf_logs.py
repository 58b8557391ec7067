"""LoadGen's own log files, read back: a run's verdict and numbers, and the outputs it logged.

    run = read_run(folder)         # -> RunLog: LoadGen's VALID/INVALID, its reason, p90, samples/s
    run.result()                   # the results file's `performance` object (numbers only when VALID)
    outputs = read_outputs(folder) # [(qsl_idx, float32 logits)] from mlperf_log_accuracy.json

The numbers come from mlperf_log_detail.txt, whose `:::MLLOG {json}` lines are LoadGen's
machine-readable record of the same run that mlperf_log_summary.txt prints for people; reading
the JSON avoids depending on the summary's spacing, which has changed between LoadGen versions.
Nothing here imports LoadGen: a recorded folder can be read anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wae_deploy.core.errors import UserError

SUMMARY, DETAIL, ACCURACY = "mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"
MLLOG = ":::MLLOG "
# Written when StartTest read an audit.config: an audit run that lacks it ran without its settings.
AUDIT_FOUND = "Found Audit Config file"


def detail_records(path: Path) -> dict[str, list]:
    """Every `:::MLLOG` value of mlperf_log_detail.txt, by key, in the order logged."""
    out: dict[str, list] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(MLLOG):
            continue
        try:
            rec = json.loads(line[len(MLLOG):])
        except json.JSONDecodeError:  # a line cut short by a crash: the rest still tells the run
            continue
        out.setdefault(rec.get("key"), []).append(rec.get("value"))
    return out


def _last(records: dict, key: str):
    values = records.get(key)
    return values[-1] if values else None


def _ms(ns) -> float | None:
    return None if ns is None else float(ns) / 1e6


@dataclass
class RunLog:
    """One LoadGen performance run as its detail log records it (times in milliseconds)."""

    folder: Path
    scenario: str                       # LoadGen's spelling: "SingleStream", "Offline"
    validity: str                       # "VALID" or "INVALID": LoadGen's verdict on the run's own settings
    reason: str | None                  # why INVALID, in LoadGen's words; None when VALID
    queries: int | None
    p90_ms: float | None
    early_stopping_p90_ms: float | None  # SingleStream: the metric MLPerf reports
    mean_ms: float | None
    samples_per_s: float | None          # Offline: the metric MLPerf reports
    errors: int
    audit_config_found: bool

    @property
    def valid(self) -> bool:
        return self.validity == "VALID"

    def score(self) -> float | None:
        """Higher is better, as MLPerf's audit scripts compare runs: samples/s for Offline, and for
        SingleStream queries/s at the early-stopping p90. None for an INVALID run."""
        if not self.valid:
            return None
        if self.scenario == "Offline":
            return self.samples_per_s
        return 1e3 / self.early_stopping_p90_ms if self.early_stopping_p90_ms else None

    def result(self) -> dict:
        """The results file's `performance` object. An INVALID run keeps its verdict and reason but no
        numbers: they are not a result (LoadGen's own files beside it still hold them)."""
        numbers = {"p90_ms": self.p90_ms, "early_stopping_p90_ms": self.early_stopping_p90_ms,
                   "mean_ms": self.mean_ms, "samples_per_s": self.samples_per_s}
        return {"validity": self.validity, "reason": self.reason, "queries": self.queries, "errors": self.errors,
                **{k: (v if self.valid else None) for k, v in numbers.items()}}


def _reason(records: dict) -> str | None:
    """LoadGen's reason for an INVALID verdict; its invalid_reason leaves out early stopping, so that is added."""
    parts = [str(_last(records, "result_invalid_reason") or "").strip()]
    if _last(records, "early_stopping_met") is False:
        parts.append("early stopping not satisfied: " + str(_last(records, "early_stopping_result") or "").strip())
    reason = "; ".join(p for p in parts if p) or "LoadGen gave no reason"
    return " ".join(reason.replace(" * ", " ").split())  # LoadGen's bullets and line breaks, as one line


def read_run(folder: Path) -> RunLog:
    """The performance run whose logs are in `folder`; a missing or verdict-less log is a UserError."""
    path = Path(folder) / DETAIL
    if not path.is_file():
        raise UserError(f"LoadGen wrote no {DETAIL} in {folder}: the run did not start (see the folder)")
    records = detail_records(path)
    validity = _last(records, "result_validity")
    if validity not in ("VALID", "INVALID"):
        raise UserError(f"{path} has no result_validity: LoadGen did not finish the run")
    scenario = str(_last(records, "effective_scenario") or _last(records, "requested_scenario"))
    # Offline's per-sample "latencies" are times to completion within its one query: not a latency
    # anyone deploys against, so only SingleStream reports them.
    single = scenario == "SingleStream"
    return RunLog(
        folder=Path(folder), scenario=scenario, validity=validity,
        reason=None if validity == "VALID" else _reason(records),
        queries=_last(records, "result_query_count"),
        p90_ms=_ms(_last(records, "result_90.00_percentile_latency_ns")) if single else None,
        early_stopping_p90_ms=_ms(_last(records, "early_stopping_latency_ss")) if single else None,
        mean_ms=_ms(_last(records, "result_mean_latency_ns")) if single else None,
        samples_per_s=_last(records, "result_samples_per_second"),
        errors=int(_last(records, "num_errors") or 0),
        audit_config_found=any(AUDIT_FOUND in str(v) for v in records.get("warning_generic_message", [])))


def read_outputs(folder: Path) -> list[tuple[int, np.ndarray]]:
    """(QSL index, logits) for every response LoadGen logged in `folder`'s accuracy log, in log order."""
    path = Path(folder) / ACCURACY
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read LoadGen's accuracy log {path}: {e}") from e
    return [(int(e["qsl_idx"]), np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32)) for e in entries]

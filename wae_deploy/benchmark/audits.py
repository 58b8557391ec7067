"""MLPerf's compliance audits, decided from LoadGen's own logs.

    text = audit_config("TEST01")                 # the audit.config StartTest reads for the audit run
    test01(logged, reference, run, perf, official)  # -> the results file's `audits.TEST01` object
    test04(performance_run, same_sample_run)      # -> `audits.TEST04`

TEST01 (compliance/TEST01 in mlcommons/inference): during a performance run LoadGen logs the
outputs of samples drawn at random; they must match the accuracy-mode outputs of the same
samples. A system that times one thing and scores another (a cache, a skipped inference, the
previous sample's answer) fails it. MLPerf's script compares the logged bytes exactly; a CPU
runtime may pick another kernel for another batch size, so the last bits of a logit can move
between an accuracy run and an Offline batch of 8. Here an output matches when its top-1 class
is the same and every logit is within TEST01_RTOL of the sample's largest |logit| (about 30
float32 ulps): far below any real difference between two photos, and the count of bitwise-equal
outputs is recorded beside it. TEST01's second part (verify_performance.py) holds the audit run's
score within 10% of the performance run's (20% for a SingleStream early-stopping p90 of 200 us or
less). It binds an official-length run (`--mlperf-rules`) only: two 3-second runs on a shared
machine differ by 10-30% by themselves (benchmarks/loadgen-p90-avx2.json), so in a short run the
check is recorded and shown, and does not fail the audit.

TEST04 (compliance/TEST04): the same sample sent again and again must not score more than 10%
better than distinct samples; a system that caches results would.
"""

from __future__ import annotations

import numpy as np

from wae_deploy.benchmark.mlperf_logs import RunLog

# compliance/TEST01/resnet50/audit.config and compliance/TEST04/audit.config, mlcommons/inference.
TEST01_KEYS = {"mode": 2, "accuracy_log_rng_seed": 720381539243781796, "accuracy_log_sampling_target": 4096}
TEST04_KEYS = {"mode": 2, "performance_issue_unique": 0, "performance_issue_same": 1,
               "performance_issue_same_index": 3}
AUDITS = ("TEST01", "TEST04")
TEST01_RTOL = 1e-4
TEST01_PERF_TOLERANCE, TEST01_PERF_TOLERANCE_FAST, FAST_P90_MS = 0.10, 0.20, 0.2
TEST04_MAX_GAIN = 0.10


def audit_config(audit: str, same_index: int = 3) -> str:
    """The audit.config of `audit` ('model.scenario.key = value', for every model and scenario).
    `same_index`: TEST04's repeated sample, which must lie inside a small evaluation set."""
    keys = TEST01_KEYS if audit == "TEST01" else {**TEST04_KEYS, "performance_issue_same_index": same_index}
    return "".join(f"*.*.{k} = {v}\n" for k, v in keys.items())


def _matches(out: np.ndarray, ref: np.ndarray) -> bool:
    if out.shape != ref.shape:
        return False
    tol = TEST01_RTOL * max(float(np.abs(ref).max(initial=0.0)), 1.0)
    return int(out.argmax()) == int(ref.argmax()) and bool(np.all(np.abs(out - ref) <= tol))


def test01(logged: list[tuple[int, np.ndarray]], reference: dict[int, np.ndarray], run: RunLog,
           performance: RunLog, official: bool) -> dict:
    """Outputs logged during the audit run `run` against the accuracy run's, sample by sample, and the
    audit run's score against the `performance` run's (binding when `official`)."""
    pairs = [(out, reference[i]) for i, out in logged if i in reference]
    mismatched = sum(not _matches(out, ref) for out, ref in pairs)
    diffs = [float(np.abs(out - ref).max()) for out, ref in pairs if out.shape == ref.shape]
    speed = _test01_performance(performance, run, official)
    why = None
    if not run.audit_config_found:
        why = "LoadGen did not read the audit.config"
    elif not pairs:
        why = "no output was logged during the performance run"
    elif mismatched:
        why = f"{mismatched} of {len(pairs)} outputs differ from accuracy mode"
    elif speed["binding"] and not speed["passed"]:
        why = speed["why"]
    return {"passed": why is None, "why": why, "checked": len(pairs), "mismatched": mismatched,
            "bitwise_equal": sum(out.tobytes() == ref.tobytes() for out, ref in pairs),
            "max_abs_diff": max(diffs, default=None), "rtol": TEST01_RTOL, "performance": speed,
            "logs": str(run.folder)}


def _test01_performance(performance: RunLog, audit: RunLog, official: bool) -> dict:
    """verify_performance.py on the two runs' own metrics (early-stopping p90 or samples/s)."""
    metric = "samples_per_s" if performance.scenario == "Offline" else "early_stopping_p90_ms"
    ref, test = getattr(performance, metric), getattr(audit, metric)
    fast = metric == "early_stopping_p90_ms" and ref is not None and ref <= FAST_P90_MS
    tolerance = TEST01_PERF_TOLERANCE_FAST if fast else TEST01_PERF_TOLERANCE
    ratio = test / ref if performance.valid and audit.valid and ref and test is not None else None
    why = None
    if ratio is None:
        which = "performance run" if not performance.valid or not ref else "audit run"
        why = f"cannot compare: the {which} is INVALID or has no score"
    elif abs(ratio - 1) >= tolerance:
        why = f"the audit run's {metric} is {ratio - 1:+.1%} from the performance run's (within {tolerance:.0%})"
    return {"passed": why is None, "why": why, "binding": official, "metric": metric, "score": test,
            "reference_score": ref, "ratio": ratio, "tolerance": tolerance}


def test04(performance: RunLog, same: RunLog) -> dict:
    """The same-sample run's score against the performance run's (higher is better, as in results)."""
    ref, test = performance.score(), same.score()
    why = None
    if not same.audit_config_found:
        why = "LoadGen did not read the audit.config"
    elif ref is None or test is None:
        which = "performance run" if ref is None else "same-sample run"
        why = f"cannot compare: the {which} is INVALID or has no score"
    elif test > ref * (1 + TEST04_MAX_GAIN):
        why = f"the same sample scored {test / ref - 1:+.1%} over distinct samples (at most +{TEST04_MAX_GAIN:.0%})"
    return {"passed": why is None, "why": why, "score": test, "reference_score": ref,
            "gain": test / ref - 1 if ref and test else None, "max_gain": TEST04_MAX_GAIN,
            "validity": same.validity, "logs": str(same.folder)}

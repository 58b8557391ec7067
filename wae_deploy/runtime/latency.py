"""Wall-clock latency of several callables timed interleaved.

    stats = measure_interleaved({"vgg16": lambda: a.infer(x), "wae-vgg16": lambda: b.infer(x)}, batch=8)
    stats["vgg16"].median_ms, stats["vgg16"].throughput_ips
    ci = ratio_ci(stats["vgg16"].samples_ms, stats["wae-vgg16"].samples_ms)   # speed-up and 95% interval
    order_effect(stats["vgg16"], stats["wae-vgg16"])                           # does the order matter?

Why interleaved: on a shared or thermally limited machine the speed drifts over seconds;
timing A for 30 s and then B for 30 s puts that drift into the ratio. One call of each per
round (A B, then B A, ...) exposes both to the same drift, and the per-round ratios are
paired samples. The order changes from round to round (`round_order`) so that no runner
always runs right after the same one (ONNX Runtime's spinning worker threads slow whatever
runs next); each sample keeps its position in the round so `order_effect` can show whether
the ratio depends on the order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LatencyStats:
    """Summary of one runner's samples (milliseconds per call of `batch` images)."""

    samples_ms: list[float]  # in round order: samples_ms[i] was measured in round i
    positions: list[int]  # positions[i]: 0 if it ran first in round i, 1 if second, ...
    batch: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float  # std / mean: the noise a gate tolerance is derived from
    iters: int
    total_s: float  # time spent inside this runner (warm-up excluded)
    throughput_ips: float  # images/s = batch / median: one synchronous stream, robust to outliers
    position_median_ms: dict[int, float] = field(default_factory=dict)
    # (start, end) of each timed call in time.perf_counter_ns(), in round order: energy sampled on the
    # same clock is attributed to the calls that drew it (benchmark.energy). Not part of the results.
    windows_ns: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self, include_samples: bool = False) -> dict:
        """The fields of the results schema's `latency` object."""
        d = {k: getattr(self, k) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms",
                                           "std_ms", "cv", "iters", "total_s", "throughput_ips")}
        d["position_median_ms"] = {str(k): v for k, v in self.position_median_ms.items()}
        if include_samples:
            d["samples_ms"] = [round(s, 4) for s in self.samples_ms]
        return d


def summarize(samples_ms: Sequence[float], batch: int = 1, positions: Sequence[int] | None = None) -> LatencyStats:
    """Statistics of latency samples in milliseconds (percentiles interpolate linearly, std uses n - 1)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    positions = list(positions) if positions is not None else [0] * a.size
    if len(positions) != a.size:
        raise ValueError("one position per sample")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    median = float(np.median(a))
    pos = np.asarray(positions)
    return LatencyStats(
        samples_ms=[float(s) for s in a], positions=[int(p) for p in positions], batch=batch,
        median_ms=median, p90_ms=float(np.percentile(a, 90)), p99_ms=float(np.percentile(a, 99)),
        mean_ms=mean, min_ms=float(a.min()), max_ms=float(a.max()), std_ms=std,
        cv=std / mean if mean > 0 else 0.0, iters=int(a.size), total_s=float(a.sum()) / 1e3,
        throughput_ips=1e3 * batch / median if median > 0 else math.inf,
        position_median_ms={int(p): float(np.median(a[pos == p])) for p in sorted(set(positions))},
    )


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round r: rows of a balanced Latin square (Williams design), cycled.

    Over a cycle (n rounds for n runners, 2n when n is odd) every runner runs in every
    position equally often and is run right after every other runner equally often, so an
    effect of one runner on the next is spread over all of them. Two runners: A B, B A.
    A plain rotation (A B C, B C A, C A B) would always put C right before A.
    """
    n = len(names)
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:  # 0, 1, n-1, 2, n-2, ...
        first.append(lo)
        lo += 1
        if lo <= hi:
            first.append(hi)
            hi -= 1
    rows = [[(x + i) % n for x in first] for i in range(n)]
    if n % 2:
        rows += [r[::-1] for r in rows]
    return [names[i] for i in rows[round_index % len(rows)]]


def measure_interleaved(
    runners: dict[str, Callable[[], object]],
    *,
    batch: int | dict[str, int] = 1,
    warmup_iters: int = 3,
    warmup_s: float = 0.5,
    min_iters: int = 10,
    min_time_s: float = 2.0,
    max_time_s: float = 60.0,
    max_iters: int | None = None,
    pause_s: float = 0.0,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time each callable once per round, in `round_order`, until enough rounds and time.

    Warm-up: rounds until every runner ran `warmup_iters` times and `warmup_s` passed (first
    calls pay for allocation, caches and lazy compilation). Measurement: rounds until
    `min_iters` rounds and `min_time_s` seconds, stopping at `max_time_s` (after at least one
    round) or `max_iters` rounds. `pause_s` sleeps before each call, outside the timing, so
    one runtime's idle threads settle before the next runs. `progress(rounds, elapsed_s)` is
    called after each round. `batch` (one int or per runner) only scales the throughput.
    """
    if not runners:
        raise ValueError("no runners to time")
    names = list(runners)
    batches = batch if isinstance(batch, dict) else {n: batch for n in names}

    _warm_up(runners, names, warmup_iters, warmup_s)
    samples, windows, positions = _timed_rounds(runners, names, min_iters, min_time_s, max_time_s, max_iters,
                                                pause_s, progress)
    out = {n: summarize(samples[n], batches[n], positions[n]) for n in names}
    for n in names:
        out[n].windows_ns = windows[n]
    return out


def _warm_up(runners: dict, names: list[str], warmup_iters: int, warmup_s: float) -> None:
    """Rounds until every runner ran `warmup_iters` times and `warmup_s` passed."""
    start = time.perf_counter()
    r = 0
    while r < warmup_iters or time.perf_counter() - start < warmup_s:
        for name in round_order(names, r):
            runners[name]()
        r += 1


def _timed_rounds(runners: dict, names: list[str], min_iters: int, min_time_s: float, max_time_s: float,
                  max_iters: int | None, pause_s: float, progress) -> tuple[dict, dict, dict]:
    """The measured rounds: per runner its call times (ms), each call's (start, end) in perf_counter_ns
    (the energy sampler attributes power to them) and its position in each round."""
    clock = time.perf_counter_ns
    samples: dict[str, list[float]] = {n: [] for n in names}
    windows: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    positions: dict[str, list[int]] = {n: [] for n in names}
    start = time.perf_counter()
    rounds = 0
    while True:
        for pos, name in enumerate(round_order(names, rounds)):
            if pause_s:
                time.sleep(pause_s)
            fn = runners[name]
            t0 = clock()
            fn()
            t1 = clock()
            samples[name].append((t1 - t0) / 1e6)
            windows[name].append((t0, t1))
            positions[name].append(pos)
        rounds += 1
        elapsed = time.perf_counter() - start
        if progress:
            progress(rounds, elapsed)
        if (rounds >= min_iters and elapsed >= min_time_s) or elapsed >= max_time_s:
            return samples, windows, positions
        if max_iters is not None and rounds >= max_iters:
            return samples, windows, positions


@dataclass
class RatioCI:
    ratio: float  # median over rounds of a_i / b_i: "b is `ratio` times faster than a"
    low: float
    high: float
    n: int
    confidence: float


def ratio_ci(a_samples: Sequence[float], b_samples: Sequence[float], confidence: float = 0.95) -> RatioCI:
    """Median of the paired per-round ratios a_i / b_i with a distribution-free interval.

    The interval is the classic order-statistic interval for a median: with n ratios sorted,
    [r_(k), r_(n+1-k)] where k is the largest index such that P(Binomial(n, 1/2) < k) <= alpha/2.
    It assumes nothing about the latency distribution (which is skewed, with outliers) and is
    deterministic, unlike a bootstrap. With fewer than 6 rounds a 95% interval does not exist
    and the interval is the full range of the ratios.
    """
    a = np.asarray(a_samples, dtype=np.float64)
    b = np.asarray(b_samples, dtype=np.float64)
    if a.size != b.size or a.size == 0:
        raise ValueError(f"paired samples need equal, non-zero lengths (got {a.size} and {b.size})")
    r = np.sort(a / b)
    n = r.size
    alpha = 1.0 - confidence
    k, cdf = 0, 0.0  # k = how many order statistics to drop on each side
    for j in range(n):
        # binomial pmf in log space: 2**n overflows a float beyond ~1000 rounds
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2.0))
        if cdf > alpha / 2:
            break
        k = j + 1
    lo, hi = (r[k - 1], r[n - k]) if k >= 1 else (r[0], r[-1])
    return RatioCI(float(np.median(r)), float(lo), float(hi), n, confidence)


def order_effect(a: LatencyStats, b: LatencyStats) -> dict:
    """Paired ratio a/b in the rounds where a ran before b, and where b ran before a.

    `relative_difference` near 0 means the order does not matter; a large value (say over a
    few percent) means one runner slows the next (spinning threads, caches) and the
    measurement needs `pause_s` or spinning turned off.
    """
    ra = np.asarray(a.samples_ms) / np.asarray(b.samples_ms)
    a_first = np.asarray(a.positions) < np.asarray(b.positions)
    out = {"a_first": float(np.median(ra[a_first])) if a_first.any() else None,
           "b_first": float(np.median(ra[~a_first])) if (~a_first).any() else None}
    out["relative_difference"] = (abs(out["a_first"] - out["b_first"]) / min(out["a_first"], out["b_first"])
                                  if None not in (out["a_first"], out["b_first"]) else None)
    return out

"""The speed-up over the baseline: a runner made measurably slower gives a speed-up on the right side
of 1, equal to the ratio of medians within its interval.

The runners sleep (10 ms for the "baseline", 2 ms for the "WAE"): a sleep lasts at least that
long, so every per-round ratio is known to lie near 5, whatever the machine's load does to it.
The whole suite's wiring (which model is `a`, which `b`) is checked in test_bench_suite.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from wae_deploy.benchmark import results as R
from wae_deploy.runtime.latency import measure_interleaved, ratio_ci, summarize

SLOW_MS, FAST_MS = 10.0, 2.0


@pytest.fixture(scope="module")
def stats():
    runners = {"baseline": lambda: time.sleep(SLOW_MS / 1e3), "wae": lambda: time.sleep(FAST_MS / 1e3)}
    return measure_interleaved(runners, batch=4, warmup_iters=1, warmup_s=0.0, min_iters=15, min_time_s=0.0,
                               max_time_s=20.0)


def test_sleeps_are_timed_as_sleeps(stats):
    base, wae = stats["baseline"], stats["wae"]
    assert base.iters == wae.iters == 15
    assert min(base.samples_ms) >= SLOW_MS and min(wae.samples_ms) >= FAST_MS  # a sleep never ends early
    assert base.median_ms == float(np.median(base.samples_ms)) and base.median_ms > wae.median_ms
    assert base.throughput_ips == pytest.approx(4e3 / base.median_ms)  # batch 4 per call


def test_comparison_is_baseline_over_wae_and_its_interval_holds_the_ratio_of_medians(stats):
    base, wae = stats["baseline"], stats["wae"]
    cmp = R.make_comparison("baseline", "wae", base, wae, target="x", precision="fp32", batch=4)
    assert (cmp["a"], cmp["b"], cmp["rounds"]) == ("baseline", "wae", 15)
    assert (cmp["target"], cmp["precision"], cmp["batch"]) == ("x", "fp32", 4)
    ratio_of_medians = np.median(base.samples_ms) / np.median(wae.samples_ms)
    low, high = cmp["ci95"]
    assert 1.0 < low <= cmp["ratio"] <= high  # the WAE is faster, beyond doubt
    assert low <= ratio_of_medians <= high
    assert cmp["ratio"] == pytest.approx(np.median(np.asarray(base.samples_ms) / np.asarray(wae.samples_ms)))
    assert cmp["ratio"] <= SLOW_MS / FAST_MS * 1.5  # no more than the sleeps allow, give or take the overhead
    reverse = R.make_comparison("wae", "baseline", wae, base, target="x", precision="fp32", batch=4)
    assert reverse["ratio"] == pytest.approx(1 / cmp["ratio"]) and reverse["ci95"][1] < 1.0


def test_ratio_interval_by_hand():
    # ratios 2 4 6 8 10 12 (n = 6): P(Bin(6, 1/2) = 0) = 1/64 <= 0.025 < 7/64, so one is dropped
    # on each side: [r(1), r(6)] = [2, 12], median 7
    ci = ratio_ci([2, 4, 6, 8, 10, 12], [1, 1, 1, 1, 1, 1])
    assert (ci.ratio, ci.low, ci.high, ci.n) == (7.0, 2.0, 12.0, 6)
    # n = 20: P(Bin(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577: six dropped each side: [r(6), r(15)]
    ci = ratio_ci(np.arange(1, 21, dtype=float) * 3, np.full(20, 3.0))
    assert (ci.low, ci.high, ci.ratio) == (6.0, 15.0, 10.5)
    assert ratio_ci([1.0] * 6, [2.0] * 6).ratio == 0.5  # a slower b is a ratio below 1


def test_fill_speedups_by_hand():
    def entry(model, precision, median, baseline=None):
        return R.make_entry(model=model, target="ort", precision=precision, batch=1, baseline=baseline,
                            latency=summarize([median] * 3))

    results = {"entries": [entry("vgg", "fp32", 30.0), entry("wae", "fp32", 10.0, "vgg"),
                           entry("vgg", "int8", 15.0), entry("wae", "int8", 5.0, "vgg")]}
    R.fill_speedups(results)
    got = {(e["model"], e["precision"]): (e["speedup_vs_baseline"], e["speedup_vs_fp32_baseline"])
           for e in results["entries"]}
    assert got == {("vgg", "fp32"): (None, 1.0), ("wae", "fp32"): (3.0, 3.0),
                   ("vgg", "int8"): (None, 2.0), ("wae", "int8"): (3.0, 6.0)}

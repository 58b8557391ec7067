"""Latency statistics, interleaving order and paired ratios: synthetic samples, no timed assertions."""


import numpy as np
import pytest

from wae_deploy.runtime.latency import (
    measure_interleaved,
    order_effect,
    ratio_ci,
    round_order,
    summarize,
)


def test_summary_statistics_of_known_samples():
    s = summarize([float(x) for x in range(1, 11)], batch=4)
    assert s.median_ms == 5.5 and s.mean_ms == 5.5
    assert s.min_ms == 1 and s.max_ms == 10 and s.iters == 10
    assert s.p90_ms == pytest.approx(9.1) and s.p99_ms == pytest.approx(9.91)
    assert s.std_ms == pytest.approx(np.std(np.arange(1, 11), ddof=1))
    assert s.cv == pytest.approx(s.std_ms / 5.5)
    assert s.total_s == pytest.approx(0.055)
    assert s.throughput_ips == pytest.approx(4 * 1000 / 5.5)


def test_summary_edge_cases():
    one = summarize([3.0])
    assert one.std_ms == 0 and one.cv == 0 and one.p99_ms == 3.0
    with pytest.raises(ValueError):
        summarize([])
    d = summarize([1.0, 2.0], positions=[0, 1]).as_dict(include_samples=True)
    assert d["samples_ms"] == [1.0, 2.0] and d["position_median_ms"] == {"0": 1.0, "1": 2.0}


def test_round_order_is_balanced():
    assert [round_order("AB", r) for r in range(3)] == [list("AB"), list("BA"), list("AB")]
    for names in ("ABC", "ABCD", "ABCDE"):
        n = len(names)
        cycle = [round_order(names, r) for r in range(2 * n if n % 2 else n)]
        assert all(sorted(r) == list(names) for r in cycle)
        for x in names:  # each runner in each position equally often
            assert len({sum(r.index(x) == p for r in cycle) for p in range(n)}) == 1
            # ... and right after each other runner equally often
            before = [r[r.index(x) - 1] for r in cycle if r.index(x) > 0]
            assert sorted(set(before)) == sorted(set(names) - {x})
            assert len({before.count(y) for y in set(before)}) == 1


def _recorders(names, calls):
    return {n: (lambda n=n: calls.append(n)) for n in names}


def test_interleaving_changes_the_order_each_round():
    calls = []
    stats = measure_interleaved(_recorders("ABC", calls), warmup_iters=2, warmup_s=0, min_iters=6, min_time_s=0)
    warm, timed = calls[:6], calls[6:]
    assert warm == round_order("ABC", 0) + round_order("ABC", 1)
    assert timed == [x for r in range(6) for x in round_order("ABC", r)]
    for n in "ABC":
        s = stats[n]
        assert s.iters == 6 and len(s.samples_ms) == 6
        assert sorted(s.positions) == [0, 0, 1, 1, 2, 2]  # every runner in every position, equally often
        assert set(s.position_median_ms) == {0, 1, 2}
    rounds = [timed[i:i + 3] for i in range(0, len(timed), 3)]
    for n in "ABC":  # no runner always follows the same one
        assert len({r[r.index(n) - 1] for r in rounds if r.index(n) > 0}) == 2


def test_stopping_rules():
    calls = []
    stats = measure_interleaved(_recorders("AB", calls), warmup_iters=0, warmup_s=0, min_iters=10 ** 6,
                                min_time_s=0, max_iters=3)
    assert stats["A"].iters == stats["B"].iters == 3
    stats = measure_interleaved(_recorders("AB", []), warmup_iters=0, warmup_s=0, min_iters=50, max_time_s=0)
    assert stats["A"].iters == 1  # the time cap wins, after one round
    seen = []
    measure_interleaved(_recorders("A", []), warmup_iters=0, warmup_s=0, min_iters=4, min_time_s=0,
                        progress=lambda r, t: seen.append(r), batch={"A": 8})
    assert seen == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        measure_interleaved({})


def test_ratio_ci_exact_and_small():
    b = np.linspace(1, 2, 30)
    ci = ratio_ci(2 * b, b)
    assert ci.ratio == ci.low == ci.high == pytest.approx(2.0) and ci.n == 30
    small = ratio_ci([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])
    assert (small.low, small.high) == (2.0, 6.0)  # under 6 rounds: the full range
    with pytest.raises(ValueError):
        ratio_ci([1, 2], [1])
    big = ratio_ci(np.full(5000, 3.0), np.ones(5000))  # no float overflow on long runs
    assert big.ratio == 3.0


def test_ratio_ci_covers_the_true_ratio_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(300):
        b = rng.lognormal(0, 0.1, 40) * 10
        a = 3 * b * rng.lognormal(0, 0.1, 40)  # true median ratio 3
        ci = ratio_ci(a, b)
        assert ci.low <= ci.ratio <= ci.high
        hits += ci.low <= 3 <= ci.high
    assert 0.9 <= hits / 300 <= 0.995


def test_order_effect_detects_a_planted_order_dependence():
    # A is slower (12 ms) when it runs right after B than when it runs first (10 ms); B is always 5 ms
    pos_a = [0, 1] * 10
    a = summarize([10.0 if p == 0 else 12.0 for p in pos_a], positions=pos_a)
    b = summarize([5.0] * 20, positions=[1 - p for p in pos_a])
    eff = order_effect(a, b)
    assert eff["a_first"] == 2.0 and eff["b_first"] == 2.4
    assert eff["relative_difference"] == pytest.approx(0.2)
    assert a.position_median_ms == {0: 10.0, 1: 12.0}
    flat = order_effect(summarize([10.0] * 20, positions=pos_a), b)
    assert flat["relative_difference"] == 0


class FakeClock:
    """time.perf_counter(_ns) and time.sleep as the latency module sees them: each runner call
    advances the clock by its own exact cost, so every sample and stopping point is known."""

    def __init__(self):
        self.ns = 0

    def perf_counter_ns(self):
        return self.ns

    def perf_counter(self):
        return self.ns / 1e9

    def sleep(self, seconds):
        self.ns += round(seconds * 1e9)

    def runner(self, ms: float, calls: list | None = None):
        def call():
            self.ns += round(ms * 1e6)
            if calls is not None:
                calls.append(ms)
        return call


@pytest.fixture
def clock(monkeypatch):
    import wae_deploy.runtime.latency as latency

    fake = FakeClock()
    monkeypatch.setattr(latency, "time", fake)
    return fake


def test_samples_are_exact_milliseconds_and_pauses_are_not_timed(clock):
    seen = []
    stats = measure_interleaved({"a": clock.runner(3.0), "b": clock.runner(1.0)}, warmup_iters=0, warmup_s=0,
                                min_iters=5, min_time_s=0, pause_s=0.002, progress=lambda r, t: seen.append((r, t)))
    assert stats["a"].samples_ms == [3.0] * 5 and stats["b"].samples_ms == [1.0] * 5
    assert ratio_ci(stats["a"].samples_ms, stats["b"].samples_ms).ratio == 3.0
    # each round: two 2 ms pauses and 4 ms of calls
    assert seen == [(r, pytest.approx(0.008 * r)) for r in range(1, 6)]


def test_defaults_warm_up_half_a_second_then_time_two_seconds_and_ten_rounds(clock):
    calls = []
    stats = measure_interleaved({"a": clock.runner(30.0, calls), "b": clock.runner(20.0, calls)})
    # warm-up: rounds until 3 rounds and 0.5 s (10 rounds of 50 ms); then until 10 rounds and 2 s (40 rounds)
    assert len(calls) == 2 * (10 + 40) and stats["a"].iters == 40
    assert stats["a"].throughput_ips == pytest.approx(1e3 / 30.0)  # batch 1
    slow = measure_interleaved({"a": clock.runner(15_000.0), "b": clock.runner(15_000.0)}, warmup_iters=0,
                               warmup_s=0)
    assert slow["a"].iters == 2  # 60 s reached after two rounds of 30 s: the default cap


@pytest.mark.parametrize("rule,expected", [("min_time", 5), ("max_time", 5), ("warmup", 2)])
def test_time_limits_are_inclusive(clock, rule, expected):
    calls = []
    runners = {"a": clock.runner(3.0, calls), "b": clock.runner(1.0, calls)}  # 4 ms a round
    if rule == "min_time":  # 20 ms reached at exactly round 5
        stats = measure_interleaved(runners, warmup_iters=0, warmup_s=0, min_iters=1, min_time_s=0.02)
    elif rule == "max_time":
        stats = measure_interleaved(runners, warmup_iters=0, warmup_s=0, min_iters=100, max_time_s=0.02)
    else:  # one round asked for, but warm-up lasts until 8 ms: two rounds
        stats = measure_interleaved(runners, warmup_iters=1, warmup_s=0.008, min_iters=1, min_time_s=0)
        assert len(calls) == 2 * (expected + stats["a"].iters)
        return
    assert stats["a"].iters == expected


def test_no_runners_is_a_clear_error():
    with pytest.raises(ValueError, match="^no runners to time$"):
        measure_interleaved({})


def test_round_orders_by_hand():
    # a balanced Latin square's first row is 0 1 n-1 2 n-2 ...; row i adds i to every entry
    assert [round_order("ABCD", r) for r in range(4)] == [list("ABDC"), list("BCAD"), list("CDBA"), list("DACB")]
    # odd n: the rows, then the rows reversed
    assert [round_order("ABC", r) for r in range(6)] == [list("ABC"), list("BCA"), list("CAB"),
                                                         list("CBA"), list("ACB"), list("BAC")]
    assert round_order("ABC", 6) == list("ABC")  # cycled


def test_summary_defaults_and_small_samples():
    s = summarize([2.0, 4.0])
    assert s.batch == 1 and s.throughput_ips == pytest.approx(1e3 / 3.0) and s.positions == [0, 0]
    assert s.position_median_ms == {0: 3.0}
    assert s.std_ms == pytest.approx(2 ** 0.5)  # n - 1 in the denominator, already with two samples
    assert "samples_ms" not in s.as_dict()
    assert summarize([1.23456789]).as_dict(include_samples=True)["samples_ms"] == [1.2346]
    zero = summarize([0.0, 0.0])
    assert zero.cv == 0.0 and zero.throughput_ips == float("inf")
    with pytest.raises(ValueError, match="^no latency samples$"):
        summarize([])
    with pytest.raises(ValueError, match="^one position per sample$"):
        summarize([1.0], positions=[0, 1])


def test_ratio_interval_against_an_exact_binomial():
    import math

    n = 100  # by math.comb: the largest k with P(Bin(100, 1/2) < k) <= 0.025
    k = max(j for j in range(n) if sum(math.comb(n, i) for i in range(j)) / 2 ** n <= 0.025)
    ci = ratio_ci(np.arange(1, n + 1, dtype=float), np.ones(n))
    assert k == 40 and (ci.low, ci.high) == (float(k), float(n + 1 - k)) and ci.confidence == 0.95
    one = ratio_ci([3.0], [1.5])  # a single round: the interval is that ratio
    assert (one.ratio, one.low, one.high, one.n) == (2.0, 2.0, 2.0, 1)
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        ratio_ci([], [])


def test_order_effect_when_one_runner_always_ran_first():
    a = summarize([4.0] * 4, positions=[0] * 4)
    b = summarize([2.0] * 4, positions=[1] * 4)
    assert order_effect(a, b) == {"a_first": 2.0, "b_first": None, "relative_difference": None}
    assert order_effect(b, a) == {"a_first": None, "b_first": 0.5, "relative_difference": None}

"""The CI gate: unchanged results pass, a planted slow-down or accuracy drop fails, other environments are refused."""

import copy

import pytest

from wae_deploy.benchmark import gate as G
from wae_deploy.benchmark import results as R
from wae_deploy.benchmark.environment import fingerprint


def _entry(model, precision, median, cv=0.02, top1=84.0, n=10000, baseline=None):
    lat = {"median_ms": median, "min_ms": median * 0.9, "p90_ms": median * 1.05, "p99_ms": median * 1.1,
           "mean_ms": median, "cv": cv, "iters": 100}
    return R.make_entry(model=model, target="ort", precision=precision, batch=8, latency=lat, baseline=baseline,
                        accuracy=None if top1 is None else {"top1": top1, "top5": 99.0, "n": n})


def _recorded():
    entries = [_entry("resnet20", "fp32", 10.0, top1=87.9), _entry("resnet20", "int8", 4.0, top1=87.6),
               _entry("wae-resnet20", "fp32", 4.0, baseline="resnet20"),
               _entry("wae-resnet20", "int8", 2.0, top1=83.8, baseline="resnet20")]
    return R.fill_speedups(R.new_results(fingerprint(threads=2), {"name": "unit"}, entries))


def _find(r, model, precision):
    return R.find_entry(r, model, "ort", precision, 8)


def _slower(r, precision, factor, models=("resnet20", "wae-resnet20")):
    for m in models:
        _find(r, m, precision)["latency"]["min_ms"] *= factor


def test_unchanged_results_pass():
    rec = _recorded()
    g = G.compare(copy.deepcopy(rec), rec)
    assert g.ok and g.exit_code == 0 and g.lines() == []
    assert len(g.checks) == 4 + 2 + 2  # accuracy each, speed-up for the WAE entries, latency per precision
    assert all(c.ok for c in g.checks)


def test_planted_slowdown_fails_with_one_line():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _slower(cur, "int8", 1.30)  # every int8 model alike: the speed-up holds, the latency check fails
    g = G.compare(cur, rec)
    assert g.exit_code == 1 and not g.ok
    assert len(g.lines()) == 1
    assert g.lines()[0].startswith("FAIL latency ort int8: best-case latency +30.0%")
    assert "over 2 entries (tolerance +10.0%" in g.lines()[0]  # max(5 x 2%, 5%)


def test_one_slow_entry_counts_in_its_group():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _slower(cur, "fp32", 1.44, models=("resnet20",))  # geometric mean of 1.44 and 1: +20%
    [fail] = G.compare(cur, rec).failures
    assert fail.name == "latency ort fp32" and "+20.0%" in fail.message and "most: resnet20 b8 +44.0%" in fail.message


def test_noise_sized_changes_pass_and_tolerance_follows_recorded_noise():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _slower(cur, "fp32", 1.04)  # under the 5% floor
    _slower(cur, "int8", 0.5)  # faster never fails
    assert G.compare(cur, rec).ok
    noisy = copy.deepcopy(rec)
    for m in ("resnet20", "wae-resnet20"):
        _find(noisy, m, "fp32")["latency"]["cv"] = 0.10  # a noisy recording tolerates 50%
    _slower(cur, "fp32", 1.35 / 1.04)
    assert G.compare(cur, noisy).ok
    assert not G.compare(cur, rec).ok
    assert G.latency_tolerance([_find(noisy, "resnet20", "fp32")]) == pytest.approx(0.50)
    assert G.speedup_tolerance(_find(noisy, "wae-resnet20", "fp32")) == pytest.approx(0.40)


def test_planted_accuracy_drop_fails():
    rec = _recorded()
    # 83.8% on 10000 images: standard error 0.37 points, tolerance 2 SE = 0.74 points
    assert G.accuracy_tolerance({"top1": 83.8, "n": 10000}) == pytest.approx(0.737, abs=1e-3)
    assert G.accuracy_tolerance({"top1": 100.0, "n": 10000}) == 0.1  # the floor
    cur = copy.deepcopy(rec)
    _find(cur, "wae-resnet20", "int8")["accuracy"]["top1"] = 83.3  # -0.5: within noise
    assert G.compare(cur, rec).ok
    _find(cur, "wae-resnet20", "int8")["accuracy"]["top1"] = 82.8  # -1.0: a regression
    g = G.compare(cur, rec)
    assert g.exit_code == 1 and len(g.lines()) == 1
    assert g.lines()[0].startswith("FAIL accuracy wae-resnet20 ort int8 b8: top-1 82.80% vs recorded 83.80%")


def test_explicit_tolerances_override_the_noise():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _slower(cur, "fp32", 1.04)
    _find(cur, "resnet20", "fp32")["accuracy"]["top1"] -= 0.3
    assert G.compare(cur, rec).ok
    g = G.compare(cur, rec, max_slowdown=0.02, max_accuracy_drop=0.2)
    assert [c.name for c in g.failures] == ["accuracy resnet20 ort fp32 b8", "latency ort fp32"]


def test_speedup_drop_fails():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _find(cur, "wae-resnet20", "fp32")["speedup_vs_baseline"] = 2.0  # recorded 2.5x
    g = G.compare(cur, rec)
    assert [c.name for c in g.failures] == ["speedup wae-resnet20 ort fp32 b8"]


def test_missing_entries_and_accuracy():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    cur["entries"] = [e for e in cur["entries"] if e["precision"] == "fp32"]
    cur["entries"].append(_entry("new-model", "fp32", 1.0))  # new entries are not checked
    g = G.compare(cur, rec)
    assert sorted(c.name for c in g.failures) == ["present resnet20 ort int8 b8", "present wae-resnet20 ort int8 b8"]
    assert G.compare(cur, rec, require_all=False).ok
    cur = copy.deepcopy(rec)
    _find(cur, "resnet20", "fp32")["accuracy"] = None
    _find(cur, "resnet20", "int8")["accuracy"]["n"] = 500
    msgs = [c.message for c in G.compare(cur, rec).failures]
    assert msgs == ["accuracy was recorded but not measured in this run",
                    "evaluated on 500 images, recorded on 10000: not comparable"]


def test_other_environment_is_refused_unless_allowed():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    cur["environment"]["cpu"]["model"] = "Another CPU"
    cur["environment"]["packages"]["onnxruntime"] = "0.0.1"
    g = G.compare(cur, rec)
    assert g.refused and g.exit_code == 2 and not g.checks
    assert "cpu.model" in g.refused and "packages.onnxruntime" in g.refused and "--allow-env-mismatch" in g.refused
    assert len(g.lines()) == 1 and g.lines()[0].startswith("refused: ")
    allowed = G.compare(cur, rec, allow_env_mismatch=True)
    assert allowed.exit_code == 0 and allowed.checks[0].name == "environment"
    assert "Another CPU" in allowed.checks[0].message
    # a runtime the entries do not use does not matter
    cur = copy.deepcopy(rec)
    cur["environment"]["packages"]["tensorrt"] = "10.3"
    assert G.compare(cur, rec).exit_code == 0


def test_tolerances_by_hand():
    def rec(cv):
        return {"latency": {"cv": cv}}

    assert G.speedup_tolerance(rec(None)) == 0.05 and G.speedup_tolerance(rec(0.05)) == pytest.approx(0.20)
    # the median of four cvs is the third smallest (index 4 // 2); a missing cv counts as 0
    assert G.latency_tolerance([rec(0.04), rec(None), rec(0.03), rec(0.02)]) == pytest.approx(5 * 0.03)
    assert G.latency_tolerance([rec(None)]) == 0.05
    assert G.accuracy_tolerance({"top1": 84.0, "n": 0}) == float("inf")
    # 2 binomial standard errors of 50% on 10,000 images: 2 * 100 * sqrt(0.25 / 10000) = 1.0 point
    assert G.accuracy_tolerance({"top1": 50.0, "n": 10000}) == pytest.approx(1.0)


@pytest.mark.parametrize("factor,ok", [(1.25, True), (1.3, False)])
def test_latency_limit_is_inclusive_on_a_single_entry_group(factor, ok):
    rec = R.new_results(fingerprint(threads=2), {"name": "unit"}, [_entry("resnet20", "fp32", 8.0, top1=None)])
    cur = copy.deepcopy(rec)
    _find(cur, "resnet20", "fp32")["latency"]["min_ms"] *= factor  # 7.2 ms -> 9.0 ms: exactly +25%
    g = G.compare(cur, rec, max_slowdown=0.25)
    assert [c.name for c in g.checks] == ["latency ort fp32"] and g.ok == ok


def test_accuracy_and_speedup_limits_are_inclusive():
    rec = _recorded()
    _find(rec, "resnet20", "fp32")["accuracy"]["top1"] = 88.0
    cur = copy.deepcopy(rec)
    _find(cur, "resnet20", "fp32")["accuracy"]["top1"] = 87.0  # a drop of exactly 1 point
    wae = _find(cur, "wae-resnet20", "fp32")
    wae["speedup_vs_baseline"] = _find(rec, "wae-resnet20", "fp32")["speedup_vs_baseline"] * 0.75  # exactly -25%
    assert G.compare(cur, rec, max_accuracy_drop=1.0, max_slowdown=0.25).ok
    g = G.compare(cur, rec, max_accuracy_drop=0.99, max_slowdown=0.24)
    assert [c.name for c in g.failures] == ["accuracy resnet20 ort fp32 b8", "speedup wae-resnet20 ort fp32 b8"]
    assert all(c.ok is False for c in g.failures)
    assert g.failures[1].message.startswith("speed-up over resnet20 1.88x vs recorded 2.50x (-25.0%")


def test_missing_accuracy_and_other_image_counts_fail_by_name():
    rec = _recorded()
    cur = copy.deepcopy(rec)
    _find(cur, "resnet20", "fp32")["accuracy"] = None
    _find(cur, "resnet20", "int8")["accuracy"]["n"] = 500
    g = G.compare(cur, rec, max_slowdown=10)
    assert [(c.name, c.ok) for c in g.failures] == [("accuracy resnet20 ort fp32 b8", False),
                                                    ("accuracy resnet20 ort int8 b8", False)]
    assert g.failures[0].message == "accuracy was recorded but not measured in this run"
    assert g.failures[1].message == "evaluated on 500 images, recorded on 10000: not comparable"
    del cur["entries"][0]
    missing = G.compare(cur, rec, max_slowdown=10).failures[0]
    assert (missing.name, missing.ok, missing.message) == ("present resnet20 ort fp32 b8", False,
                                                           "recorded but not measured in this run")


def test_int8_must_keep_a_fraction_of_the_same_models_fp32_top1():
    rec = _recorded()  # wae-resnet20: FP32 84.0, INT8 83.8 (0.998 of it); resnet20: 87.9 and 87.6
    cur = copy.deepcopy(rec)
    assert [c.name for c in G.compare(cur, rec).checks if c.name.startswith("int8-vs-fp32")] == []  # off unless asked
    assert G.compare(cur, rec, min_accuracy_fraction=0.99).ok
    _find(cur, "wae-resnet20", "int8")["accuracy"]["top1"] = 83.0  # 0.988 of FP32: under MLPerf's 99%
    g = G.compare(cur, rec, min_accuracy_fraction=0.99, max_accuracy_drop=5)
    [fail] = g.failures
    assert fail.name == "int8-vs-fp32 wae-resnet20 ort"
    assert fail.message == "INT8 top-1 83.00% vs FP32 84.00% (at least 0.99 of it required: 83.16%)"
    assert G.compare(cur, rec, min_accuracy_fraction=0.98, max_accuracy_drop=5).ok


def test_the_fraction_check_needs_both_precisions_of_a_model():
    results = _recorded()
    results["entries"] = [e for e in results["entries"] if e["precision"] == "int8" or e["model"] == "resnet20"]
    assert [c.name for c in G.accuracy_fraction_checks(results, 0.99)] == ["int8-vs-fp32 resnet20 ort"]

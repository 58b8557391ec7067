"""`bench --scenario`: the reference WAE-ResNet20 through the real MLPerf LoadGen on ONNX Runtime.

Short runs (0.3 s minimum, 64 CIFAR-10 test photos, one thread): the tests check LoadGen's own
files, the numbers read back from them, the accuracy log scored like the harness, both audits
(and a planted fault that TEST01 must catch), an INVALID run, and the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_small import assert_clean_error, reference_export, run_cli

from wae_deploy.benchmark import audits, loadgen, report
from wae_deploy.benchmark.mlperf_logs import ACCURACY, DETAIL, SUMMARY, RunLog
from wae_deploy.benchmark.suite import BenchConfig
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

lg_module = pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is the [mlperf] extra")

PHOTOS = 64
SHORT = 0.3


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return reference_export(tmp_path_factory, "wae-resnet20")


@pytest.fixture(scope="module")
def photos(cifar_test):
    return cifar_test.sample(PHOTOS, seed=1)


def _bench(onnx_path, data_root, workdir) -> BenchConfig:
    return BenchConfig(targets=["ort"], models=[str(onnx_path)], data=str(data_root), eval_size=PHOTOS,
                       workdir=workdir, threads=1)


@pytest.fixture(scope="module")
def single(onnx_path, data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("loadgen-single")
    cfg = loadgen.LoadgenConfig("singlestream", work / "logs", min_time_s=SHORT, audits=audits.AUDITS)
    return loadgen.run(_bench(onnx_path, data_root, work), cfg, log=_quiet)["loadgen"][0]


def test_singlestream_keeps_loadgens_logs_and_reads_its_numbers(single):
    folder = Path(single["logs"])
    for run in ("performance", "TEST01", "TEST04"):
        assert (folder / run / SUMMARY).is_file() and (folder / run / DETAIL).is_file(), run
    assert (folder / "accuracy" / ACCURACY).is_file()
    assert "Result is : VALID" in (folder / "performance" / SUMMARY).read_text()
    perf = single["performance"]
    assert (single["scenario"], single["batch"], perf["validity"], perf["reason"]) == ("SingleStream", 1, "VALID", None)
    assert 0 < perf["p90_ms"] <= perf["early_stopping_p90_ms"]  # the estimate is the p90 of fewer queries, or more
    assert perf["queries"] >= loadgen.SHORT_MIN_QUERIES["SingleStream"]
    assert single["settings"]["run_length"] == "short"


def test_top1_from_loadgens_accuracy_log_equals_the_harness(single):
    assert single["accuracy"]["n"] == PHOTOS
    assert single["accuracy"]["top1"] == single["harness_accuracy"]["top1"]
    assert single["accuracy_matches_harness"]
    assert single["accuracy"]["top1"] > 50  # the trained reference model, not noise


def test_audits_pass_on_a_correct_runner(single):
    t01, t04 = single["audits"]["TEST01"], single["audits"]["TEST04"]
    assert t01["passed"], t01
    assert t01["checked"] > 0 and t01["mismatched"] == 0
    # TEST04 is timing: on a shared machine its verdict is whatever the numbers say, and they must say it.
    assert t04["score"] > 0 and t04["reference_score"] > 0
    assert t04["passed"] == (t04["score"] <= t04["reference_score"] * (1 + audits.TEST04_MAX_GAIN))


def test_the_report_gives_the_metric_and_says_the_run_is_short(single):
    text = report.markdown({"entries": [], "loadgen": [single], "schema_version": 3})
    assert "p90" in text and "early-stopping estimate" in text
    assert "NOT an official-length run" in text


class PreviousAnswer:
    """The planted fault: each call answers with the previous call's output."""

    def __init__(self, runner):
        self.runner, self.last = runner, None

    def infer(self, x):
        out = self.runner.infer(x)
        previous, self.last = (out if self.last is None else self.last), out
        return previous


def test_test01_catches_a_runner_that_returns_the_previous_answer(onnx_path, photos, tmp_path):
    spec = onnx_meta.read(onnx_path).preprocessing
    runner = OnnxRuntimeRunner(onnx_path, 1)
    try:
        cfg = loadgen.LoadgenConfig("singlestream", tmp_path, min_time_s=SHORT, audits=("TEST01",))
        out = loadgen.measure(lg_module, cfg, PreviousAnswer(runner), photos, spec, tmp_path / "stale", _quiet)
    finally:
        runner.close()
    t01 = out["audits"]["TEST01"]
    assert not t01["passed"] and t01["mismatched"] > t01["checked"] // 2, t01
    assert any(line.startswith("FAIL TEST01") for line in report.loadgen_failures({"loadgen": [
        {**out, "model": "stale", "target": "ort", "precision": "fp32"}]}))


def test_offline_reports_samples_per_second(onnx_path, photos, tmp_path):
    spec = onnx_meta.read(onnx_path).preprocessing
    runner = OnnxRuntimeRunner(onnx_path, 1)
    try:
        cfg = loadgen.LoadgenConfig("offline", tmp_path, min_time_s=SHORT, offline_batch=8)
        out = loadgen.measure(lg_module, cfg, runner, photos, spec, tmp_path / "offline", _quiet)
    finally:
        runner.close()
    perf = out["performance"]
    assert (out["scenario"], out["batch"], perf["validity"]) == ("Offline", 8, "VALID"), perf
    assert perf["samples_per_s"] > 0 and perf["p90_ms"] is None and perf["early_stopping_p90_ms"] is None
    assert out["accuracy_matches_harness"], (out["accuracy"], out["harness_accuracy"])


def test_an_invalid_run_is_reported_invalid_with_its_reason_and_no_numbers(onnx_path, photos, tmp_path):
    spec = onnx_meta.read(onnx_path).preprocessing
    runner = OnnxRuntimeRunner(onnx_path, 1)
    try:  # LoadGen stops at 10 queries, short of its minimum of 100: INVALID
        cfg = loadgen.LoadgenConfig("singlestream", tmp_path, min_time_s=SHORT, max_queries=10)
        out = loadgen.measure(lg_module, cfg, runner, photos, spec, tmp_path / "invalid", _quiet)
    finally:
        runner.close()
    perf = out["performance"]
    assert perf["validity"] == "INVALID" and perf["reason"], perf
    assert perf["p90_ms"] is None and perf["early_stopping_p90_ms"] is None
    entry = {**out, "model": "m", "target": "ort", "precision": "fp32"}
    [line] = report.loadgen_lines({"loadgen": [entry]})
    assert "INVALID: " in line and "p90" not in line.split("; top-1")[0]
    assert report.loadgen_failures({"loadgen": [entry]})[0].startswith("INVALID m ort fp32 SingleStream")


def _run(scenario: str, validity: str = "VALID", p90=None, sps=None, found=True) -> RunLog:
    return RunLog(Path("x"), scenario, validity, None, 100, p90, p90, p90, sps, 0, found)


@pytest.mark.parametrize("scenario, ref, same, passed", [
    ("Offline", dict(sps=1000.0), dict(sps=1090.0), True),
    ("Offline", dict(sps=1000.0), dict(sps=1200.0), False),   # a cache: the same sample 20% faster
    ("SingleStream", dict(p90=2.0), dict(p90=1.5), False),     # 1.5 ms against 2 ms: a third better
    ("SingleStream", dict(p90=2.0), dict(p90=1.95), True),
])
def test_test04_decides_on_the_ten_percent_bar(scenario, ref, same, passed):
    assert audits.test04(_run(scenario, **ref), _run(scenario, **same))["passed"] is passed


def test_test04_cannot_pass_on_an_invalid_run_or_without_its_audit_config():
    ok = _run("Offline", sps=1000.0)
    assert "INVALID" in audits.test04(_run("Offline", "INVALID"), ok)["why"]
    assert "audit.config" in audits.test04(ok, _run("Offline", sps=1000.0, found=False))["why"]


def test_test01_tolerance_is_far_below_a_different_photo():
    ref = {0: np.array([3.0, -1.0, 0.5], np.float32)}
    run = _run("Offline", sps=1.0)
    assert audits.test01([(0, ref[0] + 1e-5)], ref, run, run, True)["passed"]
    assert not audits.test01([(0, ref[0] + 0.01)], ref, run, run, True)["passed"]
    assert not audits.test01([(1, ref[0])], ref, run, run, True)["passed"]  # nothing to compare is no pass


@pytest.mark.parametrize("scenario, perf, audit, within", [
    ("SingleStream", dict(p90=2.0), dict(p90=2.19), True),
    ("SingleStream", dict(p90=2.0), dict(p90=2.21), False),     # 10.5% slower while logging outputs
    ("SingleStream", dict(p90=2.0), dict(p90=1.79), False),     # ... or faster: either way, not the same system
    ("SingleStream", dict(p90=0.15), dict(p90=0.175), True),    # 200 us or less: 20%
    ("Offline", dict(sps=1000.0), dict(sps=905.0), True),
    ("Offline", dict(sps=1000.0), dict(sps=895.0), False),
])
def test_test01_performance_part_is_verify_performance_and_binds_official_runs_only(scenario, perf, audit, within):
    ref = {0: np.array([3.0, -1.0, 0.5], np.float32)}
    a, p = _run(scenario, **audit), _run(scenario, **perf)
    official = audits.test01([(0, ref[0])], ref, a, p, official=True)
    short = audits.test01([(0, ref[0])], ref, a, p, official=False)
    assert official["performance"]["passed"] is short["performance"]["passed"] is within
    assert official["passed"] is within and short["passed"]  # outputs match: a short run passes on them
    assert official["performance"]["binding"] and not short["performance"]["binding"]
    text = report._audit_text(short)
    assert text.startswith("pass") and ("within" if within else "outside") in text and "--mlperf-rules" in text
    assert "INVALID" in audits.test01([(0, ref[0])], ref, a, _run(scenario, "INVALID"), True)["why"]


def test_cli_scenario_run_writes_results_report_and_logs_beside_them(onnx_path, data_root, tmp_path):
    out = tmp_path / "res.json"
    r = run_cli(["bench", "--target", "ort", "--models", onnx_path, "--data", data_root, "--eval-size", PHOTOS,
                 "--threads", 1, "--workdir", tmp_path / "w", "--scenario", "singlestream", "--min-time", SHORT,
                 "--out", out, "--markdown", tmp_path / "res.md"])
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(out.read_text())
    [entry] = results["loadgen"]
    assert results["entries"] == [] and entry["performance"]["validity"] == "VALID"
    assert (tmp_path / "res-loadgen" / "wae-resnet20-ort-fp32" / "performance" / SUMMARY).is_file()
    assert "NOT an official-length run" in (tmp_path / "res.md").read_text()


def test_cli_refuses_an_unknown_scenario_in_one_line():
    r = run_cli(["bench", "--target", "ort", "--scenario", "server"])
    assert_clean_error(r.returncode, r.stdout, r.stderr, match="scenario")


def test_cli_refuses_the_harness_only_options_with_a_scenario(tmp_path):
    r = run_cli(["bench", "--target", "ort", "--scenario", "offline", "--plot", tmp_path / "p.png", "--profile"])
    assert_clean_error(r.returncode, r.stdout, r.stderr, match="--plot, --profile cannot be used with --scenario")


def test_the_cli_offers_loadgens_scenarios():
    from wae_deploy.cli.bench import SCENARIOS

    assert SCENARIOS == tuple(sorted(loadgen.SCENARIOS))


@pytest.mark.parametrize("scenario, official, duration_ms, queries", [
    ("singlestream", True, 600_000, 100), ("offline", True, 600_000, 24576),
    ("singlestream", False, 2_500, 100), ("offline", False, 2_500, 1),
])
def test_mlperf_rules_give_mlperf_confs_lengths(scenario, official, duration_ms, queries, tmp_path):
    cfg = loadgen.LoadgenConfig(scenario, tmp_path, mlperf_rules=official, min_time_s=2.5)
    s = loadgen.settings(lg_module, cfg, "performance", call_s=0.01)
    assert (s.min_duration_ms, s.min_query_count) == (duration_ms, queries)
    assert s.qsl_rng_seed == loadgen.SEEDS["qsl_rng_seed"]
    assert s.scenario == getattr(lg_module.TestScenario, loadgen.SCENARIOS[scenario])

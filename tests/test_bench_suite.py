"""A benchmark run end to end: export and build what is missing, measure accuracy and interleaved
latency of a WAE model beside its baseline, reuse artifacts, gate against a recorded run.

Two tiny real checkpoints (WAE-ResNet20 and ResNet20, three training batches each) are
trained once per module; timings are short (0.2 s per target/precision/batch) and the gate
is run with a wide --max-slowdown, so the tests check the plumbing, not this machine's speed.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from wae_deploy.benchmark import history, sources
from wae_deploy.benchmark import results as R
from wae_deploy.benchmark.peak import COMPUTE
from wae_deploy.benchmark.suite import BenchConfig, run
from wae_deploy.cli import main

BATCHES = [1, 2]
EVAL = 200


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, trained_pair):
    """wae.pt and plain.pt: real checkpoints trained for three batches (this module's copies of the run's)."""
    folder = tmp_path_factory.mktemp("ckpts")
    for key in ("wae", "plain"):
        shutil.copyfile(trained_pair / f"{key}.pt", folder / f"{key}.pt")
    return {key: folder / f"{key}.pt" for key in ("wae", "plain")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work")


def config(ckpts, workdir) -> BenchConfig:
    return BenchConfig(targets=["ort"], models=[str(ckpts["wae"]), str(ckpts["plain"])], precisions=["fp32"],
                       batches=BATCHES, eval_size=EVAL, min_time_s=0.2, min_iters=3, workdir=workdir, threads=1)


@pytest.fixture(scope="module")
def first(ckpts, workdir):
    return run(config(ckpts, workdir), log=_quiet)


def cli_args(ckpts, workdir, *extra) -> list[str]:
    return ["bench", "--target", "ort", "--models", f"{ckpts['wae']},{ckpts['plain']}", "--precision", "fp32",
            "--batch", ",".join(map(str, BATCHES)), "--eval-size", str(EVAL), "--min-time", "0.2",
            "--threads", "1", "--workdir", str(workdir), *map(str, extra)]


def test_entries_for_both_models_and_batches(first, workdir):
    entries = {(e["model"], e["batch"]): e for e in first["entries"]}
    assert set(entries) == {(m, b) for m in ("wae", "plain") for b in BATCHES} and len(first["entries"]) == 4
    for (model, _), e in entries.items():
        assert e["target"] == "ort" and e["precision"] == "fp32"
        assert e["arch"] == {"wae": "wae-resnet20", "plain": "resnet20"}[model]
        assert e["baseline"] == ("plain" if model == "wae" else None)
        assert e["accuracy"]["n"] == EVAL and 0 <= e["accuracy"]["top1"] <= e["accuracy"]["top5"] <= 100
        lat = e["latency"]
        assert lat["median_ms"] > 0 and lat["iters"] >= 3 and lat["throughput_ips"] > 0
        assert e["gmacs"] > 0 and e["gflops_per_s"] > 0
        assert e["artifact"] == str(workdir / f"{model}.ort-fp32") and e["artifact_bytes"] > 0
        assert e["speedup_vs_fp32_baseline"] > 0
    # accuracy is measured once per artifact, the same for every batch size
    assert entries["wae", 1]["accuracy"] == entries["wae", 2]["accuracy"]
    # the point of a WAE: fewer multiply-adds than its full-resolution baseline
    assert entries["wae", 1]["gmacs"] < entries["plain", 1]["gmacs"]
    assert entries["plain", 1]["speedup_vs_baseline"] is None


def test_wae_baseline_pair_compared_per_batch(first):
    cmps = {c["batch"]: c for c in first["comparisons"]}
    assert sorted(cmps) == BATCHES and len(first["comparisons"]) == len(BATCHES)
    for batch, c in cmps.items():
        assert (c["a"], c["b"], c["target"], c["precision"]) == ("plain", "wae", "ort", "fp32")
        assert c["ratio"] > 0 and len(c["ci95"]) == 2
        assert c["ci95"][0] <= c["ratio"] <= c["ci95"][1]
        wae = R.find_entry(first, "wae", "ort", "fp32", batch)
        assert wae["speedup_vs_baseline"] == c["ratio"]


def test_accuracy_is_each_checkpoints_own_top1_on_the_eval_sample(first, ckpts, cifar_test):
    """A second implementation: torch on the same images (the suite's eval sample: seed 1), argmax vs label."""
    import numpy as np
    import torch

    from wae_deploy.runtime.preprocess import CIFAR
    from wae_deploy.training import checkpoint

    data = cifar_test.sample(EVAL, seed=1)
    for key in ("wae", "plain"):
        with torch.no_grad():
            logits = checkpoint.load(ckpts[key]).build_model()(torch.from_numpy(CIFAR.normalize(data.images))).numpy()
        top1 = 100.0 * (logits.argmax(1) == data.labels).sum() / EVAL
        top5 = 100.0 * (np.argsort(-logits, 1)[:, :5] == data.labels[:, None]).any(1).sum() / EVAL
        for batch in BATCHES:
            got = R.find_entry(first, key, "ort", "fp32", batch)["accuracy"]
            # ORT and torch differ by ~1e-7: one near-tie among 200 images may go the other way
            assert abs(got["top1"] - top1) <= 100 / EVAL and abs(got["top5"] - top5) <= 100 / EVAL, (key, got)


def test_speedup_side_follows_a_slowed_baseline(first, ckpts, workdir, monkeypatch):
    """The baseline's runner sleeps 50 ms per call on top of its work: the WAE's speed-up over it is
    above 1 and is the paired ratio baseline / WAE (its interval is checked in test_speedup.py)."""
    import dataclasses
    import time

    real_load = sources.BenchModel.load

    def slow_load(self, path, target, threads):
        runner = real_load(self, path, target, threads)
        if Path(path).name.startswith("plain."):
            infer = runner.infer
            runner.infer = lambda x: (time.sleep(0.05), infer(x))[1]
        return runner

    monkeypatch.setattr(sources.BenchModel, "load", slow_load)
    slowed = run(dataclasses.replace(config(ckpts, workdir), accuracy=False), log=_quiet)
    for batch in BATCHES:
        cmp = next(c for c in slowed["comparisons"] if c["batch"] == batch)
        plain = R.find_entry(slowed, "plain", "ort", "fp32", batch)["latency"]
        wae = R.find_entry(slowed, "wae", "ort", "fp32", batch)
        assert (cmp["a"], cmp["b"]) == ("plain", "wae") and plain["min_ms"] >= 50.0
        assert 1.0 < cmp["ci95"][0] <= cmp["ratio"] <= cmp["ci95"][1]
        assert wae["speedup_vs_baseline"] == cmp["ratio"]
        of_medians = plain["median_ms"] / wae["latency"]["median_ms"]
        assert of_medians > 1 and wae["speedup_vs_fp32_baseline"] == pytest.approx(of_medians)


def test_results_are_a_valid_schema_file(first, tmp_path):
    path = R.save(first, tmp_path / "results.json")
    loaded = R.load(path)
    assert loaded["format"] == R.FORMAT and loaded["schema_version"] == R.SCHEMA_VERSION
    assert loaded["suite"]["models"] == ["wae", "plain"] and loaded["suite"]["eval_images"] == EVAL
    peaks = loaded["peaks"]["ort"]["gflops"]
    assert set(peaks) == {COMPUTE[e["precision"]] for e in loaded["entries"]} and min(peaks.values()) > 0
    for e in loaded["entries"]:  # each precision is held against the peak of its own precision
        assert e["efficiency_of_peak"] == pytest.approx(e["gflops_per_s"] / peaks[COMPUTE[e["precision"]]])


def test_second_run_reuses_exports_and_artifacts(first, ckpts, workdir, monkeypatch):
    built = {p: (p / "manifest.json").stat().st_mtime_ns for p in workdir.glob("*.ort-fp32")}
    exported = {p: p.stat().st_mtime_ns for p in workdir.glob("*.onnx")}
    assert len(built) == 2 and len(exported) == 2

    def refuse(*_a, **_k):
        raise AssertionError("rebuilt although the artifact was up to date")

    monkeypatch.setattr(sources, "build", refuse)
    monkeypatch.setattr("wae_deploy.training.export.export", refuse)
    lines = []
    again = run(config(ckpts, workdir), log=lines.append)
    assert not any(line.startswith(("building", "exporting")) for line in lines), lines
    assert {(e["model"], e["batch"]) for e in again["entries"]} == {(e["model"], e["batch"]) for e in first["entries"]}
    assert {p: (p / "manifest.json").stat().st_mtime_ns for p in workdir.glob("*.ort-fp32")} == built
    assert {p: p.stat().st_mtime_ns for p in workdir.glob("*.onnx")} == exported
    # the same images through the same artifacts: the same accuracy
    for e in again["entries"]:
        assert e["accuracy"] == R.find_entry(first, e["model"], "ort", "fp32", e["batch"])["accuracy"]


def junit(path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and [c.tag for c in root] == ["testsuite"]
    assert int(root.get("tests")) == len(list(root.iter("testcase"))) > 0
    return root


def test_cli_gate_passes_on_its_own_record_and_catches_an_accuracy_drop(first, ckpts, workdir, tmp_path):
    cli = CliRunner()
    recorded = tmp_path / "recorded.json"
    res = cli.invoke(main, cli_args(ckpts, workdir, "--out", recorded, "--junit", tmp_path / "measured.xml",
                                    "--history", tmp_path / "history"))
    assert res.exit_code == 0, res.output
    assert "speed-up wae over plain (ort fp32 batch 1)" in res.output
    rec = R.load(recorded)
    assert len(rec["entries"]) == 4
    (run_file,) = (tmp_path / "history").glob("*.json")  # the same run, with its commit and host
    assert f"added this run to the history: {run_file}" in res.output
    kept = R.load(run_file)
    assert kept["history"] == {"commit": history.git_commit(), "host": history.host_id(rec["environment"])}
    assert kept["entries"] == rec["entries"]
    measured = junit(tmp_path / "measured.xml")
    assert measured.get("tests") == "4" and measured.get("failures") == "0"

    res = cli.invoke(main, cli_args(ckpts, workdir, "--compare", recorded, "--max-slowdown", "10",
                                    "--junit", tmp_path / "pass.xml"))
    assert res.exit_code == 0, res.output
    assert "gate: passed" in res.output and "FAIL" not in res.output
    passed = junit(tmp_path / "pass.xml")
    assert passed.get("failures") == "0" and passed.get("errors") == "0"
    names = [c.get("classname") for c in passed.iter("testcase")]
    assert "wae-deploy.bench.gate.accuracy" in names and "wae-deploy.bench.gate.latency" in names

    # plant a regression: the record claims 20 points more top-1 than this build gives
    planted = tmp_path / "planted.json"
    data = json.loads(recorded.read_text())
    for e in data["entries"]:
        e["accuracy"]["top1"] += 20.0
    planted.write_text(json.dumps(data))
    res = cli.invoke(main, cli_args(ckpts, workdir, "--compare", planted, "--max-slowdown", "10",
                                    "--junit", tmp_path / "fail.xml"))
    assert res.exit_code == 1, res.output
    assert "gate: FAILED" in res.output
    fails = [line for line in res.output.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 4 and all(line.startswith("FAIL accuracy ") for line in fails), fails
    assert "-20.00 pts" in fails[0]
    failed = junit(tmp_path / "fail.xml")
    assert failed.get("failures") == "4"
    assert all("top-1" in f.get("message") for f in failed.iter("failure"))

    # --update records this run in place of the planted file; the gate then passes against it
    res = cli.invoke(main, cli_args(ckpts, workdir, "--compare", planted, "--update"))
    assert res.exit_code == 0, res.output
    assert f"recorded a new baseline in {planted}" in res.output
    updated = R.load(planted)
    assert len(updated["entries"]) == 4
    for e in updated["entries"]:
        assert e["accuracy"] == R.find_entry(rec, e["model"], "ort", "fp32", e["batch"])["accuracy"]



def test_builtin_suite_finds_the_reference_checkpoints_from_anywhere(tmp_path, monkeypatch):
    from wae_deploy.benchmark.sources import suite_models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WAE_MODELS_URL", "http://127.0.0.1:9/")  # nothing to download: the checkout has them
    found, accuracy = suite_models("cifar10", None, tmp_path, log=print)
    assert accuracy and len(found) == 5 and all(Path(p).is_absolute() and Path(p).is_file() for p in found), found
    given = [str(p) for p in found[:1]]
    assert suite_models("cifar10", given, tmp_path, log=print) == (given, True)   # --models wins

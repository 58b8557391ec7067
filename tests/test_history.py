"""Bench history and the trend page: append, skip foreign files, the HTML, github-action-benchmark's JSON.

The history under tests/data/history/ is made of results this repository recorded
(benchmarks/history_fixture.py): five runs of the CPU CI baseline on one host, three demo runs
on two more, and one results file of schema 1, which must be skipped.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from wae_deploy.benchmark import action_benchmark, history, trend, trend_page
from wae_deploy.benchmark import results as R
from wae_deploy.cli import main

FIXTURE = Path(__file__).parent / "data" / "history"
OLD_SCHEMA = "ci-cpu-2d84c3b-schema1.json"
CI_HOST, XEON_HOST, AVX2_HOST = "903aa875", "e8ab2e87", "d4e00efb"


@pytest.fixture
def folder(tmp_path) -> Path:
    dst = tmp_path / "history"
    shutil.copytree(FIXTURE, dst)
    return dst


def _runs(folder: Path) -> list[history.Run]:
    return history.read(folder, warn=lambda line: None)


# ----------------------------------------------------------------------------- the history folder

def test_append_writes_a_results_file_with_commit_and_host(tmp_path):
    run = _runs(FIXTURE)[0].results
    run.pop("history")
    first = history.append(run, tmp_path / "h", commit="0123456789abcdef")
    second = history.append(run, tmp_path / "h", commit="0123456789abcdef")  # same second: never replaced
    assert first != second and first.is_file() and second.is_file()
    assert first.name == f"20261126T015838Z-0123456789ab-{CI_HOST}.json"
    data = R.load(second)  # still a results file: bench --compare reads it
    assert data["history"] == {"commit": "0123456789abcdef", "host": CI_HOST}
    assert data["entries"] == json.loads(json.dumps(run["entries"]))


def test_commit_is_the_checkout_or_unknown(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}", history.git_commit(Path(__file__).parent))
    assert history.git_commit(tmp_path) == history.UNKNOWN  # not a git work tree


def test_read_skips_a_foreign_file_with_one_line_and_keeps_the_rest(folder):
    (folder / "corrupt.json").write_text("{not json")
    (folder / "notes.txt").write_text("not a run")  # only *.json files are runs
    lines = []
    runs = history.read(folder, warn=lines.append)
    assert len(runs) == 8 and [r.created for r in runs] == sorted(r.created for r in runs)
    assert len(lines) == 2 and all(line.startswith("skipped ") for line in lines)
    assert any("corrupt.json is corrupt: not valid JSON" in line for line in lines)
    assert any(f"{OLD_SCHEMA}: results schema version 1 (written by another wae-deploy)" in line for line in lines)
    assert [r.host for r in runs].count(CI_HOST) == 5 and {r.host for r in runs} == {CI_HOST, XEON_HOST, AVX2_HOST}
    assert runs[0].commit.startswith("129f040") and runs[-1].host_label == "AMD EPYC (avx2), 2 cores, 2 threads"


# ----------------------------------------------------------------------------- trends and verdicts

def test_a_slowed_run_fails_the_gate_on_its_cells(folder):
    runs = _runs(folder)
    slow = copy.deepcopy(runs[4].results)
    slow["created"] = "2026-12-08T00:00:00Z"
    for e in slow["entries"]:
        if e["target"] == "ort" and e["precision"] == "int8":
            e["latency"]["min_ms"] *= 3
    history.append(slow, folder, commit="f" * 40)
    t = trend.build(_runs(folder))
    v = t.verdicts[-1]
    assert v.status == "fail" and v.against.commit == runs[4].commit
    assert [c.name for c in v.failures] == ["latency ort int8"]
    p50, top1 = (next(m for m in trend.METRICS if m.name == n) for n in ("p50", "top1"))
    assert v.failed_for(("wae-resnet20", "ort", "int8", 1), p50)
    assert not v.failed_for(("wae-resnet20", "ort", "fp32", 1), p50) and not v.failed_for(("wae-resnet20", "ort",
                                                                                          "int8", 1), top1)
    # The recorded runs: c35426a re-recorded the CI suite with retrained (Haar-start) WAEs, whose top-1
    # fell by 1.8-3 points, beyond the gate's tolerance; nothing else moved beyond the noise.
    assert [x.status for x in t.verdicts] == ["first", "pass", "pass", "fail", "pass", "first", "first", "pass",
                                              "fail"]
    retrained = t.verdicts[3]
    assert t.runs[3].commit.startswith("c35426a") and retrained.against.commit.startswith("196b0c7")
    assert {c.name.split()[0] for c in retrained.failures} == {"accuracy"}
    assert retrained.failed_for(("wae-resnet20", "ort", "fp32", 1), top1)
    assert not retrained.failed_for(("resnet20", "ort", "fp32", 1), top1)


# ----------------------------------------------------------------------------- the page

class Page(HTMLParser):
    """The charts (metric, cell, series hosts), every tag and every attribute value of the page."""

    def __init__(self):
        super().__init__()
        self.charts: list[dict] = []
        self.tags: set[str] = set()
        self.attributes: list[str] = []
        self.fail_rings = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.attributes += [v or "" for v in a.values()]
        if tag == "svg" and a.get("class") == "chart":
            self.charts.append({"metric": a["data-metric"], "cell": a["data-cell"], "hosts": []})
        elif tag == "polyline" and a.get("class") == "series":
            self.charts[-1]["hosts"].append(a["data-host"])
        elif tag == "circle" and a.get("class") == "gate-fail":
            self.fail_rings += 1


def test_report_draws_the_history_offline(folder, tmp_path):
    res = CliRunner().invoke(main, ["report", str(folder), "-o", str(tmp_path / "site")])
    assert res.exit_code == 0, res.output
    (skipped,) = res.stderr.splitlines()  # the schema 1 file, and nothing else
    assert skipped.startswith("skipped ") and OLD_SCHEMA in skipped
    text = (tmp_path / "site" / "index.html").read_text()
    assert not re.search(r"(?i)https?:|//[a-z]", text)  # nothing to fetch: no URL at all
    page = Page()
    page.feed(text)
    assert not page.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert not [v for v in page.attributes if "url(" in v]

    by_metric = {}
    for c in page.charts:
        by_metric.setdefault(c["metric"], []).append(c)
        assert len(c["hosts"]) == len(set(c["hosts"])) >= 1  # one line per host
    assert set(by_metric) == {"speedup", "p50", "p90", "top1"}  # no energy was recorded
    assert len(by_metric["p50"]) == 40 + 16  # every cell of the CI suite and of the demo
    with_baseline = {trend.cell_label(trend.cell_of(e)) for r in _runs(folder) for e in r.results["entries"]
                     if e.get("baseline")}
    assert {c["cell"] for c in by_metric["speedup"]} == with_baseline and len(with_baseline) == 32 + 8
    demo = next(c for c in by_metric["p50"] if c["cell"] == "wae-vgg16-imagenette ort int8 b1")
    assert sorted(demo["hosts"]) == sorted([XEON_HOST, AVX2_HOST])
    ci = next(c for c in by_metric["top1"] if c["cell"] == "wae-resnet20 openvino int8 b8")
    assert ci["hosts"] == [CI_HOST]

    t = trend.build(_runs(folder))
    rings = [(c.metric.name, c.cell) for c in t.charts for pts in c.series.values() for p in pts
             if t.verdicts[p.run].failed_for(c.cell, c.metric)]
    assert page.fail_rings == len(rings) > 0 and {m for m, _ in rings} == {"top1"}  # c35426a's accuracy drops
    assert "Latest run" in text and "1b2e055bfd7d" in text and OLD_SCHEMA in text


def test_energy_gets_its_charts_when_recorded(folder):
    runs = _runs(folder)
    for run in runs:
        for e in run.results["entries"]:
            e["energy"] = {"mj_per_inference": 10.0}
    text = trend_page.html(trend.build(runs))
    assert 'data-metric="energy"' in text and "module energy per inference" in text


# ----------------------------------------------------------------------------- github-action-benchmark

def test_action_benchmark_json_is_the_custom_format(folder, tmp_path):
    runs = _runs(folder)
    bigger, smaller = action_benchmark.write(runs[-1], tmp_path)
    for path, units in ((bigger, {"x", "%"}), (smaller, {"ms"})):
        data = json.loads(path.read_text())
        assert isinstance(data, list) and data
        assert all(set(b) == {"name", "unit", "value", "extra"} and isinstance(b["value"], float) for b in data)
        assert {b["unit"] for b in data} == units
        assert len({b["name"] for b in data}) == len(data)  # one chart per name in the action
    p50 = {b["name"]: b["value"] for b in json.loads(smaller.read_text())}
    entry = runs[-1].results["entries"][0]
    assert p50[f"{entry['model']} ort fp32 b1 p50"] == entry["latency"]["median_ms"]


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["missing", "no-runs", "out-is-a-file"])
def test_report_bad_input_is_one_error_line(case, tmp_path):
    src, out = tmp_path / "history", tmp_path / "site"
    if case != "missing":
        src.mkdir()
        shutil.copy(FIXTURE / OLD_SCHEMA, src)
    if case == "out-is-a-file":
        shutil.copy(FIXTURE / sorted(p.name for p in FIXTURE.glob("2*.json"))[0], src)
        out.write_text("")
    res = CliRunner().invoke(main, ["report", str(src), "-o", str(out)])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output


def test_bench_refuses_a_history_file_before_any_work(tmp_path):
    not_a_folder = tmp_path / "history"
    not_a_folder.write_text("")
    res = CliRunner().invoke(main, ["bench", "--target", "ort", "--models", str(tmp_path / "none.onnx"),
                                    "--history", str(not_a_folder)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: history folder {not_a_folder} is a file, not a folder"

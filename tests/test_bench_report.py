"""Reports: terminal table, Markdown, PNG plot and JUnit XML are produced and parse."""

import copy
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from wae_deploy.benchmark import gate as G
from wae_deploy.benchmark import report
from wae_deploy.benchmark import results as R
from wae_deploy.runtime.latency import summarize


def _results(accuracy=True):
    entries = []
    for model, base, ms in (("resnet20", None, 10.0), ("wae-resnet20", "resnet20", 4.0)):
        for prec, f, top1 in (("fp32", 1.0, 88.0), ("int8", 0.4, 87.5)):
            entries.append(R.make_entry(
                model=model, baseline=base, target="ort", precision=prec, batch=1, gmacs=0.04,
                peak_gflops={"fp32": 400.0, "int8": 1600.0}[prec],
                latency=summarize([ms * f * (1 + 0.01 * (i % 5)) for i in range(20)]),
                accuracy={"top1": top1 - (4 if base else 0), "top5": 99.0, "n": 10000} if accuracy else None))
    r = R.new_results({"cpu": {"model": "Test CPU", "flags": {"avx2": True}}, "packages": {"onnxruntime": "1.2"}},
                      {"name": "unit", "note": "synthetic"}, entries,
                      peaks={"ort": {"matmul_n": 2048, "gflops": {"fp32": 400.0, "int8": 1600.0}}})
    return R.fill_speedups(r)


def _gate(r, slower=True):
    cur = copy.deepcopy(r)
    if slower:
        cur["entries"][0]["latency"]["min_ms"] *= 2
    return G.compare(cur, r)


def test_delta_top1():
    r = _results()
    assert report.delta_top1(r, r["entries"][1]) == pytest.approx(-0.5)
    assert report.delta_top1(_results(accuracy=False), r["entries"][1]) is None


def test_terminal_table_has_every_entry():
    console = Console(record=True, width=250)
    report.print_table(_results(), console)
    text = console.export_text()
    assert "wae-resnet20" in text and "int8" in text and "-0.50" in text and "2.50x" in text
    assert len(report.rows(_results())) == 4 and all(len(r) == len(report.COLUMNS) for r in report.rows(_results()))


def test_markdown_table_parses(tmp_path):
    r = _results()
    r["comparisons"].append({"a": "resnet20", "b": "wae-resnet20", "target": "ort", "precision": "fp32", "batch": 1,
                             "ratio": 2.5, "ci95": [2.4, 2.6], "by_order": {"relative_difference": 0.01}})
    path = report.write_markdown(r, tmp_path / "report.md", _gate(r))
    text = path.read_text()
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| model")))
    end = lines.index("", start)
    header, rule, table = lines[start], lines[start + 1], lines[start + 2:end]
    assert len(table) == 4 and rule.count("|") == header.count("|")
    assert all(line.count(" | ") == header.count(" | ") for line in table)
    assert "## Gate" in text and "**FAIL** latency ort fp32:" in text and "2.40–2.60" in text
    assert "synthetic" in text and "Test CPU" in text
    assert "- ort: fp32 400, int8 1600 GFLOP/s" in text


def test_plot_is_a_png(tmp_path):
    for acc in (True, False):  # untrained suites have no accuracy: latency only
        p = report.write_plot(_results(accuracy=acc), tmp_path / f"plot-{acc}.png")
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _two_runtimes(accuracy=True):
    """_results on ONNX Runtime and OpenVINO: the demo's case, where the two once shared colour and marker."""
    r = _results(accuracy)
    r["entries"] += [{**copy.deepcopy(e), "target": "openvino"} for e in r["entries"]]
    return r


@pytest.mark.parametrize("accuracy", [True, False])
def test_plot_tells_each_runtime_and_precision_apart(accuracy):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig = report.plot_figure(_two_runtimes(accuracy))
    try:
        ax = fig.axes[0]
        groups = {c.get_gid(): c for c in ax.collections}
        assert set(groups) == {"ort fp32", "ort int8", "openvino fp32", "openvino int8"}
        style = {}
        for gid, c in groups.items():
            marker = tuple(map(tuple, c.get_paths()[0].vertices.round(3)))
            style[gid] = (to_hex(c.get_edgecolor()[0]), to_hex(c.get_facecolor()[0]), marker)
            assert len(c.get_offsets()) == 2  # both models
        assert len(set(style.values())) == 4, style  # every (runtime, precision) looks different
        assert style["ort fp32"][0] != style["openvino fp32"][0]  # runtimes differ in colour
        assert style["ort fp32"][2] != style["ort int8"][2]  # precisions differ in marker
        # each model's points on one runtime are one line, FP32 to INT8
        lines = {line.get_gid(): line for line in ax.lines}
        assert set(lines) == {f"{m} {t}" for m in ("resnet20", "wae-resnet20") for t in ("ort", "openvino")}
        assert all(len(line.get_xdata()) == 2 for line in lines.values())
        assert lines["resnet20 ort"].get_linestyle() != lines["wae-resnet20 ort"].get_linestyle()
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"ONNX Runtime FP32", "OpenVINO INT8", "resnet20", "wae-resnet20"} <= set(legend)
    finally:
        plt.close(fig)


def test_junit_one_testcase_per_check(tmp_path):
    r = _results()
    g = _gate(r)
    root = ET.parse(report.write_junit(tmp_path / "gate.xml", g, r)).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(g.checks) and root.get("tests") == str(len(g.checks))
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == len(g.failures) == int(root.get("failures")) >= 1
    assert failed[0].get("classname") == "wae-deploy.bench.gate.latency"
    assert failed[0].find("failure").get("message") == g.failures[0].message


def test_junit_refused_and_no_gate():
    r = _results()
    refused = ET.fromstring(report.junit_xml(G.GateResult(refused="another CPU"), r))
    assert refused.get("errors") == "1" and refused.find(".//error").get("message") == "another CPU"
    plain = ET.fromstring(report.junit_xml(None, r))
    assert plain.get("tests") == "4" and plain.get("failures") == "0"
    passing = ET.fromstring(report.junit_xml(_gate(r, slower=False), r))
    assert passing.get("failures") == "0" and int(passing.get("tests")) > 0


def test_markdown_profile_section():
    """A profiled entry gets its parts line and a table of its slowest layers; unprofiled ones nothing."""
    r = _results()
    layers = [{"name": f"main.features.{i}/Conv", "op": "QLinearConv", "kernel": "QLinearConv/CPU", "precision": "int8",
               "part": "main", "ms": 1.0 / (i + 1), "share": 0.1} for i in range(12)]
    r["entries"][3]["profile"] = {"target": "ort", "precision": "int8", "batch": 1, "runs": 10, "chunks": 1,
                                  "wall_ms": 5.0, "kernel_ms": 4.5, "nodes": 40,
                                  "parts": {"main": 0.7, "fusion": 0.2, "encoder": 0.1},
                                  "precisions": {"int8": 1.0}, "layers": layers}
    text = report.markdown(r)
    assert text.count("### ") == 1 and "### wae-resnet20, ort int8, batch 1" in text
    assert "parts: main 70.0%, fusion 20.0%, encoder 10.0%" in text
    rows = [line for line in text.splitlines() if line.startswith("| 10.0% |")]
    assert len(rows) == 8 and rows[0] == "| 10.0% | 1.000 | int8 | main | QLinearConv/CPU | main.features.0/Conv |"
    assert "Where the time goes" not in report.markdown(_results())


def test_markdown_names_the_cpu_class_and_any_mismatch():
    r = _results()
    assert "on Test CPU, CPU class not recorded." in report.markdown(r)  # a file from before the class
    r["environment"]["cpu"]["class"] = "avx2"
    r["cpu_mismatch"] = [{"model": "wae", "target": "ort", "precision": "int8",
                          "warning": "warning: wae.ort-int8 was built and scored on a CPU of class amx; ..."}]
    text = report.markdown(r)
    assert "on Test CPU, CPU class avx2." in text
    assert "- warning: wae.ort-int8 was built and scored on a CPU of class amx" in text

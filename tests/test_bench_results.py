"""Results schema: building entries, round trip through JSON, and clean refusals of bad files."""

import json

import numpy as np
import pytest

from wae_deploy.benchmark import results as R
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.latency import summarize


def _results():
    env = {"cpu": {"model": "Test CPU"}, "packages": {"onnxruntime": "1.0"}}
    pos = [0, 1] * 10
    base = summarize([20.0 + (i % 3) for i in range(20)], batch=8, positions=pos)
    wae = summarize([5.0 + 0.1 * (i % 3) for i in range(20)], batch=8, positions=[1 - p for p in pos])
    entries = [
        R.make_entry(model="vgg16", target="ort", precision="fp32", batch=8, latency=base, gmacs=15.47,
                     peak_gflops=500.0, accuracy={"top1": 90.0, "top5": 99.0, "n": 1000}),
        R.make_entry(model="wae-vgg16", target="ort", precision="fp32", batch=8, latency=wae, gmacs=4.37,
                     baseline="vgg16", peak_gflops=500.0, accuracy={"top1": 88.0, "top5": 98.5, "n": 1000}),
    ]
    r = R.new_results(env, {"name": "unit"}, entries, peaks={"ort": {"matmul_n": 2048, "gflops": {"fp32": 500.0}}})
    r["comparisons"].append(R.make_comparison("vgg16", "wae-vgg16", base, wae, target="ort", precision="fp32",
                                              batch=8))
    return R.fill_speedups(r)


def test_entry_derived_fields(tmp_path):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x" * 1234)
    e = R.make_entry(model="m", target="ort", precision="int8", batch=2, latency=summarize([4.0, 4.0]), gmacs=1.0,
                     peak_gflops=2000.0, artifact=art, preprocess_ms_per_image=0.5)
    assert e["gflops_per_s"] == pytest.approx(1000.0)  # 2 * 1 G MACs * 2 images / 4 ms
    assert e["efficiency_of_peak"] == pytest.approx(0.5)
    assert e["artifact_bytes"] == 1234 and e["arch"] == "m"
    assert e["latency"]["preprocess_ms_per_image"] == 0.5 and e["latency"]["throughput_ips"] == 500.0
    xml = tmp_path / "m.xml"
    xml.write_bytes(b"x" * 10)
    xml.with_suffix(".bin").write_bytes(b"x" * 100)
    assert R.artifact_bytes(xml) == 110 and R.artifact_bytes(tmp_path / "none") is None
    assert R.make_entry(model="m", target="ort", precision="fp32", batch=1, latency={"median_ms": 1.0})[
        "gflops_per_s"] is None


def test_speedups_and_comparisons():
    r = _results()
    base, wae = r["entries"]
    assert wae["speedup_vs_baseline"] == pytest.approx(base["latency"]["median_ms"] / wae["latency"]["median_ms"])
    assert wae["speedup_vs_fp32_baseline"] == wae["speedup_vs_baseline"]
    assert base["speedup_vs_baseline"] is None and base["speedup_vs_fp32_baseline"] == 1.0
    c = r["comparisons"][0]
    assert c["ci95"][0] <= c["ratio"] <= c["ci95"][1] and c["rounds"] == 20
    assert set(c["by_order"]) == {"a_first", "b_first", "relative_difference"}


def test_round_trip(tmp_path):
    r = _results()
    r["entries"][0]["gmacs"] = np.float32(15.5)  # numpy scalars and NaN must not break JSON
    r["entries"][0]["latency"]["cv"] = float("nan")
    path = R.save(r, tmp_path / "res.json")
    back = R.load(path)
    assert back["format"] == "wae-deploy-bench" and back["schema_version"] == R.SCHEMA_VERSION == 3
    assert back["entries"][0]["gmacs"] == 15.5 and back["entries"][0]["latency"]["cv"] is None
    assert back["entries"][1] == json.loads(json.dumps(r["entries"][1]))
    assert not list(tmp_path.glob(".*partial"))


def test_version_2_files_still_read(tmp_path):
    """Version 3 only added entries[].profile: a recorded version 2 file (e.g. the CI gate's) still loads."""
    r = _results()
    r["schema_version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(R._clean(r)))
    assert R.load(tmp_path / "v2.json")["schema_version"] == 2


def test_save_refuses_invalid_results(tmp_path):
    r = _results()
    del r["entries"][0]["latency"]
    with pytest.raises(ValueError, match="lacks latency"):
        R.save(r, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("content, message", [
    ("{not json", "corrupt"),
    ("[]", "JSON object"),
    ('{"format": "something-else", "schema_version": 1}', "not a wae-deploy bench results file"),
    ('{"format": "wae-deploy-bench", "schema_version": 4, "entries": []}', "schema version 4.*newer"),
    ('{"format": "wae-deploy-bench", "schema_version": 1, "entries": []}', "schema version 1.*re-run"),
    ('{"format": "wae-deploy-bench", "schema_version": 2, "environment": {}, "entries": [{"model": "m"}]}',
     r"entries\[0\] lacks target"),
    ('{"format": "wae-deploy-bench", "schema_version": 2, "environment": {}}', "entries"),
])
def test_load_refusals(tmp_path, content, message):
    p = tmp_path / "rec.json"
    p.write_text(content)
    with pytest.raises(UserError, match=message) as ei:
        R.load(p)
    assert ei.value.exit_code == 2 and "\n" not in str(ei.value)


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(UserError, match="not found") as ei:
        R.load(tmp_path / "nope.json")
    assert ei.value.exit_code == 2
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(UserError, match="cannot read"):
        R.load(tmp_path / "dir.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError):
        R.load(tmp_path / "bin.json")


def test_artifact_bytes_of_folders_and_weights_beside(tmp_path):
    folder = tmp_path / "a.openvino-int8"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.xml").write_bytes(b"x" * 10)
    (folder / "model.bin").write_bytes(b"x" * 200)
    (folder / "sub" / "cache.blob").write_bytes(b"x" * 3)
    assert R.artifact_bytes(folder) == 213  # every file, nested ones too
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x" * 7)
    (tmp_path / "m.bin").write_bytes(b"x" * 100)
    assert R.artifact_bytes(onnx) == 7  # a .bin counts only beside an OpenVINO .xml
    assert R.artifact_bytes(tmp_path / "lonely.xml") is None


def test_schema_keys_and_created_stamp():
    r = R.new_results({"cpu": {}}, {"name": "unit"}, command="wae-deploy bench")
    assert set(r) == {"format", "schema_version", "created", "command", "environment", "suite", "peaks", "tegrastats",
                      "comparisons", "entries"}
    assert r["peaks"] == {} and r["tegrastats"] is None and r["command"] == "wae-deploy bench"
    import re
    assert re.fullmatch(r"20\d\d-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\dZ", r["created"]), r["created"]
    e = R.make_entry(model="m", target="ort", precision="fp32", batch=2, latency=summarize([4.0, 4.0]), gmacs=1.0,
                     artifact="a.onnx")
    assert set(e) == {"model", "arch", "baseline", "target", "precision", "batch", "artifact", "artifact_bytes",
                      "accuracy", "latency", "gmacs", "gflops_per_s", "efficiency_of_peak", "speedup_vs_baseline",
                      "speedup_vs_fp32_baseline"}
    assert e["artifact"] == "a.onnx" and e["gmacs"] == 1.0 and e["gflops_per_s"] == pytest.approx(1000.0)
    assert "samples_ms" not in e["latency"] and e["efficiency_of_peak"] is None  # no peak given
    assert R.make_entry(model="m", target="ort", precision="fp32", batch=1, latency={"median_ms": 0.0})["latency"][
        "throughput_ips"] is None


def test_fill_speedups_keeps_paired_ratios_and_tolerates_a_missing_baseline():
    base = R.make_entry(model="vgg", target="ort", precision="fp32", batch=1, latency=summarize([30.0]))
    wae = R.make_entry(model="wae", target="ort", precision="fp32", batch=1, latency=summarize([10.0]),
                       baseline="vgg", speedup_vs_baseline=2.5)
    wae["speedup_vs_baseline"], wae["speedup_vs_fp32_baseline"] = 2.5, 2.4  # set from paired rounds
    lone = R.make_entry(model="x", target="ort", precision="int8", batch=1, latency=summarize([5.0]), baseline="gone")
    R.fill_speedups({"entries": [base, wae, lone]})
    assert (wae["speedup_vs_baseline"], wae["speedup_vs_fp32_baseline"]) == (2.5, 2.4)
    assert lone["speedup_vs_baseline"] is None and lone["speedup_vs_fp32_baseline"] is None


def test_problems_word_for_word(tmp_path):
    assert R.problems([]) == ["expected a JSON object, found list"]
    assert R.problems({"format": "x"}) == ["not a wae-deploy bench results file (format 'x', expected "
                                           "'wae-deploy-bench')"]
    newer = {"format": R.FORMAT, "schema_version": R.SCHEMA_VERSION + 1}
    assert "written by a newer wae-deploy" in R.problems(newer)[0]
    assert "written by another wae-deploy" in R.problems({**newer, "schema_version": 1})[0]
    assert "written by another wae-deploy" in R.problems({**newer, "schema_version": "2"})[0]
    bad = {"format": R.FORMAT, "schema_version": R.SCHEMA_VERSION, "entries": [
        3, {"model": "m"}, {"model": "m", "target": "t", "precision": "p", "batch": 1, "latency": {"median_ms": "x"}},
        {"model": "m", "target": "t", "precision": "p", "batch": 1, "latency": {"median_ms": 1.0},
         "accuracy": {"top1": 1.0}}]}
    assert R.problems(bad) == ["'environment' is missing or not an object", "entries[0] is not an object",
                               "entries[1] lacks target, precision, batch, latency",
                               "entries[2] lacks a numeric latency.median_ms",
                               "entries[3].accuracy needs numeric top1 and n, or null"]
    no_entries = {"format": R.FORMAT, "schema_version": R.SCHEMA_VERSION}
    assert R.problems(no_entries) == ["'entries' is missing or not a list"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError) as e:
        R.load(path)
    assert str(e.value) == f"{path}: 'environment' is missing or not an object (and 4 more problems)"
    with pytest.raises(ValueError, match=r"^refusing to write invalid results: 'environment' is missing or not an "
                                         r"object; entries\[0\] is not an object; "):
        R.save(bad, tmp_path / "x.json")


def test_saved_file_is_indented_json(tmp_path):
    r = R.new_results({"cpu": {}}, {"name": "unit"})
    text = R.save(r, tmp_path / "r.json").read_text()
    assert text.startswith('{\n "format": "wae-deploy-bench",\n') and text.endswith("}\n")

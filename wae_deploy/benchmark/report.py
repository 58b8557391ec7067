"""Results for people and for CI: a terminal table, Markdown, a PNG plot, JUnit XML.

    print_table(results)                        # rich table on the terminal
    write_markdown(results, "report.md", gate)  # gate: a gate.GateResult or None
    write_plot(results, "acc-vs-latency.png")   # needs matplotlib (imported only here)
    write_junit("gate.xml", gate, results)      # one testcase per gate check
    loadgen_lines(results)                      # `bench --scenario`: one line per LoadGen run and audit

All of them read only the results dict (results.py), so a recorded file can be re-rendered.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from wae_deploy.benchmark.environment import fingerprint_key
from wae_deploy.benchmark.gate import GateResult
from wae_deploy.benchmark.results import find_entry
from wae_deploy.core.atomic import atomic_path, write_text
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command

COLUMNS = ("model", "target", "precision", "batch", "size", "top-1 %", "top-5 %", "Δtop-1 vs FP32", "median ms",
           "p99 ms", "img/s", "GFLOP/s", "% peak", "speed-up", "vs FP32 base")
# Only where the run had an energy meter: a machine without one gets no empty columns.
ENERGY_COLUMNS = ("mJ/inf", "W")


def columns(results: dict) -> tuple[str, ...]:
    return COLUMNS + ENERGY_COLUMNS if results.get("power") else COLUMNS


def _kernels(peak: dict, compute: str) -> str:
    """' (matmul 120, conv3x3 210)': each kernel behind a peak, where the file has them."""
    each = (peak.get("kernels") or {}).get(compute) or {}
    return " (" + ", ".join(f"{k} {_num(g, '.0f')}" for k, g in each.items()) + ")" if each else ""

def _num(x, fmt: str, dash: str = "–") -> str:
    return dash if x is None else format(x, fmt)


def _size(n) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _times(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _esc(s) -> str:
    return str(s).replace("|", "\\|")  # a pipe inside a Markdown cell would end it


def delta_top1(results: dict, e: dict) -> float | None:
    """Top-1 change against the same model and target in FP32 (any batch: accuracy does not depend on it)."""
    if not e.get("accuracy"):
        return None
    for f in results["entries"]:
        if (f["model"], f["target"], f["precision"]) == (e["model"], e["target"], "fp32") and f.get("accuracy"):
            return e["accuracy"]["top1"] - f["accuracy"]["top1"]
    return None


def rows(results: dict) -> list[list[str]]:
    """One row of strings per entry, in columns(results) order (shared by the terminal and Markdown).
    A median timed while throttled says so."""
    out = []
    energy = bool(results.get("power"))
    for e in results["entries"]:
        acc, lat, en = e.get("accuracy") or {}, e["latency"], e.get("energy") or {}
        d = delta_top1(results, e)
        eff = e.get("efficiency_of_peak")
        out.append([e["model"], e["target"], e["precision"], str(e["batch"]), _size(e.get("artifact_bytes")),
                    _num(acc.get("top1"), ".2f"), _num(acc.get("top5"), ".2f"),
                    "–" if d is None or e["precision"] == "fp32" else f"{d:+.2f}",
                    _num(lat["median_ms"], ".2f") + (" (throttled)" if e.get("throttled") else ""),
                    _num(lat.get("p99_ms"), ".2f"),
                    _num(lat.get("throughput_ips"), ".1f"), _num(e.get("gflops_per_s"), ".0f"),
                    "–" if eff is None else f"{100 * eff:.0f}%",
                    _times(e.get("speedup_vs_baseline")), _times(e.get("speedup_vs_fp32_baseline"))]
                   + ([_num(en.get("mj_per_inference"), ".2f"), _num(en.get("mean_w"), ".1f")] if energy else []))
    return out


def table(results: dict, title: str | None = None):
    from rich.table import Table

    suite = (results.get("suite") or {}).get("name")
    t = Table(title=title or f"wae-deploy bench{f': {suite}' if suite else ''}")
    for i, c in enumerate(columns(results)):
        t.add_column(c, justify="left" if i < 3 else "right", no_wrap=i < 3)
    for r in rows(results):
        t.add_row(*r)
    return t


def print_table(results: dict, console=None) -> None:
    from rich.console import Console

    # Piped into a CI log there is no terminal width to follow: don't squeeze 15 columns into 80.
    (console or Console(width=None if sys.stdout.isatty() else 200)).print(table(results))


def headline(results: dict) -> list[str]:
    """Per model with a baseline in the run, and per target and precision: what the model costs in
    top-1 against its baseline and what it gains in speed, at every timed batch."""
    lines, seen = [], set()
    for e in results["entries"]:
        key = (e["model"], e["target"], e["precision"])
        if not e.get("baseline") or key in seen:
            continue
        seen.add(key)
        base = find_entry(results, e["baseline"], e["target"], e["precision"], e["batch"])
        acc, base_acc = (e.get("accuracy") or {}).get("top1"), ((base or {}).get("accuracy") or {}).get("top1")
        top1 = (f"top-1 {acc:.2f}% vs {base_acc:.2f}% ({acc - base_acc:+.2f})"
                if acc is not None and base_acc is not None else "top-1 not measured")
        speed = ", ".join(f"{_times(f.get('speedup_vs_baseline'))} at batch {f['batch']}" for f in results["entries"]
                          if (f["model"], f["target"], f["precision"]) == key)
        lines.append(f"{e['model']} over {e['baseline']}, {e['target']} {e['precision']}: {top1}; {speed}")
    return lines


def _environment_lines(results: dict) -> list[str]:
    key = fingerprint_key(results.get("environment") or {})
    return [f"- {k}: {v}" for k, v in key.items() if v not in (None, "")]


def markdown(results: dict, gate: GateResult | None = None) -> str:
    suite = results.get("suite") or {}
    cpu = (results.get("environment") or {}).get("cpu") or {}
    out = [f"# wae-deploy bench{': ' + _esc(suite['name']) if suite.get('name') else ''}", "",
           f"Recorded {results.get('created', '?')} (results schema {results.get('schema_version')}) on "
           f"{_esc(str(cpu.get('model') or 'an unknown CPU'))}, CPU class {cpu.get('class') or 'not recorded'}."]
    out += [f"- {_esc(m['warning'])}" for m in results.get("cpu_mismatch") or []]
    if suite.get("note"):
        out += ["", str(suite["note"])]
    if headline(results):
        out += ["", "## Headline", ""] + [f"- {_esc(line)}" for line in headline(results)]
    out += loadgen_markdown(results)
    if results["entries"] or not results.get("loadgen"):
        cols = columns(results)
        rule = "|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|"
        out += ["", "| " + " | ".join(cols) + " |", rule]
        out += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in rows(results)]
    if results.get("comparisons"):
        out += ["", "## Paired speed-ups (interleaved)", "",
                "| a | b | target | precision | batch | a / b | 95% interval | order effect |",
                "|---|---|---|---|---:|---:|---|---:|"]
        for c in results["comparisons"]:
            ci = c.get("ci95") or [None, None]
            oe = (c.get("by_order") or {}).get("relative_difference")
            out.append(f"| {_esc(c['a'])} | {_esc(c['b'])} | {c.get('target', '')} | {c.get('precision', '')} | "
                       f"{c.get('batch', '')} | {_num(c.get('ratio'), '.2f')} | "
                       f"{_num(ci[0], '.2f')}–{_num(ci[1], '.2f')} | "
                       f"{'–' if oe is None else f'{100 * oe:.1f}%'} |")
    out += profile_markdown(results)
    out += energy_markdown(results)
    if results.get("peaks"):
        out += ["", "## Measured peak", "",
                "The faster of a large matmul and a large 3x3 convolution in the same runtime and precision "
                "(older files: the matmul alone); \"% peak\" divides by it.", ""]
        out += [f"- {rt}: " + ", ".join(f"{c} {_num(g, '.0f')}" + _kernels(p, c)
                                        for c, g in p.get("gflops", {}).items()) + " GFLOP/s"
                for rt, p in results["peaks"].items()]
    out += ["", "## Environment", "", *_environment_lines(results)]
    ts = results.get("tegrastats")
    if ts:
        out.append(f"- power ({ts.get('total_rail')}): {_num(ts.get('total_power_mw_mean'), '.0f')} mW mean; "
                   f"max temperature {_num(ts.get('max_temperature_c'), '.1f')} C; throttling suspected: "
                   f"{ts.get('throttling_suspected')}")
    if gate is not None:
        out += ["", "## Gate", ""]
        if gate.refused:
            out.append(f"Refused: {gate.refused}")
        else:
            out.append(f"{len(gate.checks) - len(gate.failures)} of {len(gate.checks)} checks passed.")
            out += [""] + [f"- {'ok' if c.ok else '**FAIL**'} {_esc(c.name)}: {_esc(c.message)}" for c in gate.checks]
    return "\n".join(out) + "\n"


def loadgen_result(run: dict) -> str:
    """LoadGen's metric for a run, or INVALID with LoadGen's reason: an INVALID run has no result."""
    perf = run["performance"]
    if perf["validity"] != "VALID":
        return f"INVALID: {perf.get('reason')}"
    if run["scenario"] == "Offline":
        return f"{_num(perf.get('samples_per_s'), '.1f')} samples/s (VALID)"
    return (f"p90 {_num(perf.get('p90_ms'), '.3f')} ms, early-stopping estimate "
            f"{_num(perf.get('early_stopping_p90_ms'), '.3f')} ms (VALID)")


def _run_length(run: dict) -> str:
    s = run.get("settings") or {}
    if s.get("run_length") == "official":
        return "official length (mlperf.conf's durations)"
    return (f"NOT an official-length run: {_num((s.get('min_duration_ms') or 0) / 1e3, 'g')} s minimum, "
            f"at least {s.get('min_query_count')} queries (--mlperf-rules runs 600 s)")


def _audit_text(audit: dict | None) -> str:
    if audit is None:
        return "not run"
    text = "pass" if audit["passed"] else f"FAIL: {audit['why']}"
    speed = audit.get("performance")  # TEST01's second part: binding in an official-length run only
    if audit["passed"] and speed and not speed["binding"]:
        where = (f"{speed['ratio'] - 1:+.1%} from the performance run "
                 f"({'within' if speed['passed'] else 'outside'} {speed['tolerance']:.0%})"
                 if speed["ratio"] is not None else "not comparable")
        text += f"; performance part {where}, binding only with --mlperf-rules"
    return text


def _top1_text(run: dict) -> str:
    acc, harness = run.get("accuracy") or {}, run.get("harness_accuracy") or {}
    agree = "equals" if run.get("accuracy_matches_harness") else "DIFFERS from"
    return f"{_num(acc.get('top1'), '.2f')}% ({agree} the harness's {_num(harness.get('top1'), '.2f')}%)"


def loadgen_lines(results: dict) -> list[str]:
    """One line per LoadGen run (metric or INVALID, top-1 from its accuracy log, run length) and per audit."""
    out = []
    for r in results.get("loadgen") or []:
        out.append(f"{r['model']} {r['target']} {r['precision']} {r['scenario']}: {loadgen_result(r)}; "
                   f"top-1 from LoadGen's accuracy log {_top1_text(r)}; {_run_length(r)}")
        out += [f"  {name}: {_audit_text(a)}" for name, a in r.get("audits", {}).items()]
    return out


def loadgen_failures(results: dict) -> list[str]:
    """What makes a --scenario run fail (exit 1): an INVALID run, a failed audit, a top-1 that disagrees."""
    out = []
    for r in results.get("loadgen") or []:
        label = f"{r['model']} {r['target']} {r['precision']} {r['scenario']}"
        if r["performance"]["validity"] != "VALID":
            out.append(f"INVALID {label}: {r['performance'].get('reason')}")
        out += [f"FAIL {name} {label}: {a['why']}" for name, a in r.get("audits", {}).items() if not a["passed"]]
        if not r.get("accuracy_matches_harness"):
            out.append(f"FAIL accuracy {label}: LoadGen's top-1 {_top1_text(r)}")
    return out


def loadgen_markdown(results: dict) -> list[str]:
    """The LoadGen section: each run's metric or INVALID verdict, top-1 from LoadGen's log, audits, length."""
    runs = results.get("loadgen") or []
    if not runs:
        return []
    out = ["", "## MLPerf LoadGen", "",
           "| model | target | precision | scenario | result | top-1 % (LoadGen log) | harness top-1 % | TEST01 "
           "| TEST04 | run length | logs |", "|---|---|---|---|---|---:|---:|---|---|---|---|"]
    for r in runs:
        acc, harness = r.get("accuracy") or {}, r.get("harness_accuracy") or {}
        out.append(f"| {_esc(r['model'])} | {r['target']} | {r['precision']} | {r['scenario']} | "
                   f"{_esc(loadgen_result(r))} | {_num(acc.get('top1'), '.2f')} | {_num(harness.get('top1'), '.2f')} | "
                   f"{_esc(_audit_text(r['audits'].get('TEST01')))} | {_esc(_audit_text(r['audits'].get('TEST04')))} | "
                   f"{_esc(_run_length(r))} | {_esc(r.get('logs'))} |")
    return out


def profile_markdown(results: dict, top: int = 8) -> list[str]:
    """Per profiled entry: the share of each model part, then its slowest layers (runtime's own numbers)."""
    profiled = [e for e in results["entries"] if e.get("profile")]
    if not profiled:
        return []
    out = ["", "## Where the time goes (runtime profiles)", "",
           "Shares of the summed kernel time, from the runtime's own profiler; layer names are the runtime's."]
    for e in profiled:
        p = e["profile"]
        parts = ", ".join(f"{k} {100 * v:.1f}%" for k, v in p["parts"].items())
        out += ["", f"### {_esc(e['model'])}, {e['target']} {e['precision']}, batch {e['batch']}", "",
                f"{_num(p.get('kernel_ms'), '.2f')} ms of kernels over {p.get('nodes')} nodes per call "
                f"({p.get('runs')} runs); parts: {parts}", "",
                "| share | ms | precision | part | kernel | layer |", "|---:|---:|---|---|---|---|"]
        out += [f"| {100 * lay['share']:.1f}% | {lay['ms']:.3f} | {lay['precision']} | {lay['part']} | "
                f"{_esc(lay['kernel'])} | {_esc(lay['name'])} |" for lay in p["layers"][:top]]
    return out


def energy_markdown(results: dict) -> list[str]:
    """The meter and idle power, then per timed cell its power, hottest zone and throttling verdict."""
    power, cells = results.get("power"), results.get("cells") or []
    if not power and not cells:
        return []
    out = ["", "## Module energy, clocks and heat", ""]
    if power:
        idle = (power.get("idle_w") or {}).get("module")
        out += [f"{power['scope'].capitalize()} energy from {power['source']} ({_esc(power['module_rail'])}), "
                f"sampled at {power['sample_hz']:g} Hz; idle power {_num(idle, '.2f')} W (measured for "
                f"{_num(power.get('idle_s'), '.1f')} s before timing) is taken off every figure. This is what "
                "the board or CPU package draws, not MLPerf power, which needs a wall meter. mJ/inf: per image.",
                ""]
    out += ["| target | precision | batch | mean W | active W | hottest zone | throttled |",
            "|---|---|---:|---:|---:|---|---|"]
    for c in cells:
        p = c.get("power") or {}
        temps = c.get("temperature_c") or {}
        zone, t = max(temps.items(), key=lambda kv: kv[1]["max"], default=(None, None))
        hottest = f"{_esc(zone)} {t['max']:.1f} C" if zone else "–"
        verdict = _esc("; ".join(c["throttle_reasons"])) if c.get("throttled") else "no"
        out.append(f"| {c['target']} | {c['precision']} | {c['batch']} | {_num(p.get('mean_w'), '.2f')} | "
                   f"{_num(p.get('active_w'), '.2f')} | {hottest} | {verdict} |")
    return out


def write_markdown(results: dict, path: str | os.PathLike, gate: GateResult | None = None) -> Path:
    write_text(path, markdown(results, gate))
    return Path(path)


# Colour tells the runtime and the marker the precision (INT8 hollow as well, so the two read apart
# in grey print too); Okabe-Ito colours survive the common colour-vision deficiencies.
RUNTIME_COLORS = {"ort": "#0072B2", "openvino": "#D55E00", "trt": "#009E73", "torch": "#CC79A7"}
RUNTIME_NAMES = {"ort": "ONNX Runtime", "openvino": "OpenVINO", "trt": "TensorRT", "torch": "PyTorch"}
PRECISION_MARKERS = {"fp32": "o", "bf16": "D", "fp16": "s", "int8": "^"}
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")  # a model's line runs from full precision to INT8
MODEL_LINES = ("-", "--", ":", "-.", (0, (4, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 3)))


def _plot_styles(entries: list[dict]) -> tuple[dict, dict, dict]:
    """Colour per runtime, marker per precision, line style per model; ones outside the tables get
    the next free colour or marker rather than sharing one."""
    spare_colors = iter(["#E69F00", "#56B4E9", "#000000", "#F0E442", "#999999"] * 4)
    spare_markers = iter("vP*Xph" * 4)
    colors, markers, lines = {}, {}, {}
    for e in entries:
        colors.setdefault(e["target"], RUNTIME_COLORS.get(e["target"]) or next(spare_colors))
        markers.setdefault(e["precision"], PRECISION_MARKERS.get(e["precision"]) or next(spare_markers))
        lines.setdefault(e["model"], MODEL_LINES[len(lines) % len(MODEL_LINES)])
    return colors, markers, lines


def plot_figure(results: dict):
    """Top-1 against median latency (log x) at the smallest batch measured, so latencies compare.

    One colour per runtime, one marker per precision, and each model's points on one runtime
    joined from FP32 to INT8 (line style per model), so its trade reads as one line. Where no
    entry has an accuracy (untrained paper-scale weights) the y axis is the model instead. The
    caller closes the figure. Scatter groups carry gid "target precision", lines "model target".
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on CI runners and Jetsons over ssh
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError("--plot needs matplotlib: " + install_command("matplotlib")) from e
    entries = results["entries"]
    if not entries:
        raise UserError("no results to plot")
    b = min(e["batch"] for e in entries)
    entries = [e for e in entries if e["batch"] == b]
    with_acc = any(e.get("accuracy") for e in entries)
    if with_acc:
        entries = [e for e in entries if e.get("accuracy")]
    colors, markers, lines = _plot_styles(entries)
    models, targets = list(lines), list(colors)

    def y(e: dict) -> float:
        if with_acc:
            return e["accuracy"]["top1"]
        # one row per model; its runtimes a little apart so their lines do not overlap
        return models.index(e["model"]) + 0.3 * (targets.index(e["target"]) - (len(targets) - 1) / 2) / len(targets)

    def rank(e: dict) -> int:
        p = e["precision"]
        return PRECISION_ORDER.index(p) if p in PRECISION_ORDER else len(PRECISION_ORDER)

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    _draw_trades(ax, entries, y, rank, colors, markers, lines)
    _label_axes(ax, b, with_acc, models, lines)
    fig.tight_layout()
    return fig


def _draw_trades(ax, entries: list, y, rank, colors: dict, markers: dict, lines: dict) -> None:
    """Each model's points on one runtime joined in precision order, then the points, one style per
    (runtime, precision): INT8 hollow."""
    models, targets = list(lines), list(colors)
    for model in models:
        for target in targets:
            own = sorted((e for e in entries if (e["model"], e["target"]) == (model, target)), key=rank)
            if own:
                ax.plot([e["latency"]["median_ms"] for e in own], [y(e) for e in own], color=colors[target],
                        linestyle=lines[model], linewidth=1.2, alpha=0.8, gid=f"{model} {target}", zorder=1)
    for target in targets:
        for precision in markers:
            group = [e for e in entries if (e["target"], e["precision"]) == (target, precision)]
            if group:
                hollow = precision == "int8"
                ax.scatter([e["latency"]["median_ms"] for e in group], [y(e) for e in group], s=55,
                           marker=markers[precision], edgecolors=colors[target], linewidths=1.5,
                           facecolors="white" if hollow else colors[target], zorder=2,
                           label=f"{RUNTIME_NAMES.get(target, target)} {precision.upper()}",
                           gid=f"{target} {precision}")


def _label_axes(ax, batch: int, with_acc: bool, models: list, lines: dict) -> None:
    """Log latency axis with plain numbers, the y axis (top-1, or one row per model), grid and legend."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # '4' rather than matplotlib's '4 x 10^0'
    ax.xaxis.set_major_formatter(plain)
    low, high = ax.get_xlim()
    # within one decade the minor ticks are the only labels; over several they would run together
    ax.xaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
    ax.set_xlabel(f"median latency, ms (batch {batch}, log scale)")
    if with_acc:
        ax.set_ylabel("top-1 accuracy, %")
    else:
        ax.set_yticks(range(len(models)), models)
        ax.set_ylim(-0.5, len(models) - 0.5)
        ax.set_title("accuracy not measured: latency only", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    model_keys = [Line2D([], [], color="#555555", linestyle=lines[m], label=m) for m in models]
    handles = ax.get_legend_handles_labels()[0] + model_keys
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              handlelength=4)  # long enough to show each model's dash pattern


def write_plot(results: dict, path: str | os.PathLike) -> Path:
    """plot_figure as a PNG (see there)."""
    fig = plot_figure(results)  # first: it says how to install matplotlib where it is missing
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")  # the legend sits outside the axes
    finally:
        plt.close(fig)
    return Path(path)


def junit_xml(gate: GateResult | None, results: dict | None = None) -> str:
    """JUnit XML: one testcase per gate check (failures carry the message); a refused comparison
    is one errored testcase; without a gate, one passing testcase per measured entry."""
    suite = ET.Element("testsuite", name="wae-deploy-bench")
    cases = []
    if gate is None:
        for e in (results or {}).get("entries", []):
            c = ET.Element("testcase", classname="wae-deploy.bench.measured",
                           name=f"{e['model']} {e['target']} {e['precision']} b{e['batch']}")
            out = ET.SubElement(c, "system-out")
            out.text = f"median {e['latency']['median_ms']:.3f} ms"
            cases.append(c)
    elif gate.refused:
        c = ET.Element("testcase", classname="wae-deploy.bench.gate", name="environment")
        ET.SubElement(c, "error", message=gate.refused, type="refused").text = gate.refused
        cases.append(c)
    else:
        for ch in gate.checks:
            kind, _, rest = ch.name.partition(" ")
            c = ET.Element("testcase", classname=f"wae-deploy.bench.gate.{kind}", name=rest or kind)
            if ch.ok:
                ET.SubElement(c, "system-out").text = ch.message
            else:
                ET.SubElement(c, "failure", message=ch.message, type="regression").text = ch.message
            cases.append(c)
    suite.extend(cases)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    suite.set("skipped", "0")
    if results and results.get("created"):
        suite.set("timestamp", results["created"])
    root = ET.Element("testsuites", name="wae-deploy bench", tests=suite.get("tests"),
                      failures=suite.get("failures"), errors=suite.get("errors"))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: str | os.PathLike, gate: GateResult | None, results: dict | None = None) -> Path:
    write_text(path, junit_xml(gate, results))
    return Path(path)

"""The trend page: one self-contained HTML file of inline SVG charts, no script and no URL.

    write(trend.build(runs), "site/index.html", skipped=["skipped old.json: ..."])

Everything is drawn here, in Python, so the page opens from a CI artifact, a Pages site or a
laptop offline, and a test can count its charts and series by parsing it. Per metric, one small
chart per cell (model, target, precision, batch) with one line per host; a run the gate failed
against its host's previous run is listed first, under "Gate verdicts", and ringed in red on the
charts its failed checks watch. Then the table of the latest run (report.rows, as in Markdown).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from wae_deploy.benchmark import report
from wae_deploy.benchmark.trend import METRICS, Chart, Trend, cell_label
from wae_deploy.core.atomic import write_text

# Okabe-Ito: told apart with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FAIL = "#C00000"
CSP = ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
W, H = 300, 170
LEFT, RIGHT, TOP, BOTTOM = 46, 14, 10, 52

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #e3e3e3;padding:4px}
figcaption{font-size:12px;font-family:monospace}
svg text{font:9px sans-serif;fill:#444}
.swatch{display:inline-block;width:1.6em;height:.35em;vertical-align:middle;margin-right:.4em}
table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
.verdicts td,.verdicts th{text-align:left}
.fail{color:#C00000;font-weight:bold}
"""


def _short(commit: str) -> str:
    return commit[:7] if commit != "unknown" else "?"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _y_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.02 or 1.0  # a flat line sits mid-chart, not on an edge
    return lo - pad, hi + pad


def chart_svg(t: Trend, chart: Chart, colors: dict[str, str]) -> str:
    n = len(t.commits)
    values = [p.value for pts in chart.series.values() for p in pts]
    lo, hi = _y_range(values)

    def x(slot: int) -> float:
        return LEFT + (W - LEFT - RIGHT) * (slot / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (hi - v) / (hi - lo)

    out = [f'<svg class="chart" data-metric="{chart.metric.name}" data-cell="{escape(cell_label(chart.cell))}" '
           f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
           'fill="none" stroke="#bbb"/>']
    for v in (lo + (hi - lo) * f for f in (0.1, 0.5, 0.9)):
        out.append(f'<text x="{LEFT - 3}" y="{y(v) + 3:.1f}" text-anchor="end">{_fmt(v)}</text>')
    step = max(1, -(-n // 12))  # at most twelve commit labels under a chart, slanted so they do not collide
    for slot in range(0, n, step):
        lx, ly = x(slot), H - BOTTOM + 10
        out.append(f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" transform="rotate(-40 {lx:.1f} {ly})">'
                   f'{escape(_short(t.commits[slot]))}</text>')
    out.append(f'<text x="{LEFT}" y="{H - 4}">{escape(chart.metric.unit)} over commits, oldest first</text>')
    for host, points in chart.series.items():
        color = colors[host]
        line = " ".join(f"{x(p.slot):.1f},{y(p.value):.1f}" for p in points)
        out.append(f'<polyline class="series" data-host="{host}" points="{line}" fill="none" '
                   f'stroke="{color}" stroke-width="1.5"/>')
        for p in points:
            run, verdict = t.runs[p.run], t.verdicts[p.run]
            failed = verdict.failed_for(chart.cell, chart.metric)
            tip = (f"{_short(run.commit)} on {run.host_label} ({run.created}): {_fmt(p.value)} "
                   f"{chart.metric.unit}, gate {verdict.status}" + "".join(f"; {c.message}" for c in failed))
            cx, cy = f"{x(p.slot):.1f}", f"{y(p.value):.1f}"
            out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"><title>{escape(tip)}</title></circle>')
            if failed:
                out.append(f'<circle class="gate-fail" cx="{cx}" cy="{cy}" r="6.5" fill="none" stroke="{FAIL}" '
                           f'stroke-width="2"><title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _hosts(t: Trend, colors: dict[str, str]) -> list[str]:
    out = ["<h2>Hosts</h2>", "<ul>"]
    for host, label in t.hosts.items():
        count = sum(r.host == host for r in t.runs)
        out.append(f'<li class="host" data-host="{host}"><span class="swatch" style="background:{colors[host]}">'
                   f"</span>{escape(label)} <code>{host}</code>, {count} run{'s' * (count != 1)}</li>")
    return out + ["</ul>"]


def _verdicts(t: Trend) -> list[str]:
    out = ["<h2>Gate verdicts</h2>",
           "<p>Each run against the previous run of its host and suite, with the gate's tolerances "
           "(cells both measured). A red ring on a chart marks the run where that check failed.</p>",
           '<table class="verdicts"><tr><th>created</th><th>commit</th><th>host</th><th>suite</th><th>against</th>'
           "<th>verdict</th></tr>"]
    for run, v in zip(t.runs, t.verdicts):
        detail = v.reason or "; ".join(f"{c.name}: {c.message}" for c in v.failures)
        status = f'<span class="fail">{v.status}</span>' if v.status == "fail" else v.status
        out.append(f"<tr><td>{escape(run.created)}</td><td>{escape(_short(run.commit))}</td>"
                   f"<td>{run.host}</td><td>{escape(run.suite)}</td>"
                   f"<td>{escape(_short(v.against.commit)) if v.against else '–'}</td>"
                   f"<td>{status}{': ' + escape(detail) if detail else ''}</td></tr>")
    return out + ["</table>"]


def _latest(t: Trend) -> list[str]:
    run = t.runs[-1]
    out = ["<h2>Latest run</h2>",
           f"<p>{escape(run.created)}, commit {escape(run.commit)}, {escape(run.host_label)} "
           f"(<code>{run.host}</code>), suite {escape(run.suite or '?')}; file {escape(run.path.name)}</p>",
           '<table class="latest"><tr>' + "".join(f"<th>{escape(c)}</th>" for c in report.COLUMNS) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in report.rows(run.results)]
    return out + ["</table>"]


def html(t: Trend, skipped: list[str] = ()) -> str:
    colors = {host: PALETTE[i % len(PALETTE)] for i, host in enumerate(t.hosts)}
    # The policy forbids every load: were a later change to reference anything outside the file,
    # the browser would refuse it and say so on the console, where `make report-check` looks.
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f'<meta http-equiv="{CSP[0]}" '
           f'content="{CSP[1]}">',
           "<title>wae-deploy benchmark history</title>", f"<style>{STYLE}</style></head><body>",
           "<h1>wae-deploy benchmark history</h1>",
           f"<p>{len(t.runs)} runs over {len(t.commits)} commits on {len(t.hosts)} hosts, "
           f"{escape(t.runs[0].created)} to {escape(t.runs[-1].created)}. Hover a point for its run.</p>"]
    if skipped:
        out += ["<p>Not drawn:</p>", "<ul>"] + [f'<li class="skipped">{escape(s)}</li>' for s in skipped] + ["</ul>"]
    out += _hosts(t, colors) + _verdicts(t)  # which run failed first: the question the page is for
    for metric in METRICS:
        charts = [c for c in t.charts if c.metric is metric]
        if not charts:
            continue
        better = "higher" if metric.bigger_is_better else "lower"
        out += [f'<h2 id="{metric.name}">{escape(metric.title)}, {escape(metric.unit)} ({better} is better)</h2>',
                f'<div class="grid" data-metric="{metric.name}">']
        out += [f"<figure><figcaption>{escape(cell_label(c.cell))}</figcaption>{chart_svg(t, c, colors)}</figure>"
                for c in charts]
        out.append("</div>")
    out += _latest(t) + ["</body></html>"]
    return "\n".join(out) + "\n"


def write(t: Trend, path: str | os.PathLike, skipped: list[str] = ()) -> Path:
    write_text(path, html(t, skipped))
    return Path(path)

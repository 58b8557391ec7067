"""A benchmark history as trends: per metric and measured cell, one series of values per host over
commits, and the gate's verdict on every run against the one before it on the same host.

    runs = history.read("bench-history/")
    t = build(runs)          # t.commits, t.hosts, t.charts, t.verdicts
    for chart in t.charts: chart.metric.name, chart.cell, chart.series[host] -> [Point, ...]

A cell is what the gate compares: one (model, target, precision, batch). The verdict is the
gate's own (gate.compare, its noise-derived tolerances) of each run against the previous run of
its host and suite, so a mark lands on the commit where a slow-down or an accuracy drop began.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from wae_deploy.benchmark import gate
from wae_deploy.benchmark.history import UNKNOWN, Run


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    unit: str
    bigger_is_better: bool
    value: Callable[[dict], float | None]  # of one entry; None where the run did not measure it
    gated_by: str | None  # the gate check (gate.py's first word of its name) that watches this metric


def _accuracy(e: dict) -> float | None:
    return (e.get("accuracy") or {}).get("top1")


def _energy(e: dict) -> float | None:
    # Module energy per inference, where the bench's energy sampler recorded it.
    return (e.get("energy") or {}).get("mj_per_inference")


METRICS = (
    Metric("speedup", "speed-up over the baseline (interleaved)", "x", True, lambda e: e.get("speedup_vs_baseline"),
           "speedup"),
    # The gate checks the best-case latency of a target and precision; a rise shows in both percentiles.
    Metric("p50", "median latency", "ms", False, lambda e: e["latency"].get("median_ms"), "latency"),
    Metric("p90", "90th-percentile latency", "ms", False, lambda e: e["latency"].get("p90_ms"), "latency"),
    Metric("top1", "top-1 accuracy", "%", True, _accuracy, "accuracy"),
    Metric("energy", "module energy per inference", "mJ", False, _energy, None),
)


def cell_of(e: dict) -> tuple:
    return e["model"], e["target"], e["precision"], e["batch"]


def cell_label(cell: tuple) -> str:
    model, target, precision, batch = cell
    return f"{model} {target} {precision} b{batch}"  # gate.py names its checks with the same label


@dataclass
class Verdict:
    status: str  # "pass", "fail", "refused" (not comparable), "first" (nothing before it on this host)
    against: Run | None = None
    failures: list[gate.Check] = field(default_factory=list)
    reason: str = ""

    def failed_for(self, cell: tuple, metric: Metric) -> list[gate.Check]:
        """The failed checks of `metric` that concern `cell`: its own speed-up or accuracy, or its
        target and precision's latency."""
        own, group = f"{metric.gated_by} {cell_label(cell)}", f"{metric.gated_by} {cell[1]} {cell[2]}"
        return [c for c in self.failures if c.name in (own, group)]


def verdicts(runs: list[Run]) -> list[Verdict]:
    """For each run (oldest first), the gate against the previous run of the same host and suite.
    Only cells both runs measured are checked: a history's runs may differ in what they cover."""
    last: dict[tuple, Run] = {}
    out = []
    for run in runs:
        prev = last.get((run.host, run.suite))
        last[(run.host, run.suite)] = run
        if prev is None:
            out.append(Verdict("first"))
            continue
        g = gate.compare(run.results, prev.results, require_all=False)
        if g.refused:
            out.append(Verdict("refused", prev, reason=g.refused))
        else:
            out.append(Verdict("pass" if g.ok else "fail", prev, g.failures))
    return out


@dataclass
class Point:
    slot: int  # index into Trend.commits
    value: float
    run: int  # index into Trend.runs


@dataclass
class Chart:
    metric: Metric
    cell: tuple
    series: dict[str, list[Point]]  # host id -> points in time order


@dataclass
class Trend:
    runs: list[Run]
    commits: list[str]  # x-axis slots in order of first run; a run of unknown commit has a slot of its own
    hosts: dict[str, str]  # host id -> label, in order of first run
    verdicts: list[Verdict]
    charts: list[Chart]


def _slots(runs: list[Run]) -> tuple[list[str], list[int]]:
    keys: dict[str, int] = {}
    labels, of_run = [], []
    for run in runs:
        key = run.commit if run.commit != UNKNOWN else f"{UNKNOWN}:{run.path.name}"
        if key not in keys:
            keys[key] = len(labels)
            labels.append(run.commit)
        of_run.append(keys[key])
    return labels, of_run


def build(runs: list[Run]) -> Trend:
    """Charts in METRICS order, then cells in order of first appearance; metrics no run measured
    (energy off a Jetson) have no charts."""
    commits, slot_of = _slots(runs)
    hosts = {}
    for run in runs:
        hosts.setdefault(run.host, run.host_label)
    charts = []
    for metric in METRICS:
        by_cell: dict[tuple, dict[str, list[Point]]] = {}
        for i, run in enumerate(runs):
            for e in run.results["entries"]:
                v = metric.value(e)
                if isinstance(v, (int, float)):
                    by_cell.setdefault(cell_of(e), {}).setdefault(run.host, []).append(Point(slot_of[i], v, i))
        charts += [Chart(metric, cell, series) for cell, series in by_cell.items()]
    return Trend(runs, commits, hosts, verdicts(runs), charts)

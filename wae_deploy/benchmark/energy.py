"""Module energy, clocks and heat per timed cell: what an inference costs, and whether the clocks held.

    mon = Monitor.open(root=Path("/"), log=print)   # finds the meter, clocks, zones; measures idle power
    with mon.cell() as sampler:                     # one timed cell: a target, precision and batch
        stats = measure_interleaved(...)
    cell, energy = mon.account(sampler, stats, batch)   # the cell's record; {model: its energy entry}
    mon.summary()                                   # results["power"]

Energy is "module energy" (the Jetson's INA3221 rails) or "package energy" (RAPL on x86): what
the board or the CPU package draws, not the wall power MLPerf's power rules measure with a meter.
Idle power, measured once before the first cell, is taken off, so a figure is what running the
model adds. Each model's energy is read off the sampled energy curve over its own timed calls
(the calls of one cell are interleaved), divided by the images those calls ran: mJ per inference
counts one image as one inference, as MLPerf counts samples. Samples are far apart beside a call of
a millisecond or two, so within a cell the models' figures mostly follow their times; over calls
longer than the sampling interval they also tell the models' power apart.

A cell is throttled when a clock pinned at its maximum (jetson_clocks) fell under 90% of it, or a
temperature reached a passive, hot or critical trip point, at any reading before, during or after
timing. An unpinned clock follows its governor, so its falls say nothing and are not judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wae_deploy.runtime.clocks import clock_domains, thermal_zones
from wae_deploy.runtime.power import SUM, find_meter
from wae_deploy.runtime.sampler import Sampler

CLOCK_FLOOR = 0.9


@dataclass
class Monitor:
    meter: object | None
    domains: list
    zones: list
    hz: float
    log: Callable[[str], None]
    idle_w: dict[str, float] = field(default_factory=dict)
    idle_s: float = 0.0
    _warned: set = field(default_factory=set)

    @classmethod
    def open(cls, root: Path, log, hz: float = 100.0, idle_s: float = 2.0) -> Monitor:
        meter, why = find_meter(root)
        if why:
            log(f"energy not measured: {why}")
        mon = cls(meter, clock_domains(root), thermal_zones(root), hz, log)
        if meter is not None:
            mon.idle_w = dict.fromkeys(meter.rails, 0.0)   # idle_s 0: nothing is taken off
            if idle_s > 0:
                mon._measure_idle(idle_s)
        return mon

    @property
    def active(self) -> bool:
        return bool(self.meter is not None or self.domains or self.zones)

    def _measure_idle(self, seconds: float) -> None:
        s = Sampler(self.meter, [], [], self.hz).start()
        time.sleep(seconds)
        s.stop()
        first, last = s.samples[0], s.samples[-1]
        if s.error or last.joules is None:
            self._warn(s.error or "no idle reading")
            self.meter = None
            return
        self.idle_s = (last.t_ns - first.t_ns) / 1e9
        self.idle_w = {r: (last.joules[r] - first.joules[r]) / self.idle_s for r in self.meter.rails}

    def _warn(self, message: str) -> None:
        """One line per problem for the whole run, however many cells meet it."""
        if message not in self._warned:
            self._warned.add(message)
            self.log(f"energy not measured: {message}")

    @contextmanager
    def cell(self):
        """Samples while the block runs; None when there is nothing to sample here."""
        if not self.active:
            yield None
            return
        s = Sampler(self.meter, self.domains, self.zones, self.hz).start()
        try:
            yield s
        finally:
            s.stop()

    def summary(self) -> dict | None:
        """results["power"]: the meter, its rails and the idle power taken off every figure."""
        if self.meter is None:
            return None
        return {"source": self.meter.kind, "scope": self.meter.scope, "module_rail": self.meter.module_rail,
                "rails": list(self.meter.rails), "idle_w": {**self.idle_w, "module": self._module(self.idle_w)},
                "idle_s": self.idle_s, "sample_hz": self.hz}

    def _module(self, per_rail: dict[str, float]) -> float:
        rail = self.meter.module_rail
        return sum(per_rail.values()) if rail == SUM else per_rail[rail]

    def account(self, sampler: Sampler | None, stats: dict, batch: int) -> tuple[dict | None, dict[str, dict]]:
        """The cell's record (clocks, temperatures, power, the throttling verdict) and each model's energy."""
        if sampler is None:
            return None, {}
        if sampler.error:
            self._warn(sampler.error)
        cell = {"samples": len(sampler.samples), **throttling(sampler.samples, self.domains, self.zones)}
        energy = {}
        if self.meter is not None and not sampler.error:
            curve = EnergyCurve(sampler.samples, self.meter.rails)
            windows = [w for s in stats.values() for w in s.windows_ns]
            cell["power"] = self._power(curve, [(min(a for a, _ in windows), max(b for _, b in windows))], None)
            energy = {name: self._power(curve, s.windows_ns, s.iters * batch) for name, s in stats.items()}
        return cell, energy

    def _power(self, curve: EnergyCurve, windows: list[tuple[int, int]], inferences: int | None) -> dict:
        """Mean watts over `windows`, less idle, and (given `inferences`) mJ per inference, per rail and module."""
        seconds = sum(b - a for a, b in windows) / 1e9
        joules = curve.over(windows)
        mean_w = {r: j / seconds for r, j in joules.items()}
        active_j = {r: joules[r] - self.idle_w[r] * seconds for r in joules}
        out = {"scope": self.meter.scope, "mean_w": self._module(mean_w),
               "active_w": self._module(active_j) / seconds, "seconds": seconds}
        rails = {r: {"mean_w": mean_w[r], "active_w": active_j[r] / seconds} for r in joules}
        if inferences:
            out["mj_per_inference"] = 1e3 * self._module(active_j) / inferences
            for r in rails:
                rails[r]["mj_per_inference"] = 1e3 * active_j[r] / inferences
        out["rails"] = rails
        return out


class EnergyCurve:
    """Cumulative joules per rail against time, read between samples by straight lines."""

    def __init__(self, samples: list, rails: list[str]):
        kept = [s for s in samples if s.joules is not None]
        self.t = np.array([s.t_ns for s in kept], dtype=np.float64)
        self.j = {r: np.array([s.joules[r] for s in kept]) for r in rails}

    def over(self, windows: list[tuple[int, int]]) -> dict[str, float]:
        starts = np.array([a for a, _ in windows], dtype=np.float64)
        ends = np.array([b for _, b in windows], dtype=np.float64)
        return {r: float(np.sum(np.interp(ends, self.t, j) - np.interp(starts, self.t, j))) for r, j in self.j.items()}


def throttling(samples: list, domains: list, zones: list) -> dict:
    """Clock ranges, temperatures before, at most and after, and whether (and why) the cell throttled."""
    reasons, clocks, temps = [], {}, {}
    for d in domains:
        seen = [s.clocks_hz[d.name] for s in samples if d.name in s.clocks_hz]
        if not seen:
            continue
        clocks[d.name] = {"locked": d.locked, "max_mhz": d.max_hz / 1e6, "low_mhz": min(seen) / 1e6,
                          "high_mhz": max(seen) / 1e6}
        if d.locked and min(seen) < CLOCK_FLOOR * d.max_hz:
            reasons.append(f"{d.name} clock fell to {min(seen) / 1e6:.0f} MHz, under {CLOCK_FLOOR:.0%} of its "
                           f"locked {d.max_hz / 1e6:.0f} MHz")
    for z in zones:
        seen = [s.temps_c[z.name] for s in samples if z.name in s.temps_c]
        if not seen:
            continue
        temps[z.name] = {"before": seen[0], "max": max(seen), "after": seen[-1]}
        crossed = [(c, kind) for c, kind in z.trips if max(seen) >= c]
        if crossed:
            c, kind = crossed[0]
            reasons.append(f"{z.name} reached {max(seen):.1f} C, its {kind} trip point at {c:.1f} C")
    return {"clocks": clocks, "temperature_c": temps, "throttled": bool(reasons), "throttle_reasons": reasons}

"""A background thread that reads energy, clocks and temperatures while something is timed.

    s = Sampler(meter, domains, zones, hz=100)
    s.start()      # one reading now (before), then the thread
    ...time...
    s.stop()       # the thread ends, then one reading (after)
    s.samples      # [Sample(t_ns, joules, clocks_hz, temps_c)], in time order

Timestamps are time.perf_counter_ns(), the clock runtime.latency times calls with, so a call's
energy is read off the same time axis. Clocks and temperatures change over tenths of a second,
not milliseconds: they are read every `slow_every`-th tick (and always before and after), which
keeps the thread's own work small beside what it measures. A meter that stops being readable ends
the energy readings (`error` says why); clocks and temperatures go on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Sample:
    t_ns: int
    joules: dict[str, float] | None     # per rail, since the meter's first read; None: no meter
    clocks_hz: dict[str, int]            # empty between slow ticks
    temps_c: dict[str, float]


class Sampler:
    def __init__(self, meter, domains: list, zones: list, hz: float = 100.0, slow_every: int = 5):
        self.meter, self.domains, self.zones = meter, domains, zones
        self.interval_s = 1.0 / hz
        self.slow_every = slow_every
        if meter is None:   # nothing to read fast: wake only at the slow rate, beside a CPU being timed
            self.interval_s, self.slow_every = self.interval_s * slow_every, 1
        self.samples: list[Sample] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, slow: bool) -> Sample:
        t = time.perf_counter_ns()
        joules = None
        if self.meter is not None and self.error is None:
            try:
                joules = self.meter.read(t / 1e9)
            except (OSError, ValueError, IndexError) as e:
                self.error = f"{self.meter.kind} stopped being readable while sampling ({e})"
        clocks, temps = {}, {}
        if slow:
            for d in self.domains:
                try:
                    clocks[d.name] = d.read_hz()
                except (OSError, ValueError, IndexError):
                    pass
            for z in self.zones:
                try:
                    temps[z.name] = z.read_c()
                except (OSError, ValueError, IndexError):
                    pass
        return Sample(t, joules, clocks, temps)

    def _run(self) -> None:
        tick = 1
        next_t = time.perf_counter()
        while not self._stop.is_set():
            next_t += self.interval_s
            # A late tick does not try to catch up: the next reading is one interval from now.
            if self._stop.wait(max(0.0, next_t - time.perf_counter())):
                break
            next_t = max(next_t, time.perf_counter())
            self.samples.append(self._read(tick % self.slow_every == 0))
            tick += 1

    def start(self) -> Sampler:
        self.samples.append(self._read(True))
        self._thread = threading.Thread(target=self._run, name="wae-deploy-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self._read(True))

"""Energy counters: the Jetson INA3221 power monitor (hwmon) and Intel/AMD RAPL (powercap), one interface.

    meter = find_meter(root)            # None where neither can be read (the reason: why_no_meter(root))
    meter.read(time.perf_counter())     # -> {rail: joules since the meter's first read}

Both give energy, so what uses them never asks which it has: the INA3221 gives power (volts x amps),
integrated here between reads; RAPL gives an energy counter, read as it is. `root` is "/" on the live
machine, or a folder of recorded files in tests (as in machine.py). Nothing here imports a runtime.

INA3221 through hwmon (Linux Documentation/hwmon/ina3221.rst; the paths jetson-stats reads in
jtop/core/power.py): a folder /sys/class/hwmon/hwmonN whose `name` is "ina3221" (N changes between
boots, so it is found by name), with per channel `inN_label`, `inN_input` (bus voltage, mV) and
`currN_input` (mA). Channels labelled "NC" are not connected (Orin), and in7 is the sum of the shunt
voltages, not a rail.
RAPL: /sys/class/powercap/intel-rapl:N/energy_uj (the kernel's powercap sysfs, also on AMD Zen), one
package per N; the counter wraps to 0 after max_energy_range_uj. Its sub-zones (intel-rapl:N:M: cores,
uncore, dram) lie inside the package, so only packages are summed. Since Linux 5.10 energy_uj is
readable by root only (CVE-2020-8694): elsewhere there is simply no meter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# The rail that feeds the whole module, where the board has one (Orin NX and Nano: VDD_IN; Nano and
# TX1 with JetPack 4: POM_5V_IN). AGX Orin has none: its rails (VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0,
# VDDQ_VDD2_1V8AO) are summed instead.
MODULE_RAILS = ("VDD_IN", "POM_5V_IN")
SUM = "sum of rails"


def read_number(path: Path) -> int:
    """The integer in a sysfs file; OSError or ValueError when it cannot be read."""
    return int(Path(path).read_text().split()[0])


@dataclass
class Channel:
    rail: str
    volts_mv: Path
    amps_ma: Path

    def watts(self) -> float:
        return read_number(self.volts_mv) * read_number(self.amps_ma) / 1e6


def ina3221_channels(root: Path) -> list[Channel]:
    """The connected rails of every INA3221 under root's /sys/class/hwmon, by label."""
    channels = []
    for hw in sorted((Path(root) / "sys/class/hwmon").glob("hwmon*")):
        try:
            if "ina3221" not in (hw / "name").read_text():
                continue
        except OSError:
            continue
        for label in sorted(hw.glob("in*_label")):
            n = re.fullmatch(r"in(\d+)_label", label.name)
            try:
                rail = label.read_text().strip()
            except OSError:
                rail = ""
            if not n or not rail or rail.upper() == "NC" or "sum of shunt" in rail.lower():
                continue
            if any(c.rail == rail for c in channels):   # a second monitor reusing a label
                rail = f"{rail}@{hw.name}"
            channels.append(Channel(rail, hw / f"in{n.group(1)}_input", hw / f"curr{n.group(1)}_input"))
    return channels


class Ina3221Meter:
    """Energy per rail, integrated (trapezoids) from the power read at each call of `read`."""

    kind, scope = "ina3221", "module"

    def __init__(self, channels: list[Channel]):
        self.channels = channels
        self.rails = [c.rail for c in channels]
        self.module_rail = next((r for r in MODULE_RAILS if r in self.rails), SUM)
        self._last: tuple[float, dict[str, float]] | None = None
        self._joules = dict.fromkeys(self.rails, 0.0)

    def read(self, t_s: float) -> dict[str, float]:
        watts = {c.rail: c.watts() for c in self.channels}
        if self._last is not None:
            t0, w0 = self._last
            for r, w in watts.items():
                self._joules[r] += (w + w0[r]) / 2 * (t_s - t0)
        self._last = (t_s, watts)
        return dict(self._joules)


@dataclass
class RaplZone:
    rail: str
    energy_uj: Path
    range_uj: int


class RaplMeter:
    """Package energy from RAPL's counters, unwrapped: a reading below the last one has wrapped once."""

    kind, scope = "rapl", "package"

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self.rails = [z.rail for z in zones]
        self.module_rail = SUM
        self._last: dict[str, int] = {}
        self._joules = dict.fromkeys(self.rails, 0.0)

    def read(self, t_s: float) -> dict[str, float]:   # t_s: the interface's; a counter needs no clock
        for z in self.zones:
            now = read_number(z.energy_uj)
            if z.rail in self._last:
                delta = now - self._last[z.rail]
                # The sampler reads many times a second: a package cannot use a whole range
                # (about 262 kJ on most CPUs) between two reads, so one wrap explains a fall.
                self._joules[z.rail] += (delta if delta >= 0 else delta + z.range_uj) / 1e6
            self._last[z.rail] = now
        return dict(self._joules)


def rapl_zones(root: Path) -> list[RaplZone]:
    """The package zones of RAPL under root's /sys/class/powercap (sub-zones lie inside them)."""
    zones = []
    for z in sorted((Path(root) / "sys/class/powercap").glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", z.name):
            continue
        try:
            name, top = (z / "name").read_text().strip(), read_number(z / "max_energy_range_uj")
        except (OSError, ValueError, IndexError):
            continue
        zones.append(RaplZone(f"{name}@{z.name}" if any(x.rail == name for x in zones) else name,
                              z / "energy_uj", top))
    return zones


Meter = Ina3221Meter | RaplMeter


def find_meter(root: Path) -> tuple[Meter | None, str | None]:
    """The machine's energy meter, read once to prove it works; else (None, why: one line)."""
    channels = ina3221_channels(root)
    zones = [] if channels else rapl_zones(root)
    if not channels and not zones:
        return None, "no INA3221 power monitor (hwmon) or RAPL package counter (powercap) here"

    def make() -> Meter:
        return Ina3221Meter(channels) if channels else RaplMeter(zones)

    probe = make()
    try:
        probe.read(0.0)
    except (OSError, ValueError, IndexError) as e:
        where = f"{e.filename}: {e.strerror}" if getattr(e, "filename", None) else str(e) or type(e).__name__
        return None, f"cannot read the {probe.kind} {probe.scope} energy ({where})"
    return make(), None   # a fresh one: its first read is where its energy starts

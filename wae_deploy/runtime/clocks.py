"""Clock domains and thermal zones: what tells a throttled measurement from a steady one.

    domains = clock_domains(root)    # the GPU (devfreq), each CPU cluster (cpufreq policy), the EMC
    domains[0].read_hz()             # the current clock; .max_hz, .locked: read once, before timing
    zones = thermal_zones(root)      # each zone's temperature and its throttling trip points
    zones[0].read_c()

`root` is "/" on the live machine, or a folder of recorded files in tests (as in machine.py). A domain
or zone whose files cannot be read is left out: missing facts are no error here.

Where Jetson keeps them (NVIDIA's jetson_clocks script, and jetson-stats' jtop/core/gpu.py, memory.py
and temperature.py, which read the same files):
- GPU: /sys/class/devfreq/<address>.<gpu> (Orin: 17000000.ga10b on JetPack 5, 17000000.gpu on
  JetPack 6), cur_freq, min_freq and max_freq in Hz; jetson_clocks pins min_freq to max_freq.
- CPU: /sys/devices/system/cpu/cpufreq/policyN (one per cluster), scaling_cur_freq, scaling_min_freq,
  scaling_max_freq in kHz; jetson_clocks pins scaling_min_freq to scaling_max_freq. Only on a Jetson
  (etc/nv_tegra_release) is a CPU cluster taken as pinned: on x86, intel_pstate and amd-pstate report an
  estimate of the average clock, and turbo limits keep a busy core under scaling_max_freq even with the
  minimum raised to it, so a low reading there is no throttling.
- EMC (the memory clock): /sys/kernel/debug/bpmp/debug/clk/emc/{rate,max_rate} in Hz, with
  mrq_rate_locked = 1 once jetson_clocks holds it at max_rate. debugfs: readable by root only, so
  usually absent from an unprivileged bench. Jetson Thor: /sys/class/devfreq/bwmgr.
- Temperatures: /sys/class/thermal/thermal_zoneN/temp in millidegrees C, with trip_point_K_temp and
  trip_point_K_type. "passive" trips are where the kernel starts lowering clocks, "hot" and "critical"
  are beyond; "active" trips only start or speed up a fan, which is no throttling. A trip point at or
  below 0 C is one that is not set (x86_pkg_temp shows 0, iwlwifi -32768 C).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wae_deploy.runtime.power import read_number

GPU_DEVFREQ = re.compile(r"\.(gpu|ga10b|gv11b|gp10b)$")
THROTTLING_TRIPS = ("passive", "hot", "critical")
# PMIC zones report a constant 100 C on several boards (jtop/core/temperature.py skips them too).
FAKE_ZONES = ("PMIC",)


@dataclass
class ClockDomain:
    name: str          # "gpu", "cpu.policy0", "emc"
    cur: Path
    scale: int         # the file's unit in Hz (cpufreq counts kHz)
    max_hz: int        # the highest clock the power mode allows, read before timing
    locked: bool       # pinned at max_hz (jetson_clocks): a lower clock then means throttling

    def read_hz(self) -> int:
        return read_number(self.cur) * self.scale


def _domain(name: str, folder: Path, cur: str, lo: str | None, hi: str, scale: int,
            lock_file: str | None = None, pinnable: bool = True) -> ClockDomain | None:
    try:
        top = read_number(folder / hi) * scale
        read_number(folder / cur)
        if lock_file:
            locked = read_number(folder / lock_file) == 1
        else:
            locked = read_number(folder / lo) * scale == top
    except (OSError, ValueError, IndexError):
        return None
    return ClockDomain(name, folder / cur, scale, top, locked and pinnable)


def clock_domains(root: Path) -> list[ClockDomain]:
    """The GPU, CPU-cluster and EMC clocks readable under root."""
    root = Path(root)
    jetson = (root / "etc/nv_tegra_release").exists()
    found = [_domain("gpu", d, "cur_freq", "min_freq", "max_freq", 1)
             for d in sorted((root / "sys/class/devfreq").glob("*")) if GPU_DEVFREQ.search(d.name)]
    found += [_domain(f"cpu.{d.name}", d, "scaling_cur_freq", "scaling_min_freq", "scaling_max_freq", 1000,
                      pinnable=jetson) for d in sorted((root / "sys/devices/system/cpu/cpufreq").glob("policy*"))]
    found.append(_domain("emc", root / "sys/kernel/debug/bpmp/debug/clk/emc", "rate", None, "max_rate", 1,
                         lock_file="mrq_rate_locked")
                 or _domain("emc", root / "sys/class/devfreq/bwmgr", "cur_freq", "min_freq", "max_freq", 1))
    return [d for d in found if d is not None]


@dataclass
class ThermalZone:
    name: str                       # the zone's type, e.g. "cpu-thermal"
    temp: Path
    trips: list[tuple[float, str]]  # (degrees C, type) of its throttling trip points, lowest first

    def read_c(self) -> float:
        return read_number(self.temp) / 1000.0


def thermal_zones(root: Path) -> list[ThermalZone]:
    """The readable thermal zones under root, each with its passive, hot and critical trip points."""
    zones = []
    for z in sorted((Path(root) / "sys/class/thermal").glob("thermal_zone*")):
        try:
            name = (z / "type").read_text().strip()
            if name.startswith(FAKE_ZONES) or read_number(z / "temp") <= -40000:   # -256 C: sensor off
                continue
        except (OSError, ValueError, IndexError):
            continue
        trips = []
        for t in z.glob("trip_point_*_temp"):
            try:
                kind = (z / t.name.replace("_temp", "_type")).read_text().strip()
                celsius = read_number(t) / 1000.0
                if kind in THROTTLING_TRIPS and celsius > 0:
                    trips.append((celsius, kind))
            except (OSError, ValueError, IndexError):
                continue
        zones.append(ThermalZone(f"{name}@{z.name}" if any(x.name == name for x in zones) else name,
                                 z / "temp", sorted(trips)))
    return zones

"""CPU feature flags, read from /proc/cpuinfo: training (bf16 autocast) and the OpenVINO target ask."""

from __future__ import annotations


def cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False

"""Peak resident memory of this process, as the kernel counts it (VmHWM).

getrusage's ru_maxrss survives exec on Linux, so a child would report its parent's peak;
VmHWM belongs to the process image and starts afresh at exec.
"""

from __future__ import annotations


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM")

"""What the machine is and how busy it is: cores, load, CPU time of process trees."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def describe() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by all cores since boot (/proc/stat: all but idle, iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user/nice
    busy = sum(values[:8]) - idle
    return busy / _TICK


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids += tree(child)
    return pids


def tree_cpu_seconds(pid: int) -> float:
    return sum(process_cpu_seconds(p) for p in tree(pid))


def rss_kib(pid: int | str = "self", field: str = "VmRSS") -> int:
    """VmRSS (or VmHWM, the peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int | str = "self") -> int:
    """Proportional set size: pages shared with other processes (a gunicorn master and its
    workers) count for a share each, so the PSS of a process tree is what it holds."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += rss_kib(p)
        except OSError:
            continue
    return total


@dataclass
class CpuWindow:
    """CPU use over a stretch of time: the whole machine's, and named process trees'."""

    started: float
    machine: float
    trees: dict[str, tuple[int, float]]

    @classmethod
    def open(cls, **pids: int) -> CpuWindow:
        return cls(
            time.monotonic(),
            machine_busy_seconds(),
            {name: (pid, tree_cpu_seconds(pid)) for name, pid in pids.items()},
        )

    def close(self, **extra_cpu_seconds: float) -> dict[str, float]:
        """Average cores used by each tree, by `extra` (measured elsewhere), the machine,
        and `others`: everything else running on the machine meanwhile."""
        wall = max(1e-9, time.monotonic() - self.started)
        out = {
            name: (tree_cpu_seconds(pid) - before) / wall
            for name, (pid, before) in self.trees.items()
        }
        out.update({name: seconds / wall for name, seconds in extra_cpu_seconds.items()})
        out["machine"] = (machine_busy_seconds() - self.machine) / wall
        out["others"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
        return {k: round(v, 2) for k, v in out.items()}


def wait_idle(pid: int, threshold: float = 0.1, window: float = 0.5, timeout: float = 60) -> None:
    """Wait until a process tree uses less than `threshold` cores over `window` seconds
    (e.g. every gunicorn worker has loaded its index)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(window)
        if (tree_cpu_seconds(pid) - before) / window < threshold:
            return


def stop(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, then (after `grace` seconds) SIGKILL to its process group; a no-op if it has
    exited. The benchmarks start servers in sessions of their own, so the group is theirs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)

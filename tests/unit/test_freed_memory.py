"""A webhook worker gives the C heap's freed pages back after a load
(webhook/serving/server.py: release_freed_memory, called by Yielding.replace_all)."""

from __future__ import annotations

import subprocess
import sys

# Buffers of 64 KiB (glibc's heap, not pymalloc's arenas) freed among small survivors, as a
# list's page buffers are among the index's allocations: free() keeps them, trim returns them.
PROBE = """
from webhook.serving.server import Yielding

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

class Sink:
    def replace_all(self, objs):
        self.kept = []
        buffers = []
        for obj in objs:
            buffers.append(bytes(64 * 1024) + obj)
            self.kept.append(bytes(600) + obj)
        del buffers

before = rss_kib()
sink = Sink()
Yielding(sink).replace_all(bytes([i % 256]) for i in range(800))
print(rss_kib() - before)
"""


def test_a_load_leaves_no_freed_buffers_resident() -> None:
    grown = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    # 800 buffers of 64 KiB (50 MiB) were freed; 800 survivors of 600 bytes remain.
    assert int(grown.stdout) < 10 * 1024, f"{grown.stdout.strip()} KiB still resident"

"""The machine a run happened on: CPU model, cores and the flags that decide training speed.

Every timing the course publishes names the CPU: ``make course`` writes it into
``build/course/summary.json`` and the benchmarks into their results. Training on a CPU without
native bf16 (no AVX512-BF16 or AMX) is several times slower, so the flags are part of the figure.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_info", "process_cpu_seconds"]


def cpu_info() -> dict:
    """The CPU model (with its family and model numbers: virtual machines often show only "AMD
    EPYC"), the core count and whether it has AVX2, AVX-512 and native bf16 (AVX512-BF16 or AMX)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = f" {fields.get('flags', '')} "
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {"cpu": name, "cores": os.cpu_count(), "avx2": " avx2 " in flags, "avx512f": " avx512f " in flags,
            "avx512_bf16": " avx512_bf16 " in flags, "amx_bf16": " amx_bf16 " in flags}


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and of its children it has reaped (Linux), or None.

    The local server's trainer runs in child processes: once a job's trainer exits, its CPU time
    is in the server's reaped-children counters, so this counts training too.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces) start at field 3 (state).
    rest = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")

"""ftkit.machine: the CPU facts every published timing names, and CPU seconds of a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ftkit import course
from ftkit.machine import cpu_info, process_cpu_seconds


def test_cpu_info_names_the_cpu_and_its_bf16_flags():
    info = cpu_info()
    assert info["cpu"] and info["cores"] == os.cpu_count()
    flags = open("/proc/cpuinfo").read().split()
    assert info["avx512_bf16"] == ("avx512_bf16" in flags)
    assert info["amx_bf16"] == ("amx_bf16" in flags)


def test_process_cpu_seconds_counts_a_busy_child():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        used = 0.0
        while time.monotonic() < deadline and used < 0.4:
            time.sleep(0.1)
            used = process_cpu_seconds(child.pid) or 0.0
        assert 0.4 <= used < 10
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(child.pid) is None  # gone


def test_write_summary(tmp_path):
    results = [
        {"notebook": "00_setup.ipynb", "ok": True, "seconds": 12.5, "cpu_seconds": 20.0, "error": None,
         "headlines": [{"name": "server", "value": "up", "note": ""}]},
        {"notebook": "04_job_lifecycle.ipynb", "ok": False, "seconds": 3.0, "cpu_seconds": 2.5, "error": "boom",
         "headlines": [], "load_at_end": [1.5, 1.0, 0.5]},
    ]
    path = course.write_summary(results, tmp_path, quick=False, started=time.time(), load_at_start=[0.1, 0.2, 0.3])
    summary = json.loads(path.read_text())
    assert summary["mode"] == "full" and summary["all_ok"] is False
    assert summary["wall_seconds"] == 15.5 and summary["cpu_seconds"] == 22.5
    assert summary["notebooks"][1] == {"notebook": "04_job_lifecycle.ipynb", "status": "failed", "wall_seconds": 3.0,
                                       "cpu_seconds": 2.5, "error": "boom", "load_average_at_end": [1.5, 1.0, 0.5],
                                       "headlines": []}
    assert summary["machine"]["load_average_at_start"] == [0.1, 0.2, 0.3]
    assert summary["versions"]["torch"]

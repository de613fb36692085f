"""scripts/course_table.py: the README's course table comes from build/course/summary.json."""

import importlib.util
import json
import time
from pathlib import Path

import pytest

from ftkit import course

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("course_table", ROOT / "scripts" / "course_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summary(tmp_path, ok=True):
    results = [
        {"notebook": "04_job_lifecycle.ipynb", "ok": True, "seconds": 321.5, "cpu_seconds": 640.2, "error": None,
         "headlines": [{"name": "exact match", "value": "56% (46-65%)", "note": ""}], "load_at_end": [2.1, 2.0, 1.5]},
        {"notebook": "05_evaluation.ipynb", "ok": ok, "seconds": 700.0, "cpu_seconds": 1300.0,
         "error": None if ok else "CellTimeoutError", "headlines": [], "load_at_end": [1.9, 2.0, 1.8]},
    ]
    path = course.write_summary(results, tmp_path, quick=False, started=time.time(), load_at_start=[0.1, 0.1, 0.1])
    return json.loads(path.read_text())


def test_table_names_the_machine_times_and_headlines(tmp_path):
    summary = _summary(tmp_path)
    assert summary["notebooks"][0]["load_average_at_end"] == [2.1, 2.0, 1.5]
    table = _module().render(summary)
    assert "**full** mode" in table and "cores" in table
    assert "| `04_job_lifecycle` | ok | 322 s | 640 | exact match: 56% (46-65%) |" in table
    assert "1,022 s (17.0 min)" in table  # 321.5 + 700.0
    assert "1.9-2.1" in table


def test_a_failed_notebook_is_shown_failed(tmp_path):
    table = _module().render(_summary(tmp_path, ok=False))
    assert "NOT ALL OK" in table and "**failed**: CellTimeoutError" in table


def test_a_stopped_run_keeps_what_it_measured(tmp_path):
    done = [{"notebook": "04_job_lifecycle.ipynb", "ok": True, "seconds": 321.5, "cpu_seconds": 640.2, "error": None,
             "headlines": [], "load_at_end": [2.1, 2.0, 1.5]}]
    path = course.write_summary(done, tmp_path, quick=False, started=time.time(), pending=["05_evaluation.ipynb"])
    summary = json.loads(path.read_text())
    assert summary["all_ok"] is False and summary["pending"] == ["05_evaluation.ipynb"]
    table = _module().render(summary)
    assert "the run was stopped: 1 notebooks not run" in table and "NOT ALL OK" not in table
    assert "| `05_evaluation` | not run (the run was stopped) |" in table
    failed = {**done[0], "ok": False, "error": "CellTimeoutError"}
    stopped_and_failed = course.write_summary([failed], tmp_path, quick=False, started=time.time(),
                                              pending=["05_evaluation.ipynb"])
    assert "NOT ALL OK" in _module().render(json.loads(stopped_and_failed.read_text()))


def test_complete_run_has_nothing_pending(tmp_path):
    summary = _summary(tmp_path)
    assert summary["all_ok"] is True and summary["pending"] == []


def test_readme_block_replaced_and_nothing_else(tmp_path):
    mod = _module()
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- course-table:full:start -->\nold\n<!-- course-table:full:end -->\nafter\n")
    mod.replace_in_readme(readme, "full", "NEW TABLE")
    assert readme.read_text() == "before\n<!-- course-table:full:start -->\nNEW TABLE\n<!-- course-table:full:end -->\nafter\n"
    with pytest.raises(SystemExit, match="quick"):
        mod.replace_in_readme(readme, "quick", "x")

"""Every notebook runs top to bottom in quick mode on the local backend, with no key."""

from __future__ import annotations

import json
import os

import pytest
from conftest import NOTEBOOK_RESULTS
from test_hygiene import NOTEBOOKS, find_keys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    pytest.importorskip("nbclient")
    from ftkit import course

    home = tmp_path_factory.mktemp("ftkit-home")
    saved = {k: os.environ.get(k) for k in ("FTKIT_HOME", "FTKIT_QUICK", "OPENAI_API_KEY", "FTKIT_BACKEND")}
    os.environ.update(FTKIT_HOME=str(home), FTKIT_QUICK="1", FTKIT_BACKEND="local")
    os.environ.pop("OPENAI_API_KEY", None)
    out = tmp_path_factory.mktemp("course")
    cwd = os.getcwd()
    os.chdir(out.parent)  # a relative output folder, as `make course` passes (build/course)
    try:
        results = course.run(NOTEBOOKS, out.name, quick=True)
        NOTEBOOK_RESULTS[:] = results  # printed in the terminal summary (conftest.py)
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {r["notebook"]: r for r in results}, out, home


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_quick_mode(course_run, path):
    results, out, _ = course_run
    result = results[path.name]
    assert result["ok"], f"{path.name} failed: {result['error']}"
    assert result["headlines"], f"{path.name} reported no headline results"
    executed = json.loads((out / path.name).read_text(encoding="utf-8"))
    errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert (out / path.with_suffix(".html").name).exists()


def test_executed_course_and_logs_hold_no_key(course_run):
    _, out, home = course_run
    key = (home / "api_key").read_text().strip() if (home / "api_key").exists() else None
    for path in [*out.glob("*.ipynb"), *out.glob("*.html"), *home.glob("*.log"), *home.glob("jobs/*/trainer.log")]:
        text = path.read_text(encoding="utf-8", errors="ignore")
        assert not find_keys(text), path
        if key:
            assert key not in text, path
    assert (out / "index.html").exists()


def test_summary_json_records_each_notebook_and_the_machine(course_run):
    results, out, _ = course_run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["mode"] == "quick"
    assert [n["notebook"] for n in summary["notebooks"]] == list(results)
    for entry in summary["notebooks"]:
        assert entry["status"] == ("ok" if results[entry["notebook"]]["ok"] else "failed")
        assert entry["wall_seconds"] > 0 and entry["cpu_seconds"] > 0
        assert entry["headlines"] == [{k: h[k] for k in ("name", "value", "note")} for h in results[entry["notebook"]]["headlines"]]
    assert summary["machine"]["cpu"] and summary["machine"]["cores"] >= 1
    assert isinstance(summary["machine"]["avx512_bf16"], bool)

"""Repository hygiene: committed notebooks carry no outputs, follow the course's shape, and
nothing tracked looks like an API key."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# OpenAI keys (sk-..., sk-proj-...), Azure-style 32-hex keys after a key-ish name, and the local
# server's own keys (ftkit-local-<48 hex>).
KEY_PATTERNS = [
    re.compile(r"sk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    re.compile(r"ftkit-local-[0-9a-f]{48}"),
    re.compile(r"(?i)(?:api[_-]?key|secret)[\"']?\s*[:=]\s*[\"'][A-Za-z0-9]{32,}[\"']"),
]


def find_keys(text: str) -> list[str]:
    return [m.group(0)[:12] + "…" for pattern in KEY_PATTERNS for m in pattern.finditer(text)]


def test_the_course_notebooks_are_there():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert {"00", "01", "02", "03", "04", "05", "06", "07", "08"} <= set(numbers)
    assert len(numbers) == len(set(numbers)), "one notebook per number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; run scripts/strip_outputs.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells]
    assert cells[0]["cell_type"] == "markdown" and sources[0].startswith("# "), "starts with a title"
    headings = [s for c, s in zip(cells, sources) if c["cell_type"] == "markdown" and re.search(r"^## \d+\.", s, re.M)]
    assert len(headings) >= 3, "numbered steps (## 1. ...)"
    assert any(re.search(r"^## Exercises", s, re.M) for s in sources), "ends with exercises"
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert i > 0 and cells[i - 1]["cell_type"] == "markdown", f"cell {i}: a sentence before each code cell"
            assert "!pip" not in sources[i] and "%pip" not in sources[i], f"cell {i}: no pip installs in notebooks"
            assert "sys.path" not in sources[i], f"cell {i}: import the installed package, no sys.path edits"


def test_nothing_tracked_looks_like_a_key():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = {}
    for name in files:
        path = ROOT / name
        if path.suffix in (".tiktoken", ".gguf", ".png") or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        found = find_keys(path.read_text(encoding="utf-8", errors="ignore"))
        if found:
            hits[name] = found
    assert not hits, hits


def test_the_key_scanner_finds_keys():
    assert find_keys('client = OpenAI(api_key="sk-proj-' + 'abcdefghijklmnopqrstuvwxyz012345")')  # split: not a key in this file
    assert find_keys("Authorization: Bearer ftkit-local-" + "ab" * 24)
    assert not find_keys("sk-short and file-abc123 and ftjob-XYZ")


@pytest.mark.slow
def test_server_logs_never_contain_the_key(local_server, client):
    client.models.list()
    client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=2)
    logs = [local_server.home / "server.log", *(local_server.home / "jobs").glob("*/trainer.log")]
    for log in logs:
        text = log.read_text(errors="ignore")
        assert local_server.key not in text and not find_keys(text), log

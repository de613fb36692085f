"""Shared by the benchmarks: where results go."""

from __future__ import annotations

import json
from pathlib import Path


def save(result: dict, path: str | Path) -> dict:
    """Write a benchmark's result as JSON (benchmarks/results/ is gitignored) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result

"""Shared by the benchmarks: the machine they ran on, a fresh model, where results go."""

from __future__ import annotations

import json
from pathlib import Path

from ftkit.machine import cpu_info  # noqa: F401  (the benchmarks import it from here)


def save(result: dict, path: str | Path) -> dict:
    """Write a benchmark's result as JSON (benchmarks/results/ is gitignored) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def fresh_model(seed: int):
    """SmolLM2-135M-Instruct and its tokenizer, loaded afresh after seeding torch."""
    import torch

    from ftkit.local.inference.weights import load_base_model

    torch.manual_seed(seed)
    return load_base_model(progress=None)

"""Shared by the benchmarks: the machine they ran on, a fresh model, where results go."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def save(result: dict, path: str | Path) -> dict:
    """Write a benchmark's result as JSON (benchmarks/results/ is gitignored) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def cpu_info() -> dict:
    """The CPU model (with its family and model numbers: virtual machines often show only "AMD
    EPYC"), the core count and whether it has AVX-512 and native bf16 (AVX512-BF16 or AMX)."""
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
    return {"cpu": name, "cores": os.cpu_count(), "avx512f": " avx512f " in flags,
            "avx512_bf16": " avx512_bf16 " in flags, "amx_bf16": " amx_bf16 " in flags}


def fresh_model(seed: int):
    """SmolLM2-135M-Instruct and its tokenizer, loaded afresh after seeding torch."""
    import torch

    from ftkit.local.models import load_base_model

    torch.manual_seed(seed)
    return load_base_model(progress=None)

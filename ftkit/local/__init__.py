"""ftkit's local, OpenAI-compatible fine-tuning server.

Run it with ``python -m ftkit.local serve`` (or let :func:`ftkit.client` start it). The official
``openai`` SDK talks to it unchanged; only ``base_url`` differs. It validates uploaded files,
queues and runs fine-tuning jobs (LoRA on SmolLM2-135M-Instruct, on CPU), writes events, metrics,
checkpoints and the results file, and serves base and fine-tuned models for chat completions.

Layers, data flowing one way: ``app`` (HTTP routes) → ``service`` / ``batches`` → ``store``
(SQLite + files) and ``worker`` → ``trainer`` (a child process) / ``engine`` (inference thread,
constrained by ``grammar`` for response_format and tool_choice).
Installing the ``local`` extra brings torch, transformers, peft, llguidance, FastAPI and uvicorn; nothing in
this package imports torch at import time.
"""

"""ftkit's local, OpenAI-compatible fine-tuning server.

Run it with ``python -m ftkit.local serve`` (or let :func:`ftkit.client` start it). The official
``openai`` SDK talks to it unchanged; only ``base_url`` differs. It validates uploaded files,
queues and runs fine-tuning jobs (LoRA on SmolLM2-135M-Instruct, on CPU), writes events, metrics,
checkpoints and the results file, and serves base and fine-tuned models for chat completions,
the Responses API and the Batch API.

Layers, data flowing one way: ``app`` (wiring) and ``routes`` (one router per resource, bodies
checked by ``request_check`` against the spec) → ``service`` (files, jobs, models), ``chat``
(chat completions, shared by ``batches`` and ``responses``) → ``store`` (SQLite + files) and
``worker`` → ``trainer`` (a child process) / ``engine`` (inference thread,
constrained by ``grammar`` for response_format and tool_choice). ``wire`` holds the
OpenAI wire shapes (errors, pages, serialisers), ``parameters`` what is implemented or refused.
Installing the ``local`` extra brings torch, transformers, peft, llguidance, FastAPI and uvicorn; nothing in
this package imports torch at import time.
"""

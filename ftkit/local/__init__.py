"""ftkit's local, OpenAI-compatible fine-tuning server.

Run it with ``python -m ftkit.local serve`` (or let :func:`ftkit.client` start it). The official
``openai`` SDK talks to it unchanged; only ``base_url`` differs. It validates uploaded files,
queues and runs fine-tuning jobs (LoRA on SmolLM2-135M-Instruct, on CPU), writes events, metrics,
checkpoints and the results file, and serves base and fine-tuned models for chat completions,
the Responses API and the Batch API.

Layout, by concern; imports run api → services → jobs → inference, each over the store (the one
arrow back: services raise :mod:`.api.wire`'s ``APIError`` and parse bodies with
:mod:`.api.request_check`), and :mod:`.inference` imports none of the others:

* :mod:`.api` -- the HTTP edge: the app's wiring, one router per resource, middleware, the request
  checks against OpenAI's spec, the documented deviations (``parameters``) and the wire shapes;
* :mod:`.services` -- what the server does, one service per resource: the platform (files, jobs,
  models), chat, text completions, responses, stored completions, batches, evals, graders;
* :mod:`.jobs` -- fine-tuning jobs: the state machine, hyperparameters, the worker, the trainer
  process (``python -m ftkit.local.jobs.trainer``) and ``training/`` (the loop and one module per
  method);
* :mod:`.inference` -- the model: base weights, the chat template, the batched engine, the prompt
  cache, constrained decoding;
* :mod:`.store` -- the durable state every part shares (SQLite + blobs under the home), below them all.

At the top level beside them, the programs and tools that work on a home from outside the
serving process: ``__main__`` (``python -m ftkit.local serve | status | stop | register-model |
export | recipe | import-adapter``), :mod:`.control` (start, find and stop the server from other
processes, as :func:`ftkit.client` does), :mod:`.export` (notebook 08: an adapter, a merged model
or GGUF, read from the store) and :mod:`.recipes` (notebook 10: a job as a TRL recipe, and
importing an adapter back; the ``train.py`` it writes imports ``ftkit.local.recipes``).

Installing the ``local`` extra brings torch, transformers, peft, llguidance, FastAPI and uvicorn; nothing in
this package imports torch at import time.
"""

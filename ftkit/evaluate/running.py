"""Running requests: :func:`evaluate` sends every example to every configuration (concurrently, or
through the Batch API), retried with :class:`RetryPolicy`; :func:`sample_agreement` samples
several answers per example.

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluation import Evaluation, _assemble
from .examples import Config, load_examples, reference_of
from .scoring import Scorer, _fields_of, _normal_text, parse_json

# ---------------------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``initial x multiplier**attempt`` seconds (at most ``max_delay``),
    of which the last ``jitter`` fraction is random, or the server's ``Retry-After`` if longer (also
    at most ``max_delay``); give up after ``max_retries`` retries."""

    max_retries: int = 6
    initial: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        base = min(self.max_delay, self.initial * self.multiplier ** attempt)
        r = (rng or random).random()
        wait = base * (1 - self.jitter) + base * self.jitter * r
        if retry_after is not None and retry_after > wait:
            wait = retry_after
        return min(self.max_delay, max(0.0, wait))


def is_retryable(error: BaseException) -> bool:
    """Rate limits (429, except ``insufficient_quota``), connection errors, timeouts, 408 and 5xx
    are worth retrying; other 4xx errors are not (the same request would fail again)."""
    import openai

    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError):
        if error.status_code == 429:
            return getattr(error, "code", None) != "insufficient_quota"
        return error.status_code == 408 or error.status_code >= 500
    return False


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            return None  # an HTTP date: fall back to our own backoff
    return None


def _with_retries(call: Callable[[], Any], policy: RetryPolicy, rng: random.Random, sleep=time.sleep):
    """(result, attempts, seconds of the successful attempt). Raises the last error."""
    attempt = 0
    while True:
        start = time.perf_counter()
        try:
            return call(), attempt + 1, time.perf_counter() - start
        except Exception as e:
            if attempt >= policy.max_retries or not is_retryable(e):
                e.ftkit_attempts = attempt + 1
                raise
            sleep(policy.delay(attempt, _retry_after(e), rng))
            attempt += 1


# ---------------------------------------------------------------------------------------------
# Running requests


def _local_server_pid(client) -> int | None:
    """The local server's process id when it runs on this machine (its /health says), else None."""
    try:
        from urllib.parse import urlsplit

        import httpx

        from ..backend import backend_of

        if backend_of(client).name != "local":
            return None
        url = urlsplit(str(client.base_url))
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            return None
        port = f":{url.port}" if url.port else ""
        return int(httpx.get(f"{url.scheme}://{url.hostname}{port}/health", timeout=5).json()["pid"])
    except Exception:
        return None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc, or psutil)."""
    if pid is None:
        return None
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        pass
    try:
        import os

        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


def _usage(obj) -> tuple[float, float]:
    usage = obj.get("usage") if isinstance(obj, dict) else getattr(obj, "usage", None)
    if usage is None:
        return math.nan, math.nan
    get = usage.get if isinstance(usage, dict) else (lambda k: getattr(usage, k, None))
    p, c = get("prompt_tokens"), get("completion_tokens")
    return (math.nan if p is None else float(p)), (math.nan if c is None else float(c))


def _answer(obj) -> tuple[str | None, str | None]:
    """(content, finish_reason) of the first choice of a completion (SDK object or dict)."""
    choices = obj.get("choices") if isinstance(obj, dict) else obj.choices
    if not choices:
        return None, None
    first = choices[0]
    if isinstance(first, dict):
        return (first.get("message") or {}).get("content"), first.get("finish_reason")
    return first.message.content, first.finish_reason


def _error_text(e: BaseException) -> str:
    message = getattr(e, "message", None) or str(e)
    return f"{type(e).__name__}: {message}"[:500]


def _run_chat(client, config: Config, examples: list[dict], *, concurrency: int, policy: RetryPolicy,
              rng: random.Random, bar, timeout: float | None) -> list[dict]:
    api = client.with_options(max_retries=0, **({"timeout": timeout} if timeout else {}))
    rng_lock = threading.Lock()

    def one(example: dict) -> dict:
        body = config.request(example)
        row = {"prediction": None, "finish_reason": None, "prompt_tokens": math.nan,
               "completion_tokens": math.nan, "latency_s": math.nan, "attempts": 0, "error": None}
        with rng_lock:
            own_rng = random.Random(rng.random())
        try:
            response, attempts, seconds = _with_retries(lambda: api.chat.completions.create(**body), policy, own_rng)
        except Exception as e:
            row.update(error=_error_text(e), attempts=getattr(e, "ftkit_attempts", 1))
        else:
            text, finish = _answer(response)
            p, c = _usage(response)
            row.update(prediction=text, finish_reason=finish, prompt_tokens=p, completion_tokens=c,
                       latency_s=seconds, attempts=attempts)
        if bar is not None:
            bar.update(1)
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, examples))


def _run_batches(client, configs: list[Config], examples: list[dict], *, policy: RetryPolicy,
                 rng: random.Random, bar, poll_interval: float, batch_timeout: float) -> tuple[list[list[dict]], list[dict]]:
    """One Batch API batch per configuration (the hosted API takes one model per batch): write
    the requests, upload them with purpose "batch", create the batches, poll, read the output."""
    api = client.with_options(max_retries=0)

    def call(fn):
        return _with_retries(fn, policy, rng)[0]

    batches = []
    for config in configs:
        lines = [{"custom_id": f"request-{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": config.request(ex)} for i, ex in enumerate(examples)]
        content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        upload = call(lambda content=content, config=config: api.files.create(
            file=(f"ftkit-eval-{_slug(config.name)}.jsonl", content, "application/jsonl"), purpose="batch"))
        batch = call(lambda upload=upload, config=config: api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"ftkit": "evaluate", "config": config.name[:500]}))
        batches.append(batch)
    deadline = time.monotonic() + batch_timeout
    done_counts = [0] * len(batches)
    terminal = {"completed", "failed", "expired", "cancelled"}
    while True:
        for k, batch in enumerate(batches):
            if batch.status in terminal:
                continue
            batch = batches[k] = call(lambda batch=batch: api.batches.retrieve(batch.id))
            counts = batch.request_counts
            finished = (counts.completed + counts.failed) if counts else 0
            if batch.status in terminal:
                finished = len(examples)
            if bar is not None and finished > done_counts[k]:
                bar.update(finished - done_counts[k])
            done_counts[k] = max(done_counts[k], finished)
        if all(b.status in terminal for b in batches):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batches still running after {batch_timeout:.0f} s: "
                               + ", ".join(f"{b.id} ({b.status})" for b in batches if b.status not in terminal)
                               + ". They keep running on the server; read them later with client.batches.retrieve.")
        time.sleep(poll_interval)

    all_rows, meta = [], []
    for config, batch in zip(configs, batches):
        if batch.status == "failed":
            errors = getattr(batch.errors, "data", None) or []
            detail = "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in errors[:3])
            raise RuntimeError(f"batch {batch.id} for {config.name!r} failed: {detail or 'no detail'}")
        by_id: dict[str, dict] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = call(lambda file_id=file_id: api.files.content(file_id)).text
                for line in text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        by_id[item["custom_id"]] = item
        rows = []
        for i in range(len(examples)):
            row = {"prediction": None, "finish_reason": None, "prompt_tokens": math.nan, "completion_tokens": math.nan,
                   "latency_s": math.nan, "attempts": 1, "error": None}
            item = by_id.get(f"request-{i}")
            response = (item or {}).get("response") or {}
            if item is None:
                row["error"] = f"no result in batch {batch.id} ({batch.status})"
            elif response.get("status_code") == 200:
                body = response.get("body") or {}
                text, finish = _answer(body)
                p, c = _usage(body)
                row.update(prediction=text, finish_reason=finish, prompt_tokens=p, completion_tokens=c)
            else:
                err = (response.get("body") or {}).get("error") or item.get("error") or {}
                row["error"] = f"{response.get('status_code', 'error')}: {err.get('message', err)}"[:500]
            rows.append(row)
        start, end = batch.in_progress_at or batch.created_at, batch.completed_at or batch.expired_at
        meta.append({"batch_id": batch.id, "batch_status": batch.status,
                     "wall_s": float(end - start) if end and start else math.nan})
        all_rows.append(rows)
    return all_rows, meta




def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "config"


def evaluate(
    client,
    examples,
    configs: Sequence[Config],
    *,
    fields: Sequence[str] | None = None,
    labels: dict[str, Sequence] | None = None,
    scorers: Sequence[Scorer] = (),
    concurrency: int = 16,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    via: str = "chat",
    poll_interval: float = 2.0,
    batch_timeout: float = 24 * 3600,
    progress: bool = True,
    seed: int = 0,
) -> Evaluation:
    """Run ``examples`` through every configuration and score the answers.

    ``examples``: a JSONL path or a list of chat examples (see :func:`load_examples`); each one's
    last assistant message is the reference. ``labels`` (``{"category": [...], ...}``) names the
    JSON fields to score and their possible values (for macro F1 and confusion matrices);
    without it, ``fields`` or the keys of the first reference are used. ``scorers``: extra
    per-example scorers (see the module docstring). ``concurrency``: requests in flight at once
    per configuration. ``retry``: the backoff policy (:class:`RetryPolicy`). ``timeout``: seconds
    per request (default: the client's own); on the local backend a request waits for its whole
    batch, so keep it generous -- a request that times out is sent again while the server still
    works on the first one. ``via="batch"``
    sends each configuration as one Batch API batch instead (no per-request latency then).

    Taught in notebooks/05_evaluation.ipynb.
    """

    if via not in ("chat", "batch"):
        raise ValueError(f"via must be 'chat' or 'batch', not {via!r}")
    configs = list(configs)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be unique: {names}")
    examples = load_examples(examples)
    if labels is not None:
        fields = tuple(labels)
    references = [reference_of(ex) for ex in examples]
    fields = tuple(fields) if fields is not None else _fields_of(references)
    retry = retry or RetryPolicy()
    rng = random.Random(seed)
    pid = _local_server_pid(client)
    from ..backend import backend_of

    backend = backend_of(client).name

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs) * len(examples), desc="evaluating", unit="request")
    frames, runs = [], []
    try:
        if via == "batch":
            if bar is not None:
                bar.set_postfix_str("batches: " + ", ".join(names))
            cpu0, start = _cpu_seconds(pid), time.perf_counter()
            per_config, meta = _run_batches(client, configs, examples, policy=retry, rng=rng, bar=bar,
                                            poll_interval=poll_interval, batch_timeout=batch_timeout)
            cpu1, total = _cpu_seconds(pid), time.perf_counter() - start
            for config, rows, m in zip(configs, per_config, meta):
                frames.append((config, rows))
                runs.append({"config": config.name, "model": config.model, "via": "batch", "wall_s": m["wall_s"],
                             "cpu_s": math.nan, "batch_id": m["batch_id"]})
            runs.append({"config": "(all batches)", "model": "", "via": "batch", "wall_s": total,
                         "cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else math.nan,
                         "batch_id": ""})
        else:
            for config in configs:
                if bar is not None:
                    bar.set_postfix_str(config.name)
                cpu0, start = _cpu_seconds(pid), time.perf_counter()
                rows = _run_chat(client, config, examples, concurrency=concurrency, policy=retry, rng=rng,
                                 bar=bar, timeout=timeout)
                wall, cpu1 = time.perf_counter() - start, _cpu_seconds(pid)
                frames.append((config, rows))
                runs.append({"config": config.name, "model": config.model, "via": "chat", "wall_s": wall,
                             "cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else math.nan,
                             "batch_id": ""})
    finally:
        if bar is not None:
            bar.close()

    ev = _assemble(configs, examples, [rows for _, rows in frames], runs, fields=fields, labels=labels,
                   scorers=scorers, backend=backend, via=via)
    results = ev.results
    failed = results[results["error"].notna()]
    if len(failed):
        import warnings

        first = failed.iloc[0]
        warnings.warn(f"{len(failed)} of {len(results)} requests failed; the first ({first['config']}, "
                      f"example {first['id']!r}): {first['error']}", stacklevel=2)
    return ev

# ---------------------------------------------------------------------------------------------
# How sure is the model? Agreement under sampling


def sample_agreement(
    client,
    config: Config,
    examples: Iterable[dict],
    answers: dict | None = None,
    *,
    n: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
    concurrency: int = 16,
    retry: RetryPolicy | None = None,
):
    """Ask ``config`` for ``n`` sampled answers per example (``temperature``, seeded) and measure
    how often they agree: with the answer in ``answers`` (``{example id: answer}``, e.g. the greedy
    answers of an evaluation) or else with the most common sample. A wrong answer the model gives
    in 8 samples out of 8 is a *confident* mistake: more prompting or sampling will not fix it.

    Returns a DataFrame indexed by example id: ``answer``, ``agreement`` (share of samples with
    the same answer -- JSON compared as objects), ``distinct`` (number of different answers),
    ``samples``. Taught in notebooks/05_evaluation.ipynb.
    """
    import pandas as pd

    examples = list(examples)
    policy = retry or RetryPolicy()
    api = client.with_options(max_retries=0)
    rng = random.Random(seed)

    def key(text) -> str:
        parsed = parse_json(text)
        return json.dumps(parsed, sort_keys=True) if parsed is not None else _normal_text(text or "")

    def one(example: dict) -> dict:
        body = config.request(example, n=n, temperature=temperature, seed=seed)
        response = _with_retries(lambda: api.chat.completions.create(**body), policy, random.Random(rng.random()))[0]
        samples = [c.message.content for c in response.choices]
        keys = [key(s) for s in samples]
        if answers is not None and example["id"] in answers:
            answer = answers[example["id"]]
        else:
            answer = max(set(keys), key=keys.count)
        target = key(answer)
        return {"id": example["id"], "answer": answer, "agreement": keys.count(target) / len(keys),
                "distinct": len(set(keys)), "samples": samples}

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        rows = list(pool.map(one, examples))
    return pd.DataFrame(rows).set_index("id")

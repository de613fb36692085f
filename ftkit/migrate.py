"""Move fine-tuned models off a hosted platform: snapshot, replay, compare.

Taught in notebooks/08_own_your_model.ipynb.

    python -m ftkit migrate snapshot --out DIR [--golden 50] [--yes | --max-cost-usd 2]
    python -m ftkit migrate replay DIR [--map gpt-4o-mini*=SmolLM2-135M-Instruct] [--wait]
    python -m ftkit migrate compare DIR

A hosted platform never hands out a fine-tuned model's weights. What can leave is what made the
model -- the training data and the settings of each job -- and what it does: its answers. So:

* :func:`snapshot` records every fine-tuning job of the source backend (the same variables as the
  ``openai`` SDK choose it: ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``, or Azure's; see
  :mod:`ftkit.backend`): method and hyperparameters, model ids, checkpoints, metadata, suffix,
  seed, status; it downloads the training, validation and results files; and it asks each
  fine-tuned model for a **golden set** -- its greedy (``temperature=0``) answers to a bounded
  sample of its own validation (else training) prompts. The golden set is the contract a
  replacement must meet. Its cost is estimated and printed before anything billable is sent.
  Interrupted snapshots resume: ``manifest.json`` records what is done, files are downloaded
  once (checked by size and SHA-256) and recorded answers are not asked again.
* :func:`replay` re-creates each succeeded job on a target backend (the local server by default)
  from the snapshot's files, with the same method, hyperparameters, seed and suffix, mapping the
  hosted base models onto target ones explicitly (by default every ``gpt-*`` model becomes the
  local SmolLM2-135M-Instruct). New job ids go into the manifest, so a second run creates nothing
  twice.
* :func:`compare` asks the replayed models the golden prompts and reports how often they agree
  with the hosted answers: identical text, equal answers (JSON compared as data) and, for JSON
  answers, field by field -- as a pandas table and a JSON report file.

The API key is never printed, logged or stored: the manifest keeps the base URL only.
This module imports without torch.

Why one module of ~1,000 lines: snapshot, replay and compare share one manifest format and its
resume rules (written by one step, read by the next), and notebook 08 follows them in order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import fnmatch
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import lifecycle
from .hashing import sha256_file

__all__ = [
    "DEFAULT_MODEL_MAP",
    "MANIFEST",
    "Comparison",
    "CostNotApproved",
    "GoldenEstimate",
    "MigrationError",
    "agreement",
    "compare",
    "estimate_golden_cost",
    "load_manifest",
    "replay",
    "resolve_model_map",
    "snapshot",
    "target_client",
]

MANIFEST = "manifest.json"
FORMAT = "ftkit-migration"
#: Hosted base model -> local base model, used when ``--map`` says nothing else about a model
#: (fnmatch patterns, first match wins).
DEFAULT_MODEL_MAP = {"gpt-*": "SmolLM2-135M-Instruct"}
DEFAULT_GOLDEN = 50
DEFAULT_MAX_TOKENS = 256
MIGRATED_FROM_KEY = "ftkit_migrated_from"


class MigrationError(Exception):
    """A migration step that cannot go on, with what to do about it."""


class CostNotApproved(MigrationError):
    """The golden set would cost money and nobody said yes (``--yes`` / ``--max-cost-usd``)."""


# ---------------------------------------------------------------------------------------------
# The manifest: what the snapshot holds and what has been done


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _safe_url(url: str | None) -> str | None:
    """The URL without user info or query (neither belongs in a manifest)."""
    if not url:
        return url
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _Manifest:
    """``manifest.json`` in a snapshot folder, written atomically after every step."""

    def __init__(self, directory: Path, data: dict) -> None:
        self.directory = directory
        self.data = data
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST

    def save(self) -> None:
        with self._lock:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)


def load_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a snapshot folder (raises :class:`MigrationError` when there is none)."""
    return _open(Path(directory), create=False).data


def _open(directory: Path, *, create: bool) -> _Manifest:
    path = directory / MANIFEST
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise MigrationError(f"{path} is not valid JSON ({e}); move it away to start the snapshot again") from None
        if data.get("format") != FORMAT:
            raise MigrationError(f"{path} is not an ftkit migration manifest")
        return _Manifest(directory, data)
    if not create:
        raise MigrationError(f"{directory} holds no snapshot ({MANIFEST} is missing): run "
                             "`python -m ftkit migrate snapshot --out DIR` first")
    directory.mkdir(parents=True, exist_ok=True)
    return _Manifest(directory, {"format": FORMAT, "version": 1, "created_at": _now(), "source": {}, "settings": {},
                                 "jobs": {}, "files": {}, "replays": {}})


# ---------------------------------------------------------------------------------------------
# Small helpers


def _dump(obj) -> dict:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=False)
    return dict(obj)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "x"


def _hyperparameters(job: dict) -> dict:
    """The job's hyperparameters that have values (not "auto"), from ``method`` or the old field."""
    method = job.get("method") or {}
    kind = method.get("type") or lifecycle.SUPERVISED
    hp = ((method.get(kind) or {}).get("hyperparameters")) or job.get("hyperparameters") or {}
    return {k: v for k, v in hp.items() if k in ("n_epochs", "batch_size", "learning_rate_multiplier")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _method_type(job: dict) -> str:
    return (job.get("method") or {}).get("type") or lifecycle.SUPERVISED


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every line that parses as a JSON object; the rest is skipped
    (the platform validated the file; the golden set only needs usable prompts)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append((number, value))
    return out


def _prompt_of(example: dict) -> tuple[list[dict], str | None] | None:
    """(the conversation up to its last assistant turn, that turn's text) or None."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        return None
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=None)
    if not last:
        return None
    prompt = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last]]
    return prompt, _message_text(messages[last])


def _message_text(message: dict) -> str | None:
    """An assistant turn as one string: its text, or its tool calls as JSON."""
    calls = message.get("tool_calls") or ([{"function": message["function_call"]}] if message.get("function_call") else [])
    if calls:
        return json.dumps([{"name": (c.get("function") or {}).get("name"),
                            "arguments": (c.get("function") or {}).get("arguments")} for c in calls], ensure_ascii=False)
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _answer_text(response) -> tuple[str | None, str | None]:
    """(answer text, finish reason) of a chat completion; tool calls as JSON like :func:`_message_text`."""
    choice = response.choices[0]
    message = choice.message
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return json.dumps([{"name": c.function.name, "arguments": c.function.arguments} for c in calls],
                          ensure_ascii=False), choice.finish_reason
    return message.content, choice.finish_reason


def _request(model: str, record: dict, max_tokens: int) -> dict:
    body = {"model": model, "messages": record["messages"], "temperature": 0, "max_tokens": max_tokens}
    for key in ("tools", "functions"):
        if record.get(key):
            body[key] = record[key]
    return body


def _ask_all(client, bodies: Sequence[dict], *, concurrency: int, on_result: Callable[[int, Any, Exception | None], None],
             desc: str, progress: bool) -> None:
    """Send chat requests concurrently (retrying rate limits and transient errors with backoff,
    as :mod:`ftkit.evaluate` does) and call ``on_result(i, response, error)`` as each one ends."""
    from .evaluate import RetryPolicy, is_retryable

    policy = RetryPolicy()
    api = client.with_options(max_retries=0)

    def one(i: int):
        attempt = 0
        while True:
            try:
                return i, api.chat.completions.create(**bodies[i]), None
            except Exception as e:  # noqa: BLE001 -- reported per request
                if attempt >= policy.max_retries or not is_retryable(e):
                    return i, None, e
                time.sleep(policy.delay(attempt))
                attempt += 1

    bar = None
    if progress and bodies:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(bodies), desc=desc, unit="request")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        futures = [pool.submit(one, i) for i in range(len(bodies))]
        for future in concurrent.futures.as_completed(futures):
            on_result(*future.result())
            if bar is not None:
                bar.update(1)
    finally:
        # An interruption (Ctrl-C) must not wait for the requests still queued.
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------------
# Snapshot


@dataclass(frozen=True)
class GoldenEstimate:
    """What asking the golden prompts will cost, per fine-tuned model (None: unknown price)."""

    rows: tuple[dict, ...]

    @property
    def requests(self) -> int:
        return sum(r["requests"] for r in self.rows)

    @property
    def expected_usd(self) -> float | None:
        values = [r["expected_usd"] for r in self.rows]
        return None if any(v is None for v in values) else sum(values)

    @property
    def worst_usd(self) -> float | None:
        values = [r["worst_usd"] for r in self.rows]
        return None if any(v is None for v in values) else sum(values)

    def lines(self) -> list[str]:
        out = []
        for r in self.rows:
            price = ("unknown price" if r["worst_usd"] is None else
                     f"about ${r['expected_usd']:.4f}, at most ${r['worst_usd']:.4f}")
            out.append(f"  {r['model']}: {r['requests']} requests, {r['prompt_tokens']:,} prompt tokens -- {price}"
                       + (f" ({r['note']})" if r.get("note") else ""))
        total = ("unknown (a model's price is not in ftkit's catalog)" if self.worst_usd is None else
                 f"about ${self.expected_usd:.4f}, at most ${self.worst_usd:.4f} if every answer ran to max_tokens")
        out.append(f"  total: {self.requests} requests, {total}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def estimate_golden_cost(pending: Mapping[str, Sequence[dict]], max_tokens: int, on=None) -> GoldenEstimate:
    """Cost of asking ``pending`` (model -> golden records still to ask), priced with
    :mod:`ftkit.catalog` as fine-tuned inference: prompt tokens counted with :mod:`ftkit.tokens`,
    expected output = the training data's answers, worst case = ``max_tokens`` per answer. A
    model on ftkit's local backend costs 0; a model the catalog does not know has no price."""
    from . import catalog, cost, tokens

    rows = []
    for model, records in pending.items():
        row = {"model": model, "requests": len(records), "prompt_tokens": 0, "expected_usd": None,
               "worst_usd": None, "note": ""}
        try:
            entry = catalog.lookup(model, on)
        except catalog.UnknownCatalogModel:
            row["note"] = "not in ftkit's catalog"
            rows.append(row)
            continue
        if entry.backend == "local":
            row.update(expected_usd=0.0, worst_usd=0.0, note="ftkit's local backend: no price")
            rows.append(row)
            continue
        try:
            counter = tokens.TokenCounter(model)
        except tokens.UnknownModelError:
            row["note"] = "no known tokenizer"
            rows.append(row)
            continue
        prompt = sum(c.total for c in counter.count_examples(
            [{"messages": r["messages"], **({"tools": r["tools"]} if r.get("tools") else {})} for r in records]))
        expected_out = sum(min(max_tokens, n) for n in counter.count_batch([r.get("reference") or "" for r in records]))
        try:
            expected = cost.inference_cost(model, prompt, expected_out, fine_tuned=True, on=on).per_request_usd
            worst = cost.inference_cost(model, prompt, max_tokens * len(records), fine_tuned=True, on=on).per_request_usd
        except cost.NoPriceError as e:
            row["note"] = str(e)
            rows.append(row)
            continue
        row.update(prompt_tokens=prompt, expected_usd=expected, worst_usd=worst, note=f"priced as {entry.snapshot}")
        rows.append(row)
    return GoldenEstimate(tuple(rows))


def _download(client, manifest: _Manifest, file_id: str, local_files: Mapping[str, str], say) -> dict:
    """Download one file once: skipped when the copy on disk has the recorded size and SHA-256."""
    import openai

    files = manifest.data["files"]
    entry = files.get(file_id) or {"id": file_id}
    if entry.get("path") and entry.get("sha256"):
        path = manifest.directory / entry["path"]
        if path.is_file() and path.stat().st_size == entry.get("bytes") and sha256_file(path) == entry["sha256"]:
            return entry
    try:
        info = client.files.retrieve(file_id)
    except openai.NotFoundError:
        entry.update(status="missing", error="the platform no longer has this file")
        files[file_id] = entry
        manifest.save()
        say(f"  {file_id}: the platform no longer has it")
        return entry
    entry.update(filename=info.filename, purpose=info.purpose, bytes=info.bytes, created_at=info.created_at)
    target = manifest.directory / "files" / f"{file_id}-{_slug(info.filename or 'file')}"
    target.parent.mkdir(exist_ok=True)
    content, how = None, "downloaded"
    try:
        content = client.files.content(file_id).content
    except openai.APIStatusError as e:
        local = local_files.get(file_id)
        if not local:
            entry.update(status="error", error=f"download refused ({e.status_code}): {getattr(e, 'message', e)}")
            files[file_id] = entry
            manifest.save()
            say(f"  {file_id} ({info.filename}, {info.bytes:,} bytes): the platform refused the download -- give "
                f"your own copy with --file {file_id}=PATH (checked against its size)")
            return entry
        content, how = Path(local).read_bytes(), f"copied from {local}"
    if info.bytes is not None and len(content) != info.bytes:
        entry.update(status="error", error=f"got {len(content):,} bytes, the platform says {info.bytes:,}")
        files[file_id] = entry
        manifest.save()
        say(f"  {file_id}: {entry['error']}")
        return entry
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(content)
    os.replace(tmp, target)
    entry.update(status="downloaded", path=str(target.relative_to(manifest.directory)), sha256=hashlib.sha256(content).hexdigest(),
                 error=None, how=how, downloaded_at=_now())
    files[file_id] = entry
    manifest.save()
    say(f"  {file_id}: {how} {info.filename} ({len(content):,} bytes)")
    return entry


def _golden_path(manifest: _Manifest, job_id: str) -> Path:
    return manifest.directory / "golden" / f"{job_id}.jsonl"


def _read_golden(path: Path) -> list[dict]:
    """Recorded golden answers; a line cut off by an interruption is ignored (asked again)."""
    if not path.is_file():
        return []
    out, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "index" in record and record["index"] not in seen:
            seen.add(record["index"])
            out.append(record)
    return out


def _golden_plan(manifest: _Manifest, job_id: str, golden: int, seed: int) -> tuple[list[dict], str | None]:
    """The golden prompts of a job: a seeded sample of its validation (else training) examples."""
    record = manifest.data["jobs"][job_id]
    job = record["job"]
    for key in ("validation_file", "training_file"):
        file_id = job.get(key)
        entry = manifest.data["files"].get(file_id or "") or {}
        if not file_id or entry.get("status") != "downloaded":
            continue
        candidates = []
        for number, example in _read_jsonl(manifest.directory / entry["path"]):
            prompt = _prompt_of(example)
            if prompt is None:
                continue
            messages, reference = prompt
            item = {"index": number, "messages": messages, "reference": reference}
            for extra in ("tools", "functions"):
                if example.get(extra):
                    item[extra] = example[extra]
            candidates.append(item)
        if not candidates:
            continue
        chosen = sorted(random.Random(f"{seed}:{job_id}").sample(range(len(candidates)), min(golden, len(candidates))))
        return [candidates[i] for i in chosen], key
    return [], None


def snapshot(
    client,
    out: str | os.PathLike,
    *,
    golden: int = DEFAULT_GOLDEN,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: int = 0,
    yes: bool = False,
    max_cost_usd: float | None = None,
    jobs: Iterable[str] | None = None,
    local_files: Mapping[str, str] | None = None,
    model_for: Mapping[str, str] | None = None,
    concurrency: int = 8,
    confirm: Callable[[str], bool] | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict:
    """Record every fine-tuning job of ``client``'s backend into folder ``out``, with its files
    and a golden set (see the module docstring). Returns the manifest.

    ``golden``: prompts per fine-tuned model (0: none). ``max_tokens``: per golden answer.
    ``yes`` / ``max_cost_usd``: approve the golden set's estimated cost without asking (a budget
    is checked against the worst case); otherwise a terminal is asked, and without one nothing
    billable is sent (:class:`CostNotApproved`). On ftkit's local backend the cost is 0.
    ``jobs``: only these job ids. ``local_files``: file id -> your own copy, for files the
    platform will not let you download. ``model_for``: job id -> the model to ask instead of its
    ``fine_tuned_model`` (an Azure deployment name). ``confirm``: asks yes/no (tests, notebooks).

    Taught in notebooks/08_own_your_model.ipynb.
    """
    from .backend import backend_of

    if golden < 0 or max_tokens < 1:
        raise MigrationError("--golden must be >= 0 and --max-tokens >= 1")
    directory = Path(out).expanduser()
    manifest = _open(directory, create=True)
    backend = backend_of(client)
    source = {"backend": backend.name, "base_url": _safe_url(str(client.base_url))}
    known = manifest.data.get("source") or {}
    if known.get("base_url") and known["base_url"] != source["base_url"]:
        raise MigrationError(f"{directory} holds a snapshot of {known['base_url']}, not {source['base_url']}: "
                             "use another folder")
    manifest.data["source"] = {**known, **source, "snapshot_started_at": known.get("snapshot_started_at") or _now()}
    settings = manifest.data.get("settings") or {}
    if settings and (settings.get("max_tokens"), settings.get("seed")) != (max_tokens, seed):
        raise MigrationError(f"{directory} was started with max_tokens={settings.get('max_tokens')} and "
                             f"seed={settings.get('seed')}: resume with the same settings")
    manifest.data["settings"] = {"golden": golden, "max_tokens": max_tokens, "seed": seed}
    manifest.save()
    wanted = set(jobs or [])
    local_files = dict(local_files or {})
    model_for = dict(model_for or {})

    say(f"Listing fine-tuning jobs on {source['base_url']} ...")
    listed = [_dump(j) for j in client.fine_tuning.jobs.list(limit=100)]  # the SDK follows every page
    if wanted:
        missing = wanted - {j["id"] for j in listed}
        if missing:
            raise MigrationError(f"no such job(s) on the source: {', '.join(sorted(missing))}")
        listed = [j for j in listed if j["id"] in wanted]
    say(f"{len(listed)} job(s): " + ", ".join(f"{j['id']} ({j['status']})" for j in listed))
    for job in reversed(listed):  # oldest first
        record = manifest.data["jobs"].setdefault(job["id"], {})
        record["job"] = job
        try:
            record["checkpoints"] = [_dump(c) for c in client.fine_tuning.jobs.checkpoints.list(job["id"], limit=100)]
        except Exception as e:  # noqa: BLE001 -- some backends have no checkpoints for old jobs
            record["checkpoints"], record["checkpoints_error"] = [], str(e)[:300]
        record["availability"] = _availability(job.get("fine_tuned_model"))
        manifest.save()
    say("Files (each downloaded once):")
    for job in reversed(listed):
        for file_id in [job.get("training_file"), job.get("validation_file"), *(job.get("result_files") or [])]:
            if file_id:
                _download(client, manifest, file_id, local_files, say)

    # The golden set: plan every job's prompts, estimate, then ask what is not recorded yet.
    pending: dict[str, list[dict]] = {}
    plans: dict[str, tuple[str, list[dict]]] = {}
    for job in reversed(listed):
        record = manifest.data["jobs"][job["id"]]
        model = model_for.get(job["id"]) or job.get("fine_tuned_model")
        if job["status"] != lifecycle.SUCCEEDED or not model or golden == 0:
            record["golden"] = {"status": "skipped", "reason": "no fine-tuned model" if golden else "--golden 0"}
            continue
        prompts, from_file = _golden_plan(manifest, job["id"], golden, seed)
        if not prompts:
            record["golden"] = {"status": "skipped", "reason": "no downloaded validation or training file with prompts"}
            say(f"  {job['id']}: no golden set -- {record['golden']['reason']}")
            continue
        done = {r["index"] for r in _read_golden(_golden_path(manifest, job["id"]))}
        todo = [p for p in prompts if p["index"] not in done]
        record["golden"] = {"status": "pending" if todo else "done", "model": model, "from": from_file,
                            "path": str(_golden_path(manifest, job["id"]).relative_to(directory)),
                            "planned": len(prompts), "recorded": len(prompts) - len(todo)}
        plans[job["id"]] = (model, todo)
        if todo:
            pending.setdefault(model, []).extend(todo)
    manifest.save()
    total = sum(len(v) for v in pending.values())
    if total == 0:
        say("Golden set: every answer is already recorded; nothing to ask.")
    else:
        estimate = estimate_golden_cost(pending, max_tokens)
        say(f"Golden set: {total} greedy request(s) to fine-tuned models, max_tokens={max_tokens}. Estimated cost:")
        for line in estimate.lines():
            say(line)
        _approve(estimate, yes=yes, max_cost_usd=max_cost_usd, confirm=confirm)
        for job_id, (model, todo) in plans.items():
            if todo:
                _ask_golden(client, manifest, job_id, model, todo, max_tokens, concurrency, progress, say)
    manifest.data["source"]["snapshot_finished_at"] = _now()
    manifest.save()
    return manifest.data


def _availability(model: str | None) -> dict | None:
    """When a hosted fine-tuned model stops answering (from ftkit's catalog), if known."""
    if not model:
        return None
    from . import catalog

    try:
        a = catalog.availability(model)
    except (catalog.UnknownCatalogModel, ValueError):
        return None
    entry = catalog.lookup(model)
    return {"status": a.status, "can_use_fine_tuned": a.can_use_fine_tuned,
            "stops_answering": entry.shutdown.isoformat() if entry.shutdown else None, "reason": a.reason}


def _approve(estimate: GoldenEstimate, *, yes: bool, max_cost_usd: float | None, confirm) -> None:
    worst = estimate.worst_usd
    if worst == 0 or yes:
        return
    if max_cost_usd is not None:
        if worst is None:
            raise CostNotApproved("nothing billable sent: the cost cannot be estimated, so --max-cost-usd cannot be "
                                  "checked; pass --yes to go ahead anyway")
        if worst > max_cost_usd:
            raise CostNotApproved(f"nothing billable sent: up to ${worst:.4f} is above --max-cost-usd "
                                  f"{max_cost_usd:g}; lower --golden or --max-tokens, or raise the budget")
        return
    question = f"Send {estimate.requests} requests ({'unknown cost' if worst is None else f'up to ${worst:.4f}'})? [y/N] "
    if confirm is None:
        import sys

        if not sys.stdin or not sys.stdin.isatty():
            raise CostNotApproved("nothing billable sent: pass --yes or --max-cost-usd USD to approve the golden set "
                                  "(or --golden 0 to skip it)")

        def confirm(q: str) -> bool:
            return input(q).strip().lower() in ("y", "yes")

    if not confirm(question):
        raise CostNotApproved("nothing billable sent: not approved")


def _ask_golden(client, manifest: _Manifest, job_id: str, model: str, todo: list[dict], max_tokens: int,
                concurrency: int, progress: bool, say) -> None:
    path = _golden_path(manifest, job_id)
    path.parent.mkdir(exist_ok=True)
    record = manifest.data["jobs"][job_id]["golden"]
    lock = threading.Lock()
    errors: list[str] = []
    bodies = [_request(model, item, max_tokens) for item in todo]
    with open(path, "a", encoding="utf-8") as fh:

        def on_result(i: int, response, error: Exception | None) -> None:
            if error is not None:
                errors.append(f"{type(error).__name__}: {getattr(error, 'message', error)}"[:300])
                return
            text, finish = _answer_text(response)
            usage = response.usage.model_dump() if getattr(response, "usage", None) else None
            line = {**todo[i], "model": model, "answer": text, "finish_reason": finish, "usage": usage,
                    "asked_at": _now()}
            with lock:  # one whole line at a time: an interruption leaves at most one cut line
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                fh.flush()
                record["recorded"] += 1

        _ask_all(client, bodies, concurrency=concurrency, on_result=on_result, desc=f"golden {job_id}",
                 progress=progress)
    record["status"] = "done" if record["recorded"] >= record["planned"] else "pending"
    if errors:
        record["errors"] = errors[:5]
        say(f"  {job_id}: {len(errors)} request(s) failed (asked again on the next run): {errors[0]}")
    manifest.save()


# ---------------------------------------------------------------------------------------------
# The target backend


@contextlib.contextmanager
def _backend_env(name: str):
    saved = os.environ.get("FTKIT_BACKEND")
    os.environ["FTKIT_BACKEND"] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FTKIT_BACKEND", None)
        else:
            os.environ["FTKIT_BACKEND"] = saved


def target_client(backend: str | None = None, *, home=None, base_url: str | None = None, verbose: bool = True):
    """The client to replay onto: ``base_url`` (key from ``FTKIT_TARGET_API_KEY``, else
    ``OPENAI_API_KEY``), else ``ftkit.client()`` for ``backend`` -- by default ``FTKIT_BACKEND``, else
    the local server (``home``: its home directory), whatever ``OPENAI_API_KEY`` says."""
    import openai

    from .backend import client

    if base_url:
        key = os.environ.get("FTKIT_TARGET_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise MigrationError("--base-url needs a key in FTKIT_TARGET_API_KEY (or OPENAI_API_KEY)")
        c = openai.OpenAI(base_url=base_url, api_key=key)
        if verbose:
            print(f"ftkit: replaying onto {_safe_url(base_url)}")
        return c
    chosen = (backend or os.environ.get("FTKIT_BACKEND") or "local").lower()
    with _backend_env(chosen):
        return client(verbose=verbose, home=home)


def _target_key(client) -> str:
    from .backend import backend_of

    return f"{backend_of(client).name} {_safe_url(str(client.base_url))}"


def resolve_model_map(models: Iterable[str], target_models: Iterable[str], *, target_is_local: bool,
                      explicit: Mapping[str, str] | None = None, default_base: str | None = None) -> dict:
    """Source base model -> (target model, why) for each of ``models``; unmapped ones get None.

    Rules, first match wins: the ``explicit`` map (``{pattern: target}``, fnmatch patterns such as
    ``gpt-4o*``); a model the target also offers maps to itself; on a local target every ``gpt-*``
    model maps to ``default_base`` (:data:`DEFAULT_MODEL_MAP`).
    """
    offered = set(target_models)
    out = {}
    for model in models:
        choice = None
        for pattern, target in (explicit or {}).items():
            if fnmatch.fnmatchcase(model, pattern):
                choice = (target, f"--map {pattern}={target}")
                break
        if choice is None and model in offered:
            choice = (model, "the target offers the same model")
        if choice is None and target_is_local:
            for pattern, target in DEFAULT_MODEL_MAP.items():
                if fnmatch.fnmatchcase(model, pattern):
                    target = default_base or target
                    choice = (target, f"default: every {pattern} model -> {target}")
                    break
        out[model] = choice
    return out


def replay(
    client,
    directory: str | os.PathLike,
    *,
    model_map: Mapping[str, str] | None = None,
    jobs: Iterable[str] | None = None,
    auto_hyperparameters: bool = False,
    wait: bool = False,
    say: Callable[[str], None] = print,
):
    """Re-create each succeeded job of the snapshot in ``directory`` on ``client``'s backend.

    Same training and validation files (uploaded with :func:`ftkit.jobs.upload`), method,
    hyperparameters (``auto_hyperparameters=True`` lets the target choose: the hosted values were
    tuned for the hosted model), seed and suffix; the base model comes from ``model_map``
    (see :func:`resolve_model_map`) -- a job whose base model has no mapping stops the replay
    before anything is created. New ids are recorded in the manifest at once, and each job carries
    ``metadata["ftkit_migrated_from"]``, so running again (after an interruption) creates nothing
    twice. ``wait``: follow each job with :func:`ftkit.jobs.watch`. Returns a DataFrame, one row
    per source job.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    import openai
    import pandas as pd

    from . import jobs as ftjobs
    from .backend import backend_of

    manifest = _open(Path(directory).expanduser(), create=False)
    backend = backend_of(client)
    key = _target_key(client)
    state = manifest.data["replays"].setdefault(key, {"target": {"backend": backend.name,
                                                                 "base_url": _safe_url(str(client.base_url))},
                                                      "files": {}, "jobs": {}})
    wanted = set(jobs or [])
    sources = [r["job"] for r in manifest.data["jobs"].values()
               if r["job"]["status"] == lifecycle.SUCCEEDED and (not wanted or r["job"]["id"] in wanted)]
    rows = []
    skipped = [r["job"] for r in manifest.data["jobs"].values() if r["job"]["status"] != lifecycle.SUCCEEDED]
    for job in skipped:
        rows.append({"source_job": job["id"], "source_model": job["model"], "target_model": None, "job": None,
                     "status": f"not replayed: the source job {job['status']}", "fine_tuned_model": None})
    if not sources:
        say("No succeeded job in the snapshot to replay.")
        return pd.DataFrame(rows)
    target_models = [m.id for m in client.models.list()]
    mapping = resolve_model_map(sorted({j["model"] for j in sources}), target_models,
                                target_is_local=not backend.paid, explicit=model_map,
                                default_base=backend.base_model if not backend.paid else None)
    unmapped = [m for m, choice in mapping.items() if choice is None]
    if unmapped:
        raise MigrationError(f"no target model for {', '.join(unmapped)} on {key}: pass --map MODEL=TARGET "
                             f"(e.g. --map '{unmapped[0]}=SmolLM2-135M-Instruct'); nothing was created")
    say("Model map (source base model -> target):")
    for model, (target, why) in mapping.items():
        say(f"  {model} -> {target}  ({why})")
    for job in sources:
        src_id = job["id"]
        target_model = mapping[job["model"]][0]
        done = state["jobs"].get(src_id) or {}
        row = {"source_job": src_id, "source_model": job["model"], "target_model": target_model}
        if _method_type(job) != lifecycle.SUPERVISED:
            rows.append({**row, "job": None, "status": f"not replayed: method {_method_type(job)!r} (ftkit "
                         "replays supervised jobs)", "fine_tuned_model": None})
            continue
        new_job = None
        if done.get("job_id"):
            new_job = client.fine_tuning.jobs.retrieve(done["job_id"])
            say(f"{src_id}: already replayed as {new_job.id} ({new_job.status})")
        else:
            found = [j for j in client.fine_tuning.jobs.list(limit=100, metadata={MIGRATED_FROM_KEY: src_id})
                     if (j.metadata or {}).get(MIGRATED_FROM_KEY) == src_id]
            if found:  # created by a run that stopped before it could write the manifest
                new_job = found[0]
                say(f"{src_id}: found its replay {new_job.id} on the target ({new_job.status})")
            else:
                try:
                    new_job = _create_replay(client, manifest, state, job, target_model, auto_hyperparameters, say)
                except (ftjobs.JobsError, openai.APIStatusError, MigrationError) as e:
                    message = getattr(e, "message", None) or str(e)
                    state["jobs"][src_id] = {"error": message[:500], "target_model": target_model}
                    manifest.save()
                    say(f"{src_id}: not replayed -- {message}")
                    rows.append({**row, "job": None, "status": "error: " + message[:200], "fine_tuned_model": None})
                    continue
            state["jobs"][src_id] = {"job_id": new_job.id, "target_model": target_model, "created_at": _now()}
            manifest.save()
        if wait and new_job.status not in ftjobs.TERMINAL_STATUSES:
            new_job = ftjobs.watch(client, new_job, print_events=False)
        state["jobs"][src_id].update(status=new_job.status, fine_tuned_model=new_job.fine_tuned_model)
        manifest.save()
        rows.append({**row, "job": new_job.id, "status": new_job.status, "fine_tuned_model": new_job.fine_tuned_model})
    return pd.DataFrame(rows)


def _create_replay(client, manifest: _Manifest, state: dict, job: dict, target_model: str,
                   auto_hyperparameters: bool, say):
    from . import jobs as ftjobs

    uploaded = {}
    for key in ("training_file", "validation_file"):
        file_id = job.get(key)
        if not file_id:
            continue
        entry = manifest.data["files"].get(file_id) or {}
        if entry.get("status") != "downloaded":
            raise MigrationError(f"the snapshot has no copy of its {key.replace('_', ' ')} {file_id} "
                                 f"({entry.get('error', 'not downloaded')}); snapshot again with --file {file_id}=PATH")
        known = state["files"].get(file_id)
        if known:
            uploaded[key] = known
            continue
        path = manifest.directory / entry["path"]
        upload = ftjobs.upload(client, path, model=target_model, filename=entry.get("filename") or path.name,
                               min_examples=1 if key == "validation_file" else 10, verbose=False)
        state["files"][file_id] = uploaded[key] = upload.id
        manifest.save()
    hp = {} if auto_hyperparameters else _hyperparameters(job)
    metadata = dict(job.get("metadata") or {})
    if len(metadata) < 16:
        metadata[MIGRATED_FROM_KEY] = job["id"]
    new = ftjobs.create_job(client, uploaded["training_file"], model=target_model,
                            validation_file=uploaded.get("validation_file"), hyperparameters=hp,
                            suffix=job.get("user_provided_suffix") or job.get("suffix"), seed=job.get("seed"),
                            metadata=metadata, verbose=False)
    say(f"{job['id']}: replayed as {new.id} on {target_model} "
        f"({', '.join(f'{k}={v}' for k, v in hp.items()) or 'auto hyperparameters'}, seed {job.get('seed')})")
    return new


# ---------------------------------------------------------------------------------------------
# Compare


@dataclass
class Comparison:
    """How the replayed models answer the golden prompts: ``summary`` (one row per job),
    ``answers`` (one row per prompt) and the JSON report written to ``report_path``."""

    summary: Any  # pandas DataFrame
    answers: Any  # pandas DataFrame
    report_path: Path

    def __str__(self) -> str:
        return self.summary.to_string(index=False)

    def _repr_html_(self) -> str:
        return self.summary.to_html(index=False)


def _fields(golden_answers: Sequence[str | None]) -> list[str]:
    from .evaluate import parse_json

    seen: dict[str, None] = {}
    for answer in golden_answers:
        value = parse_json(answer)
        for key in value or {}:
            seen.setdefault(key, None)
    return list(seen)


def agreement(hosted: Sequence[str | None], replayed: Sequence[str | None]) -> tuple[list[dict], dict]:
    """Compare two lists of answers to the same prompts: one row per prompt and the rates.

    ``identical``: the same text; ``equal``: the same answer (:func:`ftkit.evaluate.exact_match`:
    JSON compared as data, other text up to case and spacing); ``*_valid_json``: the answer is one
    JSON object; ``<field>_same``: for every field of the hosted JSON answers, whether the replayed
    answer has the same value -- its rate counts only prompts whose hosted answer has that field.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    from .evaluate import exact_match, parse_json

    if len(hosted) != len(replayed):
        raise ValueError(f"{len(hosted)} hosted answers but {len(replayed)} replayed ones")
    fields = _fields(hosted)
    rows = []
    for theirs_text, mine_text in zip(hosted, replayed):
        theirs, mine = parse_json(theirs_text), parse_json(mine_text)
        item = {"hosted": theirs_text, "replayed": mine_text,
                "identical": mine_text is not None and mine_text == theirs_text,
                "equal": exact_match(mine_text, theirs_text),
                "hosted_valid_json": theirs is not None, "replayed_valid_json": mine is not None}
        for f in fields:
            if theirs is not None and f in theirs:
                item[f"{f}_same"] = mine is not None and f in mine and mine[f] == theirs[f]
        rows.append(item)
    n = len(rows)
    rates = {k: (sum(r[k] for r in rows) / n if n else math.nan)
             for k in ("identical", "equal", "hosted_valid_json", "replayed_valid_json")}
    for f in fields:
        values = [r[f"{f}_same"] for r in rows if f"{f}_same" in r]
        rates[f"{f}_same"] = sum(values) / len(values) if values else math.nan
    return rows, rates


def compare(
    client,
    directory: str | os.PathLike,
    *,
    concurrency: int = 16,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Comparison:
    """Ask each replayed model (on ``client``'s backend) its job's golden prompts and measure
    agreement with the hosted answers: ``identical`` (same text), ``equal`` (same answer: JSON
    compared as data, else text up to case and spacing -- :func:`ftkit.evaluate.exact_match`),
    ``valid_json`` for both sides, and per JSON field the share of prompts where the field has the
    same value (among golden answers that have it). Writes ``comparison-<target>.json``.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    import pandas as pd

    manifest = _open(Path(directory).expanduser(), create=False)
    key = _target_key(client)
    state = manifest.data["replays"].get(key)
    if not state or not state.get("jobs"):
        raise MigrationError(f"nothing was replayed onto {key} from {manifest.directory}: run "
                             "`python -m ftkit migrate replay DIR` first (with the same target options)")
    max_tokens = manifest.data["settings"].get("max_tokens", DEFAULT_MAX_TOKENS)
    summary_rows, answer_rows = [], []
    for src_id, replayed in state["jobs"].items():
        if not replayed.get("job_id"):
            continue
        job = client.fine_tuning.jobs.retrieve(replayed["job_id"])
        replayed.update(status=job.status, fine_tuned_model=job.fine_tuned_model)
        golden_meta = manifest.data["jobs"].get(src_id, {}).get("golden") or {}
        golden = sorted(_read_golden(manifest.directory / golden_meta["path"]), key=lambda r: r["index"]) \
            if golden_meta.get("path") else []
        row = {"source_job": src_id, "hosted_model": golden_meta.get("model"), "replayed_model": job.fine_tuned_model,
               "status": job.status, "prompts": len(golden)}
        if job.status != lifecycle.SUCCEEDED or not golden:
            summary_rows.append({**row, "identical": math.nan, "equal": math.nan})
            say(f"{src_id}: not compared ({job.status if job.status != lifecycle.SUCCEEDED else 'no golden set'})")
            continue
        answers: list[tuple[str | None, str | None]] = [(None, None)] * len(golden)
        failures = []

        def on_result(i, response, error, answers=answers, failures=failures):
            if error is not None:
                failures.append(f"{type(error).__name__}: {getattr(error, 'message', error)}"[:300])
            else:
                answers[i] = _answer_text(response)

        _ask_all(client, [_request(job.fine_tuned_model, g, max_tokens) for g in golden], concurrency=concurrency,
                 on_result=on_result, desc=f"compare {src_id}", progress=progress)
        rows, rates = agreement([g.get("answer") for g in golden], [a for a, _ in answers])
        for g, (_, finish), item in zip(golden, answers, rows):
            answer_rows.append({"source_job": src_id, "index": g["index"], **item, "replayed_finish": finish})
        row.update(rates, failed_requests=len(failures))
        summary_rows.append(row)
    manifest.save()
    summary = pd.DataFrame(summary_rows)
    answers_df = pd.DataFrame(answer_rows)
    report = manifest.directory / f"comparison-{_slug(key)}.json"
    payload = {"target": state["target"], "compared_at": _now(), "max_tokens": max_tokens,
               "summary": json.loads(summary.to_json(orient="records")),
               "answers": json.loads(answers_df.to_json(orient="records"))}
    report.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest.data.setdefault("comparisons", {})[key] = {"report": report.name, "at": payload["compared_at"]}
    manifest.save()
    return Comparison(summary, answers_df, report)

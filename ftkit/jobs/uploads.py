"""Uploads: validate, hash, reuse (:func:`upload`, :func:`file_sha256` and ftkit's local upload record).

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import catalog
from ..backend import backend_of
from ..hashing import sha256_file
from ..validation import ValidationReport
from .api import UploadRefused, _local_time


def _records_of(source) -> list[dict] | None:
    """Examples as a list of dicts for a list or DataFrame source (None for a path)."""
    if isinstance(source, (str, os.PathLike)):
        return None
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a DataFrame of examples
        out = []
        for rec in source.to_dict("records"):
            out.append({k: v for k, v in rec.items() if not _missing(v)})
        return out
    if isinstance(source, (bytes, bytearray)):
        raise TypeError("pass a path, a list of examples or a DataFrame (not raw bytes)")
    return [dict(r) if isinstance(r, Mapping) else r for r in source]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _jsonl_bytes(records: Iterable) -> bytes:
    """The bytes ftkit.data.write_jsonl would write: the same examples give the same hash."""
    lines = []
    for n, rec in enumerate(records, start=1):
        try:
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(", ", ": ")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"example {n} cannot be written as JSON: {e}") from None
    return "".join(line + "\n" for line in lines).encode("utf-8")


def file_sha256(source) -> str:
    """The SHA-256 of what :func:`upload` would send for ``source`` (path, list or DataFrame)."""
    records = _records_of(source)
    if records is None:
        return sha256_file(Path(source))
    return hashlib.sha256(_jsonl_bytes(records)).hexdigest()


def _record_path() -> Path:
    env = os.environ.get("FTKIT_UPLOADS_RECORD")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ftkit" / "uploads.json"


_record_lock = threading.Lock()


def _read_record() -> dict:
    try:
        data = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": 1, "backends": {}}
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        return {"version": 1, "backends": {}}
    return data


def _write_record(data: dict) -> None:
    path = _record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only home: reuse is an optimisation, never a reason to fail
        pass


def _backend_key(client) -> str:
    url = str(getattr(client, "base_url", "") or backend_of(client).base_url or "")
    return url.rstrip("/")


def _remember(client, sha: str, entry: dict) -> None:
    with _record_lock:
        data = _read_record()
        data["backends"].setdefault(_backend_key(client), {})[sha] = entry
        _write_record(data)


def _forget(client, file_ids: Iterable[str]) -> None:
    ids = set(file_ids)
    with _record_lock:
        data = _read_record()
        entries = data["backends"].get(_backend_key(client), {})
        for sha in [s for s, e in entries.items() if e.get("file_id") in ids]:
            del entries[sha]
        _write_record(data)


def _recorded_by_id(client, file_id: str) -> dict | None:
    for entry in _read_record()["backends"].get(_backend_key(client), {}).values():
        if entry.get("file_id") == file_id:
            return entry
    return None


def _validate_for(source, model: str, min_examples: int, method: str | None = None,
                  grader: Mapping | None = None) -> ValidationReport:
    """ftkit's validator with ``model``'s tokenizer and per-example limit (an o200k_base estimate
    for models without a tiktoken encoding, such as the local SmolLM2); for reinforcement files,
    with the fields the grader reads."""
    from ..validation import validate

    fields: set[str] = set()
    if grader is not None:
        from .. import graders

        fields = graders.compile_grader(dict(grader)).item_fields()  # a bad grader: GraderError naming the field
    kw = {"min_examples": min_examples, "method": method, "grader_fields": fields}
    try:
        entry = catalog.lookup(model)
    except catalog.UnknownCatalogModel:
        return validate(source, **kw)
    if entry.encoding:
        return validate(source, entry.snapshot, **kw)
    return validate(source, None, encoding="o200k_base", max_example_tokens=entry.max_example_tokens, **kw)


def _token_stats(report: ValidationReport) -> dict:
    totals = list(report.total_tokens)
    limit = report.max_example_tokens
    return {
        "n_examples": len(totals),
        "raw_tokens_per_epoch": int(sum(totals)),
        "tokens_per_epoch": report.billed_tokens(1),
        "max_example_tokens_seen": max(totals, default=0),
        "limit": limit,
        "truncated_examples": sum(1 for t in totals if limit and t > limit),
        "encoding": report.encoding,
    }


def upload(
    client,
    source,
    *,
    purpose: str = "fine-tune",
    model: str | None = None,
    validate: bool = True,
    min_examples: int = 10,
    filename: str | None = None,
    method: str | None = None,
    grader: Mapping | None = None,
    verbose: bool = True,
):
    """Upload a fine-tuning file -- validated first, and only once.

    ``source`` is a JSONL path, a list of example dicts or a DataFrame of examples (one column
    per top-level key, e.g. ``messages``). With ``validate`` (the default for ``purpose
    "fine-tune"``) ftkit's validator checks it with ``model``'s tokenizer and limits (default:
    the backend's base model); on errors nothing is uploaded and :class:`UploadRefused` says why
    (the validator's summary). Pass ``min_examples=1`` for a small validation file. For a
    reinforcement fine-tuning file pass ``method="reinforcement"`` and the job's ``grader``: each
    line must end with a user turn and carry every field the grader reads (``{{ item.x }}``).

    If a file with the same content (SHA-256) was uploaded to this API before, and
    ``files.retrieve`` confirms it still exists with the same size and purpose, that file is
    returned instead of a new upload. One printed line says which happened; the returned
    ``FileObject`` also carries ``.reused`` (True/False) and ``.sha256``.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import openai

    records = _records_of(source)
    if records is None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        content, name = path.read_bytes(), filename or path.name
    else:
        content, name = _jsonl_bytes(records), filename or "examples.jsonl"
    sha = hashlib.sha256(content).hexdigest()
    model = model or backend_of(client).base_model
    stats: dict = {}
    report = None
    if validate and purpose == "fine-tune":
        report = _validate_for(path if records is None else records, model, min_examples, method, grader)
        if records is not None:
            report.source = name
        if not report.ok:
            raise UploadRefused(report)
        stats = _token_stats(report)
        stats["model"] = model

    recorded = _read_record()["backends"].get(_backend_key(client), {}).get(sha)
    if recorded:
        try:
            existing = client.files.retrieve(recorded["file_id"])
        except openai.NotFoundError:
            existing = None
        if (existing is not None and existing.bytes == len(content) and existing.purpose == purpose
                and getattr(existing, "status", None) not in ("error", "deleted")):
            existing.reused, existing.sha256 = True, sha
            if stats and not recorded.get("n_examples"):
                _remember(client, sha, {**recorded, **stats})
            if verbose:
                when = _local_time(recorded.get("uploaded_at"))
                print(f"{existing.id}: reused -- identical to {name} (sha256 {sha[:12]}...), uploaded "
                      f"{when:%Y-%m-%d %H:%M} as {recorded.get('filename', existing.filename)}; nothing sent")
            return existing
        _forget(client, [recorded["file_id"]])

    created = client.files.create(file=(name, content), purpose=purpose)
    _remember(client, sha, {"file_id": created.id, "bytes": len(content), "filename": name, "purpose": purpose,
                            "uploaded_at": int(time.time()), **stats})
    created.reused, created.sha256 = False, sha
    if verbose:
        what = f", {stats['n_examples']:,} examples" if stats else ""
        warn = f", {len(report.warnings)} validation warning(s)" if report is not None and report.warnings else ""
        print(f"{created.id}: uploaded {name} ({len(content):,} bytes{what}{warn}; sha256 {sha[:12]}...)")
    return created

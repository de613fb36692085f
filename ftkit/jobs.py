"""The fine-tuning job lifecycle, one clear call per step: upload, create, watch, read, use, clean up.

Taught in notebooks/04_job_lifecycle.ipynb.

Every function takes an ``openai.OpenAI`` client -- ftkit's local server (``ftkit.client()``),
the hosted OpenAI API or Azure OpenAI -- and speaks only the public fine-tuning API, so the same
code runs on all three.

* :func:`upload` validates a file (or a list / DataFrame of examples) with ftkit's validator,
  refuses bad data with the validator's summary, and reuses an identical file uploaded before
  (same SHA-256) instead of uploading it twice. The API does not expose file hashes, so ftkit
  keeps a small local record (``~/.cache/ftkit/uploads.json``, or ``FTKIT_UPLOADS_RECORD``):
  sha256 -> file id, per API base URL, confirmed with ``files.retrieve`` before each reuse.
* :func:`estimate` and :func:`create_job`: the billed tokens x epochs x price (ftkit.cost) and
  whether the model can still be trained (ftkit.catalog) are shown before anything is created;
  on a paid backend a job above ``max_cost_usd`` is refused unless ``allow_over_budget=True``.
  The local backend has no price: its cost is CPU time.
* :func:`watch`: a progress bar over training steps, the status, new events as they arrive and
  the estimated finish, until the job ends (or is paused). Interrupting it stops the watching,
  never the job.
* :func:`events`, :func:`checkpoints`, :func:`results` (plain or base64 CSV) as DataFrames,
  :func:`plot_metrics`, :func:`best_checkpoint`; :func:`ask_models` calls the fine-tuned model
  and its checkpoints side by side.
* :func:`cancel`, :func:`pause`, :func:`resume`, :func:`recent_jobs`, :func:`cleanup` (files and
  fine-tuned models, never base models; a dry run unless told otherwise).
* :func:`monitor` / :class:`JobMonitor`: a live ipywidgets dashboard that does not block the
  kernel, with a static copy of the final state for exported HTML and CI.

Refusals (bad data, over budget, a model that can no longer be trained) raise subclasses of
:class:`JobsError`, which notebooks show as their message alone, without a traceback.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import catalog, lifecycle
from .backend import backend_of
from .validation import InvalidTrainingFile, ValidationReport

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "JobEstimate",
    "JobMonitor",
    "JobsError",
    "ModelUnavailable",
    "NotReady",
    "OverBudget",
    "StoppedWatching",
    "UploadRefused",
    "WatchTimeout",
    "ask_models",
    "best_checkpoint",
    "cancel",
    "checkpoints",
    "cleanup",
    "create_job",
    "estimate",
    "events",
    "method_of_metrics",
    "file_sha256",
    "find_job",
    "monitor",
    "parse_results",
    "pause",
    "plot_metrics",
    "recent_jobs",
    "results",
    "resume",
    "step_metrics_from_events",
    "upload",
    "watch",
]

# The job vocabulary is shared with the local server (one home: ftkit.lifecycle).
TERMINAL_STATUSES = lifecycle.TERMINAL_STATUSES
ACTIVE_STATUSES = lifecycle.ACTIVE_STATUSES
KNOWN_STATUSES = lifecycle.KNOWN_STATUSES
COMPLETED_MESSAGE = lifecycle.COMPLETED  # the local server's last event (data: cpu time)
RESULT_COLUMNS = lifecycle.RESULT_COLUMNS[lifecycle.SUPERVISED]
CHECKPOINT_METRICS = lifecycle.CHECKPOINT_METRICS
#: Checkpoint metrics of a DPO job: the last step's (as in its results file) and the full-validation
#: figures (``full_valid_loss``, ``full_valid_reward_margin`` ...).
DPO_CHECKPOINT_METRICS = [
    *(c for c in lifecycle.RESULT_COLUMNS[lifecycle.DPO] if c != lifecycle.STEP),
    lifecycle.FULL_VALID_LOSS, *(lifecycle.dpo_metric("full_valid", q) for q in lifecycle.DPO_QUANTITIES),
]
#: Checkpoint metrics of a reinforcement (RFT) job: the last step's and the whole validation file
#: answered greedily and graded (``full_valid_reward_mean`` ...).
RFT_CHECKPOINT_METRICS = [
    *(c for c in lifecycle.RESULT_COLUMNS[lifecycle.REINFORCEMENT] if c != lifecycle.STEP),
    *(f"full_valid_{q}" for q in lifecycle.RFT_QUANTITIES),
]
_TRANSIENT = ("APIConnectionError", "APITimeoutError", "InternalServerError", "RateLimitError")


# ---------------------------------------------------------------------------------------------
# Errors: refusals with a readable message (no traceback in notebooks)


class JobsError(Exception):
    """A refusal or a problem ftkit.jobs explains in its message.

    In IPython/Jupyter only the message is shown (``_render_traceback_``), not a traceback: the
    problem is in the data or the settings, not in the code that called us.
    """

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines() or [""]
        return [f"{type(self).__name__}: {lines[0]}", *lines[1:]]


class UploadRefused(JobsError, InvalidTrainingFile):
    """The file has validation errors: nothing was uploaded. ``.report`` holds every problem."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        ValueError.__init__(
            self,
            f"nothing was uploaded: {report.source} has {len(report.errors)} error(s). Fix them and upload "
            f"again.\n{report.summary(max_lines=3).rstrip()}",
        )


class OverBudget(JobsError):
    """The estimated training cost is above ``max_cost_usd``: no job was created."""

    def __init__(self, message: str, estimate: JobEstimate | None = None) -> None:
        super().__init__(message)
        self.estimate = estimate


class ModelUnavailable(JobsError):
    """The hosted platform no longer trains this model (ftkit.catalog.availability): no job was created."""

    def __init__(self, message: str, availability: catalog.Availability | None = None) -> None:
        super().__init__(message)
        self.availability = availability


class NotReady(JobsError):
    """Asked for something a job does not have yet (e.g. the results file of a running job)."""


class WatchTimeout(JobsError, TimeoutError):
    """:func:`watch` gave up waiting; the job itself keeps running. ``.job`` is its last state."""

    def __init__(self, message: str, job=None) -> None:
        super().__init__(message)
        self.job = job


class StoppedWatching(KeyboardInterrupt):
    """Ctrl-C / "interrupt the kernel" during :func:`watch`: watching stopped, the job did not.

    A ``KeyboardInterrupt`` (so "Run all" stops there too), shown in notebooks as its message only.
    ``.job`` is the job's last known state.
    """

    def __init__(self, message: str, job=None) -> None:
        super().__init__(message)
        self.job = job

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


# ---------------------------------------------------------------------------------------------
# Small helpers


def _job_id(job) -> str:
    value = job if isinstance(job, str) else getattr(job, "id", None)
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a fine-tuning job or its id, got {job!r}")
    return value


def _file_id(f) -> str:
    value = f if isinstance(f, str) else getattr(f, "id", None)
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a file object or a file id, got {f!r}")
    return value


def _as_dict(obj) -> dict:
    """SDK objects, dicts and None as a plain dict (extra fields included)."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        # warnings off: the SDK's types cannot hold every valid value (a multi grader's object of
        # named graders, as OpenAI's graders guide writes it), and the dict is right regardless
        return obj.model_dump(warnings=False)
    return dict(getattr(obj, "__dict__", {}))


def _local_time(ts) -> dt.datetime | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(int(ts))


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def _usd(x: float | None) -> str:
    from .cost import _usd as fmt

    return fmt(x)


def _is_transient(error: Exception) -> bool:
    return type(error).__name__ in _TRANSIENT


def _api_call(what: str, fn, *args, **kwargs):
    """Call the API; a 4xx refusal becomes a JobsError with the server's own message."""
    import openai

    try:
        return fn(*args, **kwargs)
    except (openai.BadRequestError, openai.NotFoundError, openai.ConflictError,
            openai.PermissionDeniedError, openai.UnprocessableEntityError) as e:
        message = e.body.get("message") if isinstance(e.body, dict) else None
        raise JobsError(f"{what}: {message or e}") from None


# ---------------------------------------------------------------------------------------------
# Uploads: validate, hash, reuse


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
        return _sha256_path(Path(source))
    return hashlib.sha256(_jsonl_bytes(records)).hexdigest()


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
    from .validation import validate

    fields: set[str] = set()
    if grader is not None:
        from . import graders

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


# ---------------------------------------------------------------------------------------------
# Estimates and job creation


@dataclass(frozen=True)
class JobEstimate:
    """What a job will train and cost, worked out before it is created.

    ``usd`` is None on the local backend (no price: its cost is CPU time) and when the model has
    no price in ftkit's catalog. ``tokens_per_epoch`` is None when the file's size is unknown.
    """

    model: str
    backend: str
    paid: bool
    n_examples: int | None
    tokens_per_epoch: int | None
    n_epochs: int | None
    epochs_from: str
    usd_per_1m: float | None
    usd: float | None
    counted_with: str
    availability: catalog.Availability | None
    notes: tuple[str, ...] = field(default=())

    @property
    def billed_tokens(self) -> int | None:
        if self.tokens_per_epoch is None or self.n_epochs is None:
            return None
        return self.tokens_per_epoch * self.n_epochs

    def lines(self) -> list[str]:
        out = []
        if self.tokens_per_epoch is None:
            out.append(f"Estimate for {self.model}: unknown size (pass training_data= to count it)")
        else:
            sum_line = (f"{self.tokens_per_epoch:,} tokens per epoch x {self.n_epochs} epochs ({self.epochs_from}) "
                        f"= {self.billed_tokens:,} trained tokens")
            out.append(f"Estimate for {self.model}: {self.n_examples:,} examples, {sum_line} "
                       f"(counted with {self.counted_with})")
        if not self.paid:
            out.append("Cost: no price on the local backend -- what it costs is CPU time, measured after the run "
                       "(ftkit.cost.local_run_cost_from_job).")
        elif self.usd is not None:
            out.append(f"Cost: {self.billed_tokens:,} x {_usd(self.usd_per_1m)}/1M tokens = {_usd(self.usd)} "
                       "(validation tokens are not billed)")
        else:
            out.append("Cost: unknown (no price or size known for this model)")
        if self.availability is not None:
            out.append(f"Availability: {str(self.availability).splitlines()[0]}")
        out.extend(self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__


def _stats_for(client, data, model: str) -> tuple[dict | None, str]:
    """Token statistics of the training data: from the data itself, from the upload record, or by
    downloading the file (a GET; never for a paid backend's budget check unless nothing else works)."""
    if data is None:
        return None, ""
    if isinstance(data, ValidationReport):
        return _token_stats(data), "the given validation report"
    is_path = isinstance(data, os.PathLike) or (isinstance(data, str) and Path(data).is_file())
    if is_path or isinstance(data, list) or hasattr(data, "columns"):
        source = data if is_path else _records_of(data)
        return _token_stats(_validate_for(source, model, 1)), "the training data"
    file_id = _file_id(data)
    recorded = _recorded_by_id(client, file_id)
    if recorded and recorded.get("n_examples"):
        return recorded, "ftkit's upload record"
    try:
        content = client.files.content(file_id).content
    except Exception:  # the hosted API does not let you download fine-tune files
        return None, ""
    try:
        records = [json.loads(line) for line in content.decode("utf-8-sig").splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError):
        return None, ""
    return _token_stats(_validate_for(records, model, 1)), "the downloaded file"


def estimate(
    client,
    training_data,
    *,
    model: str | None = None,
    n_epochs: int | None = None,
    on: dt.date | str | None = None,
) -> JobEstimate:
    """Trained tokens, epochs, price and availability of a job before creating it.

    ``training_data`` is a JSONL path, a list or DataFrame of examples, a
    :class:`~ftkit.validation.ValidationReport`, or an uploaded file (object or id; its size is
    taken from ftkit's upload record, else by downloading it where the API allows). Tokens are
    counted with the model's tiktoken encoding (an ``o200k_base`` estimate for the local model);
    epochs are ``n_epochs`` or the API's default for the number of examples.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    from . import cost

    backend = backend_of(client)
    model = model or backend.base_model
    notes: list[str] = []
    try:
        entry = catalog.lookup(model, on)
        avail = catalog.availability(model, on)
    except catalog.UnknownCatalogModel:
        entry, avail = None, None
        notes.append(f"{model} is not in ftkit's catalog: no price or availability dates are known.")
    if backend.name == "azure" and avail is not None:
        notes.append("On Azure OpenAI the dates and prices differ from OpenAI's (ftkit's catalog tracks "
                     "OpenAI's); check Azure's model retirement and pricing pages.")
    stats, counted_from = _stats_for(client, training_data, model)
    n_examples = tokens = None
    epochs, why = None, ""
    counted_with = ""
    if stats:
        n_examples = int(stats["n_examples"])
        tokens = int(stats["tokens_per_epoch"])
        limit = entry.max_example_tokens if entry else None
        if limit != stats.get("limit"):  # counted for another model's limit
            if limit is None or stats.get("max_example_tokens_seen", 0) <= limit:
                tokens = int(stats["raw_tokens_per_epoch"])
            else:
                notes.append("Some examples exceed this model's limit: the count is approximate.")
        counted_with = f"{stats.get('encoding') or 'o200k_base'}, from {counted_from}"
        if backend.name == "local" or (entry and entry.backend == "local"):
            counted_with += "; the local trainer counts with its own tokenizer"
        if n_epochs is not None:
            epochs, why = int(n_epochs), "given"
        elif n_examples:
            epochs, why = cost.default_epochs(n_examples), f"the API default for {n_examples:,} examples"
    usd_per_1m = usd = None
    if entry is not None and entry.priced and entry.training_usd_per_1m is not None:
        usd_per_1m = entry.training_usd_per_1m
        if tokens is not None and epochs is not None:
            usd = tokens * epochs * usd_per_1m / 1_000_000
    elif entry is not None and entry.training_usd_per_hour is not None:
        notes.append(f"{entry.snapshot} is billed per training hour ({_usd(entry.training_usd_per_hour)}/hour), "
                     "not per token: the estimate has no dollar figure.")
    return JobEstimate(model, backend.name, backend.paid, n_examples, tokens, epochs, why, usd_per_1m, usd,
                       counted_with, avail, tuple(notes))


_METHOD_HYPERPARAMETERS = {
    lifecycle.SUPERVISED: ("n_epochs", "batch_size", "learning_rate_multiplier"),
    lifecycle.DPO: ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"),
    lifecycle.REINFORCEMENT: ("n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier",
                              "eval_interval", "eval_samples", "reasoning_effort"),
}


def _hyperparameters(hyperparameters: Mapping | None, method: str = lifecycle.SUPERVISED, **given) -> dict:
    hp = dict(hyperparameters or {})
    known = _METHOD_HYPERPARAMETERS[method]
    unknown = set(hp) - set(known) | {k for k, v in given.items() if v is not None and k not in known}
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for the {method} method: use "
                         + ", ".join(known))
    for name, value in given.items():
        if value is not None:
            hp[name] = value
    return {k: v for k, v in hp.items() if v is not None and v != "auto"}


def create_job(
    client,
    training_file,
    *,
    model: str | None = None,
    validation_file=None,
    n_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    hyperparameters: Mapping | None = None,
    method: str = "supervised",
    beta: float | None = None,
    grader: Mapping | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: Mapping[str, str] | None = None,
    max_cost_usd: float | None = None,
    allow_over_budget: bool = False,
    check_availability: bool = True,
    training_data=None,
    verbose: bool = True,
):
    """Create a fine-tuning job, after showing what it will cost.

    ``training_file`` / ``validation_file`` are uploaded files (objects or ids, see
    :func:`upload`). ``model`` defaults to the backend's base model; it may be a fine-tuned model
    (e.g. DPO on top of a supervised model). ``method``: ``"supervised"`` (chat examples),
    ``"dpo"`` (preference pairs) or ``"reinforcement"`` (prompts with grader fields; ``grader`` is
    then required). Hyperparameters (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``,
    for DPO also ``beta``, for reinforcement ``compute_multiplier``, ``eval_interval`` ... in a
    ``hyperparameters`` dict; unset ones are "auto") go in ``method={"type": method, method:
    {"hyperparameters": ...}}``, not in the deprecated top-level field.

    Before anything is created the estimate is printed (see :func:`estimate`: billed tokens x
    epochs x price; on the local backend the cost is CPU time) with the model's availability. On
    a paid backend:

    * a model the platform no longer trains (``ftkit.catalog.availability``: training closed,
      shut down, not yet offered) is refused with :class:`ModelUnavailable` (``check_availability=
      False`` skips the check, e.g. when ftkit's catalog is out of date); a *restricted* platform is
      a warning -- whether you may train depends on your organization;
    * with ``max_cost_usd``, an estimate above it (or an estimate that cannot be made) is refused
      with :class:`OverBudget` unless ``allow_over_budget=True``. Both refusals happen before any
      request is sent.

    Returns the ``FineTuningJob``. Taught in notebooks/04_job_lifecycle.ipynb.
    """
    backend = backend_of(client)
    model = model or backend.base_model
    for given in (training_file, validation_file):
        if isinstance(given, os.PathLike) or (isinstance(given, str) and not given.startswith("file")
                                              and Path(given).exists()):
            raise JobsError(f"{given} is a local file: upload it first (file = ftkit.jobs.upload(client, path)) and "
                            "pass the uploaded file")
    if method not in _METHOD_HYPERPARAMETERS:
        raise ValueError(f"method must be one of {', '.join(_METHOD_HYPERPARAMETERS)}, not {method!r}")
    train_id = _file_id(training_file)
    valid_id = _file_id(validation_file) if validation_file is not None else None
    if (method == lifecycle.REINFORCEMENT) != (grader is not None):
        raise ValueError("a reinforcement job needs a grader (grader={...}), and only a reinforcement job takes one")
    hp = _hyperparameters(hyperparameters, method, n_epochs=n_epochs, batch_size=batch_size,
                          learning_rate_multiplier=learning_rate_multiplier, beta=beta)
    est = estimate(client, training_data if training_data is not None else train_id, model=model,
                   n_epochs=hp.get("n_epochs"))
    if verbose:
        print(est)
    avail = est.availability
    if backend.paid and check_availability and avail is not None and backend.name == "openai":
        if avail.status in ("training_closed", "shut_down", "not_yet"):
            raise ModelUnavailable(
                f"no job created: {avail.snapshot} cannot be fine-tuned on {avail.on} -- {avail.reason}\n"
                "(check_availability=False skips this check if ftkit's catalog is out of date)", avail)
        if avail.status == "restricted" and verbose:
            print(f"Warning: {avail.reason}")
    if backend.paid and max_cost_usd is not None and not allow_over_budget:
        if est.usd is None:
            raise OverBudget(f"no job created: the cost cannot be estimated for {model} (unknown price or size), so "
                             f"the {_usd(max_cost_usd)} budget cannot be checked. Pass training_data= to count the "
                             "file, or allow_over_budget=True.", est)
        if est.usd > max_cost_usd:
            raise OverBudget(f"no job created: the estimate {_usd(est.usd)} is above max_cost_usd="
                             f"{_usd(max_cost_usd)}. Train on fewer examples or epochs, raise the budget, or pass "
                             "allow_over_budget=True.", est)
    settings: dict[str, Any] = {"hyperparameters": hp} if hp else {}
    if grader is not None:
        settings = {"grader": dict(grader), **settings}
    kwargs: dict[str, Any] = {"model": model, "training_file": train_id,
                              "method": {"type": method, method: settings}}
    for name, value in (("validation_file", valid_id), ("suffix", suffix), ("seed", seed),
                        ("metadata", dict(metadata) if metadata else None)):
        if value is not None:
            kwargs[name] = value
    job = _api_call("the API refused the job", client.fine_tuning.jobs.create, **kwargs)
    if verbose:
        print(f"Created {job.id} on {job.model}: {job.status}")
    return job


# ---------------------------------------------------------------------------------------------
# Watching


class _EventFeed:
    """New events of a job, oldest first, each exactly once (the API lists newest first)."""

    def __init__(self, client, job_id: str) -> None:
        self.client, self.job_id = client, job_id
        self.seen: set[str] = set()

    def poll(self) -> list:
        fresh = []
        after = None
        while True:
            kwargs = {"limit": 100}
            if after:
                kwargs["after"] = after
            page = self.client.fine_tuning.jobs.list_events(self.job_id, **kwargs)
            data = list(page.data)
            stop = False
            for event in data:
                if event.id in self.seen:
                    stop = True
                    break
                fresh.append(event)
            if stop or not data or not getattr(page, "has_more", False):
                break
            after = data[-1].id
        fresh.reverse()
        self.seen.update(e.id for e in fresh)
        return fresh


def _metric_data(event) -> dict | None:
    """The step metrics of a metrics event (``step``, ``train_loss``, ``total_steps`` ...), else None."""
    data = _as_dict(getattr(event, "data", None))
    if getattr(event, "type", None) == "metrics" and "step" in data and "train_loss" in data:
        return data
    return None


def _preference_parts(metrics: Mapping) -> list[str]:
    """The method's own figures of a step's metrics, short: DPO ("margin 0.42", "pref. acc.
    0.80"), reinforcement ("reward 0.62 ± 0.21", "valid. reward 0.70"); [] for supervised jobs."""
    parts = []
    for key, label in (("train_reward_margin", "margin"), ("train_preference_accuracy", "pref. acc.")):
        if metrics.get(key) is not None:
            parts.append(f"{label} {float(metrics[key]):.2f}")
    if metrics.get("train_reward_mean") is not None:
        spread = metrics.get("train_reward_std")
        parts.append(f"reward {float(metrics['train_reward_mean']):.2f}"
                     + (f" ± {float(spread):.2f}" if spread is not None else ""))
    if metrics.get("valid_reward_mean") is not None:
        parts.append(f"valid. reward {float(metrics['valid_reward_mean']):.2f}")
    return parts


def _event_line(event) -> str:
    when = _local_time(getattr(event, "created_at", None))
    level = getattr(event, "level", "info") or "info"
    tag = "" if level == "info" else f"{level.upper()}  "
    return f"{when:%H:%M:%S}  {tag}{event.message}" if when else f"{tag}{event.message}"


def _finish_text(job) -> str:
    eta = getattr(job, "estimated_finish", None)
    if not eta:
        return ""
    left = eta - time.time()
    return f"finish ~{_local_time(eta):%H:%M:%S} (in {_duration(left)})" if left > 0 else "finishing"


def _is_finished(job) -> bool:
    return job.status in TERMINAL_STATUSES or (job.status not in ACTIVE_STATUSES and job.finished_at is not None)


def watch(
    client,
    job,
    *,
    poll: float | None = None,
    timeout: float | None = None,
    print_events: bool = True,
    metrics_every: int | None = None,
    return_when_paused: bool = True,
):
    """Follow a job until it ends: a progress bar over training steps, the status, new events as
    they arrive, the estimated finish. Returns the final ``FineTuningJob``.

    * The bar (``tqdm.auto``) appears with the first metrics event, whose ``total_steps`` sets
      its length; its label shows the status, the latest training loss and the estimated finish.
    * Events are printed once each, oldest first. Metrics events ("Step 12/99: training
      loss=...") move the bar; one in ``metrics_every`` is printed (default: about ten per job).
    * Returns when the job succeeded, failed or was cancelled -- and, by default, when it is
      **paused**: a paused job does not move until someone resumes it, so waiting would hang the
      cell. Call :func:`resume`, then ``watch`` again (``return_when_paused=False`` waits instead).
    * A status ftkit does not know (the API adds some, e.g. ``paused`` appeared after the SDK's
      list) is shown and watched like a running one; a job with ``finished_at`` set is finished.
    * **Ctrl-C / interrupting the cell stops the watching, not the job**: it keeps training on the
      server. :class:`StoppedWatching` (a ``KeyboardInterrupt``) says so and how to come back.
      ``timeout`` (seconds) raises :class:`WatchTimeout` in the same spirit.
    * Network hiccups and server errors while polling are retried with a growing pause.

    ``poll``: seconds between checks (default 2 on the local backend, 10 on hosted ones).

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    from tqdm.auto import tqdm

    job_id = _job_id(job)
    poll = poll if poll is not None else (2.0 if not backend_of(client).paid else 10.0)
    feed = _EventFeed(client, job_id)
    started = time.monotonic()
    bar = None
    last_status = None
    last_metrics: dict = {}
    failures = 0
    shown_postfix = ""
    current = job if not isinstance(job, str) else None

    def say(line: str) -> None:
        if print_events:
            (bar.write if bar is not None else print)(line)

    try:
        while True:
            try:
                current = client.fine_tuning.jobs.retrieve(job_id)
                new = feed.poll()
                failures = 0
            except Exception as e:
                if not _is_transient(e):
                    raise
                failures += 1
                wait = min(60.0, poll * 2 ** min(failures, 5))
                say(f"(could not reach the API: {type(e).__name__}; retrying in {wait:.0f} s -- the job is unaffected)")
                time.sleep(wait)
                continue
            for event in new:
                data = _metric_data(event)
                if data is None:
                    say(_event_line(event))
                    continue
                last_metrics = data
                total = data.get("total_steps")
                if bar is None and total:
                    bar = tqdm(total=int(total), desc=job_id, unit="step", dynamic_ncols=True)
                    every = metrics_every or max(1, int(total) // 10)
                if bar is not None:
                    if total and bar.total != int(total):
                        bar.total = int(total)
                    bar.update(max(0, int(data["step"]) - bar.n))
                    step = int(data["step"])
                    if step % every == 0 or step == bar.total or "valid_loss" in data or "valid_reward_mean" in data:
                        say(_event_line(event))
            status = current.status
            if status != last_status:
                if status not in KNOWN_STATUSES:
                    say(f"status: {status} (a status ftkit does not know; shown as is, still watching)")
                elif bar is None:
                    say(f"status: {status}")
                last_status = status
            if bar is not None:
                parts = [status]
                if "train_loss" in last_metrics:
                    parts.append(f"loss {float(last_metrics['train_loss']):.3f}")
                parts += _preference_parts(last_metrics)
                eta = getattr(current, "estimated_finish", None)
                if eta and status not in TERMINAL_STATUSES:
                    parts.append(f"finish ~{_local_time(eta):%H:%M}")
                postfix = " | ".join(parts)
                if postfix != shown_postfix:  # redraw only on change: logs stay short where there is no TTY
                    bar.set_postfix_str(postfix, refresh=True)
                    shown_postfix = postfix
            if _is_finished(current):
                break
            if status == "paused" and return_when_paused:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise WatchTimeout(
                    f"stopped watching {job_id} after {_duration(timeout)}; the job keeps going on the server "
                    f"(status {status}). Watch again with ftkit.jobs.watch(client, '{job_id}').", current)
            time.sleep(poll)
    except KeyboardInterrupt:
        status = current.status if current is not None else "unknown"
        raise StoppedWatching(
            f"Stopped watching {job_id}. The job itself keeps going on the server (status: {status}).\n"
            f"Watch again with ftkit.jobs.watch(client, '{job_id}'), or stop it with "
            f"ftkit.jobs.cancel(client, '{job_id}').", current) from None
    finally:
        if bar is not None:
            if current is not None and current.status == lifecycle.SUCCEEDED and bar.total:
                bar.update(bar.total - bar.n)
            bar.close()
    _print_outcome(current, time.monotonic() - started)
    return current


def _print_outcome(job, waited: float) -> None:
    took = (job.finished_at - job.created_at) if job.finished_at and job.created_at else None
    if job.status == lifecycle.SUCCEEDED:
        print(f"{job.id} succeeded in {_duration(took)}: {job.fine_tuned_model}")
    elif job.status == "failed":
        error = _as_dict(job.error)
        print(f"{job.id} failed: {error.get('message') or error or 'no reason given'}")
    elif job.status == lifecycle.CANCELLED:
        print(f"{job.id} was cancelled")
    elif job.status == "paused":
        print(f"{job.id} is paused: it will not move until resumed -- ftkit.jobs.resume(client, '{job.id}'), "
              "then watch it again")
    else:
        print(f"{job.id} ended with status {job.status!r}")


# ---------------------------------------------------------------------------------------------
# Reading a job: events, checkpoints, results


def events(client, job, *, limit: int | None = None):
    """Every event of a job as a DataFrame, oldest first: ``created_at`` (local time), ``level``,
    ``type``, ``message``, ``step`` (metrics events), ``data`` (dict) and ``id``. ``limit``: only
    the newest ``limit`` events.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    job_id = _job_id(job)
    rows = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=min(100, limit or 100)):
        data = _as_dict(getattr(event, "data", None))
        rows.append((_local_time(event.created_at), event.level, getattr(event, "type", None) or "message",
                     event.message, data.get("step"), data, event.id))
        if limit is not None and len(rows) >= limit:
            break
    rows.reverse()
    df = pd.DataFrame(rows, columns=["created_at", "level", "type", "message", "step", "data", "id"])
    df["step"] = df["step"].astype("Int64")
    return df


def method_of_metrics(keys: Iterable[str]) -> str:
    """Which fine-tuning method's metrics these are (``"supervised"``, ``"dpo"`` or
    ``"reinforcement"``), from metric keys or results-file columns: DPO jobs report
    ``train_reward_margin`` and the other quantities of :data:`ftkit.lifecycle.DPO_QUANTITIES`,
    reinforcement jobs ``train_reward_mean`` ..., supervised jobs neither.

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    keys = set(keys)
    splits = ("train", "valid", "full_valid")
    if any(f"{split}_{q}" in keys for split in splits for q in lifecycle.DPO_QUANTITIES):
        return lifecycle.DPO
    if any(f"{split}_{q}" in keys for split in splits for q in lifecycle.RFT_QUANTITIES):
        return lifecycle.REINFORCEMENT
    return lifecycle.SUPERVISED


def step_metrics_from_events(events_df, method: str | None = None):
    """The step metrics carried by metrics events (available while a job runs, before its results
    file exists), with the results file's columns for the job's method: ``step, train_loss,
    train_accuracy, valid_loss, valid_mean_token_accuracy`` for supervised jobs; ``step,
    train_loss, train_reward_margin, train_preference_accuracy, train_chosen_reward,
    train_rejected_reward, valid_loss, valid_reward_margin ...`` for DPO jobs. ``method`` defaults
    to what the events carry (:func:`method_of_metrics`).

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb).
    """
    import pandas as pd

    found = [data for data in events_df["data"] if isinstance(data, dict) and "step" in data and "train_loss" in data]
    method = method or method_of_metrics(k for data in found for k in data)
    columns = lifecycle.RESULT_COLUMNS[method]
    rows = []
    for data in found:
        if method == lifecycle.SUPERVISED:
            rows.append({
                "step": int(data["step"]), "train_loss": data.get("train_loss"),
                "train_accuracy": data.get("train_mean_token_accuracy", data.get("train_accuracy")),
                "valid_loss": data.get("valid_loss"),
                "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
            })
        else:  # the other methods' events carry the results file's own names
            rows.append({c: int(data["step"]) if c == lifecycle.STEP else data.get(c) for c in columns})
    df = pd.DataFrame(rows, columns=columns)
    if len(df):
        df = df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    for c in columns[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _method_of_job(job) -> str | None:
    """The method type of a job object (None for a bare id or a job without ``method``)."""
    kind = _as_dict(getattr(job, "method", None)).get("type") if not isinstance(job, str) else None
    return kind if kind in lifecycle.METHODS else None


def checkpoints(client, job, method: str | None = None):
    """A job's checkpoints as a DataFrame, by step: ``step``, ``checkpoint`` (a model name you can
    call), the metrics at that step, ``created_at`` and ``id``. The API keeps the last three
    epochs' checkpoints.

    The metric columns follow the job's method: for supervised jobs the hosted checkpoint's
    (``train_loss`` ... ``full_valid_loss``, ``full_valid_mean_token_accuracy``); for DPO jobs
    :data:`DPO_CHECKPOINT_METRICS` (``train_loss``, ``train_reward_margin`` ...,
    ``full_valid_loss``, ``full_valid_reward_margin``, ``full_valid_preference_accuracy`` ...); for
    reinforcement jobs :data:`RFT_CHECKPOINT_METRICS` (``train_reward_mean`` ...,
    ``full_valid_reward_mean``, ``full_valid_reward_std`` ...).
    ``method`` defaults to the job object's, else to what the metrics carry.

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb).
    """
    import pandas as pd

    found = []
    for ckpt in client.fine_tuning.jobs.checkpoints.list(_job_id(job), limit=100):
        found.append((ckpt, _as_dict(ckpt.metrics)))
    method = method or _method_of_job(job) or method_of_metrics(k for _, m in found for k in m)
    metric_columns = {lifecycle.DPO: DPO_CHECKPOINT_METRICS,
                      lifecycle.REINFORCEMENT: RFT_CHECKPOINT_METRICS}.get(method, CHECKPOINT_METRICS)
    rows = [{"step": ckpt.step_number, "checkpoint": ckpt.fine_tuned_model_checkpoint,
             **{k: metrics.get(k) for k in metric_columns},
             "created_at": _local_time(ckpt.created_at), "id": ckpt.id} for ckpt, metrics in found]
    df = pd.DataFrame(rows, columns=["step", "checkpoint", *metric_columns, "created_at", "id"])
    for c in metric_columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.sort_values("step").reset_index(drop=True)


def _higher_is_better(metric: str) -> bool:
    """Accuracies, reward margins, chosen rewards and mean rewards (RFT) should rise; losses and
    rejected rewards fall."""
    return "accuracy" in metric or metric.endswith(("reward_margin", "chosen_reward", "reward_mean"))


def best_checkpoint(checkpoints_df, metric: str = "full_valid_loss"):
    """The checkpoint row with the lowest ``metric`` (a loss) -- or the highest, for an accuracy
    or a DPO reward margin, or an RFT mean reward (``full_valid_reward_mean``).

    Full validation loss (the whole validation file, computed at each checkpoint) is the fairest
    single number for choosing: the per-step ``valid_loss`` is measured on a small batch only.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    if checkpoints_df is None or not len(checkpoints_df):
        raise NotReady("no checkpoints to choose from (the job has not finished an epoch yet)")
    values = checkpoints_df[metric].dropna()
    if values.empty:
        raise NotReady(f"no checkpoint has {metric} (was a validation file given?)")
    best = values.idxmax() if _higher_is_better(metric) else values.idxmin()
    return checkpoints_df.loc[best]


def parse_results(content: bytes | str):
    """A results file's content as a DataFrame: plain CSV, or CSV encoded in base64 (as the hosted
    API sometimes returns it), with the file's own columns: for a supervised job ``step``,
    ``train_loss``, ``train_accuracy``, ``valid_loss``, ``valid_mean_token_accuracy``; for a DPO
    job ``step``, ``train_loss``, ``train_reward_margin``, ``train_preference_accuracy``,
    ``train_chosen_reward``, ``train_rejected_reward`` and the same with ``valid_``
    (:data:`ftkit.lifecycle.RESULT_COLUMNS`; :func:`method_of_metrics` tells them apart). Numbers
    as numbers, missing values as NaN.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    text = lifecycle.results_csv(content)
    if text is None:
        raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        raise JobsError("the results file is neither CSV nor base64-encoded CSV "
                        f"(it starts with {raw[:40]!r})")
    df = pd.read_csv(io.StringIO(text))
    df.columns = [str(c).strip() for c in df.columns]
    for c in df.columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if "step" in df.columns:
        df = df.dropna(subset=["step"]).astype({"step": int}).sort_values("step").reset_index(drop=True)
    return df


def results(client, job_or_file):
    """The step metrics of a finished job (its results file) as a DataFrame -- see
    :func:`parse_results`; plain and base64-encoded CSV both work. Pass the job (object or id)
    or the results file's id. A job that has not succeeded yet has no results file: its metrics
    events are in :func:`events` meanwhile.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    ref = job_or_file if isinstance(job_or_file, str) else getattr(job_or_file, "id", None)
    if isinstance(ref, str) and ref.startswith("file"):
        file_id = ref
    else:
        job = client.fine_tuning.jobs.retrieve(_job_id(job_or_file))
        if not job.result_files:
            raise NotReady(f"{job.id} is {job.status} and has no results file yet (it comes when the job succeeds); "
                           "meanwhile the step metrics are in ftkit.jobs.events(client, job)")
        file_id = job.result_files[0]
    return parse_results(client.files.content(file_id).content)


def _draw_metric(ax, df, checkpoints_df, *, train_col: str, valid_col: str, full_col: str, name: str,
                 window: int, colours=("C0", "C1", "C3"), checkpoint_lines: bool = True) -> None:
    """One metric on one axis: every training step (with its moving average over ``window``
    steps when ``window``), the validation batches (dots), a dotted line per checkpoint and the
    full validation at checkpoints (squares)."""
    steps = df["step"] if "step" in df else []
    n = len(df)
    train_colour, valid_colour, full_colour = colours
    if train_col in df and df[train_col].notna().any():
        ax.plot(steps, df[train_col], color=train_colour, lw=1, alpha=0.45 if window else 1.0, label=f"train {name}",
                marker="." if n <= 30 else None)
        if window:
            avg = df[train_col].rolling(window, min_periods=1, center=True).mean()
            ax.plot(steps, avg, color=train_colour, lw=2, label=f"train {name} ({window}-step average)")
    if valid_col in df and df[valid_col].notna().any():
        v = df[[valid_col]].assign(step=steps).dropna()
        ax.plot(v["step"], v[valid_col], "o-", color=valid_colour, ms=4, lw=1.2, label=f"validation {name}")
    if checkpoint_lines and checkpoints_df is not None and len(checkpoints_df):
        for i, step in enumerate(checkpoints_df["step"]):
            ax.axvline(step, color="grey", ls=":", lw=1, label="checkpoint" if i == 0 else None)
    if checkpoints_df is not None and len(checkpoints_df) and full_col in checkpoints_df \
            and checkpoints_df[full_col].notna().any():
        c = checkpoints_df[["step", full_col]].dropna()
        ax.plot(c["step"], c[full_col], "s", color=full_colour, ms=7, label=f"full validation {name}")


def _finish_axis(ax, df, *, ylabel: str, title: str, total_steps: int | None) -> None:
    steps = df["step"] if "step" in df else []
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if total_steps:
        ax.set_xlim(0, max(int(total_steps), int(max(steps, default=0))) + 0.5)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_metrics(results_df, checkpoints_df=None, *, title: str | None = None, smooth: int | None = None,
                 total_steps: int | None = None, method: str | None = None):
    """Training curves against step, for the job's method. Returns the matplotlib Figure.

    * **Supervised** (two panels): loss and token accuracy. Lines: ``train loss`` / ``train token
      accuracy`` (every step), ``validation loss`` / ``validation token accuracy`` (measured on a
      validation batch at some steps, dots) and, with ``checkpoints_df``, ``full validation
      loss`` / ``full validation token accuracy`` at each checkpoint (squares, the whole
      validation file).
    * **DPO** (four panels): the DPO loss; the **reward margin** (how much more the model prefers
      the preferred answer than the reference model did: above 0 is the right way); the
      **preference accuracy** (the share of pairs where the preferred answer has the higher
      reward); and the **chosen and rejected rewards** apart -- lines named the same way
      (``train reward margin``, ``validation preference accuracy``, ``full validation reward
      margin`` ...).
    * **Reinforcement** (three panels): the **reward** -- ``train reward`` (the mean grader score
      of the answers sampled at each step) with a band of ± one standard deviation across them,
      ``validation reward`` (greedy answers to ``eval_samples`` validation prompts, every
      ``eval_interval`` steps) and ``full validation reward`` at checkpoints; the **answer
      length** in tokens; and the **grader errors** (answers that could not be scored, e.g.
      invalid JSON for ``output_json``). The policy-gradient loss is not drawn: with advantages
      normalised within each group it stays near 0 whatever the model learns.

    Training lines get a moving average over ``smooth`` steps (default about a twentieth of the
    run) when there are 40 steps or more; a dotted vertical line marks each checkpoint.
    ``total_steps`` fixes the step axis to the whole run (the live monitor's chart then grows from
    left to right). ``method`` defaults to what the columns carry (:func:`method_of_metrics`).

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb;
    reinforcement: notebooks/07_reinforcement_fine_tuning.ipynb).
    """
    from matplotlib.figure import Figure

    df = results_df
    ckpt_columns = list(checkpoints_df.columns) if checkpoints_df is not None else []
    method = method or method_of_metrics([*df.columns, *ckpt_columns])
    n = len(df)
    window = smooth if smooth is not None else (max(3, n // 20) if n >= 40 else 0)
    if method == lifecycle.DPO:
        fig = Figure(figsize=(12, 7.6), layout="constrained")
        axes = [fig.add_subplot(2, 2, i) for i in range(1, 5)]
        panels = ((axes[0], "loss", "DPO loss"), (axes[1], "reward_margin", "Reward margin (chosen - rejected)"),
                  (axes[2], "preference_accuracy", "Preference accuracy"))
        axes[1].axhline(0, color="black", lw=0.8)
        axes[2].axhline(0.5, color="black", lw=0.8, ls="--", label="chance (0.5)")
        axes[3].axhline(0, color="black", lw=0.8)
        for ax, quantity, heading in panels:
            name = quantity.replace("_", " ")
            _draw_metric(ax, df, checkpoints_df, train_col=f"train_{quantity}", valid_col=f"valid_{quantity}",
                         full_col=f"full_valid_{quantity}", name=name, window=window)
            _finish_axis(ax, df, ylabel=name, title=heading, total_steps=total_steps)
        rewards = axes[3]
        for quantity, colour in (("chosen_reward", "C2"), ("rejected_reward", "C3")):
            _draw_metric(rewards, df, checkpoints_df, train_col=f"train_{quantity}", valid_col=f"valid_{quantity}",
                         full_col=f"full_valid_{quantity}", name=quantity.replace("_", " "), window=window,
                         colours=(colour, colour, colour), checkpoint_lines=quantity == "chosen_reward")
        axes[2].set_ylim(-0.02, 1.05)
        _finish_axis(rewards, df, ylabel="reward (beta x log-ratio to the reference)",
                     title="Chosen and rejected rewards", total_steps=total_steps)
    elif method == lifecycle.REINFORCEMENT:
        fig = Figure(figsize=(13, 4.2), layout="constrained")
        reward_ax, length_ax, errors_ax = (fig.add_subplot(1, 3, i) for i in range(1, 4))
        steps = df["step"] if "step" in df else []
        if "train_reward_mean" in df and "train_reward_std" in df and df["train_reward_std"].notna().any():
            # the spread of the sampled answers' rewards around the step's mean: the signal GRPO
            # learns from (a step whose samples all score the same teaches nothing)
            mean, std = df["train_reward_mean"], df["train_reward_std"]
            reward_ax.fill_between(steps, (mean - std).clip(lower=0), (mean + std), color="C0", alpha=0.15,
                                   label="train reward ± std (samples)")
        _draw_metric(reward_ax, df, checkpoints_df, train_col="train_reward_mean", valid_col="valid_reward_mean",
                     full_col="full_valid_reward_mean", name="reward", window=window)
        _finish_axis(reward_ax, df, ylabel="mean reward (grader)", title="Reward", total_steps=total_steps)
        _draw_metric(length_ax, df, checkpoints_df, train_col="train_completion_tokens",
                     valid_col="valid_completion_tokens", full_col="full_valid_completion_tokens",
                     name="answer tokens", window=window)
        _finish_axis(length_ax, df, ylabel="tokens per answer", title="Answer length", total_steps=total_steps)
        _draw_metric(errors_ax, df, checkpoints_df, train_col="train_grader_errors", valid_col="valid_grader_errors",
                     full_col="full_valid_grader_errors", name="grader errors", window=0, checkpoint_lines=False)
        _finish_axis(errors_ax, df, ylabel="answers the grader could not score", title="Grader errors",
                     total_steps=total_steps)
        errors_ax.set_ylim(bottom=0)
    else:
        fig = Figure(figsize=(12, 4.2), layout="constrained")
        loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        panels = ((loss_ax, "train_loss", "valid_loss", "full_valid_loss", "loss"),
                  (acc_ax, "train_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy",
                   "token accuracy"))
        for ax, train_col, valid_col, full_col, name in panels:
            _draw_metric(ax, df, checkpoints_df, train_col=train_col, valid_col=valid_col, full_col=full_col,
                         name=name, window=window)
            _finish_axis(ax, df, ylabel=name, title=name.capitalize(), total_steps=total_steps)
        if "accuracy" in acc_ax.get_ylabel():
            acc_ax.set_ylim(top=1.0)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Using the model


def ask_models(
    client,
    models: Mapping[str, str],
    examples,
    *,
    system: str | None = None,
    max_tokens: int = 40,
    temperature: float = 0.0,
    concurrency: int = 8,
):
    """Ask several models the same held-out examples, side by side: a DataFrame with one row per
    example -- ``ticket`` (the first line of the last user message), ``expected`` (the example's
    last assistant message) and one column per entry of ``models`` (``{"column": model name}``)
    with that model's answer.

    Each example's messages up to its last assistant message are sent (``system`` replaces the
    system message). Requests run ``concurrency`` at a time (the local server answers them in one
    batch). A fine-tuned model or a checkpoint is called like any other model: by its name.

    Taught in notebooks/04_job_lifecycle.ipynb (notebook 05 measures models properly).
    """
    import concurrent.futures

    import pandas as pd

    examples = [dict(ex) for ex in examples]
    prompts, rows = [], []
    for ex in examples:
        messages = list(ex.get("messages") or [])
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        prompt = messages if last is None else messages[:last]
        if system is not None:
            prompt = [{"role": "system", "content": system}] + [m for m in prompt if m.get("role") != "system"]
        prompts.append(prompt)
        user = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), "") or ""
        rows.append({"ticket": str(user).splitlines()[0] if user else "",
                     "expected": None if last is None else messages[last].get("content")})

    def ask(args):
        model, messages = args
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                           temperature=temperature)
        return r.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(max(1, concurrency)) as pool:
        for column, model in models.items():
            answers = list(pool.map(ask, [(model, p) for p in prompts]))
            for row, answer in zip(rows, answers):
                row[column] = answer
    return pd.DataFrame(rows, columns=["ticket", "expected", *models])


# ---------------------------------------------------------------------------------------------
# Control: cancel, pause, resume, list


def cancel(client, job):
    """Cancel a job (it stops at its next step; nothing is billed for steps not run). Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot cancel", client.fine_tuning.jobs.cancel, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def pause(client, job):
    """Pause a running job; it keeps its progress until :func:`resume`. Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot pause", client.fine_tuning.jobs.pause, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def resume(client, job):
    """Resume a paused job (it is queued, then continues where it stopped). Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot resume", client.fine_tuning.jobs.resume, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def _job_row(job) -> dict:
    hp = _as_dict(getattr(job, "hyperparameters", None))
    method = _as_dict(getattr(job, "method", None))
    kind = method.get("type") or lifecycle.SUPERVISED
    method_hp = _as_dict(_as_dict(method.get(kind)).get("hyperparameters"))
    hp = {k: method_hp.get(k, hp.get(k)) for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    took = (job.finished_at - job.created_at) if job.finished_at and job.created_at else None
    error = _as_dict(job.error)
    return {
        "id": job.id, "status": job.status, "method": kind, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
        "created_at": _local_time(job.created_at), "finished_at": _local_time(job.finished_at),
        "minutes": None if took is None else round(took / 60, 1), "trained_tokens": job.trained_tokens,
        "suffix": getattr(job, "user_provided_suffix", None), **hp,
        "metadata": dict(job.metadata) if getattr(job, "metadata", None) else {},
        "error": error.get("message") or None,
    }


def find_job(client, metadata: dict[str, str], *, model: str | None = None):
    """The newest succeeded job with this ``metadata`` (and base ``model``, when given) whose
    fine-tuned model still exists; else a matching job still under way; else None.

    How the course's runs (``ftkit.course.triage_job``, ``ftkit.preference.tone_job``,
    ``ftkit.reinforcement.rft_job``) find a job they already ran. Taught in
    notebooks/06_preference_tuning.ipynb.
    """
    import openai

    running = None
    for job in client.fine_tuning.jobs.list(metadata=metadata, limit=100):
        if any((job.metadata or {}).get(k) != v for k, v in metadata.items()):
            continue
        if model is not None and job.model != model:
            continue
        if job.status == lifecycle.SUCCEEDED and job.fine_tuned_model:
            try:
                client.models.retrieve(job.fine_tuned_model)
            except openai.NotFoundError:
                continue  # its model was deleted: look further
            return job
        if running is None and job.status in (lifecycle.VALIDATING_FILES, lifecycle.QUEUED, lifecycle.RUNNING):
            running = job
    return running


def recent_jobs(client, limit: int = 10, *, metadata: Mapping[str, str] | None = None):
    """The newest ``limit`` fine-tuning jobs as a DataFrame (newest first): id, status, method
    (``supervised``, ``dpo`` ...), models, times, trained tokens, suffix, hyperparameters (the
    method's), metadata, error. ``metadata`` filters (the
    API's own filter).

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    kwargs: dict[str, Any] = {"limit": min(100, max(1, limit))}
    if metadata:
        kwargs["metadata"] = dict(metadata)
    rows = []
    for job in client.fine_tuning.jobs.list(**kwargs):
        if metadata and any((job.metadata or {}).get(k) != v for k, v in metadata.items()):
            continue
        rows.append(_job_row(job))
        if len(rows) >= limit:
            break
    columns = ["id", "status", "method", "model", "fine_tuned_model", "created_at", "finished_at", "minutes",
               "trained_tokens", "suffix", "n_epochs", "batch_size", "learning_rate_multiplier", "metadata", "error"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# Cleanup


def _age_limit(older_than) -> float | None:
    """A cut-off unix time from a timedelta, a number of days, "12h"/"7d"/"2w", or a date."""
    if older_than is None:
        return None
    now = time.time()
    if isinstance(older_than, dt.timedelta):
        return now - older_than.total_seconds()
    if isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        return now - float(older_than) * 86400
    if isinstance(older_than, dt.datetime):
        return older_than.timestamp()
    if isinstance(older_than, dt.date):
        return dt.datetime.combine(older_than, dt.time()).timestamp()
    if isinstance(older_than, str):
        text = older_than.strip().lower()
        units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
        if text[-1:] in units:
            try:
                return now - float(text[:-1]) * units[text[-1]]
            except ValueError:
                pass
        try:
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise ValueError(f"older_than must be a timedelta, days, '12h' / '7d' / '2w', or a date; got {older_than!r}")


_BASE_OWNERS = ("system", "openai", "openai-internal", "openai-dev")


def _is_fine_tuned(model) -> bool:
    return str(model.id).startswith("ft:") and (getattr(model, "owned_by", "") or "") not in _BASE_OWNERS


def cleanup(
    client,
    *,
    files: bool | Iterable[str] = True,
    models: bool | Iterable[str] = True,
    older_than=None,
    dry_run: bool = True,
):
    """Delete fine-tuning files and fine-tuned models -- by default only says what it would delete.

    * ``files``: True for every file with purpose ``fine-tune`` or ``fine-tune-results``, a list
      of ids for those only, False for none. Files used by a job that is still going are kept.
    * ``models``: True for every fine-tuned model (``ft:...``), a list of ids, or False. Base
      models are never deleted, even when named.
    * ``older_than``: only things created before then (a timedelta, days, "12h", "7d", a date).
    * ``dry_run`` (default True): list what would be deleted; pass False to delete.

    Returns a DataFrame: kind, id, name, created_at, size (bytes, files), action.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import openai
    import pandas as pd

    cutoff = _age_limit(older_than)
    rows: list[dict] = []

    def old_enough(ts) -> bool:
        return cutoff is None or (ts is not None and ts < cutoff)

    if files is not False:
        in_use = set()
        for job in client.fine_tuning.jobs.list(limit=100):
            if job.status in ACTIVE_STATUSES:
                in_use.update(x for x in (job.training_file, job.validation_file) if x)
        wanted = None if files is True else {_file_id(f) for f in files}
        for f in client.files.list():
            if wanted is None and f.purpose not in ("fine-tune", "fine-tune-results"):
                continue
            if wanted is not None and f.id not in wanted:
                continue
            row = {"kind": "file", "id": f.id, "name": f"{f.filename} ({f.purpose})",
                   "created_at": _local_time(f.created_at), "bytes": f.bytes}
            if not old_enough(f.created_at):
                continue
            row["action"] = "kept: used by a job still going" if f.id in in_use else "delete"
            rows.append(row)
    if models is not False:
        wanted_models = None if models is True else set(models)
        for m in client.models.list():
            if wanted_models is not None and m.id not in wanted_models:
                continue
            if not _is_fine_tuned(m):
                if wanted_models is not None:
                    rows.append({"kind": "model", "id": m.id, "name": m.owned_by, "created_at": _local_time(m.created),
                                 "bytes": None, "action": "kept: a base model is never deleted"})
                continue
            if not old_enough(m.created):
                continue
            rows.append({"kind": "model", "id": m.id, "name": f"owned by {m.owned_by}",
                         "created_at": _local_time(m.created), "bytes": None, "action": "delete"})
    deleted_files = []
    for row in rows:
        if row["action"] != "delete":
            continue
        if dry_run:
            row["action"] = "would delete"
            continue
        try:
            if row["kind"] == "file":
                client.files.delete(row["id"])
                deleted_files.append(row["id"])
            else:
                client.models.delete(row["id"])
            row["action"] = "deleted"
        except openai.APIStatusError as e:
            message = e.body.get("message") if isinstance(e.body, dict) else str(e)
            row["action"] = f"error: {message}"
    if deleted_files:
        _forget(client, deleted_files)
    df = pd.DataFrame(rows, columns=["kind", "id", "name", "created_at", "bytes", "action"])
    verb = "would delete" if dry_run else "deleted"
    n_files = int(((df["kind"] == "file") & (df["action"] == verb)).sum())
    n_models = int(((df["kind"] == "model") & (df["action"] == verb)).sum())
    size = df.loc[(df["kind"] == "file") & (df["action"] == verb), "bytes"].fillna(0).sum()
    print(f"{'dry run: ' if dry_run else ''}{verb} {n_files} file(s) ({size / 1e6:,.2f} MB) and {n_models} "
          f"fine-tuned model(s)" + ("; pass dry_run=False to delete" if dry_run and (n_files or n_models) else ""))
    return df


# ---------------------------------------------------------------------------------------------
# The live monitor (ipywidgets)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


class JobMonitor:
    """A live dashboard of one job for JupyterLab: status, a loss chart that grows while the job
    trains, the latest events and the checkpoints -- updated by a background thread, so the
    kernel stays free (you can keep working, or run :func:`watch` in the next cell).

    The thread polls every ``poll`` seconds and stops by itself when the job ends, after
    ``max_minutes``, after repeated API errors, or when you press *Stop monitoring* (or call
    :meth:`stop`). The job is never touched.

    Displaying it shows the widget and, below, a static copy (chart + tables as plain HTML)
    that is refreshed when the job ends -- what exported HTML and CI logs keep where widgets
    cannot run. Without ipywidgets only the static copy is shown (refreshed on each poll).
    :meth:`snapshot_html` gives that copy at any time; :meth:`wait` blocks until the job ends.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """

    def __init__(self, client, job, *, poll: float | None = None, max_minutes: float = 12 * 60,
                 n_events: int = 8, start: bool = True) -> None:
        self.client = client
        self.job_id = _job_id(job)
        self.job = job if not isinstance(job, str) else None
        self.poll = poll if poll is not None else (3.0 if not backend_of(client).paid else 15.0)
        self.max_minutes = max_minutes
        self.n_events = n_events
        self.events: list = []
        self.metrics_rows: list[dict] = []
        self.checkpoints_df = None
        self.error: str | None = None
        self.updates = 0
        self._feed = _EventFeed(client, self.job_id)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._chart_steps = -1
        self._static_handle = None
        self._lock = threading.Lock()
        self.widget = self._build_widget()
        if start:
            self.start()

    # -- widgets ---------------------------------------------------------------------------------

    def _build_widget(self):
        try:
            import ipywidgets as w
        except ImportError:
            return None
        self.w_status = w.HTML(value=f"<b>{self.job_id}</b>: starting...")
        self.w_chart = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.w_events = w.HTML()
        self.w_checkpoints = w.HTML()
        self.w_stop = w.Button(description="Stop monitoring", tooltip="Stops this monitor; the job keeps going",
                               icon="stop", layout=w.Layout(width="auto"))
        self.w_stop.on_click(lambda _: self.stop())
        box = w.VBox([self.w_status, self.w_chart,
                      w.HTML("<b>Latest events</b>"), self.w_events,
                      w.HTML("<b>Checkpoints</b>"), self.w_checkpoints, self.w_stop])
        box.add_class("ftkit-job-monitor")
        return box

    # -- the polling thread ------------------------------------------------------------------------

    def start(self) -> JobMonitor:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._done.clear()
            self._thread = threading.Thread(target=self._run, name=f"ftkit-monitor-{self.job_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop monitoring (the job is not touched)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the monitor stops (the job ended, or it was stopped); return the job."""
        self._done.wait(timeout)
        return self.job

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_minutes * 60
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.refresh()
                    failures = 0
                except Exception as e:  # keep the kernel's thread quiet; show the problem
                    failures += 1
                    self.error = f"{type(e).__name__}: {e}"
                    self._render(final=False)
                    if failures >= 10 or not _is_transient(e) and failures >= 3:
                        self.error += " -- monitoring stopped (the job is not affected)"
                        break
                if self.job is not None and _is_finished(self.job):
                    break
                if time.monotonic() > deadline:
                    self.error = f"monitoring stopped after {self.max_minutes:g} minutes (the job is not affected)"
                    break
                self._stop.wait(self.poll * (1 + min(failures, 5)))
        finally:
            try:
                self._render(final=True)
            finally:
                self._done.set()

    def refresh(self) -> None:
        """Poll the API once and redraw (the thread calls this; you may too)."""
        with self._lock:
            self.job = self.client.fine_tuning.jobs.retrieve(self.job_id)
            new = self._feed.poll()
            for event in new:
                data = _metric_data(event)
                if data is not None:
                    self.metrics_rows.append(data)
            self.events.extend(new)
            if self.checkpoints_df is None or any("Checkpoint" in e.message for e in new) or _is_finished(self.job):
                self.checkpoints_df = checkpoints(self.client, self.job)
            self.updates += 1
        self._render(final=False)

    # -- rendering ---------------------------------------------------------------------------------

    def metrics(self):
        """Step metrics seen so far (from metrics events), with the results file's columns."""
        import pandas as pd

        return step_metrics_from_events(pd.DataFrame({"data": list(self.metrics_rows)}))

    def status_html(self) -> str:
        import html

        job = self.job
        if job is None:
            return f"<b>{html.escape(self.job_id)}</b>: waiting for the first poll"
        colour = {lifecycle.SUCCEEDED: "#1a7f37", lifecycle.FAILED: "#cf222e", lifecycle.CANCELLED: "#6e7781"}.get(job.status, "#0969da")
        parts = [f"<b>{html.escape(job.id)}</b> on {html.escape(job.model)}: "
                 f"<b style='color:{colour}'>{html.escape(str(job.status))}</b>"]
        if self.metrics_rows:
            last = self.metrics_rows[-1]
            total = last.get("total_steps")
            parts.append(f"step {last['step']}{f'/{total}' if total else ''}, "
                         f"training loss {float(last['train_loss']):.3f}"
                         + "".join(f", {p}" for p in _preference_parts(last)))
        finish = _finish_text(job)
        if finish and job.status not in TERMINAL_STATUSES:
            parts.append(finish)
        if job.fine_tuned_model:
            parts.append(f"model <code>{html.escape(job.fine_tuned_model)}</code>")
        error = _as_dict(job.error).get("message")
        if error:
            parts.append(f"<span style='color:#cf222e'>{html.escape(error)}</span>")
        if self.error:
            parts.append(f"<span style='color:#9a6700'>{html.escape(self.error)}</span>")
        if not self.running and job.status not in TERMINAL_STATUSES:
            parts.append("<i>(not monitoring)</i>")
        return " &middot; ".join(parts)

    def events_html(self) -> str:
        import html

        recent = [e for e in self.events if _metric_data(e) is None][-self.n_events:]
        if self.metrics_rows and self.events and _metric_data(self.events[-1]) is not None:
            recent = (recent + [self.events[-1]])[-self.n_events:]
        if not recent:
            return "<i>no events yet</i>"
        items = "".join(f"<li><code>{html.escape(_event_line(e))}</code></li>" for e in recent)
        return f"<ul style='margin:0'>{items}</ul>"

    def checkpoints_html(self) -> str:
        df = self.checkpoints_df
        if df is None or not len(df):
            return "<i>none yet (one per epoch)</i>"
        cols = ["step", "checkpoint", "train_loss", "full_valid_loss", "full_valid_mean_token_accuracy",
                "full_valid_reward_margin", "full_valid_preference_accuracy", "full_valid_reward_mean",
                "full_valid_reward_std"]
        cols = [c for c in cols if c in df and (c in ("step", "checkpoint") or df[c].notna().any())]
        return df[cols].to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="")

    def figure(self):
        """The chart of the metrics seen so far (None before the first step)."""
        df = self.metrics()
        if not len(df):
            return None
        total = self.metrics_rows[-1].get("total_steps") if self.metrics_rows else None
        return plot_metrics(df, self.checkpoints_df, title=f"{self.job_id}: {self.job.status if self.job else ''}",
                            total_steps=total)

    def snapshot_html(self) -> str:
        """A static copy of the current state: status, chart (PNG), events and checkpoints."""
        fig = self.figure()
        img = ""
        if fig is not None:
            png = base64.b64encode(_figure_png(fig)).decode("ascii")
            img = f"<img alt='training curves' src='data:image/png;base64,{png}' style='max-width:100%'/>"
        return (f"<div class='ftkit-job-monitor-static'><p>{self.status_html()}</p>{img}"
                f"<p><b>Latest events</b></p>{self.events_html()}"
                f"<p><b>Checkpoints</b></p>{self.checkpoints_html()}</div>")

    def _render(self, *, final: bool) -> None:
        try:
            if self.widget is not None:
                self.w_status.value = self.status_html()
                steps = len(self.metrics_rows)
                if steps != self._chart_steps or final:
                    fig = self.figure()
                    if fig is not None:
                        self.w_chart.value = _figure_png(fig)
                    self._chart_steps = steps
                self.w_events.value = self.events_html()
                self.w_checkpoints.value = self.checkpoints_html()
                if final:
                    self.w_stop.disabled = True
                    self.w_stop.description = "Monitoring stopped"
            if self._static_handle is not None and (final or self.widget is None):
                from IPython.display import HTML

                note = ("<p><i>Static copy of the monitor's final state (kept in exported HTML).</i></p>" if final
                        else "")
                self._static_handle.update(HTML(note + self.snapshot_html()))
        except Exception as e:  # drawing must never kill the thread or the kernel
            self.error = f"display problem: {type(e).__name__}: {e}"

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if self.widget is not None:
            display(self.widget)
            first = ("<p><i>A static copy of the final state (chart and tables) appears here when the job ends, "
                     "for exported HTML; the live monitor above updates while it runs.</i></p>")
        else:
            first = self.snapshot_html()
        if self._done.is_set():
            first = ("<p><i>Static copy of the monitor's final state (kept in exported HTML).</i></p>"
                     + self.snapshot_html())
        self._static_handle = display(HTML(first), display_id=True)
        if self._done.is_set():
            self._render(final=True)

    def __repr__(self) -> str:
        status = self.job.status if self.job is not None else "?"
        return f"JobMonitor({self.job_id}, status={status}, monitoring={self.running})"


def monitor(client, job, *, poll: float | None = None, max_minutes: float = 12 * 60) -> JobMonitor:
    """A live :class:`JobMonitor` for ``job``; show it as a cell's last expression. It updates in
    the background (the kernel stays free) and leaves a static copy of the final state.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    return JobMonitor(client, job, poll=poll, max_minutes=max_minutes)

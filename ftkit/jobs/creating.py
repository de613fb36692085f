"""Creating a job: :func:`estimate` (tokens x epochs x price, availability) and :func:`create_job`.

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog, lifecycle, methods
from ..backend import backend_of
from ..validation import ValidationReport
from .api import JobsError, ModelUnavailable, OverBudget, _api_call, _file_id, _usd
from .uploads import _recorded_by_id, _records_of, _token_stats, _validate_for


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
            epochs, why = methods.default_epochs(n_examples), f"the API default for {n_examples:,} examples"
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


def _hyperparameters(hyperparameters: Mapping | None, method: str = lifecycle.SUPERVISED, **given) -> dict:
    hp = dict(hyperparameters or {})
    known = methods.get(method).hyperparameters
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
    method: str = lifecycle.SUPERVISED,
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
    if method not in methods.names():
        raise ValueError(f"method must be one of {', '.join(methods.names())}, not {method!r}")
    train_id = _file_id(training_file)
    valid_id = _file_id(validation_file) if validation_file is not None else None
    if methods.get(method).needs_grader != (grader is not None):
        raise ValueError(f"a {method} job {'needs a grader (grader={...})' if grader is None else 'takes no grader'}; "
                         "only a method that grades answers (reinforcement) takes one")
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

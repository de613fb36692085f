"""The course's reusable runs: a :class:`Recipe` (a job as data) and :func:`ensure_job`, which
finds a finished job of that recipe, waits for one under way, or runs it with the lesson's own
steps (:func:`~ftkit.jobs.upload`, :func:`~ftkit.jobs.create_job`, :func:`~ftkit.jobs.watch`).

``ftkit.course.triage_job``, ``ftkit.preference.tone_job`` and ``ftkit.reinforcement.rft_job``
are this one routine with their lesson's recipe. Taught in notebooks/04_job_lifecycle.ipynb
(which runs the same steps one by one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import lifecycle
from .control import find_job
from .creating import create_job
from .uploads import file_sha256, upload
from .watching import watch

#: The metadata key that holds a recipe's fingerprint.
FINGERPRINT_KEY = "recipe"


@dataclass(frozen=True)
class Recipe:
    """A course job as data: its files, method, starting model, hyperparameters and suffix.

    ``training`` / ``validation``: a list or DataFrame of examples, or a JSONL path (uploaded with
    :func:`~ftkit.jobs.upload`, validated for ``method`` and ``grader``). ``model``: the model it
    starts from (None: the backend's base model); a job is reused only if it started from the same
    one. ``hyperparameters``: those that are set (the others are "auto"). ``grader``: a
    reinforcement job's grader. ``labels``: metadata saying what the job is (course, lesson,
    mode ...). ``name`` and ``description`` say it in messages ("Training the ticket-triage model
    (quick mode: ...)").

    The job's metadata is ``labels`` plus the **fingerprint** (``"recipe"``): a short hash of
    everything that shapes the result, so a job is reused only for the same recipe. A caller that
    already hashes its own settings passes ``fingerprint`` (the course's settings classes do, so
    jobs trained before this class existed are still found); otherwise it is computed here.
    """

    name: str
    training: Any
    training_filename: str
    validation: Any = None
    validation_filename: str | None = None
    method: str = lifecycle.SUPERVISED
    model: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    grader: Mapping | None = None
    suffix: str | None = None
    seed: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    fingerprint: str | None = None
    description: str = ""

    def computed_fingerprint(self) -> str:
        """A short hash of the method, model, hyperparameters, grader, suffix, seed and the files' SHA-256."""
        parts = [self.method, self.model, dict(self.hyperparameters), dict(self.grader or {}), self.suffix, self.seed,
                 file_sha256(self.training), None if self.validation is None else file_sha256(self.validation)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def metadata(self) -> dict[str, str]:
        """The job's metadata: how :func:`ensure_job` finds it again."""
        return {**self.labels, FINGERPRINT_KEY: self.fingerprint or self.computed_fingerprint()}


def ensure_job(client, recipe: Recipe, *, timeout: float | None = 3 * 3600, verbose: bool = True):
    """A succeeded job of ``recipe`` on ``client``'s backend: the newest finished one with its
    metadata whose model still exists (:func:`~ftkit.jobs.find_job`), else one under way (watched
    to its end), else a new one -- files uploaded with :func:`~ftkit.jobs.upload`, the job created
    with :func:`~ftkit.jobs.create_job` and followed with :func:`~ftkit.jobs.watch`. Returns the
    ``FineTuningJob`` (``.fine_tuned_model`` is the model to call); raises ``RuntimeError`` when
    the job did not succeed.

    Taught in notebooks/04_job_lifecycle.ipynb (which runs the same steps one by one).
    """
    say = print if verbose else (lambda *a, **k: None)
    metadata = recipe.metadata
    job = find_job(client, metadata, model=recipe.model)
    if job is not None and job.status == lifecycle.SUCCEEDED:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.finished_at)) if job.finished_at else "?"
        say(f"Reusing {job.id} ({recipe.name}, {recipe.method}, finished {when}): {job.fine_tuned_model}")
        return job
    if job is not None:
        say(f"A matching job is already under way: {job.id} ({job.status}); waiting for it.")
    else:
        say(f"Training {recipe.name}" + (f" ({recipe.description})." if recipe.description else "."))
        job = _run(client, recipe, metadata, verbose)
    job = watch(client, job, timeout=timeout, print_events=verbose)
    if job.status != lifecycle.SUCCEEDED:
        error = getattr(job.error, "message", None) or job.error
        raise RuntimeError(f"{recipe.name}: the job {job.id} ended {job.status}: {error}")
    return job


def _run(client, recipe: Recipe, metadata: dict[str, str], verbose: bool):
    """Upload the recipe's files and create its job (through the lesson's own steps)."""
    checks = {"method": recipe.method, "grader": recipe.grader, "verbose": verbose}
    train = upload(client, recipe.training, filename=recipe.training_filename, **checks)
    valid = None
    if recipe.validation is not None:
        valid = upload(client, recipe.validation, filename=recipe.validation_filename, min_examples=1, **checks)
    return create_job(client, train, model=recipe.model, validation_file=valid, method=recipe.method,
                      hyperparameters=dict(recipe.hyperparameters), grader=recipe.grader, suffix=recipe.suffix,
                      seed=recipe.seed, metadata=metadata, verbose=verbose)

"""Calling the fine-tuning API: the job vocabulary, refusals as :class:`JobsError`, ids and small helpers.

Shared by every module of :mod:`ftkit.jobs`. Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import catalog, lifecycle, methods
from ..validation import InvalidTrainingFile, ValidationReport

if TYPE_CHECKING:
    from .creating import JobEstimate


# The job vocabulary is shared with the local server (one home: ftkit.lifecycle).
TERMINAL_STATUSES = lifecycle.TERMINAL_STATUSES
ACTIVE_STATUSES = lifecycle.ACTIVE_STATUSES
KNOWN_STATUSES = lifecycle.KNOWN_STATUSES
COMPLETED_MESSAGE = lifecycle.COMPLETED  # the local server's last event (data: cpu time)
RESULT_COLUMNS = lifecycle.RESULT_COLUMNS[lifecycle.SUPERVISED]
CHECKPOINT_METRICS = lifecycle.CHECKPOINT_METRICS
#: Checkpoint metrics of a DPO job: the last step's (as in its results file) and the full-validation
#: figures (``full_valid_loss``, ``full_valid_reward_margin`` ...).
DPO_CHECKPOINT_METRICS = methods.get(lifecycle.DPO).checkpoint_metrics
#: Checkpoint metrics of a reinforcement (RFT) job: the last step's and the whole validation file
#: answered greedily and graded (``full_valid_reward_mean`` ...).
RFT_CHECKPOINT_METRICS = methods.get(lifecycle.REINFORCEMENT).checkpoint_metrics
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
    from ..cost import _usd as fmt

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

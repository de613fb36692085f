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

The package, by concern (each module's docstring says more): ``api`` (the job vocabulary, refusals,
ids), ``uploads``, ``creating`` (estimates and jobs), ``watching``, ``reading`` (events, checkpoints,
results, asking the models), ``plotting``, ``control`` (cancel, pause, resume, lists),
``housekeeping`` (cleanup), ``monitoring`` (the widget), ``recipes`` (the course's reusable runs),
``tuning`` (the hyperparameter table).
Every public name is importable from ``ftkit.jobs`` itself, as notebooks do.
"""

from .api import (
    ACTIVE_STATUSES,
    CHECKPOINT_METRICS,
    COMPLETED_MESSAGE,
    DPO_CHECKPOINT_METRICS,
    KNOWN_STATUSES,
    RESULT_COLUMNS,
    RFT_CHECKPOINT_METRICS,
    TERMINAL_STATUSES,
    JobsError,
    ModelUnavailable,
    NotReady,
    OverBudget,
    StoppedWatching,
    UploadRefused,
    WatchTimeout,
)
from .control import cancel, find_job, pause, recent_jobs, resume
from .creating import JobEstimate, create_job, estimate
from .housekeeping import cleanup
from .monitoring import JobMonitor, monitor
from .plotting import plot_metrics
from .reading import (
    ask_models,
    best_checkpoint,
    checkpoints,
    events,
    method_of_metrics,
    parse_results,
    results,
    step_metrics_from_events,
)
from .recipes import Recipe, ensure_job
from .tuning import hyperparameter_table
from .uploads import _validate_for, file_sha256, upload  # noqa: F401 (_validate_for: tests use it)
from .watching import watch

__all__ = [
    "ACTIVE_STATUSES",
    "CHECKPOINT_METRICS",
    "COMPLETED_MESSAGE",
    "DPO_CHECKPOINT_METRICS",
    "KNOWN_STATUSES",
    "RESULT_COLUMNS",
    "RFT_CHECKPOINT_METRICS",
    "TERMINAL_STATUSES",
    "JobEstimate",
    "JobMonitor",
    "JobsError",
    "ModelUnavailable",
    "NotReady",
    "OverBudget",
    "Recipe",
    "StoppedWatching",
    "UploadRefused",
    "WatchTimeout",
    "ask_models",
    "best_checkpoint",
    "cancel",
    "checkpoints",
    "cleanup",
    "create_job",
    "ensure_job",
    "estimate",
    "events",
    "method_of_metrics",
    "file_sha256",
    "find_job",
    "hyperparameter_table",
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

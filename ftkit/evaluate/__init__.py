"""Evaluation: run a test set through several model configurations and measure them side by side.

Taught in notebooks/05_evaluation.ipynb.

A :class:`Config` is one way of answering: a model plus how it is prompted (a system message, a
few worked examples, ``max_tokens``, ``temperature``). :func:`evaluate` sends every example of a
test set to every configuration through any ``openai`` client -- the hosted API, Azure, or
ftkit's local server -- and returns an :class:`Evaluation`: one row per (configuration, example)
with the answer, the tokens the API reported in ``usage`` and the latency, scored.

How requests are sent:

* **Concurrently, bounded.** Configurations run one after another (so each one's wall time is its
  own); within one, up to ``concurrency`` requests are in flight at once. On the local backend
  that is what lets the engine decode many prompts in one batch.
* **Retried with exponential backoff** (bounded, with jitter, honouring ``Retry-After``) on rate
  limits (429) and transient failures (connection errors, timeouts, 408, 5xx) -- never on other
  4xx errors, which would fail again: those are recorded in the ``error`` column. A 429 that
  says the quota is used up (``insufficient_quota``) is not retried either.
* **Or through the Batch API** (``via="batch"``): one input file per configuration (the hosted
  API takes one model per batch), uploaded with purpose ``batch``, run by ``client.batches``, and
  read back from the output file by ``custom_id``. On the hosted platform batches cost half and
  may take up to 24 hours; the local server runs them at once with batched generation.

What is measured (all as pandas DataFrames): exact match, valid-JSON rate, per-field accuracy,
macro F1 and confusion matrices for JSON answers (e.g. ``{"category": ..., "urgency": ...}``);
any per-example scorer you plug in; prompt and completion tokens per request; latency per request
and wall time per configuration; cost per 1,000 requests from :mod:`ftkit.catalog` (the local
backend has no price: its CPU seconds are measured instead, and :meth:`Evaluation.costs` can show,
clearly labelled, what the same token counts would cost at a hosted model's prices).

A scorer is a function ``(prediction, reference, example) -> dict | float``: a float becomes a
column named after the function, a dict one column per key. ``prediction`` is the answer text
(``None`` when the request failed), ``reference`` the expected answer (the example's last
assistant message), ``example`` the whole example dict.

The package, by concern: ``examples`` (test sets, prompts, :class:`Config`), ``running``
(:func:`evaluate`, retries, the Batch API, :func:`sample_agreement`), ``scoring``, ``stats``
(McNemar, Wilson intervals, learning curves), ``power`` (how many examples a question needs and
what a given number can detect), ``evaluation`` (the :class:`Evaluation` result) and
``display`` (full-text tables, the disagreement viewer, learning-curve plots). Every public name is
importable from ``ftkit.evaluate`` itself, as notebooks do.
"""

from .baselines import COMPETITOR_ENV, find_competitor, majority_baseline
from .display import CUT_OFF_MARK, DisagreementViewer, full_text, plot_learning_curve
from .evaluation import HOSTED_BATCH_DISCOUNT, Evaluation
from .examples import Config, label_schema, load_examples, prompt_messages, reference_of
from .running import RetryPolicy, _with_retries, evaluate, is_retryable, sample_agreement  # noqa: F401 (tests use _with_retries)
from .scoring import (
    INVALID,
    Scorer,
    ability_scorer,
    confusion_matrix,
    exact_match,
    f1_by_label,
    macro_f1,
    parse_json,
    score,
)
from .stats import (
    interval_text,
    learning_curve,
    mcnemar_p,
    paired_difference,
    paired_shift,
    paired_verdict,
    wilson_interval,
)

__all__ = [
    "COMPETITOR_ENV",
    "find_competitor",
    "majority_baseline",
    "paired_difference",
    "paired_verdict",
    "CUT_OFF_MARK",
    "HOSTED_BATCH_DISCOUNT",
    "INVALID",
    "Scorer",
    "Config",
    "DisagreementViewer",
    "Evaluation",
    "RetryPolicy",
    "ability_scorer",
    "confusion_matrix",
    "evaluate",
    "exact_match",
    "f1_by_label",
    "full_text",
    "interval_text",
    "is_retryable",
    "learning_curve",
    "label_schema",
    "load_examples",
    "macro_f1",
    "mcnemar_p",
    "paired_shift",
    "parse_json",
    "plot_learning_curve",
    "prompt_messages",
    "reference_of",
    "sample_agreement",
    "score",
    "wilson_interval",
]

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
"""

from __future__ import annotations

import concurrent.futures
import functools
import html
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
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
    "COMPETITOR_ENV",
    "find_competitor",
    "majority_baseline",
    "paired_difference",
    "paired_shift",
    "paired_verdict",
    "parse_json",
    "plot_learning_curve",
    "prompt_messages",
    "reference_of",
    "sample_agreement",
    "score",
    "wilson_interval",
]

Scorer = Callable[[Any, Any, dict], "dict | float"]

#: The Batch API's discount on the hosted platform: requests cost half (OpenAI's pricing page
#: and Batch API guide: "50% lower costs"). Only used where a cost table says so in its label.
HOSTED_BATCH_DISCOUNT = 0.5


# ---------------------------------------------------------------------------------------------
# Examples and configurations


def load_examples(source, *, ids: Sequence | None = None) -> list[dict]:
    """Chat examples as a list of dicts, each with an ``id``.

    ``source`` is a JSONL path or an iterable of example dicts. Ids come from ``ids`` (same
    order), else from each example's own ``id`` key, else its position. Taught in
    notebooks/05_evaluation.ipynb.
    """
    from .data import read_jsonl

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = read_jsonl(Path(source))
    examples = [dict(ex) for ex in source]
    if ids is not None:
        ids = list(ids)
        if len(ids) != len(examples):
            raise ValueError(f"{len(ids)} ids for {len(examples)} examples")
        for ex, i in zip(examples, ids):
            ex["id"] = i
    for n, ex in enumerate(examples):
        ex.setdefault("id", n)
    seen = set()
    for ex in examples:
        if ex["id"] in seen:
            raise ValueError(f"duplicate example id {ex['id']!r}")
        seen.add(ex["id"])
    return examples


def _last_assistant(messages: list[dict]) -> int | None:
    return max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=None)


def reference_of(example: dict) -> str | None:
    """The expected answer: the content of the example's last assistant message (or None)."""
    messages = example.get("messages") or []
    last = _last_assistant(messages)
    return None if last is None else messages[last].get("content")


def prompt_messages(example: dict, *, system: str | None = None, few_shot: Sequence[dict] = ()) -> list[dict]:
    """The messages sent for ``example``: those before its last assistant message, with the
    system message replaced by ``system`` (``""`` removes it; ``None`` keeps the example's own) and
    the ``few_shot`` messages inserted after it -- the same prompt :func:`ftkit.cost.request_tokens`
    counts. Taught in notebooks/05_evaluation.ipynb."""
    messages = list(example.get("messages") or [])
    if not messages:
        raise ValueError(f"example {example.get('id')!r} has no messages")
    last = _last_assistant(messages)
    prompt = messages if last is None else messages[:last]
    if system is not None:
        prompt = [m for m in prompt if m.get("role") not in ("system", "developer")]
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *few_shot, *prompt]
    if few_shot:
        at = 1 if prompt and prompt[0].get("role") in ("system", "developer") else 0
        return [*prompt[:at], *few_shot, *prompt[at:]]
    return prompt


_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the API's rule for json_schema.name


def label_schema(labels: dict[str, Sequence[str]], *, name: str = "answer") -> dict:
    """The ``response_format`` of Structured Outputs for an answer that is one JSON object with
    exactly the fields of ``labels`` (in that order), each one of its allowed values::

        {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
            "type": "object", "properties": {"category": {"type": "string", "enum": [...]}, ...},
            "required": [...every field...], "additionalProperties": False}}}

    With ``strict`` the server constrains decoding to the schema (OpenAI's Structured Outputs;
    ftkit's local engine compiles it into a grammar), so every answer is valid JSON with allowed
    labels by construction -- whether the labels are *right* is still the model's job.
    Taught in notebooks/05_evaluation.ipynb.
    """
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise ValueError(f"name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    if not labels:
        raise ValueError("labels must name at least one field")
    properties = {}
    for field_name, values in labels.items():
        values = list(values)
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"labels[{field_name!r}] must be a non-empty list of strings")
        properties[field_name] = {"type": "string", "enum": values}
    schema = {"type": "object", "properties": properties, "required": list(labels), "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


@dataclass(frozen=True)
class Config:
    """One way of answering: a model and how it is prompted.

    ``system``: replaces each example's system message (``None`` keeps it, ``""`` drops it).
    ``few_shot``: worked examples (user/assistant messages) inserted after the system message.
    ``response_format``: sent as the request's ``response_format`` (e.g. :func:`label_schema`
    for Structured Outputs); None sends none.
    ``extra``: more request parameters (``seed``, ``stop``, ``top_p`` ...).
    ``price_model``: the catalog model whose prices apply (default: the model itself, a fine-tuned
    name resolved through its base); ``fine_tuned``: price as a fine-tuned model (default: the
    model name starts with ``ft:``).

    Taught in notebooks/05_evaluation.ipynb.
    """

    name: str
    model: str
    system: str | None = None
    few_shot: tuple[dict, ...] = ()
    max_tokens: int = 40
    temperature: float = 0.0
    extra: dict = field(default_factory=dict)
    price_model: str | None = None
    fine_tuned: bool | None = None
    response_format: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "few_shot", tuple(self.few_shot))
        if not self.name:
            raise ValueError("a Config needs a name")
        if self.response_format is not None and not (
                isinstance(self.response_format, dict) and isinstance(self.response_format.get("type"), str)):
            raise ValueError(f"{self.name}: response_format must be a dict with a 'type', "
                             f"got {self.response_format!r}")

    @property
    def is_fine_tuned(self) -> bool:
        return self.model.startswith("ft:") if self.fine_tuned is None else self.fine_tuned

    def messages(self, example: dict) -> list[dict]:
        return prompt_messages(example, system=self.system, few_shot=self.few_shot)

    def request(self, example: dict, **overrides) -> dict:
        """The chat-completion request body for ``example``."""
        body = {"model": self.model, "messages": self.messages(example), "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.response_format is not None:
            body["response_format"] = self.response_format
        body.update(self.extra)
        body.update(overrides)
        return body


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
# Scoring: pure functions on predictions and references


def parse_json(text) -> dict | None:
    """The answer as a JSON object, or None if it is not exactly one (a program calling
    ``json.loads`` on it would get no dict). Surrounding whitespace is allowed; prose, Markdown
    fences or a second object are not."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _normal_text(text) -> str:
    return " ".join(str(text).split()).casefold()


def exact_match(prediction, reference) -> bool:
    """True when the answer is the reference: equal JSON objects (key order and spacing aside)
    when the reference is JSON, else equal text (case and runs of whitespace aside)."""
    if prediction is None or reference is None:
        return False
    ref = parse_json(reference)
    if ref is not None:
        return parse_json(prediction) == ref
    return _normal_text(prediction) == _normal_text(reference)


def _label(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def f1_by_label(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None):
    """Precision, recall, F1 and support per label, as a DataFrame.

    ``labels`` defaults to the labels in ``y_true`` (sorted). A prediction that is not one of
    the labels (``None`` for an unparseable answer, a made-up value) is wrong for its true label
    but counts as no label's prediction. Precision is 0 for a label never predicted; F1 is 0
    when precision + recall is 0.
    """
    import pandas as pd

    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    labels = list(labels) if labels is not None else sorted({y for y in y_true if not _missing(y)}, key=str)
    rows = []
    for label in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == label and p == label)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != label and p == label)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((label, precision, recall, f1, tp + fn))
    return pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support"]).set_index("label")


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """The unweighted mean of the per-label F1 (see :func:`f1_by_label`) over the labels that
    occur in ``y_true`` -- a rare label counts as much as a common one. Taught in
    notebooks/05_evaluation.ipynb."""
    table = f1_by_label(y_true, y_pred, labels)
    present = table[table["support"] > 0]
    return float(present["f1"].mean()) if len(present) else math.nan


INVALID = "(no valid answer)"


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None):
    """Counts of (true label, predicted label) as a DataFrame: rows are true labels, columns the
    predicted ones, plus a column ``(no valid answer)`` for predictions that are not a label.
    Taught in notebooks/05_evaluation.ipynb."""
    import pandas as pd

    y_true, y_pred = list(y_true), list(y_pred)
    labels = list(labels) if labels is not None else sorted({y for y in y_true if not _missing(y)}, key=str)
    columns = [*labels, INVALID]
    table = pd.DataFrame(0, index=pd.Index(labels, name="true"), columns=pd.Index(columns, name="predicted"))
    for t, p in zip(y_true, y_pred):
        if t not in labels:
            continue
        table.loc[t, p if p in labels else INVALID] += 1
    if table[INVALID].sum() == 0:
        table = table.drop(columns=INVALID)
    return table


def _fields_of(references: Sequence) -> tuple[str, ...]:
    parsed = [parse_json(r) for r in references if r is not None]
    if not parsed or any(p is None for p in parsed):
        return ()
    return tuple(parsed[0])


def score(
    predictions: Sequence,
    references: Sequence,
    examples: Sequence[dict] | None = None,
    *,
    fields: Sequence[str] | None = None,
    scorers: Sequence[Scorer] = (),
):
    """Score answers against references, one row per example (a DataFrame).

    Columns: ``exact``; for JSON references also ``valid_json`` and, per field, ``<field>_pred``,
    ``<field>_true`` and ``<field>_ok``; then one or more columns per scorer. ``fields`` defaults
    to the keys of the first reference when every reference is a JSON object. Taught in
    notebooks/05_evaluation.ipynb.
    """
    import pandas as pd

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    examples = list(examples) if examples is not None else [{} for _ in predictions]
    fields = tuple(fields) if fields is not None else _fields_of(references)
    json_task = bool(fields) or bool(_fields_of(references))
    rows = []
    for pred, ref, ex in zip(predictions, references, examples):
        row: dict[str, Any] = {"exact": exact_match(pred, ref)}
        if json_task:
            got, want = parse_json(pred), parse_json(ref) or {}
            row["valid_json"] = got is not None
            for f in fields:
                p = _label((got or {}).get(f))
                t = _label(want.get(f))
                row[f"{f}_pred"], row[f"{f}_true"], row[f"{f}_ok"] = p, t, p is not None and p == t
        for scorer in scorers:
            out = scorer(pred, ref, ex)
            if isinstance(out, dict):
                row.update(out)
            else:
                row[getattr(scorer, "__name__", "score")] = out
        rows.append(row)
    return pd.DataFrame(rows)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[a-z]+")


def ability_scorer(prediction, reference, example: dict) -> dict:
    """Scores an answer of the general-ability set (``data/general/ability.jsonl``).

    Numeric questions (``match: "number"``): right when the expected number is in the answer and
    no other number is, apart from those in the question ("7 + 5 = 12" is right, "12 or 13" is
    not). Word questions: right when one of the ``accept`` words is in the answer and none of the
    ``reject`` words (the misspelling, in the spelling questions) is. Returns ``{"correct": bool}``.
    Taught in notebooks/05_evaluation.ipynb.
    """
    if not isinstance(prediction, str):
        return {"correct": False}
    accept = [str(a) for a in (example.get("accept") or [reference])]
    reject = [str(r) for r in (example.get("reject") or [])]
    if example.get("match") == "number":
        question = " ".join(str(m.get("content") or "") for m in example.get("messages", []) if m.get("role") == "user")
        found = {float(n) for n in _NUMBER.findall(prediction.replace(",", ""))}
        allowed = {float(n) for n in _NUMBER.findall(question)}
        wanted = {float(a) for a in accept}
        right = bool(found & wanted) and not (found - wanted - allowed)
        return {"correct": right}
    words = set(_WORD.findall(prediction.casefold()))
    right = any(a.casefold() in words for a in accept) and not any(r.casefold() in words for r in reject)
    return {"correct": right}


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar test: how likely a split at least this uneven between examples
    that flipped to right (``gained``) and to wrong (``lost``) is if neither model is better
    (binomial, p = 1/2). 1.0 when nothing flipped."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (good at small n and near 0 or 1,
    where the textbook ``p +- 1.96 * se`` interval leaves [0, 1]).

    Taught in notebooks/05_evaluation.ipynb and 06_preference_tuning.ipynb.
    """
    from statistics import NormalDist

    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_shift(before, after, *, confidence: float = 0.95) -> dict:
    """How a yes/no outcome moved between two models on the same prompts: each model's rate with
    its Wilson interval, how many prompts flipped each way, and the exact McNemar p-value
    (:func:`mcnemar_p`: only the prompts that flipped carry information).

    Taught in notebooks/06_preference_tuning.ipynb and 07_reinforcement_fine_tuning.ipynb.
    """
    a, b = [bool(x) for x in before], [bool(x) for x in after]
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outcomes before but {len(b)} after: pair them prompt by prompt")
    n = len(a)
    gained = sum(1 for x, y in zip(a, b) if not x and y)
    lost = sum(1 for x, y in zip(a, b) if x and not y)
    low_a, high_a = wilson_interval(sum(a), n, confidence)
    low_b, high_b = wilson_interval(sum(b), n, confidence)
    return {"n": n, "before": sum(a) / n if n else float("nan"), "before_low": low_a, "before_high": high_a,
            "after": sum(b) / n if n else float("nan"), "after_low": low_b, "after_high": high_b,
            "gained": gained, "lost": lost, "mcnemar_p": mcnemar_p(gained, lost)}


def paired_difference(both_right: int, gained: int, lost: int, both_wrong: int, *,
                      confidence: float = 0.95) -> dict:
    """The difference of two rates measured on the same examples (``after - before``), with a
    confidence interval for paired data: Bonett and Price's adjusted Wald interval, which adds one
    to each count of examples that flipped (``gained``, ``lost``) and two to ``n``:

        g, l = (gained + 1) / (n + 2), (lost + 1) / (n + 2)
        interval = (g - l) +- z * sqrt((g + l - (g - l) ** 2) / (n + 2))

    Unlike Newcombe's hybrid interval it keeps a width when nothing flipped (12 tickets that all
    agree do not prove two models equal). Only the flips move the difference; the agreeing examples
    (``both_right``, ``both_wrong``) only count in ``n``. Returns ``n``, ``before``, ``after``,
    ``difference`` (the plain ``(gained - lost) / n``) and its interval ``low``/``high``
    (fractions: 0.05 is 5 points).

    Bonett, D. G. and Price, R. M. (2012), "Adjusted Wald confidence interval for a difference of
    binomial proportions based on paired data", Journal of Educational and Behavioral Statistics
    37(4), 479-488.

    Taught in notebooks/05_evaluation.ipynb.
    """
    from statistics import NormalDist

    a, g, lo, d = (int(x) for x in (both_right, gained, lost, both_wrong))
    if min(a, g, lo, d) < 0:
        raise ValueError(f"counts must be >= 0, got both_right={a}, gained={g}, lost={lo}, both_wrong={d}")
    n = a + g + lo + d
    if n == 0:
        raise ValueError("no paired examples: nothing to compare")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    pg, pl = (g + 1) / (n + 2), (lo + 1) / (n + 2)
    centre = pg - pl
    half = z * math.sqrt((pg + pl - centre ** 2) / (n + 2))
    return {"n": n, "before": (a + lo) / n, "after": (a + g) / n, "difference": (g - lo) / n,
            "low": max(-1.0, centre - half), "high": min(1.0, centre + half)}


def paired_verdict(low: float, high: float, *, margin: float = 0.05, n: int | None = None) -> str:
    """What an interval of a paired difference (``after - before``, fractions) lets you say, against a
    non-inferiority ``margin`` stated before looking (0.05: 5 points):

    * ``"better"`` -- the whole interval is above 0;
    * ``"worse"`` -- the whole interval is below 0;
    * ``"non-inferior within 5 points"`` -- the interval holds 0 but its low end is above
      ``-margin``: ``after`` may be a little worse, never by more than the margin;
    * ``"cannot tell at n = 12"`` -- the interval reaches below ``-margin`` and above 0: this many
      examples cannot say (it is *not* "the same").

    Taught in notebooks/05_evaluation.ipynb.
    """
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be a fraction in [0, 1), got {margin}")
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    if low >= -margin:
        return f"non-inferior within {margin * 100:g} points"
    return "cannot tell" + (f" at n = {n}" if n is not None else "")


def majority_baseline(train_examples: Sequence[dict], test_examples: Sequence[dict], fields: Sequence[str],
                      *, confidence: float = 0.95):
    """The majority-class row: always answer each field's commonest label in the *training*
    answers, with no model at all. Per test set, a pandas DataFrame with one row per metric
    (``exact`` and each field): the rate, its Wilson interval and ``n``; ``.attrs["answer"]`` is the
    constant answer. A configuration that does not beat it has learnt nothing about the tickets.

    Taught in notebooks/05_evaluation.ipynb.
    """
    import collections

    import pandas as pd

    train = [parse_json(reference_of(ex)) or {} for ex in train_examples]
    if not train:
        raise ValueError("no training examples: the majority class needs training answers")
    answer = {}
    for f in fields:
        counts = collections.Counter(a.get(f) for a in train if a.get(f) is not None)
        if not counts:
            raise ValueError(f"no training answer has the field {f!r}")
        answer[f] = max(sorted(counts), key=lambda label: counts[label])  # ties: alphabetical, stable
    refs = [parse_json(reference_of(ex)) or {} for ex in test_examples]
    n = len(refs)
    rows = {}
    for metric in ["exact", *fields]:
        hits = sum(all(r.get(f) == answer[f] for f in fields) if metric == "exact" else r.get(metric) == answer[metric]
                   for r in refs)
        low, high = wilson_interval(hits, n, confidence)
        rows[metric] = {"rate": hits / n if n else float("nan"), "low": low, "high": high, "n": n}
    table = pd.DataFrame(rows).T
    table.attrs["answer"] = answer
    return table


#: The setting that names notebook 05's optional capable competitor (a model id the backend serves).
COMPETITOR_ENV = "FTKIT_COMPETITOR"


def find_competitor(client, name: str | None = None) -> tuple[str | None, str]:
    """The optional capable competitor of notebook 05: ``(model id, why)``, or ``(None, why not)``.

    ``name`` (default: the ``FTKIT_COMPETITOR`` setting) names any model the backend serves -- on
    the local backend one added with ``python -m ftkit.local register-model NAME PATH`` (a Hugging
    Face folder or a GGUF file). Without a name, a hosted backend (OpenAI, Azure) competes with its
    default base model (gpt-4.1-mini) and the local backend has none. A name the backend does not
    list gives ``None`` and a one-line reason, never an exception: the notebook skips the
    competitor and says why.

    Taught in notebooks/05_evaluation.ipynb.
    """
    import os

    from .backend import backend_of

    backend = backend_of(client)
    name = (name if name is not None else os.environ.get(COMPETITOR_ENV, "")).strip() or None
    how = (f"set {COMPETITOR_ENV} to a model the server serves, e.g. after `python -m ftkit.local register-model "
           "NAME PATH` (a Hugging Face folder or a GGUF file)")
    if name is None:
        if backend.name == "local":
            return None, f"no capable competitor on the local backend: {how}"
        return backend.base_model, f"the hosted base model of the {backend.name} backend"
    try:
        served = {m.id for m in client.models.list()}
    except Exception as e:  # a backend that cannot list models: say so, do not fail the lesson
        return None, f"cannot list the backend's models ({type(e).__name__}: {e}); competitor {name!r} skipped"
    if name not in served:
        return None, f"{name!r} ({COMPETITOR_ENV}) is not served by the {backend.name} backend: {how}"
    return name, f"{name!r}, named by {COMPETITOR_ENV}"


# ---------------------------------------------------------------------------------------------
# Running requests


def _local_server_pid(client) -> int | None:
    """The local server's process id when it runs on this machine (its /health says), else None."""
    try:
        from urllib.parse import urlsplit

        import httpx

        from .backend import backend_of

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


def _catalog_snapshot(model: str) -> str | None:
    from . import catalog

    try:
        return catalog.lookup(model).snapshot
    except catalog.UnknownCatalogModel:
        return None


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
    from .backend import backend_of

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


def _assemble(configs, examples, rows_per_config, runs, *, fields, labels, scorers, backend, via) -> Evaluation:
    """Score the raw answers and put everything into one :class:`Evaluation`."""
    import pandas as pd

    references = [reference_of(ex) for ex in examples]
    meta = pd.DataFrame([_meta(ex) for ex in examples]).drop(columns=["id"], errors="ignore")
    parts = []
    for config, rows in zip(configs, rows_per_config):
        raw = pd.DataFrame(rows)
        scored = score(raw["prediction"], references, examples, fields=fields, scorers=scorers)
        head = pd.DataFrame({"config": config.name, "model": config.model, "id": [ex["id"] for ex in examples],
                             "reference": references})
        parts.append(pd.concat([head, raw, scored, meta], axis=1))
    results = pd.concat(parts, ignore_index=True)
    return Evaluation(results=results, configs=list(configs), fields=tuple(fields),
                      labels={f: list((labels or {}).get(f) or _values(results, f)) for f in fields},
                      runs=pd.DataFrame(runs, columns=["config", "model", "via", "wall_s", "cpu_s", "batch_id"]),
                      backend=backend, examples=list(examples), via=via)


def _meta(example: dict) -> dict:
    """The example's own scalar fields (id, kind ...) to carry into the results."""
    return {k: v for k, v in example.items()
            if k != "messages" and (v is None or isinstance(v, (str, int, float, bool)))}


def _values(results, f: str) -> list:
    return sorted({v for v in results[f"{f}_true"] if not _missing(v)}, key=str)


def _missing(value) -> bool:
    """None, or the NaN pandas puts in its place in a column of strings."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------------------------
# The result


@dataclass
class Evaluation:
    """The answers of every configuration on every example, scored. Taught in
    notebooks/05_evaluation.ipynb.

    ``results``: one row per (configuration, example): ``config, model, id, reference,
    prediction, finish_reason, prompt_tokens, completion_tokens, latency_s, attempts, error``, the
    scores (``exact``, ``valid_json``, ``<field>_pred/_true/_ok``, scorer columns) and the
    example's own scalar fields (``kind`` ...). ``runs``: per configuration, the wall time and (on
    a local server on this machine) the server's CPU seconds.
    """

    results: Any
    configs: list[Config]
    fields: tuple[str, ...]
    labels: dict[str, list]
    runs: Any
    backend: str = "local"
    examples: list[dict] = field(default_factory=list, repr=False)
    via: str = "chat"

    @classmethod
    def from_predictions(
        cls,
        examples,
        predictions: dict[str, Sequence],
        *,
        labels: dict[str, Sequence] | None = None,
        fields: Sequence[str] | None = None,
        scorers: Sequence[Scorer] = (),
    ) -> Evaluation:
        """Score answers you already have (``{configuration name: [answer per example]}``), e.g.
        from a hosted run saved to a file: the same tables and views, without tokens or timing."""
        examples = load_examples(examples)
        configs = [Config(name, name) for name in predictions]
        rows = []
        for name, answers in predictions.items():
            answers = list(answers)
            if len(answers) != len(examples):
                raise ValueError(f"{name}: {len(answers)} answers for {len(examples)} examples")
            rows.append([{"prediction": a, "finish_reason": None, "prompt_tokens": math.nan,
                          "completion_tokens": math.nan, "latency_s": math.nan, "attempts": 1, "error": None}
                         for a in answers])
        if labels is not None:
            fields = tuple(labels)
        fields = tuple(fields) if fields is not None else _fields_of([reference_of(ex) for ex in examples])
        runs = [{"config": c.name, "model": c.model, "via": "given", "wall_s": math.nan, "cpu_s": math.nan,
                 "batch_id": ""} for c in configs]
        return _assemble(configs, examples, rows, runs, fields=fields, labels=labels, scorers=scorers,
                         backend="", via="given")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.configs]

    def config(self, name: str) -> Config:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(f"no configuration {name!r}; have {self.names}")

    def of(self, name: str):
        """The result rows of one configuration (indexed by example id)."""
        self.config(name)
        return self.results[self.results["config"] == name].set_index("id")

    # -- metrics ---------------------------------------------------------------------------------

    def field_accuracy(self):
        """Accuracy per field (columns) and configuration (rows); a failed or unparseable answer
        counts as wrong."""
        import pandas as pd

        return pd.DataFrame({f: self.results.groupby("config", sort=False)[f"{f}_ok"].mean() for f in self.fields})

    def macro_f1(self):
        """Macro F1 per field (columns) and configuration (rows)."""
        import pandas as pd

        data = {}
        for f in self.fields:
            data[f] = {name: macro_f1(self.of(name)[f"{f}_true"], self.of(name)[f"{f}_pred"], self.labels[f])
                       for name in self.names}
        return pd.DataFrame(data).reindex(self.names)

    def f1_by_label(self, field_name: str, config: str):
        """Precision, recall and F1 per label of one field for one configuration."""
        rows = self.of(config)
        return f1_by_label(rows[f"{field_name}_true"], rows[f"{field_name}_pred"], self.labels[field_name])

    def confusion(self, field_name: str, config: str):
        """Confusion matrix of one field for one configuration (rows true, columns predicted)."""
        rows = self.of(config)
        return confusion_matrix(rows[f"{field_name}_true"], rows[f"{field_name}_pred"], self.labels[field_name])

    def scores(self, columns: Sequence[str] | None = None, by: str | None = None):
        """Mean of score columns (default: ``exact`` plus every scorer column) per configuration,
        or per configuration and ``by`` (an example field such as ``kind``)."""
        skip = {"config", "model", "id", "reference", "prediction", "finish_reason", "prompt_tokens",
                "completion_tokens", "latency_s", "attempts", "error"}
        if columns is None:
            columns = [c for c in self.results.columns if c not in skip and not c.endswith(("_pred", "_true"))
                       and self.results[c].dtype == bool]
        keys = ["config"] + ([by] if by else [])
        table = self.results.groupby(keys, sort=False)[list(columns)].mean()
        return table.unstack("config") if by else table

    def summary(self):
        """One row per configuration: quality, tokens, latency and time.

        ``errors`` counts failed requests and ``cut_off`` the answers that stopped at ``max_tokens``
        (``finish_reason == "length"``: too long to judge, whatever they would have said);
        ``exact``, ``valid_json`` and ``<field>`` (accuracy) are shares of all examples;
        ``prompt_tokens``/``completion_tokens`` are means from ``usage``; ``latency_s`` is the mean
        time per request (under the run's concurrency), ``latency_p90_s`` its 90th percentile;
        ``wall_s`` the time of the whole configuration; ``cpu_s`` the local server's CPU seconds.
        """
        import pandas as pd

        g = self.results.groupby("config", sort=False)
        table = pd.DataFrame({"n": g.size(), "errors": g["error"].apply(lambda s: int(s.notna().sum()))})
        # Answers that stopped at max_tokens: wrong because cut off, not (only) because mistaken.
        table["cut_off"] = g["finish_reason"].apply(lambda s: int((s == "length").sum()))
        table["exact"] = g["exact"].mean()
        if "valid_json" in self.results:
            table["valid_json"] = g["valid_json"].mean()
        for f in self.fields:
            table[f] = g[f"{f}_ok"].mean()
        table["prompt_tokens"] = g["prompt_tokens"].mean()
        table["completion_tokens"] = g["completion_tokens"].mean()
        table["latency_s"] = g["latency_s"].mean()
        table["latency_p90_s"] = g["latency_s"].quantile(0.9)
        table["retries"] = g["attempts"].apply(lambda s: int((s - 1).clip(lower=0).sum()))
        runs = self.runs.set_index("config")
        table["wall_s"] = runs["wall_s"].reindex(table.index)
        table["cpu_s"] = runs["cpu_s"].reindex(table.index)
        return table.reindex(self.names)

    def costs(self, *, priced_as: str | None = None, on=None, requests: int = 1_000):
        """Cost of ``requests`` requests per configuration, from the measured mean tokens.

        Each configuration is priced as its own model in the catalog (fine-tuned prices for
        fine-tuned models); a model without a price (the local backend) gets NaN and a note, with
        its measured CPU and wall seconds per ``requests`` instead. ``priced_as`` (e.g.
        ``"gpt-4.1-mini"``) prices every configuration's *measured token counts* at that hosted
        model's prices instead -- base prices for base configurations, fine-tuned ones for
        fine-tuned ones; the ``priced_as`` column says so. ``usd_batch`` is the same at the hosted
        Batch API's 50% discount.
        """
        import pandas as pd

        from . import catalog, cost

        summary = self.summary()
        rows = []
        for c in self.configs:
            s = summary.loc[c.name]
            n = max(1, int(s["n"] - s["errors"]))
            price_model = priced_as or c.price_model or c.model
            label, usd, note = "", math.nan, ""
            try:
                entry = catalog.lookup(price_model, on)
                prompt, completion = s["prompt_tokens"], s["completion_tokens"]
                if math.isnan(prompt) or math.isnan(completion):
                    raise ValueError("the API reported no usage")
                bill = cost.inference_cost(entry.snapshot, round(prompt * requests), round(completion * requests),
                                           fine_tuned=c.is_fine_tuned, on=on)
                usd = bill.per_request_usd
                label = f"{entry.snapshot} ({'fine-tuned' if c.is_fine_tuned else 'base'} prices)"
                if priced_as and _catalog_snapshot(c.price_model or c.model) != entry.snapshot:
                    note = (f"{c.model}'s measured token counts at {entry.model}'s prices: an illustration "
                            "(its tokenizer would count differently)")
            except (catalog.UnknownCatalogModel, cost.NoPriceError, ValueError) as e:
                note = ("no price: the local backend's cost is CPU time"
                        if isinstance(e, cost.NoPriceError) else str(e).split(" (known")[0])
            rows.append({
                "config": c.name, "model": c.model, "prompt_tokens": s["prompt_tokens"],
                "completion_tokens": s["completion_tokens"], "priced_as": label, f"usd_per_{requests}": usd,
                f"usd_per_{requests}_batch": usd * HOSTED_BATCH_DISCOUNT if not math.isnan(usd) else math.nan,
                f"cpu_s_per_{requests}": s["cpu_s"] / n * requests if not pd.isna(s["cpu_s"]) else math.nan,
                f"wall_s_per_{requests}": s["wall_s"] / n * requests if not pd.isna(s["wall_s"]) else math.nan,
                "note": note,
            })
        return pd.DataFrame(rows).set_index("config")

    def paired(self, before: str, after: str, column: str = "exact"):
        """How the answers changed from configuration ``before`` to ``after`` on the same examples:
        both right, gained (wrong -> right), lost (right -> wrong), both wrong, the exact McNemar
        p-value of gained vs lost (small: the change is unlikely to be chance), and the difference
        ``after - before`` with its 95% interval for paired data (:func:`paired_difference`)."""
        import pandas as pd

        a, b = self.of(before)[column].astype(bool), self.of(after)[column].astype(bool)
        b = b.reindex(a.index)
        shift = paired_shift(a, b)
        both_right, both_wrong = int((a & b).sum()), int((~a & ~b).sum())
        diff = paired_difference(both_right, shift["gained"], shift["lost"], both_wrong)
        counts = {"both right": both_right, "gained": shift["gained"], "lost": shift["lost"],
                  "both wrong": both_wrong, f"{before}": shift["before"], f"{after}": shift["after"],
                  "mcnemar_p": shift["mcnemar_p"], "difference": diff["difference"], "diff_low": diff["low"],
                  "diff_high": diff["high"]}
        return pd.Series(counts, name=f"{before} -> {after} ({column})")

    def _yes_no_columns(self) -> dict[str, str]:
        """{metric name: score column}: exact, valid JSON and each field's accuracy."""
        columns = {"exact": "exact"}
        if "valid_json" in self.results:
            columns["valid_json"] = "valid_json"
        columns.update({f: f"{f}_ok" for f in self.fields})
        return columns

    def intervals(self, columns: Sequence[str] | None = None, *, confidence: float = 0.95):
        """Each configuration's rate of each yes/no score with its Wilson interval.

        ``columns``: score columns or metric names (default: ``exact``, ``valid_json`` and each
        field, whose column is ``<field>_ok``). One row per (configuration, metric): ``right`` (the
        count), ``n``, ``rate``, ``low``, ``high``. A failed or unparseable answer counts as wrong.
        The interval (:func:`wilson_interval`) says how far the rate on this many
        examples could be from the rate on all such examples. Taught in notebooks/05_evaluation.ipynb.
        """
        import pandas as pd

        known = self._yes_no_columns()
        wanted = list(columns) if columns is not None else list(known)
        rows = []
        for name in self.names:
            part = self.of(name)
            for metric in wanted:
                column = known.get(metric, metric)
                if column not in part:
                    raise KeyError(f"no score column {column!r}; have {sorted(known)}")
                values = part[column].fillna(False).astype(bool)
                right, n = int(values.sum()), int(len(values))
                low, high = wilson_interval(right, n, confidence)
                rows.append({"config": name, "metric": metric, "right": right, "n": n,
                             "rate": right / n if n else math.nan, "low": low, "high": high})
        return pd.DataFrame(rows).set_index(["config", "metric"])

    def interval_table(self, columns: Sequence[str] | None = None, *, confidence: float = 0.95):
        """:meth:`intervals` as one readable table: a row per configuration, a column per metric,
        each cell ``"62% (52-71%)"`` (the rate and its Wilson interval)."""
        table = self.intervals(columns, confidence=confidence)
        text = table.apply(lambda r: interval_text(r["rate"], r["low"], r["high"]), axis=1)
        return text.unstack("metric").reindex(index=self.names, columns=list(table.index.get_level_values("metric").unique()))

    def format_and_task(self):
        """Format vs task, per configuration: ``valid_json`` (the format), ``exact`` and the mean
        field accuracy over all answers, and the same two over the valid-JSON answers only
        (``exact_if_valid``, ``fields_if_valid``: the task, given the format), with ``n_valid``.

        A configuration whose answers are all valid JSON (Structured Outputs) has the same
        numbers in both; one whose answers rarely parse can look strong on the few that do --
        read ``n_valid`` too. Taught in notebooks/05_evaluation.ipynb.
        """
        import pandas as pd

        if "valid_json" not in self.results:
            raise ValueError("format_and_task needs JSON references")
        rows = {}
        for name in self.names:
            part = self.of(name)
            valid = part["valid_json"].astype(bool)
            field_ok = part[[f"{f}_ok" for f in self.fields]].astype(bool).mean(axis=1)
            rows[name] = {"n": len(part), "n_valid": int(valid.sum()), "valid_json": float(valid.mean()),
                          "exact": float(part["exact"].mean()), "fields": float(field_ok.mean()),
                          "exact_if_valid": float(part.loc[valid, "exact"].mean()) if valid.any() else math.nan,
                          "fields_if_valid": float(field_ok[valid].mean()) if valid.any() else math.nan}
        return pd.DataFrame.from_dict(rows, orient="index")

    def outcomes(self, by: str = "exact"):
        """Right or wrong, and whether the answer was finished or cut off at ``max_tokens``, per
        configuration: ``right``, ``wrong (finished)``, ``wrong (cut off)``, ``right (cut off)``
        and ``failed`` (no answer). A wrong answer that was cut off may only have needed more room;
        a finished wrong answer is a real mistake. Taught in notebooks/05_evaluation.ipynb."""
        import pandas as pd

        rows = {}
        for name in self.names:
            part = self.of(name)
            ok = part[by].fillna(False).astype(bool)
            cut = part["finish_reason"].eq("length")
            failed = part["prediction"].isna()
            rows[name] = {"right": int((ok & ~cut).sum()), "wrong (finished)": int((~ok & ~cut & ~failed).sum()),
                          "wrong (cut off)": int((~ok & cut).sum()), "right (cut off)": int((ok & cut).sum()),
                          "failed": int(failed.sum())}
        return pd.DataFrame.from_dict(rows, orient="index")

    # -- answers side by side ---------------------------------------------------------------------

    def side_by_side(self, configs: Sequence[str] | None = None, *, input_chars: int | None = 160,
                     mark_cut_off: bool = True):
        """One row per example: its input (the last user message), the reference, and each
        configuration's answer (``None`` when the request failed), every answer in full.

        An answer that stopped at ``max_tokens`` ends with :data:`CUT_OFF_MARK` when
        ``mark_cut_off``: a cut-off answer is wrong for a different reason than a mistaken one.
        The table shows every cell in full, wrapped (see :func:`full_text`); ``input_chars``
        shortens only the input column.
        """
        import pandas as pd

        names = list(configs or self.names)
        inputs = {}
        for ex in self.examples:
            users = [m for m in ex.get("messages", []) if m.get("role") == "user"]
            text = (users[-1].get("content") or "") if users else ""
            if input_chars and len(text) > input_chars:
                text = text[: input_chars - 1] + "…"
            inputs[ex["id"]] = text
        first = self.of(names[0])
        frame = pd.DataFrame({"input": pd.Series(inputs), "reference": first["reference"]})
        for name in names:
            rows = self.of(name)
            answers = rows["prediction"]
            if mark_cut_off:
                cut = rows["finish_reason"].eq("length") & answers.notna()
                answers = answers.where(~cut, answers.astype(str) + CUT_OFF_MARK)
            frame[name] = answers
        frame.index.name = "id"
        return full_text(frame)

    def _key(self, prediction) -> str:
        parsed = parse_json(prediction)
        if parsed is not None:
            return json.dumps(parsed, sort_keys=True)
        return "" if prediction is None else _normal_text(prediction)

    def disagreements(self, configs: Sequence[str] | None = None, *, by: str = "exact",
                      input_chars: int | None = 160):
        """The examples on which the configurations answered differently (JSON compared as
        objects, text without case and spacing), side by side, with a ``right`` column naming the
        configurations whose answer was right by the score column ``by`` (``exact``, or a scorer's
        column such as ``correct``). Answers cut off at ``max_tokens`` are marked as in
        :meth:`side_by_side`; they are compared as the model wrote them."""
        names = list(configs or self.names)
        frame = self.side_by_side(names, input_chars=input_chars)
        keys = {name: self.of(name)["prediction"].reindex(frame.index).map(self._key) for name in names}
        import pandas as pd

        differ = pd.DataFrame(keys).nunique(axis=1) > 1
        out = frame[differ].copy()
        right = {n: self.of(n)[by] for n in names}
        out["right"] = [", ".join(n for n in names if bool(right[n].get(i, False))) or "none" for i in out.index]
        return out

    def viewer(self, configs: Sequence[str] | None = None, *, by: str = "exact", n_static: int = 5) -> DisagreementViewer:
        """An ipywidgets viewer to page through the disagreements (see :class:`DisagreementViewer`)."""
        return DisagreementViewer(self, configs, by=by, n_static=n_static)

    # -- plots -----------------------------------------------------------------------------------

    def plot(self, *, priced_as: str | None = None, on=None):
        """Four panels, one bar group per configuration: accuracy (exact, valid JSON, each
        field), tokens per request (prompt + completion), cost per 1,000 requests (at
        ``priced_as`` prices when given; else CPU seconds per 1,000 on the local backend) and
        latency (mean per request, and wall time of the run). Returns the matplotlib Figure."""
        import numpy as np
        from matplotlib.figure import Figure

        summary = self.summary()
        names = self.names
        x = np.arange(len(names))
        fig = Figure(figsize=(13, 8.5), layout="constrained")
        (ax_acc, ax_tok), (ax_cost, ax_lat) = fig.subplots(2, 2)

        metrics = ["exact"] + (["valid_json"] if "valid_json" in summary else []) + list(self.fields)
        width = 0.8 / max(1, len(metrics))
        for k, m in enumerate(metrics):
            values = summary[m].to_numpy(dtype=float)
            bars = ax_acc.bar(x + (k - (len(metrics) - 1) / 2) * width, values, width, label=m.replace("_", " "))
            ax_acc.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7, rotation=90, padding=2)
        ax_acc.set_ylim(0, 1.35)
        ax_acc.set_title("Accuracy (share of test examples)")
        ax_acc.legend(fontsize=8, ncols=min(5, len(metrics)), loc="upper left")

        prompt = summary["prompt_tokens"].to_numpy(dtype=float)
        completion = summary["completion_tokens"].to_numpy(dtype=float)
        ax_tok.bar(x, prompt, label="prompt")
        ax_tok.bar(x, completion, bottom=prompt, label="completion")
        for i, (p, c) in enumerate(zip(prompt, completion)):
            ax_tok.text(i, p + c, f"{p:.0f} + {c:.0f}", ha="center", va="bottom", fontsize=8)
        ax_tok.set_title("Tokens per request (from usage)")
        ax_tok.legend(fontsize=8)

        costs = self.costs(priced_as=priced_as, on=on)
        usd = costs["usd_per_1000"].to_numpy(dtype=float)
        if not np.all(np.isnan(usd)):
            bars = ax_cost.bar(x, usd, color="tab:green")
            ax_cost.bar_label(bars, labels=[f"${v:.3f}" if not np.isnan(v) else "n/a" for v in usd], fontsize=8)
            where = f" at {priced_as} prices\n(the measured token counts: an illustration)" if priced_as else ""
            ax_cost.set_title(f"Cost per 1,000 requests (USD){where}")
        else:
            cpu = costs["cpu_s_per_1000"].to_numpy(dtype=float)
            bars = ax_cost.bar(x, cpu, color="tab:gray")
            ax_cost.bar_label(bars, labels=[f"{v:.0f} s" for v in cpu], fontsize=8)
            ax_cost.set_title("No price (local backend): server CPU seconds per 1,000 requests")

        lat = summary["latency_s"].to_numpy(dtype=float)
        wall = summary["wall_s"].to_numpy(dtype=float)
        ax_lat.bar(x - 0.2, lat, 0.4, label="mean latency per request")
        ax_lat.bar(x + 0.2, wall, 0.4, label=f"wall time of the run ({len(self.examples)} requests)")
        for i, (a, b) in enumerate(zip(lat, wall)):
            if not np.isnan(a):
                ax_lat.text(i - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
            ax_lat.text(i + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=8)
        ax_lat.set_title("Seconds")
        ax_lat.legend(fontsize=8)
        for ax in (ax_acc, ax_tok, ax_cost, ax_lat):
            ax.set_xticks(x, names, rotation=15, ha="right", fontsize=9)
            ax.margins(y=0.15)
        return fig


def interval_text(rate: float, low: float, high: float) -> str:
    """``"62% (52-71%)"``: a rate and its interval, as headlines and tables show them."""
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "n/a"
    return f"{rate:.0%} ({low:.0%}-{high:.0%})"


# ---------------------------------------------------------------------------------------------
# Learning curves


def learning_curve(evaluation: Evaluation, examples_by_config: dict[str, int], *, confidence: float = 0.95):
    """One row per configuration of ``evaluation`` named in ``examples_by_config`` (``{name:
    training examples}``), sorted by the number of examples: ``examples``, ``valid_json``,
    ``exact`` with its Wilson interval (``exact_low``, ``exact_high``) and each field's accuracy.
    Taught in notebooks/05_evaluation.ipynb."""
    import pandas as pd

    table = evaluation.intervals(confidence=confidence)
    rows = []
    for name, n in examples_by_config.items():
        row = {"config": name, "examples": int(n)}
        for metric in table.loc[name].index:
            row[metric] = table.loc[(name, metric), "rate"]
        row["exact_low"], row["exact_high"] = table.loc[(name, "exact"), ["low", "high"]]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("examples", kind="stable").set_index("config")


def plot_learning_curve(curves: dict[str, Any], fields: Sequence[str]):
    """Accuracy against training examples, one panel per test set (``{test set name: the
    :func:`learning_curve` table}``): valid JSON (the format), exact match with its interval, and
    each field (the task). Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2 * len(curves), 4.2), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (title, curve) in zip(axes, curves.items()):
        x = curve["examples"].to_numpy()
        ax.fill_between(x, curve["exact_low"], curve["exact_high"], alpha=0.15, color="tab:blue",
                        label="exact, 95% interval")
        ax.plot(x, curve["exact"], "o-", color="tab:blue", lw=2, label="exact match")
        if "valid_json" in curve:
            ax.plot(x, curve["valid_json"], "s--", color="black", label="valid JSON (format)")
        for f in fields:
            ax.plot(x, curve[f], ".:", label=f"{f} (task)")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training examples (0: the base model)")
        ax.set_ylabel("share of test tickets")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


# ---------------------------------------------------------------------------------------------
# Tables of answers, shown in full

#: Appended by :meth:`Evaluation.side_by_side` to an answer that stopped at ``max_tokens``.
CUT_OFF_MARK = " ⟨cut off: max_tokens⟩"

_FULL_TEXT_CSS = ("<style>.ftkit-full-text td, .ftkit-full-text th {white-space: pre-wrap; text-align: left; "
                  "vertical-align: top; max-width: 38em; overflow-wrap: anywhere}</style>")


@functools.cache
def _full_text_class():
    import pandas as pd

    class FullTextFrame(pd.DataFrame):
        """A DataFrame that displays every cell in full (wrapped in HTML) instead of cutting text
        at pandas' ``display.max_colwidth`` (50 characters): a JSON answer cut there loses its
        last field. Operations that return a frame (``head``, ``drop``, selection) keep it."""

        @property
        def _constructor(self):
            return FullTextFrame

        def _repr_html_(self):
            with pd.option_context("display.max_colwidth", None):
                table = super()._repr_html_()
            return None if table is None else f"<div class='ftkit-full-text'>{_FULL_TEXT_CSS}{table}</div>"

        def __repr__(self) -> str:
            with pd.option_context("display.max_colwidth", None):
                return super().__repr__()

        def to_string(self, *args, **kwargs) -> str:
            kwargs.setdefault("max_colwidth", None)
            return super().to_string(*args, **kwargs)

    return FullTextFrame


def full_text(frame):
    """``frame`` as a table that shows every cell in full, wrapped, in a notebook and as text.

    pandas cuts each cell at ``display.max_colwidth`` (50 characters by default), which hides the
    end of an answer -- for the course's JSON answers, the last field. This changes nothing in
    the data and no global pandas option: the returned frame (a DataFrame) displays differently.
    :meth:`Evaluation.side_by_side` and :meth:`Evaluation.disagreements` already return one.

    Taught in notebooks/04_job_lifecycle.ipynb and notebooks/05_evaluation.ipynb.
    """
    return _full_text_class()(frame)


# ---------------------------------------------------------------------------------------------
# The disagreement viewer


class DisagreementViewer:
    """Page through the examples on which configurations disagree, one at a time (ipywidgets),
    like the hosted comparison playground: the input, the reference, and each configuration's
    answer marked right or wrong. Displaying it also shows a static table of the first
    ``n_static`` disagreements, so exported HTML and CI logs keep something meaningful.

    Taught in notebooks/05_evaluation.ipynb.
    """

    def __init__(self, evaluation: Evaluation, configs: Sequence[str] | None = None, *, by: str = "exact",
                 n_static: int = 5) -> None:
        self.evaluation = evaluation
        self.configs = list(configs or evaluation.names)
        self.by = by
        self.frame = evaluation.disagreements(self.configs, by=by, input_chars=None)
        self.n_static = n_static
        self.position = 0
        self._widget = None

    def __len__(self) -> int:
        return len(self.frame)

    def card_html(self, position: int | None = None) -> str:
        """The HTML of one disagreement (the current one by default)."""
        if not len(self.frame):
            return "<p>The configurations agree on every example.</p>"
        position = self.position if position is None else position
        example_id = self.frame.index[position]
        row = self.frame.iloc[position]
        cells = []
        for name in self.configs:
            answer = row[name]
            rows = self.evaluation.of(name)
            right = bool(rows[self.by].get(example_id, False))
            colour = "#1a7f37" if right else "#cf222e"
            mark = "right" if right else "wrong"
            if rows["finish_reason"].get(example_id) == "length":
                mark += ", cut off at max_tokens"
            text = "(request failed)" if answer is None else answer
            cells.append(f"<tr><td><b>{html.escape(name)}</b></td><td style='color:{colour}'>{mark}</td>"
                         f"<td><code>{html.escape(str(text))}</code></td></tr>")
        return (
            f"<div><b>{position + 1} of {len(self.frame)}</b> &middot; example {html.escape(str(example_id))}"
            f"<pre style='white-space:pre-wrap'>{html.escape(str(row['input']))}</pre>"
            f"<p>reference: <code>{html.escape(str(row['reference']))}</code></p>"
            f"<table>{''.join(cells)}</table></div>"
        )

    def show(self, position: int) -> None:
        """Move to disagreement ``position`` (wraps around)."""
        if len(self.frame):
            self.position = position % len(self.frame)
        if self._widget is not None:
            self._card.value = self.card_html()

    @property
    def widget(self):
        if self._widget is None:
            import ipywidgets as w

            self._card = w.HTML(self.card_html())
            back, forward = w.Button(description="◀ previous"), w.Button(description="next ▶")
            back.on_click(lambda _: self.show(self.position - 1))
            forward.on_click(lambda _: self.show(self.position + 1))
            self._widget = w.VBox([w.HBox([back, forward]), self._card])
        return self._widget

    def static_table(self):
        """The first ``n_static`` disagreements as a DataFrame (for HTML export and CI)."""
        return self.evaluation.disagreements(self.configs, by=self.by).head(self.n_static)

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        display(HTML(f"<p><i>Static copy: the first {min(self.n_static, len(self.frame))} of {len(self.frame)} "
                     "disagreements (the viewer above pages through all of them).</i></p>"))
        display(self.static_table())


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

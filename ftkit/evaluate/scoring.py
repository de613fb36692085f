"""Scoring: pure functions on predictions and references (exact match, valid JSON, per-field
accuracy, F1, confusion matrices, the ability scorer).

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

Scorer = Callable[[Any, Any, dict], "dict | float"]

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


def _missing(value) -> bool:
    """None, or the NaN pandas puts in its place in a column of strings."""
    return value is None or (isinstance(value, float) and math.isnan(value))

# ---------------------------------------------------------------------------------------------
# The result

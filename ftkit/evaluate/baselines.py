"""Baselines a fair comparison needs: the majority-class row (no model at all) and the optional
capable competitor named by one setting.

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

from collections.abc import Sequence

from .examples import reference_of
from .scoring import parse_json
from .stats import wilson_interval


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

    from ..backend import backend_of

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

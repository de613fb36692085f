"""Statistics: McNemar's exact test, Wilson intervals, paired shifts and learning curves.

Taught in notebooks/05_evaluation.ipynb and 06_preference_tuning.ipynb.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .evaluation import Evaluation


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

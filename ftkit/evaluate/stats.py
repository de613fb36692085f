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

"""Power: how many test examples a question needs, and what a given number can detect.

Every headline of the course compares two models on the *same* examples (fine-tuned vs prompted,
before vs after DPO or RFT): a paired design, where only the examples that flip carry information.
Before running such a comparison, state the effect it must detect and check that the test set can
detect it; after running it, read the verdict with that in mind. The functions here answer the
two questions a notebook asks before it spends CPU time:

* :func:`paired_sample_size` -- examples needed for McNemar's test to detect a gain of ``delta``
  with the stated power, given how often the two models disagree (``discordant``);
* :func:`paired_detectable` -- the reverse: the smallest gain ``n`` examples can detect;
* :func:`noninferiority_sample_size` -- examples needed for a 95% interval of the paired
  difference to sit above ``-margin`` when the two models are in fact equally good;
* :func:`proportion_sample_size` / :func:`proportion_half_width` -- the precision of a single
  rate (an agreement, an exact match) at ``n``;
* :func:`sizing_text` -- all of it for one paired comparison, as the notebooks print it.

The formulas are the normal approximations of Connor (1987) for the paired design: with
``psi`` = the share of examples on which the models disagree and ``delta`` = the difference of
the two rates,

    n = (z_{1-alpha/2} * sqrt(psi) + z_{power} * sqrt(psi - delta**2)) ** 2 / delta ** 2

Connor, R. J. (1987), "Sample size for testing differences in proportions for the paired-sample
design", Biometrics 43(1), 207-211.

Taught in notebooks/04_job_lifecycle.ipynb to 08_own_your_model.ipynb, where each headline's
sizes are chosen.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = [
    "noninferiority_sample_size", "paired_detectable", "paired_power", "paired_sample_size",
    "proportion_half_width", "proportion_sample_size", "sizing_text",
]


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _check(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low < value < high:
        raise ValueError(f"{name} must be between {low} and {high} (exclusive), got {value}")


def paired_power(n: int, delta: float, discordant: float, *, alpha: float = 0.05) -> float:
    """The power of McNemar's two-sided test at level ``alpha`` to detect a difference ``delta``
    between two rates measured on the same ``n`` examples, when a share ``discordant`` of them
    flips one way or the other (Connor 1987, normal approximation)."""
    _check("discordant", discordant, 0.0, 1.0 + 1e-12)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    delta = abs(delta)
    if delta == 0:
        return alpha
    if delta > discordant:
        raise ValueError(f"a difference of {delta:.3f} needs at least that share of flips; "
                         f"discordant={discordant:.3f} is smaller")
    rest = discordant - delta ** 2
    if rest <= 0:
        return 1.0
    z = (delta * math.sqrt(n) - _z(1 - alpha / 2) * math.sqrt(discordant)) / math.sqrt(rest)
    return NormalDist().cdf(z)


def paired_sample_size(delta: float, discordant: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Examples needed for McNemar's test (two-sided, level ``alpha``) to detect a gain of
    ``delta`` (a fraction: 0.10 is 10 points) with probability ``power``, when a share
    ``discordant`` of the examples flips between the two models.

    >>> paired_sample_size(0.10, 0.20)
    155
    """
    _check("delta", abs(delta))
    _check("power", power)
    _check("alpha", alpha)
    delta = abs(delta)
    if delta > discordant:
        raise ValueError(f"a gain of {delta:.3f} needs at least that share of flips; "
                         f"discordant={discordant:.3f} is smaller")
    top = _z(1 - alpha / 2) * math.sqrt(discordant) + _z(power) * math.sqrt(max(discordant - delta ** 2, 0.0))
    return math.ceil(top ** 2 / delta ** 2)


def paired_detectable(n: int, discordant: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest difference (a fraction) that ``n`` paired examples detect with probability
    ``power`` at level ``alpha``, when a share ``discordant`` of them flips. Solved by bisection
    on :func:`paired_power`; ``math.inf`` when even a difference as large as ``discordant``
    cannot be detected at this ``n``."""
    _check("discordant", discordant, 0.0, 1.0 + 1e-12)
    _check("power", power)
    if paired_power(n, discordant, discordant, alpha=alpha) < power:
        return math.inf
    low, high = 0.0, discordant
    for _ in range(60):
        mid = (low + high) / 2
        if paired_power(n, mid, discordant, alpha=alpha) >= power:
            high = mid
        else:
            low = mid
    return high


def noninferiority_sample_size(margin: float, discordant: float, *, confidence: float = 0.95,
                               power: float = 0.8, true_difference: float = 0.0) -> int:
    """Examples needed for the ``confidence`` interval of a paired difference to have its low end
    above ``-margin`` with probability ``power``, when the true difference is ``true_difference``
    (0: the two models are equally good) and a share ``discordant`` of the examples flips.

    This is what notebook 05's "non-inferior within 5 points" verdict needs; far more examples than
    detecting a large gain, because the margin is small.
    """
    _check("margin", margin)
    _check("power", power)
    _check("confidence", confidence)
    gap = margin + true_difference
    if gap <= 0:
        raise ValueError(f"a true difference of {true_difference} is already beyond the margin {margin}")
    spread = max(discordant - true_difference ** 2, 1e-12)
    z = _z(0.5 + confidence / 2) + _z(power)
    return math.ceil(z ** 2 * spread / gap ** 2)


def proportion_half_width(rate: float, n: int, *, confidence: float = 0.95) -> float:
    """Half the width of a ``confidence`` interval for a rate near ``rate`` measured on ``n``
    examples (normal approximation): how precisely ``n`` examples pin down an agreement or an
    accuracy."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    _check("confidence", confidence)
    rate = min(max(rate, 0.0), 1.0)
    return _z(0.5 + confidence / 2) * math.sqrt(max(rate * (1 - rate), 0.25 / n) / n)


def proportion_sample_size(rate: float, half_width: float, *, confidence: float = 0.95) -> int:
    """Examples needed to measure a rate near ``rate`` to within +- ``half_width``."""
    _check("half_width", half_width)
    _check("confidence", confidence)
    rate = min(max(rate, 0.0), 1.0)
    z = _z(0.5 + confidence / 2)
    return math.ceil(z ** 2 * max(rate * (1 - rate), 1e-4) / half_width ** 2)


def sizing_text(n: int, flipped: int, *, delta: float = 0.10, margin: float | None = None,
                power: float = 0.8, alpha: float = 0.05) -> str:
    """One sentence on what a paired comparison of ``n`` examples, ``flipped`` of which changed
    between the two models, could detect: the smallest difference at ``power``, the examples a
    gain of ``delta`` would need, and (with ``margin``) the examples a non-inferiority verdict
    would need. The share of flips is taken as observed, and at least 5% -- a nuisance parameter
    for planning the next test, not the effect itself (post-hoc power from an observed effect
    says nothing the p-value does not)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= flipped <= n:
        raise ValueError(f"flipped must be between 0 and n={n}, got {flipped}")
    share = max(flipped / n, 0.05)
    smallest = paired_detectable(n, share, alpha=alpha, power=power)
    smallest_text = (f"{smallest * 100:.0f} points" if math.isfinite(smallest)
                     else "nothing the flips allow (too few examples)")
    gain = min(delta, share)
    text = (f"{n} examples, {share:.0%} of them flipped: the smallest difference detectable with "
            f"{power:.0%} power is {smallest_text}; a gain of {gain * 100:.0f} points would need about "
            f"{paired_sample_size(gain, share, alpha=alpha, power=power):,} examples")
    if margin:
        text += (f", and a non-inferiority verdict within {margin * 100:g} points about "
                 f"{noninferiority_sample_size(margin, share, power=power):,}")
    return text + "."

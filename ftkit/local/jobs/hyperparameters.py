"""Hyperparameters of the local backend's fine-tuning methods: checking them, and resolving ``auto``.

The HTTP side checks a job's hyperparameters with :func:`check` when the job is created (a bad
value is a 400 naming it); the trainer resolves ``"auto"`` with :func:`resolve` once it knows
how many examples the file has. Both import this module, which needs neither torch nor HTTP.
The rules themselves -- ranges and what ``auto`` means, per method -- live in the method registry,
:mod:`ftkit.methods` (its docstring lists them); ``RULES`` and ``BASE_LEARNING_RATE`` here are
views of it.

Taught in notebooks/04_job_lifecycle.ipynb and notebooks/06_preference_tuning.ipynb.
"""

from __future__ import annotations

import math

from ... import methods
from ...methods import DEFAULT_BETA, MAX_BATCH_SIZE, REASONING_EFFORTS, SAMPLES_PER_PROMPT, Rule  # noqa: F401

#: LoRA learning rate for ``learning_rate_multiplier`` = 1, per method (a view of the registry).
BASE_LEARNING_RATE = methods.view("base_learning_rate")
#: Each method's hyperparameters and their ranges (a view of the registry).
RULES = methods.view("rules")


class InvalidHyperparameter(ValueError):
    """A hyperparameter the method does not know or a value outside its range."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check(method: str, hyperparameters: dict | None) -> dict:
    """The hyperparameters with every missing one set to ``"auto"`` -- or, for an enumeration
    the spec gives no ``"auto"`` (``reasoning_effort``), to the spec's default (``"default"``), so
    a job echoes only values ``FineTuningJob`` allows; raises :class:`InvalidHyperparameter`
    naming the first bad one."""
    rules = methods.get(method).rules
    hp = hyperparameters or {}
    if not isinstance(hp, dict):
        raise InvalidHyperparameter("", "hyperparameters must be an object")
    for name, value in hp.items():
        if name not in rules:
            known = ", ".join(rules)
            raise InvalidHyperparameter(name, f"unknown hyperparameter {name!r} for method {method!r} (known: {known})")
        rule = rules[name]
        if value is None or value == "auto":  # an enumeration's "auto" (jobs stored before): its default
            continue
        if rule.kind is str:
            if value not in rule.choices:
                raise InvalidHyperparameter(name, f"{name} must be one of {', '.join(rule.choices)}, got {value!r}")
            continue
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not is_number or (rule.kind is int and value != int(value)):
            what = "an integer" if rule.kind is int else "a number"
            raise InvalidHyperparameter(name, f"{name} must be 'auto' or {what}, got {value!r}")
        too_low = rule.low is not None and (value <= rule.low if rule.low_exclusive else value < rule.low)
        too_high = rule.high is not None and value > rule.high
        if too_low or too_high:
            low = f"> {rule.low:g}" if rule.low_exclusive else f">= {rule.low:g}"
            high = f" and <= {rule.high:g}" if rule.high is not None else ""
            raise InvalidHyperparameter(name, f"{name} must be {low}{high}, got {value!r}")
    return {name: rules[name].default if hp.get(name) in (None, "auto") else hp[name] for name in rules}


def auto_n_epochs(n_examples: int) -> int:
    """The epochs heuristic shared with the cost lesson (:func:`ftkit.methods.default_epochs`)."""
    return methods.default_epochs(max(1, n_examples))


def resolve(method: str, hyperparameters: dict | None, n_examples: int) -> dict:
    """Replace ``"auto"`` (or missing) hyperparameters with the values a run of ``n_examples``
    examples will use (the method's rules in :mod:`ftkit.methods`)."""
    given = {k: v for k, v in check(method, hyperparameters).items() if v != "auto"}
    return methods.get(method).auto(given, n_examples)


def samples_per_prompt(compute_multiplier: float) -> int:
    """Reinforcement: samples drawn per prompt (the group GRPO normalises rewards within).
    ``compute_multiplier`` scales it: 1.0 -> 4, 2.0 -> 8, 0.5 -> 2 (at least 2: a group of one
    has no spread to learn from)."""
    return max(2, round(SAMPLES_PER_PROMPT * compute_multiplier))


def learning_rate(method: str, hyperparameters: dict) -> float:
    return methods.get(method).base_learning_rate * float(hyperparameters["learning_rate_multiplier"])

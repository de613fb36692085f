"""Hyperparameters of the local backend's fine-tuning methods: what is allowed, and what ``auto`` means.

The HTTP side checks a job's hyperparameters with :func:`check` when the job is created (a bad
value is a 400 naming it); the trainer resolves ``"auto"`` with :func:`resolve` once it knows
how many examples the file has. Both import this module, which needs neither torch nor HTTP.

Ranges are the hosted API's (OpenAI's OpenAPI spec: ``FineTuneSupervisedHyperparameters``,
``FineTuneDPOHyperparameters``, ``FineTuneReinforcementHyperparameters``). The ``auto`` values
are **ftkit's local rules**, chosen for LoRA on a small model on a CPU -- they are not OpenAI's
(which it does not publish; notebook 03 shows the cookbook's estimate of the hosted epochs rule):

* ``n_epochs``: the epochs heuristic of :func:`ftkit.cost.default_epochs` -- 3 epochs, raised so
  that small files get about 100 example-passes and lowered so large ones get at most 25,000,
  within 1..25 epochs. Reinforcement: 1 epoch (every prompt is sampled several times per epoch).
* ``batch_size``: ceil(examples / 10) within 1..8 -- about ten steps per epoch for small files.
  Reinforcement: 4 prompts (each sampled ``samples per prompt`` times).
* ``learning_rate_multiplier``: 1.0, times the method's LoRA base rate (:data:`BASE_LEARNING_RATE`).
* ``beta`` (DPO): 0.1, the value of the DPO paper's experiments and TRL's default.
* reinforcement: ``compute_multiplier`` 1.0 (= :data:`SAMPLES_PER_PROMPT` samples of each prompt),
  ``eval_interval`` one tenth of the steps, ``eval_samples`` 8 validation prompts,
  ``reasoning_effort`` is accepted and recorded (SmolLM2 has no reasoning mode).

Taught in notebooks/04_job_lifecycle.ipynb and notebooks/06_preference_tuning.ipynb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..lifecycle import DPO, REINFORCEMENT, SUPERVISED

#: LoRA learning rate for ``learning_rate_multiplier`` = 1, per method. Preference and
#: reinforcement updates move a model that already answers well; a smaller step keeps it close.
BASE_LEARNING_RATE = {SUPERVISED: 4e-4, DPO: 1e-4, REINFORCEMENT: 5e-5}
MAX_BATCH_SIZE = 8
DEFAULT_BETA = 0.1
#: Samples drawn per training prompt in reinforcement fine-tuning at ``compute_multiplier`` 1.
SAMPLES_PER_PROMPT = 4
REASONING_EFFORTS = ("default", "low", "medium", "high")


@dataclass(frozen=True)
class Rule:
    kind: type  # int or float (or str for enumerations)
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    choices: tuple[str, ...] = ()
    default: str = "auto"  # what a missing value is echoed as: "auto", or an enumeration's spec default


_COMMON = {
    "batch_size": Rule(int, 1, 256),
    "learning_rate_multiplier": Rule(float, 0, 100, low_exclusive=True),
    "n_epochs": Rule(int, 1, 50),
}
RULES: dict[str, dict[str, Rule]] = {
    SUPERVISED: dict(_COMMON),
    DPO: {**_COMMON, "beta": Rule(float, 0, 2, low_exclusive=True)},
    REINFORCEMENT: {
        **_COMMON,
        "reasoning_effort": Rule(str, choices=REASONING_EFFORTS, default="default"),
        "compute_multiplier": Rule(float, 0.00001, 10, low_exclusive=True),
        "eval_interval": Rule(int, 1, None),
        "eval_samples": Rule(int, 1, None),
    },
}


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
    rules = RULES[method]
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
    """The epochs heuristic shared with the cost lesson (:func:`ftkit.cost.default_epochs`)."""
    from ..cost import default_epochs

    return default_epochs(max(1, n_examples))


def resolve(method: str, hyperparameters: dict | None, n_examples: int) -> dict:
    """Replace ``"auto"`` (or missing) hyperparameters with the values a run of ``n_examples``
    examples will use (the rules in the module docstring)."""
    hp = check(method, hyperparameters)

    def given(name, default):
        value = hp.get(name, "auto")
        return default if value == "auto" else value

    if method == REINFORCEMENT:
        out = {"n_epochs": int(given("n_epochs", 1)), "batch_size": int(given("batch_size", 4))}
    else:
        out = {"n_epochs": int(given("n_epochs", None) or auto_n_epochs(n_examples)),
               "batch_size": int(given("batch_size", max(1, min(MAX_BATCH_SIZE, math.ceil(n_examples / 10)))))}
    out["learning_rate_multiplier"] = float(given("learning_rate_multiplier", 1.0))
    if method == DPO:
        out["beta"] = float(given("beta", DEFAULT_BETA))
    if method == REINFORCEMENT:
        steps = math.ceil(n_examples / out["batch_size"]) * out["n_epochs"]
        out["reasoning_effort"] = given("reasoning_effort", "default")
        out["compute_multiplier"] = float(given("compute_multiplier", 1.0))
        out["eval_interval"] = int(given("eval_interval", max(1, steps // 10)))
        out["eval_samples"] = int(given("eval_samples", 8))
    return out


def samples_per_prompt(compute_multiplier: float) -> int:
    """Reinforcement: samples drawn per prompt (the group GRPO normalises rewards within).
    ``compute_multiplier`` scales it: 1.0 -> 4, 2.0 -> 8, 0.5 -> 2 (at least 2: a group of one
    has no spread to learn from)."""
    return max(2, round(SAMPLES_PER_PROMPT * compute_multiplier))


def learning_rate(method: str, hyperparameters: dict) -> float:
    return BASE_LEARNING_RATE[method] * float(hyperparameters["learning_rate_multiplier"])

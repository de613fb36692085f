"""The method registry: what ftkit knows about each fine-tuning method, in one place.

Per method (:class:`Method`): the kind of file it trains on (as :mod:`ftkit.validation` reports
it), its hyperparameters -- ranges (:class:`Rule`) and what ``"auto"`` means for a file of n
examples --, its LoRA base learning rate, the columns of its results file, its checkpoint
metrics and metric names, whether it needs a grader, and the class that trains it. The local
server (``ftkit.local.services.platform`` checks a job, ``ftkit.local.jobs.hyperparameters`` resolves "auto",
``ftkit.local.jobs.worker`` checks the files, ``ftkit.local.jobs.training.loop`` trains), the validator and
:mod:`ftkit.jobs` all read it. Torch-free and HTTP-free: the server's edge and its trainer import
it alike, and so does a lesson.

Adding a method is one module (its trainer class under ``ftkit/local/jobs/training/``, see
``loop.py``'s method contract) and one :func:`register` call here (or in a test).

Ranges are the hosted API's (OpenAI's OpenAPI spec: ``FineTuneSupervisedHyperparameters``,
``FineTuneDPOHyperparameters``, ``FineTuneReinforcementHyperparameters``). The ``auto`` values
are **ftkit's local rules**, chosen for LoRA on a small model on a CPU -- they are not OpenAI's
(which it does not publish; notebook 03 shows the cookbook's estimate of the hosted epochs rule):

* ``n_epochs``: :func:`default_epochs` -- 3 epochs, raised so that small files get about 100
  example-passes and lowered so large ones get at most 25,000, within 1..25 epochs.
  Reinforcement: 1 epoch (every prompt is sampled several times per epoch).
* ``batch_size``: ceil(examples / 10) within 1..8 -- about ten steps per epoch for small files.
  Reinforcement: 4 prompts (each sampled ``samples per prompt`` times).
* ``learning_rate_multiplier``: 1.0, times the method's LoRA base rate.
* ``beta`` (DPO): 0.1, the value of the DPO paper's experiments and TRL's default.
* reinforcement: ``compute_multiplier`` 1.0 (= :data:`SAMPLES_PER_PROMPT` samples of each prompt),
  ``eval_interval`` one tenth of the steps, ``eval_samples`` 8 validation prompts,
  ``reasoning_effort`` is accepted and recorded (SmolLM2 has no reasoning mode).

Taught in notebooks/03_cost_math.ipynb (the epochs rule), 04_job_lifecycle.ipynb and
06_preference_tuning.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral, Real

from . import lifecycle as lc

__all__ = [
    "CHAT_FILE", "DEFAULT_BETA", "FILE_KINDS", "MAX_BATCH_SIZE", "MAX_DEFAULT_EPOCHS", "MAX_TARGET_EXAMPLES", "MIN_DEFAULT_EPOCHS",
    "MIN_TARGET_EXAMPLES", "PREFERENCE_FILE", "PROMPT_FILE", "REASONING_EFFORTS", "SAMPLES_PER_PROMPT", "TARGET_EPOCHS", "Method", "Rule",
    "default_epochs", "get", "names", "register", "unregister", "view", "whole_number",
]

# The hosted API's default number of epochs ("auto"), as the OpenAI cookbook's data-preparation
# notebook estimates it: aim for 3 epochs, but keep the number of example-passes
# (examples x epochs) between 100 and 25,000, and the epochs between 1 and 25.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

MAX_BATCH_SIZE = 8
DEFAULT_BETA = 0.1
#: Samples drawn per training prompt in reinforcement fine-tuning at ``compute_multiplier`` 1.
SAMPLES_PER_PROMPT = 4
REASONING_EFFORTS = ("default", "low", "medium", "high")

#: The kinds of training file a method trains on, as :mod:`ftkit.validation` reports them
#: (``ValidationReport.kind``): chat examples, preference pairs, or prompts to answer and grade
#: (a kind named after its method). A new method reuses one; a new kind needs the validator's checks.
CHAT_FILE, PREFERENCE_FILE, PROMPT_FILE = "chat", "preference", lc.REINFORCEMENT
FILE_KINDS = (CHAT_FILE, PREFERENCE_FILE, PROMPT_FILE)


def whole_number(name: str, value, *, allow_zero: bool = True) -> int:
    """A non-negative whole number (of examples, tokens, requests ...), or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        if isinstance(value, Real) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {value:,}")
    return value


def default_epochs(n_examples: int) -> int:
    """The number of epochs the hosted API picks by default ("auto") for ``n_examples`` examples.

    The rule (OpenAI cookbook, "Data preparation and analysis for chat model fine-tuning"):
    start from 3 epochs; if that gives fewer than 100 example-passes, use
    ``min(25, 100 // n_examples)``; if it gives more than 25,000, use
    ``max(1, 25_000 // n_examples)``. So 10 examples train for 10 epochs, 40 for 3,
    10,000 for 2 and 30,000 for 1. It is the cookbook's estimate, not a published guarantee.
    The local server's "auto" epochs for supervised and DPO jobs.

    Taught in notebooks/03_cost_math.ipynb (``ftkit.cost.default_epochs`` is this function).
    """
    n = whole_number("n_examples", n_examples, allow_zero=False)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


@dataclass(frozen=True)
class Rule:
    """One hyperparameter's type and range (inclusive unless ``low_exclusive``), or its choices."""

    kind: type  # int or float (or str for enumerations)
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    choices: tuple[str, ...] = ()
    default: str = "auto"  # what a missing value is echoed as: "auto", or an enumeration's spec default


#: Hyperparameters every method takes: an int, a positive float, an int.
COMMON_RULES = {
    "batch_size": Rule(int, 1, 256),
    "learning_rate_multiplier": Rule(float, 0, 100, low_exclusive=True),
    "n_epochs": Rule(int, 1, 50),
}


def common_auto(given: Mapping, n_examples: int) -> dict:
    """The shared "auto" rules (supervised and DPO): :func:`default_epochs`, about ten steps
    per epoch for small files (batch within 1..8), learning-rate multiplier 1.0."""
    return {"n_epochs": int(given.get("n_epochs") or default_epochs(max(1, n_examples))),
            "batch_size": int(given.get("batch_size") or max(1, min(MAX_BATCH_SIZE, math.ceil(n_examples / 10)))),
            "learning_rate_multiplier": float(given.get("learning_rate_multiplier", 1.0))}


@dataclass(frozen=True)
class Method:
    """Everything ftkit knows about one fine-tuning method (see the module docstring).

    ``auto(given, n_examples)`` returns every hyperparameter's value for a file of
    ``n_examples`` examples: ``given`` holds the ones the job set (none is "auto"), the rest are
    the method's "auto" rules. ``trainer`` is ``"module:Class"``, imported only by the trainer
    process (torch). ``quantities``: the method's own metric names without their ``train_`` /
    ``valid_`` / ``full_valid_`` prefix (how :func:`ftkit.jobs.method_of_metrics` tells methods
    apart).
    """

    name: str
    file_kind: str
    rules: Mapping[str, Rule]
    base_learning_rate: float
    result_columns: list[str]
    checkpoint_metrics: list[str]
    trainer: str
    auto: Callable[[Mapping, int], dict] = common_auto
    quantities: tuple[str, ...] = ()
    needs_grader: bool = False

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """The names of the hyperparameters the method takes."""
        return tuple(self.rules)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add (or replace) a method; returns it."""
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (a test's toy method, when the test ends)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The registered method ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown fine-tuning method {name!r}: expected one of {', '.join(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """The registered methods' names, built-in ones first."""
    return tuple(_REGISTRY)


class view(Mapping):  # noqa: N801 -- used like a dict constant: RULES = methods.view("rules")
    """A read-only ``{method name: attribute}`` mapping over the registry that follows it (a
    method registered later appears): the old per-method tables (``RULES``, ``BASE_LEARNING_RATE``,
    ``FILE_KIND``) kept as views."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str):
        if name not in _REGISTRY:
            raise KeyError(name)
        return getattr(_REGISTRY[name], self.attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)


# -- the built-in methods -------------------------------------------------------------------------


def _dpo_auto(given: Mapping, n_examples: int) -> dict:
    return {**common_auto(given, n_examples), "beta": float(given.get("beta", DEFAULT_BETA))}


def _reinforcement_auto(given: Mapping, n_examples: int) -> dict:
    out = {"n_epochs": int(given.get("n_epochs", 1)), "batch_size": int(given.get("batch_size", 4)),
           "learning_rate_multiplier": float(given.get("learning_rate_multiplier", 1.0))}
    steps = math.ceil(n_examples / out["batch_size"]) * out["n_epochs"]
    out["reasoning_effort"] = given.get("reasoning_effort", "default")
    out["compute_multiplier"] = float(given.get("compute_multiplier", 1.0))
    out["eval_interval"] = int(given.get("eval_interval", max(1, steps // 10)))
    out["eval_samples"] = int(given.get("eval_samples", 8))
    return out


def _without_step(columns: list[str]) -> list[str]:
    return [c for c in columns if c != lc.STEP]


# Preference and reinforcement updates move a model that already answers well: a smaller LoRA
# learning rate keeps it close.
register(Method(
    lc.SUPERVISED, file_kind=CHAT_FILE, rules=dict(COMMON_RULES), base_learning_rate=4e-4,
    result_columns=lc.RESULT_COLUMNS[lc.SUPERVISED], checkpoint_metrics=lc.CHECKPOINT_METRICS,
    trainer="ftkit.local.jobs.training.sft:Supervised"))
register(Method(
    lc.DPO, file_kind=PREFERENCE_FILE, rules={**COMMON_RULES, "beta": Rule(float, 0, 2, low_exclusive=True)},
    base_learning_rate=1e-4, result_columns=lc.RESULT_COLUMNS[lc.DPO],
    # the last step's figures (as in its results file) and the full-validation ones
    checkpoint_metrics=[*_without_step(lc.RESULT_COLUMNS[lc.DPO]), lc.FULL_VALID_LOSS,
                        *(lc.dpo_metric("full_valid", q) for q in lc.DPO_QUANTITIES)],
    trainer="ftkit.local.jobs.training.dpo:DirectPreference", auto=_dpo_auto, quantities=lc.DPO_QUANTITIES))
register(Method(
    lc.REINFORCEMENT, file_kind=PROMPT_FILE,
    rules={**COMMON_RULES, "reasoning_effort": Rule(str, choices=REASONING_EFFORTS, default="default"),
           "compute_multiplier": Rule(float, 0.00001, 10, low_exclusive=True),
           "eval_interval": Rule(int, 1, None), "eval_samples": Rule(int, 1, None)},
    base_learning_rate=5e-5, result_columns=lc.RESULT_COLUMNS[lc.REINFORCEMENT],
    # the last step's figures and the whole validation file answered greedily and graded
    checkpoint_metrics=[*_without_step(lc.RESULT_COLUMNS[lc.REINFORCEMENT]),
                        *(f"full_valid_{q}" for q in lc.RFT_QUANTITIES)],
    trainer="ftkit.local.jobs.training.rft:Reinforcement", auto=_reinforcement_auto, quantities=lc.RFT_QUANTITIES,
    needs_grader=True))

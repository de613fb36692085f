"""The method contract: the hooks :class:`~ftkit.local.jobs.training.loop.JobRun` calls on a method.

Every training method (``sft.Supervised``, ``dpo.DirectPreference``, ``rft.Reinforcement``, or a
new one) subclasses :class:`TrainingMethod` and implements **every** hook -- the loop never
probes for optional ones. With its entry in the method registry (:mod:`ftkit.methods`: file kind,
hyperparameters, learning rate, result columns, ``trainer="module:Class"``), that is all a new
method needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from .... import lifecycle as lc


class TrainingMethod(ABC):
    """What a method says to the shared loop, in the order the loop asks.

    ``name``: the method's registry name (``"supervised"`` ...). Examples are whatever the method's
    :meth:`load` returns (encoded chats, preference pairs, prompts); the loop only passes them back.
    ``ctx`` is the loop's :class:`~ftkit.local.jobs.training.loop.RunContext` (model, tokenizer,
    hyperparameters, seed, precision ...).
    """

    name: str

    @abstractmethod
    def load(self, path: Path, tokenizer) -> list:
        """The file's examples, ready to train on."""

    @abstractmethod
    def length(self, example) -> int:
        """Tokens of one example (batches group examples of similar length)."""

    @abstractmethod
    def billed(self, example) -> int:
        """Tokens of one example counted as trained (``trained_tokens`` = sum x epochs)."""

    @abstractmethod
    def prepare(self, ctx, train: list, valid: list) -> None:
        """Work before the first step (DPO: the reference log-probabilities; RFT: the grader)."""

    @abstractmethod
    def eval_every(self, total_steps: int, hp: dict) -> int:
        """Steps between two evaluations of the validation sample."""

    @abstractmethod
    def valid_sample(self, valid: list, hp: dict) -> list:
        """The validation examples evaluated during training (the full file at checkpoints)."""

    @abstractmethod
    def step(self, ctx, batch: list):
        """``(loss, metrics)`` of one batch; ``loss`` None when there is nothing to learn from."""

    @abstractmethod
    def evaluate(self, ctx, examples: list, prefix: str) -> dict:
        """Metrics of ``examples`` named ``{prefix}_...`` (``valid`` or ``full_valid``)."""

    @abstractmethod
    def results_row(self, data: dict) -> dict:
        """One row of the results file (the registry's ``result_columns``) from a step's data."""

    @abstractmethod
    def checkpoint_metrics(self, row: dict, full: dict) -> dict:
        """A checkpoint's metrics from the last results row and the full validation."""

    @abstractmethod
    def message(self, data: dict, total: int) -> str:
        """The text of a step's metrics event (:func:`step_message` for loss-based methods)."""

    @abstractmethod
    def close(self) -> None:
        """Release what :meth:`prepare` opened (RFT: the grader's sandbox); nothing for most methods."""


def step_message(data: dict, total: int) -> str:
    """The hosted wording of a metrics event: ``Step 3/10: training loss=0.52, validation loss=0.61``."""
    message = f"Step {data[lc.STEP]}/{total}: training loss={data[lc.TRAIN_LOSS]:.2f}"
    if data.get(lc.VALID_LOSS) is not None:
        message += f", validation loss={data[lc.VALID_LOSS]:.2f}"
    return message

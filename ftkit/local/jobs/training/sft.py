"""Supervised fine-tuning: learn the assistant turns of chat examples.

The loss is the mean cross-entropy of the learned tokens -- assistant turns whose ``weight`` is
not 0, their text and end-of-turn token -- and the accuracy is the share of those tokens the
model predicts exactly. Metric names are the hosted API's.

Taught in notebooks/04_job_lifecycle.ipynb; the step by hand in notebooks/06_preference_tuning.ipynb.
"""

from __future__ import annotations

from pathlib import Path

from .... import lifecycle as lc
from ...inference.weights import MAX_EXAMPLE_TOKENS
from . import steps
from .contract import TrainingMethod, step_message


class Supervised(TrainingMethod):
    name = lc.SUPERVISED

    def load(self, path: Path, tokenizer) -> list[steps.Encoded]:
        """The file's chat examples, tokenised with their label masks (examples with nothing to
        learn are left out)."""
        from ....data import read_jsonl

        encoded = (steps.encode_example(tokenizer, ex, MAX_EXAMPLE_TOKENS) for ex in read_jsonl(path))
        return [e for e in encoded if e.learned_tokens]

    def length(self, example: steps.Encoded) -> int:
        return len(example.ids)

    def billed(self, example: steps.Encoded) -> int:
        return example.billed

    def prepare(self, ctx, train, valid) -> None:
        pass

    def eval_every(self, total_steps: int, hp: dict) -> int:
        return max(1, total_steps // 10)

    def valid_sample(self, valid: list, hp: dict) -> list:
        return valid[: 2 * hp["batch_size"]]

    def step(self, ctx, batch: list[steps.Encoded]):
        ids, labels, mask = steps.collate(batch, ctx.pad_id, ctx.device)
        loss, accuracy, _ = steps.token_loss_and_accuracy(ctx.model, ids, labels, mask, ctx.precision)
        return loss, {lc.TRAIN_LOSS: round(loss.item(), 4), lc.TRAIN_MEAN_TOKEN_ACCURACY: round(accuracy, 4)}

    def evaluate(self, ctx, examples: list[steps.Encoded], prefix: str) -> dict:
        loss, accuracy = steps.evaluate_tokens(ctx.model, examples, ctx.pad_id, precision=ctx.precision)
        return {f"{prefix}_loss": round(loss, 4), f"{prefix}_mean_token_accuracy": round(accuracy, 4)}

    def results_row(self, data: dict) -> dict:
        return {lc.STEP: data[lc.STEP], lc.TRAIN_LOSS: data[lc.TRAIN_LOSS],
                lc.TRAIN_ACCURACY: data[lc.TRAIN_MEAN_TOKEN_ACCURACY], lc.VALID_LOSS: data.get(lc.VALID_LOSS),
                lc.VALID_MEAN_TOKEN_ACCURACY: data.get(lc.VALID_MEAN_TOKEN_ACCURACY)}

    def checkpoint_metrics(self, row: dict, full: dict) -> dict:
        """The hosted checkpoint metrics: the last step's, with the full-validation figures (and,
        when the last step had no validation sample, the full figures as ``valid_*``)."""
        metrics = {lc.TRAIN_LOSS: row.get(lc.TRAIN_LOSS), lc.TRAIN_MEAN_TOKEN_ACCURACY: row.get(lc.TRAIN_ACCURACY)}
        if full:
            metrics[lc.VALID_LOSS] = row.get(lc.VALID_LOSS) if row.get(lc.VALID_LOSS) is not None \
                else full[lc.FULL_VALID_LOSS]
            metrics[lc.VALID_MEAN_TOKEN_ACCURACY] = row.get(lc.VALID_MEAN_TOKEN_ACCURACY) \
                if row.get(lc.VALID_MEAN_TOKEN_ACCURACY) is not None else full[lc.FULL_VALID_MEAN_TOKEN_ACCURACY]
            metrics.update(full)
        return {k: v for k, v in metrics.items() if v is not None}

    def message(self, data: dict, total: int) -> str:
        return step_message(data, total)

    def close(self) -> None:
        pass

"""Direct Preference Optimization (DPO): prefer one answer over another, staying near the start.

For a prompt x with a preferred answer y+ and a non-preferred one y-, DPO (Rafailov et al.,
2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model") treats

    r(y) = beta * (log pi(y | x) - log pi_ref(y | x))

as an implicit reward -- how much more likely the trained model pi makes an answer than the
reference model pi_ref (the starting model: here the same network with the new LoRA adapter
switched off) -- and minimises ``-log sigmoid(r(y+) - r(y-))`` averaged over pairs. ``log pi(y|x)``
is the sum of the log-probabilities of the answer's tokens (its text and end-of-turn token).

Metrics per step and per validation (names in :mod:`ftkit.lifecycle`, after TRL's DPOTrainer):
the loss, ``chosen_reward`` r(y+), ``rejected_reward`` r(y-), ``reward_margin`` r(y+) - r(y-) and
``preference_accuracy``, the share of pairs with r(y+) > r(y-).

The reference log-probabilities never change, so they are computed once per example, before
training (TRL's ``precompute_ref_log_probs``): each step then costs one forward and backward
pass over the pairs.

Taught in notebooks/06_preference_tuning.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .... import lifecycle as lc
from ...inference.weights import MAX_EXAMPLE_TOKENS
from . import steps
from .contract import TrainingMethod, step_message


@dataclass
class Pair:
    """A preference pair: both full sequences (prompt + answer) with labels on the answer only."""

    chosen: steps.Encoded
    rejected: steps.Encoded
    ref_chosen: float = 0.0  # log pi_ref(y+ | x)
    ref_rejected: float = 0.0  # log pi_ref(y- | x)


def encode_pair(tokenizer, example: dict, max_tokens: int = MAX_EXAMPLE_TOKENS) -> Pair:
    """Tokenise a DPO line (``input``, ``preferred_output``, ``non_preferred_output``): only the
    final assistant answer is labelled; assistant turns inside ``input`` are context."""
    source = example["input"]
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in source["messages"]]
    extra = {k: source[k] for k in ("tools", "functions") if k in source}

    def encode(answer: list[dict]) -> steps.Encoded:
        return steps.encode_example(tokenizer, {"messages": context + answer[-1:], **extra}, max_tokens)

    return Pair(encode(example["preferred_output"]), encode(example["non_preferred_output"]))


def sequence_logprobs(model, pairs: list[Pair], pad_id: int, precision: str = "fp32"):
    """(log pi(y+|x) per pair, log pi(y-|x) per pair): one forward pass over the 2 x n sequences,
    chosen first (as TRL's ``concatenated_forward``)."""
    device = next(model.parameters()).device
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ids, labels, mask = steps.collate(sequences, pad_id, device)
    logprobs, _ = steps.token_logprobs(model, ids, labels, mask, precision)
    totals = logprobs.sum(-1)
    return totals[: len(pairs)], totals[len(pairs) :]


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """(mean loss, chosen rewards, rejected rewards) of the sigmoid DPO loss, per pair."""
    import torch.nn.functional as F

    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def dpo_metrics(prefix: str, loss, chosen_rewards, rejected_rewards) -> dict:
    """The DPO metrics of a batch or a validation set, named ``<prefix>_<quantity>``."""
    margin = chosen_rewards - rejected_rewards
    values = {"loss": loss, "reward_margin": margin.mean(), "preference_accuracy": (margin > 0).float().mean(),
              "chosen_reward": chosen_rewards.mean(), "rejected_reward": rejected_rewards.mean()}
    return {f"{prefix}_{name}": round(float(v), 4) for name, v in values.items()}


class DirectPreference(TrainingMethod):
    name = lc.DPO

    def load(self, path: Path, tokenizer) -> list[Pair]:
        from ....data import read_jsonl

        pairs = [encode_pair(tokenizer, ex) for ex in read_jsonl(path)]
        return [p for p in pairs if p.chosen.learned_tokens and p.rejected.learned_tokens]

    def length(self, pair: Pair) -> int:
        return max(len(pair.chosen.ids), len(pair.rejected.ids))

    def billed(self, pair: Pair) -> int:
        return pair.chosen.billed + pair.rejected.billed

    def prepare(self, ctx, train: list[Pair], valid: list[Pair], batch_size: int = 8) -> None:
        """Reference log-probabilities of every pair: the starting model = the adapter switched off."""
        import torch

        model = ctx.model
        was_training = model.training
        model.eval()
        with torch.no_grad(), model.disable_adapter():
            for pairs in (train, valid):
                for b in range(0, len(pairs), batch_size):
                    chunk = pairs[b : b + batch_size]
                    chosen, rejected = sequence_logprobs(model, chunk, ctx.pad_id, ctx.precision)
                    for p, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                        p.ref_chosen, p.ref_rejected = c, r
        model.train(was_training)

    def eval_every(self, total_steps: int, hp: dict) -> int:
        return max(1, total_steps // 10)

    def valid_sample(self, valid: list, hp: dict) -> list:
        return valid[: 2 * hp["batch_size"]]

    def _loss(self, ctx, pairs: list[Pair]):
        import torch

        chosen, rejected = sequence_logprobs(ctx.model, pairs, ctx.pad_id, ctx.precision)
        device = chosen.device
        ref_c = torch.tensor([p.ref_chosen for p in pairs], device=device)
        ref_r = torch.tensor([p.ref_rejected for p in pairs], device=device)
        return dpo_loss(chosen, rejected, ref_c, ref_r, ctx.hp["beta"])

    def step(self, ctx, batch: list[Pair]):
        loss, chosen_rewards, rejected_rewards = self._loss(ctx, batch)
        return loss, dpo_metrics("train", loss.detach(), chosen_rewards, rejected_rewards)

    def evaluate(self, ctx, pairs: list[Pair], prefix: str, batch_size: int = 8) -> dict:
        import torch

        model = ctx.model
        was_training = model.training
        model.eval()
        losses, chosen_all, rejected_all = [], [], []
        with torch.no_grad():
            for b in range(0, len(pairs), batch_size):
                chunk = pairs[b : b + batch_size]
                loss, c, r = self._loss(ctx, chunk)
                losses.append(loss * len(chunk))
                chosen_all.append(c)
                rejected_all.append(r)
        model.train(was_training)
        mean_loss = torch.stack(losses).sum() / len(pairs)
        return dpo_metrics(prefix, mean_loss, torch.cat(chosen_all), torch.cat(rejected_all))

    def results_row(self, data: dict) -> dict:
        return {c: data.get(c) for c in lc.RESULT_COLUMNS[lc.DPO]}

    def checkpoint_metrics(self, row: dict, full: dict) -> dict:
        metrics = {k: v for k, v in row.items() if k != lc.STEP and v is not None}
        metrics.update(full)
        return metrics

    def message(self, data: dict, total: int) -> str:
        return step_message(data, total)

    def close(self) -> None:
        pass

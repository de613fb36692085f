"""The training step as plain functions, shared by every method and by the benchmarks.

Batching groups examples of similar length so padding is paid only up to the longest member of
a batch; collation pads to the right; losses are computed in float32 from logits produced under
bf16 autocast where the hardware does bf16 natively (see :func:`ftkit.local.inference.weights.precision`);
the learning rate warms up linearly and then decays linearly to zero
(:func:`warmup_linear_decay`).

Taught in notebooks/04_job_lifecycle.ipynb (section 2, one SFT step by hand) and
notebooks/06_preference_tuning.ipynb (section 7, one DPO step).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ...inference.render import IGNORE_INDEX, encode_for_training

#: Largest gradient norm before clipping (all methods).
MAX_GRAD_NORM = 1.0


@dataclass
class Encoded:
    """One supervised example: token ids, labels (``IGNORE_INDEX`` where nothing is learned), and
    the tokens billed per epoch (after truncation)."""

    ids: list[int]
    labels: list[int]
    billed: int

    @property
    def learned_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_example(tokenizer, example: dict, max_tokens: int) -> Encoded:
    """Tokenise one chat example with its label mask (assistant turns whose ``weight`` is not 0)."""
    ids, labels, total = encode_for_training(tokenizer, example, max_tokens)
    return Encoded(ids, labels, min(total, max_tokens))


# -- batching ---------------------------------------------------------------------------------------


def length_grouped_batches(lengths: Sequence[int], *, batch_size: int, epoch: int, seed: int,
                           window: int = 8) -> list[list[int]]:
    """Indices of the examples, in batches of ``batch_size`` for one epoch.

    Shuffled with (seed, epoch), then sorted by length within windows of ``window`` batches, and
    the batches shuffled again: similar lengths travel together (little padding) while the order
    still changes every epoch. The same seed gives the same batches.
    """
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches: list[list[int]] = []
    for w in range(0, len(order), span):
        chunk = sorted(order[w : w + span], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_right(rows: Sequence[Sequence[int]], value: int, device=None):
    """A (rows x longest) long tensor, each row padded on the right with ``value``."""
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device) if device is not None else out


def collate(examples: Sequence[Encoded], pad_id: int, device=None):
    """(input ids, labels, attention mask) for a batch, right-padded to its longest example."""
    ids = pad_right([e.ids for e in examples], pad_id, device)
    labels = pad_right([e.labels for e in examples], IGNORE_INDEX, device)
    mask = pad_right([[1] * len(e.ids) for e in examples], 0, device)
    return ids, labels, mask


# -- forward and losses -----------------------------------------------------------------------------


def autocast(device_type: str, precision: str):
    """bf16 autocast for ``precision == "bf16"``, else nothing (float32)."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def next_token_logits(model, ids, mask, precision: str = "fp32"):
    """Float32 logits predicting each next token: position t predicts token t + 1 (every position;
    the losses below use :func:`labelled_logits`, which computes only the positions they read)."""
    with autocast(ids.device.type, precision):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return logits[:, :-1, :].float()


#: Config fields of models whose logits are not plain ``lm_head(hidden)``: for those the losses
#: take the model's own logits (every position) instead of applying the head themselves.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _body_and_head(model):
    """(the transformer body returning hidden states, the LM head) of a causal LM -- peft-wrapped
    or not -- or None where the logits are more than ``lm_head(hidden)``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    try:
        body, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or head is None or body is base:
        return None
    return body, head


def labelled_logits(model, ids, labels, mask, precision: str = "fp32"):
    """(float32 logits of the positions whose next token is labelled, those next tokens, which
    positions they are): logits (learned x vocabulary), targets (learned,), positions a boolean
    (rows x length - 1) mask in row-major order, the order of the logits' rows.

    The LM head and the log-softmax after it are applied only where the loss reads them: the
    body's hidden states are gathered at the labelled positions first. For SmolLM2-135M the head
    is a 576 x 49,152 product per position -- about a fifth of the model's multiply-adds per
    token -- and its logits the largest activation of the step; an SFT example labels only its
    assistant answer (here ~25 of ~300 tokens), so computing them everywhere, forward and
    backward, was mostly waste. The numbers are those of the full logits at the same positions
    (TRL computes them everywhere and masks; ``tests/test_reference_losses.py``)."""
    target = labels[:, 1:]
    learned = target != IGNORE_INDEX
    parts = _body_and_head(model)
    if parts is None:  # a model with its own logit transform: take its logits, then gather
        return next_token_logits(model, ids, mask, precision)[learned], target[learned], learned
    body, head = parts
    with autocast(ids.device.type, precision):
        # the last position predicts nothing a label needs: leave it out of the body too
        hidden = body(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False).last_hidden_state
        logits = head(hidden[learned])
    return logits.float(), target[learned], learned


def token_logprobs(model, ids, labels, mask, precision: str = "fp32"):
    """(log-probability of each labelled next token, which positions are labelled), both
    (rows x length - 1). Positions without a label hold 0."""
    import torch
    import torch.nn.functional as F

    logits, target, learned = labelled_logits(model, ids, labels, mask, precision)
    picked = -F.cross_entropy(logits, target, reduction="none")
    out = torch.zeros(learned.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(learned, picked), learned


def token_loss_and_accuracy(model, ids, labels, mask, precision: str = "fp32"):
    """Mean cross-entropy over learned tokens, the share of them predicted exactly (greedy), and
    how many tokens were learned. The supervised loss."""
    import torch.nn.functional as F

    logits, target, _ = labelled_logits(model, ids, labels, mask, precision)
    n = int(target.numel())
    loss = F.cross_entropy(logits, target)
    correct = (logits.argmax(-1) == target).sum().item()
    return loss, correct / max(1, n), n


def evaluate_tokens(model, examples: Sequence[Encoded], pad_id: int, *, precision: str = "fp32",
                    batch_size: int = 8) -> tuple[float, float]:
    """Token-weighted loss and token accuracy over ``examples``, without gradients."""
    import torch

    device = next(model.parameters()).device
    total_loss = total_correct = total_tokens = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(0, len(examples), batch_size):
            ids, labels, mask = collate(examples[b : b + batch_size], pad_id, device)
            loss, acc, n = token_loss_and_accuracy(model, ids, labels, mask, precision)
            total_loss += loss.item() * n
            total_correct += acc * n
            total_tokens += n
    model.train(was_training)
    return total_loss / max(1, total_tokens), total_correct / max(1, total_tokens)


# -- optimisation -----------------------------------------------------------------------------------


def warmup_steps(total_steps: int) -> int:
    """Linear warm-up over 5% of the steps, at least 1 and at most 10."""
    return max(1, min(10, total_steps // 20))


def warmup_linear_decay(step: int, *, total_steps: int, warmup: int) -> float:
    """The learning-rate factor at optimiser step ``step`` (0-based): rises linearly to 1 over
    ``warmup`` steps, then falls linearly to 0 at ``total_steps``."""
    rise = (step + 1) / warmup
    fall = (total_steps - step) / max(1, total_steps - warmup)
    return max(0.0, min(rise, fall))


def make_optimizer(params, learning_rate: float):
    """AdamW without weight decay (LoRA adapters are small and start at zero)."""
    import torch

    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)


def make_scheduler(optimizer, total_steps: int):
    """The :func:`warmup_linear_decay` schedule as a torch scheduler."""
    import functools

    import torch

    warmup = warmup_steps(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(warmup_linear_decay, total_steps=total_steps, warmup=warmup))


def optimizer_step(loss, params, optimizer, scheduler, max_grad_norm: float = MAX_GRAD_NORM) -> float:
    """Backward, clip, step, schedule, zero the gradients. Returns the gradient norm before clipping."""
    import torch

    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)

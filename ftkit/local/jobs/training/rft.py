"""Reinforcement fine-tuning (RFT) with OpenAI's graders: sample, grade, reinforce what scored well.

Each training line is a conversation ending with a user turn, plus any fields the grader reads
(``{{ item.category }}``). A step takes ``batch_size`` prompts and, for each:

1. **samples** a group of G answers from the model being trained (temperature 1), all prompts and
   samples decoded together by the server's batched engine; G = 4 x ``compute_multiplier``
   (:func:`ftkit.local.jobs.hyperparameters.samples_per_prompt`);
2. **grades** every answer with the job's grader (:func:`ftkit.graders.grade_many`): the reward;
3. **normalises** rewards within each group: advantage = (r - group mean) / (group std + 1e-4),
   so an answer is pushed up only for being better than its siblings (GRPO: Shao et al., 2024,
   "DeepSeekMath"; the same normalisation as TRL's ``GRPOTrainer`` with ``scale_rewards="group"``,
   except that a group of equal rewards gets exactly 0, not rounding noise: :func:`group_advantages`);
4. **updates** the LoRA adapter with the clipped policy-gradient loss of PPO/GRPO,
   ``-min(ratio * A, clip(ratio, 1 - 0.2, 1 + 0.2) * A)`` per answer token, averaged per answer
   and then over answers (TRL's ``loss_type="grpo"``). Sampling and the update use the same
   weights (one update per batch), so the ratio is 1 and the clip guards nothing yet; it is kept so
   the loss is the published one. An optional KL penalty to the starting model
   (``FTKIT_RFT_KL_BETA``, default 0 as in TRL) keeps the model close to where it began.

Metrics per step: the mean reward and its spread over the samples, how many answers the grader
could not score (``grader_errors``) and the mean answer length in tokens. Every ``eval_interval``
steps, ``eval_samples`` validation prompts are answered greedily and graded
(``valid_reward_mean`` ...); checkpoints grade the whole validation file (``full_valid_*``).

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .... import lifecycle as lc
from ...inference.weights import MAX_EXAMPLE_TOKENS
from .. import hyperparameters
from .contract import TrainingMethod

#: Answers are cut at this many tokens (the grader then sees ``truncated_observation_error``).
MAX_COMPLETION_TOKENS = 128
CLIP_EPSILON = 0.2
SAMPLING_TEMPERATURE = 1.0
#: Steps' sampling seeds are this far apart. Answer j to prompt k of a step is drawn with seed
#: ``step seed + 1000 k + j`` (:func:`.sampling.generate`, the engine), so the stride must exceed
#: 1000 x the most prompts of a step (256) + the most answers of a prompt (40).
STEP_SEED_STRIDE = 1_000_003


def sampling_seed(job_seed: int, step: int) -> int:
    """The seed a step samples its answers with: no two steps of a job share a random stream
    (they did when consecutive steps' seeds were 1 apart: a step's answer j + 1 to its k-th
    prompt reused the stream of the next step's answer j)."""
    return job_seed * 100_003 + step * STEP_SEED_STRIDE


def sampling_precision(train_precision: str, device_type: str) -> str:
    """The precision answers are sampled in: fp32 on a CPU, whatever the update trains in.

    bf16 autocast re-casts every weight to bf16 at every forward pass when gradients are off (its
    weight cache only works with grad), and decoding is one forward pass per token over a handful
    of rows: measured on SmolLM2 with its LoRA adapter, 10 answers of up to 128 tokens took 24.5 s
    in bf16 against 12.7 s in fp32 on a CPU with native bf16 (Intel Xeon, AMX, 2 cores,
    2026-12-06), and the gap is far wider without it. The server's engine decodes in fp32 too
    (``FTKIT_INFER_PRECISION``), so a greedy validation answer here is the one the server gives.
    On a GPU the training precision is kept."""
    return "fp32" if device_type == "cpu" else train_precision


def kl_beta() -> float:
    """Weight of the KL penalty to the starting model (``FTKIT_RFT_KL_BETA``, default 0)."""
    return float(os.environ.get("FTKIT_RFT_KL_BETA", "0") or 0)


@dataclass
class Prompt:
    """One training line: the conversation to answer (token ids) and the line itself (the grader's item)."""

    prompt_ids: list[int]
    messages: list[dict]
    item: dict
    tools: list | None = None


@dataclass
class Sampled:
    """One sampled answer: its tokens, text, why it stopped, and the reward it earned."""

    prompt: Prompt
    completion_ids: list[int]
    text: str
    finish_reason: str
    reward: float = 0.0
    errors: bool = False
    old_logps: list[float] = field(default_factory=list)


def group_advantages(rewards, group_size: int):
    """(r - group mean) / (group std + 1e-4) for consecutive groups of ``group_size`` rewards
    (std with Bessel's correction, as TRL), and exactly 0 for a group whose rewards are all equal.

    That last case differs from TRL on purpose: the float mean of equal rewards can be off by one
    rounding step (eight rewards of 0.3 average to 0.3 + 3e-8), which the 1e-4 divisor turns into
    advantages of about 3e-4 -- a gradient of pure rounding noise, which Adam (it divides by the
    gradient's own scale) turns into a full-size step when it is all a step has, as on a first
    step where every group scored alike."""
    import torch

    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    advantages = (grouped - mean) / (std + 1e-4)
    alike = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    return advantages.masked_fill(alike, 0.0).view(-1)


def grpo_loss(logps, old_logps, advantages, mask, *, epsilon: float = CLIP_EPSILON, ref_logps=None,
              beta: float = 0.0):
    """The clipped policy-gradient loss (TRL's ``loss_type="grpo"``).

    ``logps``, ``old_logps``, ``ref_logps``, ``mask``: (answers x answer length) per-token
    log-probabilities under the current, sampling and reference policies, and which positions are
    answer tokens; ``advantages``: one per answer. With ``beta``, a KL penalty to the reference
    (the k3 estimator, times the ratio). Each answer's token losses are averaged, then the
    answers'. Returns (loss, mean KL or None)."""
    import torch

    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta:
        delta = ref_logps - logps
        # k3 estimate of KL(pi || pi_ref), weighted by the importance ratio: the unbiased
        # reverse-KL gradient (DeepSeek-V3.2; TRL's use_bias_correction_kl, its default)
        per_token_kl = (torch.exp(delta) - delta - 1) * ratio
        per_token = per_token + beta * per_token_kl
        kl = (per_token_kl * mask).sum() / mask.sum().clamp(min=1)
    loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    return loss, kl


def completion_logprobs(model, samples: list[Sampled], pad_id: int, precision: str = "fp32"):
    """(per-token log-probabilities of each answer's tokens, answer-token mask), both
    (answers x longest answer), under ``model``: one forward pass over prompt + answer.

    Prompts are padded on the left and answers on the right, so every answer starts at the same
    column and only the answer positions go through the LM head (``logits_to_keep``): the
    vocabulary-sized logits (49k floats per token for SmolLM2) of the prompt tokens, which the
    loss never reads, are neither computed nor back-propagated (TRL's layout)."""
    import torch
    import torch.nn.functional as F

    from . import steps

    device = next(model.parameters()).device
    prompt_width = max(len(s.prompt.prompt_ids) for s in samples)
    width = max(1, max(len(s.completion_ids) for s in samples))
    ids = torch.full((len(samples), prompt_width + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(samples):
        prompt, answer = s.prompt.prompt_ids, s.completion_ids
        ids[i, prompt_width - len(prompt) : prompt_width + len(answer)] = torch.tensor(prompt + answer)
        mask[i, prompt_width - len(prompt) : prompt_width + len(answer)] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row counts from its first token
    # position t predicts token t + 1: the last token predicts nothing the loss needs, so it is
    # left out, and the last ``width`` positions predict the answer tokens
    with steps.autocast(device.type, precision):
        logits = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                       use_cache=False, logits_to_keep=width).logits.float()
    target, answer_mask = ids[:, prompt_width:], mask[:, prompt_width:].float()
    logps = -F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return logps * answer_mask, answer_mask


def _choice(sample: Sampled) -> dict:
    """A sampled answer as a chat completions choice (tool calls parsed when the line has tools),
    which the graders read as ``sample.output_text`` / ``output_json`` / ``output_tools``."""
    from ...inference.render import parse_tool_calls

    content, calls = parse_tool_calls(sample.text) if sample.prompt.tools else (sample.text, [])
    message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
    return {"message": message, "finish_reason": sample.finish_reason}


class Reinforcement(TrainingMethod):
    name = lc.REINFORCEMENT

    def __init__(self) -> None:
        self.grader = None
        self.sandbox = None
        self.judge = None
        self.group_size = hyperparameters.SAMPLES_PER_PROMPT
        self.sampling_precision = "fp32"

    # -- data -----------------------------------------------------------------------------------

    def load(self, path: Path, tokenizer) -> list[Prompt]:
        from ....data import read_jsonl
        from ...inference.render import render_prompt

        prompts = []
        for line in read_jsonl(path):
            messages = line["messages"]
            text = render_prompt(tokenizer, messages, line.get("tools"))
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][-MAX_EXAMPLE_TOKENS:]
            prompts.append(Prompt(ids, messages, line, line.get("tools")))
        return prompts

    def length(self, prompt: Prompt) -> int:
        return len(prompt.prompt_ids)

    def billed(self, prompt: Prompt) -> int:
        return len(prompt.prompt_ids)

    def prepare(self, ctx, train, valid) -> None:
        from .... import graders

        job_method = ctx.job["method"] if ctx.job else {}
        grader = (job_method.get(lc.REINFORCEMENT) or {}).get("grader")
        self.grader = graders.compile_grader(grader)
        self.sandbox = graders.PythonSandbox() if self.grader.uses_python() else None
        self.group_size = hyperparameters.samples_per_prompt(ctx.hp["compute_multiplier"])
        self.sampling_precision = sampling_precision(ctx.precision, ctx.device.type)
        if self.grader.uses_judge():
            from .sampling import LocalJudge

            self.judge = LocalJudge(ctx.store, precision=self.sampling_precision, log=ctx.log)

    def eval_every(self, total_steps: int, hp: dict) -> int:
        return int(hp["eval_interval"])

    def valid_sample(self, valid: list, hp: dict) -> list:
        return valid[: int(hp["eval_samples"])]

    # -- a step ---------------------------------------------------------------------------------

    def sample(self, ctx, prompts: list[Prompt], *, n: int, temperature: float, seed: int | None) -> list[Sampled]:
        from .sampling import generate

        outputs = generate(ctx.model, ctx.tokenizer, [p.prompt_ids for p in prompts], n=n,
                           max_tokens=MAX_COMPLETION_TOKENS, temperature=temperature, seed=seed,
                           precision=self.sampling_precision)
        return [Sampled(p, out.ids, out.text, out.finish_reason) for p, group in zip(prompts, outputs) for out in group]

    def grade(self, samples: list[Sampled]) -> None:
        """Reward every sample with the job's grader (the line is the grader's ``item``)."""
        from .... import graders

        results = graders.grade_many(self.grader, [_choice(s) for s in samples], [s.prompt.item for s in samples],
                                     judge=self.judge, sandbox=self.sandbox)
        for s, result in zip(samples, results):
            s.reward = float(result.reward)
            s.errors = not result.ok

    def step(self, ctx, batch: list[Prompt]):
        import torch

        model = ctx.model
        model.eval()
        with torch.no_grad():
            samples = self.sample(ctx, batch, n=self.group_size, temperature=SAMPLING_TEMPERATURE,
                                  seed=sampling_seed(ctx.seed, ctx.step))
        self.grade(samples)
        model.train()
        rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)
        advantages = group_advantages(rewards, self.group_size).to(ctx.device)
        logps, mask = completion_logprobs(model, samples, ctx.pad_id, ctx.precision)
        beta = kl_beta()
        ref = None
        if beta:
            with torch.no_grad(), model.disable_adapter():
                ref, _ = completion_logprobs(model, samples, ctx.pad_id, ctx.precision)
        loss, kl = grpo_loss(logps, logps.detach(), advantages, mask, ref_logps=ref, beta=beta)
        metrics = {lc.TRAIN_LOSS: round(float(loss.detach()), 4), **self._reward_metrics("train", samples)}
        if kl is not None:
            metrics["train_kl"] = round(float(kl), 4)
        return loss, metrics

    def evaluate(self, ctx, prompts: list[Prompt], prefix: str) -> dict:
        import torch

        model = ctx.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            samples = self.sample(ctx, prompts, n=1, temperature=0.0, seed=None)
        model.train(was_training)
        self.grade(samples)
        return self._reward_metrics(prefix, samples)

    @staticmethod
    def _reward_metrics(prefix: str, samples: list[Sampled]) -> dict:
        rewards = [s.reward for s in samples]
        mean = sum(rewards) / len(rewards)
        spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / max(1, len(rewards) - 1)) if len(rewards) > 1 else 0.0
        return {f"{prefix}_reward_mean": round(mean, 4), f"{prefix}_reward_std": round(spread, 4),
                f"{prefix}_grader_errors": sum(s.errors for s in samples),
                f"{prefix}_completion_tokens": round(sum(len(s.completion_ids) for s in samples) / len(samples), 1)}

    def results_row(self, data: dict) -> dict:
        return {c: data.get(c) for c in lc.RESULT_COLUMNS[lc.REINFORCEMENT]}

    def checkpoint_metrics(self, row: dict, full: dict) -> dict:
        metrics = {k: v for k, v in row.items() if k != lc.STEP and v is not None}
        metrics.update(full)
        return metrics

    def message(self, data: dict, total: int) -> str:
        text = f"Step {data[lc.STEP]}/{total}: mean reward={data['train_reward_mean']:.2f}"
        if data.get("valid_reward_mean") is not None:
            text += f", validation reward={data['valid_reward_mean']:.2f}"
        return text

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()

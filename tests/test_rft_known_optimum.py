"""Reinforcement fine-tuning raises the reward it optimizes (issue 23).

The task: answer a ticket with one token, rewarded 1 when that token contains the letter "e"
(``string_check`` ``like``), else 0. The optimum is known -- always such a token, reward 1 -- and
the tiny random Llama (tests/tiny.py) starts far from it (about 0.09). Whole jobs run through
the trainer's loop (:class:`ftkit.local.training.loop.JobRun`, what the server's worker runs), and
the reward is measured on the *served* models (the start and the job's ``ft:`` model loaded from
the store as the server loads them), sampled at temperature 1 on held-out prompts with a fixed
seed -- so a sign error, answers misaligned with their prompts, advantages paired with the wrong
answers, an adapter lost when saving, or an ``ft:`` start whose adapter is dropped (a fresh LoRA on
the base) each fail a test here.

The second job starts from the first one's ``ft:`` model: its first steps must reward like that
model (the starting adapter is kept, not the base's 0.09) and it must end higher still.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny import tiny_llama, tiny_tokenizer  # noqa: E402

from ftkit import graders  # noqa: E402
from ftkit.local.render import render_prompt  # noqa: E402
from ftkit.local.training import recipe, rft  # noqa: E402
from ftkit.local.training.loop import RunContext  # noqa: E402

SYSTEM = {"role": "system", "content": "Triage the support ticket."}
#: 1 for an answer containing "e" (about 9% of the tiny model's one-token answers), else 0.
GRADER = {"type": "string_check", "name": "e", "operation": "like", "input": "{{ sample.output_text }}",
          "reference": "e"}
#: Four prompts per step, 8 answers each (compute_multiplier 2), one epoch, at the largest
#: learning rate the spec's range allows (multiplier 100): the tiny model's logits are wide
#: (initializer_range 0.2), so it needs a large step to move in a short job.
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 100, "compute_multiplier": 2}


def line(i: int) -> dict:
    return {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i}"}]}


def test_consecutive_steps_sample_with_different_random_streams():
    """A step's answers are fresh draws, not the previous step's shifted by one: with the same
    prompt in the same place and unchanged weights, step s + 1's answers 0..2 were step s's
    answers 1..3 while a step's seed was the previous one + 1 (the engine seeds answer j of a
    prompt with seed + j)."""
    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=4))
    method = rft.Reinforcement()
    method.grader, method.group_size = graders.compile_grader(GRADER), 4
    ctx = RunContext(model, tok, {"compute_multiplier": 1.0}, 5, "fp32", tok.pad_token_id, 10)
    prompt = rft.Prompt(tok(render_prompt(tok, line(0)["messages"]), add_special_tokens=False)["input_ids"], [], {})
    drawn = []
    sample = method.sample
    method.sample = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
    saved = rft.MAX_COMPLETION_TOKENS
    rft.MAX_COMPLETION_TOKENS = 6
    try:
        for step in (0, 1):
            ctx.step = step
            method.step(ctx, [prompt])  # no optimizer step: the weights stay the same
    finally:
        rft.MAX_COMPLETION_TOKENS = saved
    first, second = ([tuple(s.completion_ids) for s in samples] for samples in drawn)
    assert len(set(first)) == 4 and len(set(second)) == 4  # sampled, not copies
    assert not set(first) & set(second), (first, second)
    assert rft.sampling_seed(5, 1) - rft.sampling_seed(5, 0) > 1000 * 256 + 40

"""Reinforcement fine-tuning raises the reward it optimizes (issue 23), on a task whose optimum is known.

The task: answer a ticket with one token, rewarded 1 when that token contains the letter "e"
(``string_check`` ``like``), else 0. The optimum is known -- always such a token, reward 1 -- and
the tiny random Llama (tests/tiny.py) starts far from it (about 0.09). Whole jobs run through
the trainer's loop (:class:`ftkit.local.jobs.training.loop.JobRun`, what the server's worker runs), and
the reward is measured on the *served* models (the start and the job's ``ft:`` model loaded from
the store as the server loads them), sampled at temperature 1 on held-out prompts with a fixed
seed. Whatever stops the reward rising fails here: an advantage with the wrong sign and an
``ft:`` start whose adapter is dropped (a fresh LoRA on the base) were both tried, and each fails
both tests. Marked slow: about 20 s (two jobs of 16 and 24 steps) on a loaded 2-core machine.

The second job starts from the first one's ``ft:`` model: its first steps must reward like that
model (the starting adapter is kept, not the base's 0.09) and it must end higher still.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_training import _upload  # noqa: E402  (one home for the test upload helper)
from tiny import load_tiny, tiny_llama, tiny_tokenizer  # noqa: E402

from ftkit import graders  # noqa: E402
from ftkit import lifecycle as lc  # noqa: E402
from ftkit.local.inference.render import render_prompt  # noqa: E402
from ftkit.local.jobs import jobstate  # noqa: E402
from ftkit.local.jobs.training import recipe, rft, sampling, starting, steps  # noqa: E402
from ftkit.local.jobs.training.loop import JobRun, RunContext  # noqa: E402
from ftkit.local.store import Store, new_id  # noqa: E402

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


def _rft_job(store, model: str, prompts: int) -> tuple[dict, list[float]]:
    """An RFT job from ``model`` on ``prompts`` training prompts, run to the end: (the job, its
    per-step train rewards)."""
    method = {"type": lc.REINFORCEMENT, lc.REINFORCEMENT: {"grader": GRADER, "hyperparameters": HYPERPARAMETERS}}
    job = jobstate.create(store, {"id": new_id("ftjob"), "model": model,
                                  "training_file": _upload(store, [line(i) for i in range(prompts)]),
                                  "validation_file": None, "suffix": "opt", "seed": 5, "method": method,
                                  "metadata": None, "integrations": []})
    jobstate.queue(store, job["id"])
    jobstate.start(store, job["id"])
    JobRun(store, store.get_job(job["id"]), log=lambda m: None, load_base=load_tiny).run()
    done = store.get_job(job["id"])
    assert done["status"] == lc.SUCCEEDED, done["error"]
    events, _ = store.list_events(job["id"], limit=1000)
    rows = sorted((e["data"] for e in events if e["type"] == "metrics" and "train_reward_mean" in e["data"]),
                  key=lambda d: d["step"])
    return done, [r["train_reward_mean"] for r in rows]


def served_reward(store, model_id: str, samples: int = 32) -> float:
    """The mean reward of ``model_id`` as the server would load it, sampled (temperature 1, fixed
    seed) ``samples`` times on each of 8 held-out prompts."""
    start = starting.load_starting_model(store, model_id, load_base=load_tiny, progress=None)
    tok, model = start.tokenizer, start.model
    model.eval()
    prompts = [tok(render_prompt(tok, line(1000 + i)["messages"]), add_special_tokens=False)["input_ids"]
               for i in range(8)]
    with torch.no_grad():
        groups = sampling.generate(model, tok, prompts, n=samples, max_tokens=rft.MAX_COMPLETION_TOKENS,
                                   temperature=1.0, seed=123)
    choices = [{"message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
               for group in groups for c in group]
    results = graders.grade_many(graders.compile_grader(GRADER), choices, [{}] * len(choices))
    return sum(r.reward for r in results) / len(results)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Two RFT jobs: from the tiny base, then from the first job's ``ft:`` model."""
    store = Store(tmp_path_factory.mktemp("rft") / "home")
    store.add_model("tiny", kind="base", owned_by="system", source="tiny")
    saved = rft.MAX_COMPLETION_TOKENS
    rft.MAX_COMPLETION_TOKENS = 1  # one-token answers: a bandit over the first token
    with pytest.MonkeyPatch.context() as patch:
        # fp32 everywhere: the same numbers on a CPU with bf16 and on one without
        patch.setenv("FTKIT_TRAIN_PRECISION", "fp32")
        try:
            first, first_curve = _rft_job(store, "tiny", 64)  # 16 steps: part of the way
            second, second_curve = _rft_job(store, first["fine_tuned_model"], 96)  # 24 steps
            yield {"store": store, "base": served_reward(store, "tiny"),
                   "first": served_reward(store, first["fine_tuned_model"]),
                   "second": served_reward(store, second["fine_tuned_model"]), "first_curve": first_curve,
                   "second_curve": second_curve, "second_job": second}
        finally:
            rft.MAX_COMPLETION_TOKENS = saved


@pytest.mark.slow
def test_a_short_rft_job_raises_the_reward_well_past_its_start(chain):
    assert chain["base"] < 0.15, chain  # the task starts far from its optimum (1.0)
    # 16 steps: the served ft: model (sampled on held-out prompts), not only the train curve
    assert chain["first"] > chain["base"] + 0.08, chain
    curve = chain["first_curve"]
    assert sum(curve[-4:]) / 4 > sum(curve[:4]) / 4 + 0.05, curve


@pytest.mark.slow
def test_an_rft_job_from_an_ft_model_keeps_its_adapter_and_raises_the_reward_further(chain):
    curve = chain["second_curve"]
    # it starts where the ft: model is, not where the base is: the starting adapter was kept
    assert sum(curve[:6]) / 6 > (chain["base"] + chain["first"]) / 2, chain
    assert chain["second"] > chain["first"] + 0.1, chain  # 24 more steps: further up
    assert sum(curve[-6:]) / 6 > sum(curve[:6]) / 6 + 0.05, curve
    adapter = chain["store"].get_model(chain["second_job"]["fine_tuned_model"])["adapter_path"]
    config = json.loads((starting.Path(adapter) / starting.ADAPTER_CONFIG).read_text())
    assert config["r"] == 2 * starting.RECIPE.rank  # the first job's adapter and the second's, as one


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


def test_a_group_of_equal_rewards_has_no_advantage_and_a_step_of_such_groups_changes_nothing():
    """Equal rewards carry no signal: their advantages are exactly 0 (the float mean of eight
    0.3s is not exactly 0.3, and dividing by std + 1e-4 made that rounding a 3e-4 advantage), so
    a first step where every group scored alike leaves the adapter as it was -- Adam, which
    divides a gradient by its own scale, made rounding noise a full-size step."""
    rewards = torch.tensor([0.3] * 8 + [0.7] * 8 + [1 / 3] * 8 + [0.0, 1.0] * 4)
    advantages = rft.group_advantages(rewards, 8)
    assert advantages[:24].abs().max().item() == 0.0
    assert advantages[24:].abs().min().item() > 0.9  # a group that differs keeps its signal

    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=6))
    method = rft.Reinforcement()
    method.grader, method.group_size = graders.compile_grader(GRADER), 8
    method.grade = lambda samples: [setattr(s, "reward", 0.3) for s in samples]  # every answer alike
    ctx = RunContext(model, tok, {"compute_multiplier": 2.0}, 5, "fp32", tok.pad_token_id, 10)
    prompts = [rft.Prompt(tok(render_prompt(tok, line(i)["messages"]), add_special_tokens=False)["input_ids"], [], {})
               for i in range(2)]
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = steps.make_optimizer(params, 1e-3)
    saved = rft.MAX_COMPLETION_TOKENS
    rft.MAX_COMPLETION_TOKENS = 4
    try:
        loss, _ = method.step(ctx, prompts)
    finally:
        rft.MAX_COMPLETION_TOKENS = saved
    steps.optimizer_step(loss, params, optimizer, steps.make_scheduler(optimizer, 10))
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(params, before))
    assert moved == 0.0, moved


def test_a_sampled_answer_ends_with_the_end_token_it_drew():
    """A model may end an answer with any of several tokens (its generation config's besides the
    tokenizer's end-of-sequence token); the answer the update scores must end with the one that
    was drawn, not always the tokenizer's."""
    tok = tiny_tokenizer()
    model = tiny_llama(seed=9)
    prompt = tok(render_prompt(tok, line(0)["messages"]), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = sampling.generate(model, tok, [prompt], n=1, max_tokens=3, temperature=0.0, seed=None)[0][0]
        other_end = first.ids[0]  # the greedy first token, made an end-of-sequence token
        assert other_end != tok.eos_token_id
        model.generation_config.eos_token_id = [tok.eos_token_id, other_end]
        ended = sampling.generate(model, tok, [prompt], n=1, max_tokens=3, temperature=0.0, seed=None)[0][0]
    assert ended.finish_reason == "stop" and ended.ids == [other_end], ended


def test_answers_are_sampled_in_fp32_on_a_cpu_whatever_the_update_trains_in():
    """bf16 autocast re-casts every weight at every decoded token (no weight cache without grad):
    twice as slow as fp32 on a CPU with native bf16, far slower without it."""
    assert rft.sampling_precision("bf16", "cpu") == "fp32"
    assert rft.sampling_precision("fp32", "cpu") == "fp32"
    assert rft.sampling_precision("bf16", "cuda") == "bf16"

"""The training step and the shared loop, on a tiny random Llama (tests/tiny.py): masking,
batching, the schedule, loss going down, DPO's loss and metrics, whole jobs on a temporary store
(supervised and DPO, SFT then DPO, pause and resume), and adapters combined for serving."""

from __future__ import annotations

import csv
import io
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny import load_tiny, tiny_llama, tiny_tokenizer  # noqa: E402

from ftkit import lifecycle as lc  # noqa: E402
from ftkit.local.inference.render import IGNORE_INDEX  # noqa: E402
from ftkit.local.jobs import jobstate  # noqa: E402
from ftkit.local.jobs.training import dpo, recipe, starting, steps  # noqa: E402
from ftkit.local.jobs.training.loop import JobRun, JobStopped  # noqa: E402
from ftkit.local.store import Store, new_id  # noqa: E402

SYSTEM = {"role": "system", "content": "Triage the support ticket. Reply with JSON: category, urgency, product."}
LABELS = ["billing", "technical", "shipping"]


def chat(i: int) -> dict:
    cat = LABELS[i % 3]
    return {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i} about {cat}"},
                         {"role": "assistant", "content": json.dumps({"category": cat})}]}


def pair(i: int) -> dict:
    cat = LABELS[i % 3]
    return {"input": {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i} about {cat}"}]},
            "preferred_output": [{"role": "assistant", "content": json.dumps({"category": cat})}],
            "non_preferred_output": [{"role": "assistant", "content": f"It is about {cat}, I think."}]}


# -- the step --------------------------------------------------------------------------------------


def test_label_mask_learns_only_weighted_assistant_turns():
    tok = tiny_tokenizer()
    example = {"messages": [SYSTEM, {"role": "user", "content": "draft one"},
                            {"role": "assistant", "content": "old answer", "weight": 0},
                            {"role": "user", "content": "rewrite it"},
                            {"role": "assistant", "content": "new answer"}]}
    enc = steps.encode_example(tok, example, 512)
    learned = tok.decode([i for i, label in zip(enc.ids, enc.labels) if label != IGNORE_INDEX])
    assert learned == "new answer<|im_end|>"  # the text and its end-of-turn token, nothing else
    assert enc.billed == len(enc.ids) and enc.learned_tokens == len(tok("new answer")["input_ids"]) + 1
    short = steps.encode_example(tok, example, 10)
    assert len(short.ids) == 10 and short.billed == 10  # truncated, billed as trained


def test_length_grouped_batches_cover_every_example_once_and_repeat_with_the_seed():
    lengths = [5, 50, 7, 48, 6, 52, 9, 47, 8, 51, 4]
    batches = steps.length_grouped_batches(lengths, batch_size=2, epoch=0, seed=3, window=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 for b in batches)
    assert batches == steps.length_grouped_batches(lengths, batch_size=2, epoch=0, seed=3, window=8)
    assert batches != steps.length_grouped_batches(lengths, batch_size=2, epoch=1, seed=3, window=8)
    # within a window, batches hold neighbours in length: far less padding than random pairs
    padding = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert padding < 20


def test_warmup_linear_decay_schedule():
    assert steps.warmup_steps(100) == 5 and steps.warmup_steps(10) == 1 and steps.warmup_steps(1000) == 10
    f = [steps.warmup_linear_decay(s, total_steps=100, warmup=5) for s in range(100)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0)
    assert f[5] == pytest.approx(95 / 95) and f[50] == pytest.approx(50 / 95) and f[99] == pytest.approx(1 / 95)
    model = torch.nn.Linear(2, 2)
    opt = steps.make_optimizer(model.parameters(), 0.1)
    sched = steps.make_scheduler(opt, 100)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * v for v in f[:6]])


def test_a_few_supervised_steps_lower_the_loss_and_learn_only_labels():
    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=1))
    batch = [steps.encode_example(tok, chat(i), 512) for i in range(6)]
    ids, labels, mask = steps.collate(batch, tok.pad_token_id)
    assert ids.shape == labels.shape == mask.shape and int(mask.sum()) == sum(len(e.ids) for e in batch)
    assert (labels[mask == 0] == IGNORE_INDEX).all()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = steps.make_optimizer(params, 1e-2)
    sched = steps.make_scheduler(opt, 30)
    model.train()
    losses = []
    for _ in range(30):
        loss, accuracy, n = steps.token_loss_and_accuracy(model, ids, labels, mask)
        assert n == sum(e.learned_tokens for e in batch) and 0 <= accuracy <= 1
        losses.append(loss.item())
        steps.optimizer_step(loss, params, opt, sched)
    assert losses[-1] < 0.5 * losses[0]
    eval_loss, eval_acc = steps.evaluate_tokens(model, batch, tok.pad_token_id)
    assert eval_loss < losses[0] and eval_acc > 0.5


def test_losses_apply_the_lm_head_only_where_a_label_is_learned():
    """labelled_logits: the logits, loss, accuracy and per-token log-probabilities equal those of
    the model's full logits (every position, then masked), and the LM head sees only the labelled
    positions -- forward and, through them, backward."""
    import torch.nn.functional as F

    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=2))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    batch = [steps.encode_example(tok, chat(i), 512) for i in range(5)]
    batch[1] = steps.encode_example(tok, {"messages": chat(1)["messages"] + [
        {"role": "user", "content": "and the urgency?"}, {"role": "assistant", "content": "high"}]}, 512)
    ids, labels, mask = steps.collate(batch, tok.pad_token_id)
    learned_total = sum(e.learned_tokens for e in batch)
    assert learned_total < int(mask.sum()) // 2  # most positions carry no loss

    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: rows.append(args[0].shape))
    loss, accuracy, n = steps.token_loss_and_accuracy(model, ids, labels, mask)
    hook.remove()
    assert rows == [(learned_total, 32)] and n == learned_total

    full = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    expected = F.cross_entropy(full.transpose(1, 2), target, ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    learned = target != IGNORE_INDEX
    assert accuracy == pytest.approx(float(((full.argmax(-1) == target) & learned).sum()) / learned_total)
    # gradients of the adapter agree too
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(loss, params)
    theirs = torch.autograd.grad(expected, params)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)

    with torch.no_grad():
        logps, positions = steps.token_logprobs(model, ids, labels, mask)
        every = -F.cross_entropy(full.transpose(1, 2), target.clamp(min=0), reduction="none") * learned
    assert torch.equal(positions, learned)
    assert torch.allclose(logps, every, atol=1e-5)
    assert float(logps[~learned].abs().sum()) == 0.0


# -- DPO -------------------------------------------------------------------------------------------


def test_dpo_pair_labels_only_the_final_answer():
    tok = tiny_tokenizer()
    ex = pair(0)
    ex["input"]["messages"] += [{"role": "assistant", "content": "earlier answer"},
                                {"role": "user", "content": "again"}]
    p = dpo.encode_pair(tok, ex)
    chosen = tok.decode([i for i, label in zip(p.chosen.ids, p.chosen.labels) if label != IGNORE_INDEX])
    rejected = tok.decode([i for i, label in zip(p.rejected.ids, p.rejected.labels) if label != IGNORE_INDEX])
    assert chosen == '{"category": "billing"}<|im_end|>'
    assert rejected == "It is about billing, I think.<|im_end|>"
    prompt = len(p.chosen.ids) - p.chosen.learned_tokens - 1
    assert p.chosen.ids[:prompt] == p.rejected.ids[:prompt]  # the same prompt


def test_dpo_loss_starts_at_log2_and_training_prefers_the_chosen_answers():
    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=2))
    pairs = [dpo.encode_pair(tok, pair(i)) for i in range(6)]
    ctx = _ctx(model, tok, {"beta": 0.5})
    method = dpo.DirectPreference()
    method.prepare(ctx, pairs, [])
    first = method.evaluate(ctx, pairs, "valid")
    # a fresh adapter is the reference: rewards 0, loss log 2, no preference yet
    assert first["valid_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert first["valid_chosen_reward"] == pytest.approx(0, abs=1e-4) and first["valid_reward_margin"] == pytest.approx(0, abs=1e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = steps.make_optimizer(params, 5e-3)
    sched = steps.make_scheduler(opt, 15)
    model.train()
    for _ in range(15):
        loss, metrics = method.step(ctx, pairs)
        assert set(metrics) == {f"train_{q}" for q in ("loss", *lc.DPO_QUANTITIES)}
        steps.optimizer_step(loss, params, opt, sched)
    after = method.evaluate(ctx, pairs, "valid")
    assert after["valid_loss"] < first["valid_loss"] - 0.1
    assert after["valid_reward_margin"] > 0 and after["valid_preference_accuracy"] == 1.0
    assert after["valid_reward_margin"] == pytest.approx(after["valid_chosen_reward"] - after["valid_rejected_reward"],
                                                         abs=2e-4)


def _ctx(model, tok, hp):
    from ftkit.local.jobs.training.loop import RunContext

    return RunContext(model, tok, {"batch_size": 4, "n_epochs": 1, "learning_rate_multiplier": 1.0, **hp}, 0,
                      "fp32", tok.pad_token_id, 10)


# -- combined adapters -------------------------------------------------------------------------------


def test_combined_adapter_equals_the_stacked_models(tmp_path):
    from peft import PeftModel

    tok = tiny_tokenizer()
    ids = torch.tensor([tok("Subject: refund please")["input_ids"]])
    first = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=3))
    _randomise(first, 1)
    first.save_pretrained(tmp_path / "first")
    merged = PeftModel.from_pretrained(tiny_llama(seed=3), str(tmp_path / "first")).merge_and_unload()
    second = recipe.LoraRecipe(rank=2, alpha=8).apply(merged)
    _randomise(second, 2)
    with torch.no_grad():
        expected = second(input_ids=ids).logits
    starting.save_servable(second, tmp_path / "combined", start_adapter=tmp_path / "first")
    config = json.loads((tmp_path / "combined" / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["lora_alpha"] == 6
    served = PeftModel.from_pretrained(tiny_llama(seed=3), str(tmp_path / "combined"))
    with torch.no_grad():
        got = served(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


def _randomise(peft_model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


# -- whole jobs on a temporary store -----------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home")
    s.add_model("tiny", kind="base", owned_by="system", source="tiny")
    return s


def _upload(store, lines) -> str:
    file_id = new_id("file")
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    store.file_path(file_id).write_bytes(content)
    store.add_file(file_id, filename="t.jsonl", purpose="fine-tune", size=len(content), sha256="x")
    return file_id


def _start_job(store, method, training, validation=None, model="tiny") -> dict:
    job = jobstate.create(store, {"id": new_id("ftjob"), "model": model, "training_file": training,
                                  "validation_file": validation, "suffix": "t", "seed": 5, "method": method,
                                  "metadata": None, "integrations": []})
    jobstate.queue(store, job["id"])
    jobstate.start(store, job["id"])
    return store.get_job(job["id"])


def _results(store, job) -> list[dict]:
    file_id = store.get_job(job["id"])["result_files"][0]
    return list(csv.DictReader(io.StringIO(lc.results_csv(store.file_path(file_id).read_bytes()))))


def _metric_steps(store, job) -> list[int]:
    events, _ = store.list_events(job["id"], limit=1000)
    return sorted(e["data"]["step"] for e in events if e["type"] == "metrics" and "train_loss" in e["data"])


def test_supervised_job_runs_to_a_servable_model(store):
    method = {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}}
    job = _start_job(store, method, _upload(store, [chat(i) for i in range(10)]), _upload(store, [chat(20), chat(21)]))
    JobRun(store, job, log=lambda m: None, load_base=load_tiny).run()
    done = store.get_job(job["id"])
    assert done["status"] == lc.SUCCEEDED and done["fine_tuned_model"] == f"ft:tiny:local:t:{job['id'][-8:].lower()}"
    assert done["method"][lc.SUPERVISED]["hyperparameters"] == {"n_epochs": 2, "batch_size": 4,
                                                               "learning_rate_multiplier": 1.0}
    assert done["trained_tokens"] > 0
    rows = _results(store, job)
    assert list(rows[0]) == lc.RESULT_COLUMNS[lc.SUPERVISED] and [int(r["step"]) for r in rows] == list(range(1, 7))
    assert _metric_steps(store, job) == list(range(1, 7))
    checkpoints = store.list_checkpoints(job["id"])
    assert sorted(c["step"] for c in checkpoints) == [3, 6]
    assert {"full_valid_loss", "full_valid_mean_token_accuracy", "train_loss"} <= set(checkpoints[0]["metrics"])
    assert store.get_model(done["fine_tuned_model"])["adapter_path"].endswith("final")
    assert not (store.job_dir(job["id"]) / "resume").exists()


def test_pause_saves_state_and_a_new_run_resumes_without_repeating_steps(store):
    method = {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}}
    job = _start_job(store, method, _upload(store, [chat(i) for i in range(10)]))
    run = JobRun(store, job, log=lambda m: None, load_base=load_tiny)
    real_check = run.check_continue

    def pause_after_three_steps():
        if _metric_steps(store, job) == [1, 2, 3] and store.get_job(job["id"])["status"] == lc.RUNNING:
            jobstate.pause(store, job["id"])
        real_check()

    run.check_continue = pause_after_three_steps
    run.run()
    paused = store.get_job(job["id"])
    assert paused["status"] == lc.PAUSED and (store.job_dir(job["id"]) / "resume" / "state.pt").exists()
    assert _metric_steps(store, job) == [1, 2, 3]
    # a crash after the pause reported steps that were not saved: they must not be reported twice
    store.add_event(job["id"], "Step 4/10", type="metrics", data={"step": 4, "train_loss": 9.0})
    assert jobstate.resume(store, job["id"]) == lc.QUEUED
    jobstate.start(store, job["id"])
    JobRun(store, store.get_job(job["id"]), log=lambda m: None, load_base=load_tiny).run()
    assert store.get_job(job["id"])["status"] == lc.SUCCEEDED
    assert _metric_steps(store, job) == list(range(1, 11))
    assert [int(r["step"]) for r in _results(store, job)] == list(range(1, 11))


def test_a_step_in_flight_when_the_job_is_cancelled_is_dropped_not_reported(store):
    method = {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}}
    job = _start_job(store, method, _upload(store, [chat(i) for i in range(10)]))
    run = JobRun(store, job, log=lambda m: None, load_base=load_tiny)
    real_step = run.method.step

    def cancelled_during_the_second_step(ctx, batch):
        out = real_step(ctx, batch)
        if ctx.step == 1:  # the second step (0-based): the user cancels while it computes
            jobstate.cancel(store, job["id"])
        return out

    run.method.step = cancelled_during_the_second_step
    run.run()
    assert store.get_job(job["id"])["status"] == lc.CANCELLED
    assert _metric_steps(store, job) == [1]


def test_cancelled_job_stops_and_leaves_no_model(store):
    method = {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}}
    job = _start_job(store, method, _upload(store, [chat(i) for i in range(10)]))
    run = JobRun(store, job, log=lambda m: None, load_base=load_tiny)
    jobstate.cancel(store, job["id"])
    run.run()
    assert store.get_job(job["id"])["status"] == lc.CANCELLED
    assert not [m for m in store.list_models() if m["kind"] == "fine-tuned"]


def test_dpo_job_on_top_of_a_supervised_model(store):
    sft = _start_job(store, {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {"n_epochs": 1}}},
                     _upload(store, [chat(i) for i in range(10)]))
    JobRun(store, sft, log=lambda m: None, load_base=load_tiny).run()
    sft_model = store.get_job(sft["id"])["fine_tuned_model"]
    method = {"type": lc.DPO, lc.DPO: {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "beta": 0.2}}}
    job = _start_job(store, method, _upload(store, [pair(i) for i in range(8)]), _upload(store, [pair(9), pair(10)]),
                     model=sft_model)
    JobRun(store, job, log=lambda m: None, load_base=load_tiny).run()
    done = store.get_job(job["id"])
    assert done["status"] == lc.SUCCEEDED, done["error"]
    assert done["method"][lc.DPO]["hyperparameters"]["beta"] == 0.2
    assert done["fine_tuned_model"].startswith("ft:tiny:local:t:")  # an adapter over the base model
    rows = _results(store, job)
    assert list(rows[0]) == lc.RESULT_COLUMNS[lc.DPO] and len(rows) == 4
    assert float(rows[0]["train_loss"]) == pytest.approx(0.6931, abs=0.01)  # starts at the reference
    checkpoint = store.list_checkpoints(job["id"])[0]
    assert {"full_valid_reward_margin", "full_valid_preference_accuracy", "train_chosen_reward"} <= set(checkpoint["metrics"])
    adapter = store.get_model(done["fine_tuned_model"])["adapter_path"]
    assert json.loads((starting.Path(adapter) / "adapter_config.json").read_text())["r"] == 2 * recipe.RECIPE.rank


def test_run_raises_job_stopped_when_the_server_goes_away(store):
    import threading

    job = _start_job(store, {"type": lc.SUPERVISED}, _upload(store, [chat(i) for i in range(10)]))
    stop = threading.Event()
    stop.set()
    run = JobRun(store, job, log=lambda m: None, load_base=load_tiny, stop_requested=stop)
    with pytest.raises(JobStopped):
        run.check_continue()
    run.run()  # saves the state and returns; the job stays running for the next server to resume
    assert store.get_job(job["id"])["status"] == lc.RUNNING
    assert (store.job_dir(job["id"]) / "resume" / "state.pt").exists()


# -- reinforcement ----------------------------------------------------------------------------------


def rft_line(i: int) -> dict:
    cat = LABELS[i % 3]
    return {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i} about {cat}"}], "category": cat}


FUZZY = {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
         "reference": "{{ item.category }}", "evaluation_metric": "fuzzy_match"}


def test_engine_generate_samples_groups_in_shared_batches():
    from ftkit.local.jobs.training import sampling

    tok = tiny_tokenizer()
    model = tiny_llama(seed=7)
    prompts = [tok("Subject: refund")["input_ids"], tok("Subject: the Hub is offline again")["input_ids"]]
    with torch.no_grad():
        groups = sampling.generate(model, tok, prompts, n=3, max_tokens=6, temperature=1.0, seed=1)
        again = sampling.generate(model, tok, prompts, n=3, max_tokens=6, temperature=1.0, seed=1)
        greedy = sampling.generate(model, tok, prompts, n=2, max_tokens=6, temperature=0.0, seed=None)
    assert [len(g) for g in groups] == [3, 3]
    assert [[c.ids for c in g] for g in groups] == [[c.ids for c in g] for g in again]  # seeded
    assert len({tuple(c.ids) for c in groups[1]}) > 1  # sampled, not copies
    assert greedy[0][0].ids == greedy[0][1].ids
    for c in (c for g in groups for c in g):
        assert c.finish_reason in ("stop", "length") and 0 < len(c.ids) <= 7
        assert (c.ids[-1] == tok.eos_token_id) == (c.finish_reason == "stop")


def test_reinforcement_job_runs_on_the_shared_loop(store):
    method = {"type": lc.REINFORCEMENT, lc.REINFORCEMENT: {
        "grader": FUZZY, "hyperparameters": {"n_epochs": 1, "batch_size": 2, "compute_multiplier": 0.5,
                                             "eval_interval": 2, "eval_samples": 2}}}
    job = _start_job(store, method, _upload(store, [rft_line(i) for i in range(6)]),
                     _upload(store, [rft_line(10), rft_line(11), rft_line(12)]))
    from ftkit.local.jobs.training import rft

    rft.MAX_COMPLETION_TOKENS, saved = 8, rft.MAX_COMPLETION_TOKENS
    try:
        JobRun(store, job, log=lambda m: None, load_base=load_tiny).run()
    finally:
        rft.MAX_COMPLETION_TOKENS = saved
    done = store.get_job(job["id"])
    assert done["status"] == lc.SUCCEEDED, done["error"]
    hp = done["method"][lc.REINFORCEMENT]["hyperparameters"]
    assert hp["compute_multiplier"] == 0.5 and hp["reasoning_effort"] == "default"
    events, _ = store.list_events(job["id"], limit=100)
    steps_ = sorted((e["data"] for e in events if e["type"] == "metrics" and "train_loss" in e["data"]),
                    key=lambda d: d["step"])
    assert [d["step"] for d in steps_] == [1, 2, 3]
    assert all(0 <= d["train_reward_mean"] <= 1 and d["train_completion_tokens"] <= 9 for d in steps_)
    assert [d["step"] for d in steps_ if "valid_reward_mean" in d] == [2, 3]  # every eval_interval, and the end
    messages = [e["message"] for e in events if e["type"] == "metrics"]
    assert any(m.startswith("Step 2/3: mean reward=") and "validation reward=" in m for m in messages), messages
    rows = _results(store, job)
    assert list(rows[0]) == lc.RESULT_COLUMNS[lc.REINFORCEMENT] and len(rows) == 3
    assert "full_valid_reward_mean" in store.list_checkpoints(job["id"])[0]["metrics"]


def test_reinforcement_steps_raise_the_reward():
    from ftkit import graders
    from ftkit.local.jobs.training import rft

    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=8, alpha=16).apply(tiny_llama(seed=8))
    # the reward: answers that contain the letter "e" (about half of a random model's samples)
    grader = {"type": "string_check", "name": "e", "operation": "like", "input": "{{ sample.output_text }}",
              "reference": "e"}
    method = rft.Reinforcement()
    method.grader, method.group_size = graders.compile_grader(grader), 8
    prompts = [rft.Prompt(tok(f"Subject: ticket {i}")["input_ids"], [], {}) for i in range(4)]
    ctx = _ctx(model, tok, {"compute_multiplier": 2.0})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = steps.make_optimizer(params, 3e-2)
    sched = steps.make_scheduler(opt, 12)
    rft.MAX_COMPLETION_TOKENS, saved = 4, rft.MAX_COMPLETION_TOKENS
    try:
        rewards = []
        for step in range(12):
            ctx.step = step
            loss, metrics = method.step(ctx, prompts)
            rewards.append(metrics["train_reward_mean"])
            steps.optimizer_step(loss, params, opt, sched)
    finally:
        rft.MAX_COMPLETION_TOKENS = saved
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards


def test_reinforcement_log_probabilities_score_only_the_answers():
    """completion_logprobs: each answer token's log-probability as a lone forward pass over its
    prompt + answer gives it, whatever the other rows' prompt and answer lengths; and the LM head
    (vocabulary-sized logits) runs only on the answer positions, never on the prompts'."""
    from ftkit.local.jobs.training import rft

    tok = tiny_tokenizer()
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=5))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.eval()
    prompts = [rft.Prompt(tok(text)["input_ids"], [], {}) for text in
               ("Subject: refund please", "Hi Maya, thanks for writing. We have sent your refund.")]
    answers = [[int(t) for t in torch.randint(5, len(tok), (n,), generator=gen)] for n in (3, 6, 1, 0)]
    samples = [rft.Sampled(prompts[k % 2], a, "", "stop") for k, a in enumerate(answers)]
    assert len(prompts[0].prompt_ids) != len(prompts[1].prompt_ids)
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    with torch.no_grad():
        logps, mask = rft.completion_logprobs(model, samples, tok.pad_token_id)
    hook.remove()
    assert widths == [6]  # the longest answer; the prompts' positions never reach the LM head
    assert logps.shape == mask.shape == (4, 6)
    assert mask.sum(1).tolist() == [3, 6, 1, 0]
    for i, s in enumerate(samples):
        ids = torch.tensor([s.prompt.prompt_ids + s.completion_ids])
        with torch.no_grad():
            alone = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        start = len(s.prompt.prompt_ids) - 1  # position t predicts token t + 1
        expected = [float(alone[start + j, t]) for j, t in enumerate(s.completion_ids)]
        assert logps[i, : len(expected)].tolist() == pytest.approx(expected, abs=1e-5)
        assert float(logps[i, len(expected):].abs().sum()) == 0.0

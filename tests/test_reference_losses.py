"""ftkit's training losses against the reference implementation (TRL, a test-only dependency),
on one fixed batch and a tiny random model: the same numbers within 1e-4 (SFT, DPO, GRPO)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from tiny import tiny_llama, tiny_tokenizer  # noqa: E402

from ftkit.local.inference.render import IGNORE_INDEX  # noqa: E402
from ftkit.local.jobs.training import dpo, recipe  # noqa: E402
from ftkit.local.jobs.training.loop import RunContext  # noqa: E402

SYSTEM = {"role": "system", "content": "Triage the support ticket. Reply with JSON: category, urgency, product."}


def _pairs(tok):
    lines = []
    for i, (cat, bad) in enumerate([("billing", "It is billing."), ("technical", "```json\n{}\n```"),
                                    ("shipping", "Where is my parcel? shipping")]):
        lines.append({"input": {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i} about {cat}"}]},
                      "preferred_output": [{"role": "assistant", "content": json.dumps({"category": cat})}],
                      "non_preferred_output": [{"role": "assistant", "content": bad}]})
    return [dpo.encode_pair(tok, line) for line in lines]


def _split(encoded):
    """(prompt ids, completion ids) of an encoded sequence: the completion is what is labelled."""
    learned = [k for k, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    return encoded.ids[: learned[0]], encoded.ids[learned[0] : learned[-1] + 1]


def _policy(seed: int):
    """A LoRA model whose adapter is not zero, so policy and reference differ."""
    model = recipe.LoraRecipe(rank=4, alpha=8).apply(tiny_llama(seed=seed))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_trl(tmp_path, beta):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tok = tiny_tokenizer()
    tok.padding_side = "left"
    pairs = _pairs(tok)
    model = _policy(seed=4)
    model.eval()

    # ftkit: reference log-probabilities with the adapter off, then the loss of the batch
    ctx = RunContext(model, tok, {"beta": beta}, 0, "fp32", tok.pad_token_id)
    method = dpo.DirectPreference()
    method.prepare(ctx, pairs, [])
    with torch.no_grad():
        ours, chosen_rewards, rejected_rewards = method._loss(ctx, pairs)

    # TRL: its collator over the same token ids, its trainer's loss (reference = adapter disabled)
    rows = []
    for p in pairs:
        prompt, chosen = _split(p.chosen)
        prompt_r, rejected = _split(p.rejected)
        assert prompt == prompt_r
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    dataset = Dataset.from_list([{"prompt": "x", "chosen": "y", "rejected": "z"}])
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, report_to=[], per_device_train_batch_size=3,
                     use_cpu=True, precompute_ref_log_probs=False, bf16=False, fp16=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)
    # Given a model that already has an adapter, TRL keeps a copy of it as its reference ("ref").
    # ftkit's reference is the starting model, i.e. the new adapter switched off: a "ref" adapter
    # of zeros is exactly that.
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if ".ref." in name:
                p.zero_()
    inputs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(rows)
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, inputs)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-4)
    logged = {k: sum(v) / len(v) for k, v in trainer._metrics["eval" if not model.training else "train"].items()}
    margins = logged.get("rewards/margins")
    if margins is not None:  # TRL logs its rewards too: they must agree with ours
        assert float((chosen_rewards - rejected_rewards).mean()) == pytest.approx(margins, abs=1e-4)


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_trl(tmp_path, beta):
    """The reinforcement step's loss (clipped policy gradient, per-answer token mean, optional KL to
    the starting model) against TRL's GRPOTrainer with loss_type="grpo", on fixed prompts, answers,
    advantages and sampling log-probabilities."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ftkit.local.jobs.training import rft

    tok = tiny_tokenizer()
    tok.padding_side = "left"
    model = _policy(seed=6)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    # two prompts of the same length (TRL left-pads prompts; equal lengths keep positions identical)
    prompts = [tok(t)["input_ids"] for t in ("Subject: refund please", "Subject: parcel missing")]
    width = min(len(p) for p in prompts)
    prompts = [p[:width] for p in prompts]
    answers = [[int(t) for t in torch.randint(5, len(tok), (n,), generator=gen)] for n in (3, 5, 2, 4)]
    owners = [0, 0, 1, 1]
    samples = [rft.Sampled(rft.Prompt(prompts[o], [], {}), a, "", "stop") for o, a in zip(owners, answers)]
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])

    with torch.no_grad():
        logps, mask = rft.completion_logprobs(model, samples, tok.pad_token_id)
        old = logps + torch.randn(logps.shape, generator=gen) * 0.3 * mask  # off-policy: the clip matters
        ref = None
        if beta:
            with model.disable_adapter():
                ref, _ = rft.completion_logprobs(model, samples, tok.pad_token_id)
        ours, _ = rft.grpo_loss(logps, old, advantages, mask, ref_logps=ref, beta=beta)

    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, beta=beta, loss_type="grpo",
                      num_generations=2, per_device_train_batch_size=2, max_completion_length=8)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_list([{"prompt": "x"}] * 2), processing_class=tok)
    completion = torch.full((4, mask.shape[1]), tok.pad_token_id, dtype=torch.long)
    for i, a in enumerate(answers):
        completion[i, : len(a)] = torch.tensor(a)
    inputs = {"prompt_ids": torch.tensor([prompts[o] for o in owners]), "prompt_mask": torch.ones((4, width), dtype=torch.long),
              "completion_ids": completion, "completion_mask": mask.long(), "advantages": advantages,
              "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    if beta:
        inputs["ref_per_token_logps"] = ref
    with torch.no_grad():
        theirs = trainer._compute_loss(trainer.model, inputs)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-4)
    assert float(ours) != pytest.approx(0.0, abs=1e-3)  # the case is not trivial


def test_group_advantages_match_trl_normalisation():
    from ftkit.local.jobs.training import rft

    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.9])
    got = rft.group_advantages(rewards, 4)
    grouped = rewards.view(-1, 4)
    expected = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    assert torch.allclose(got, expected.view(-1))
    assert got[:4].sum().abs() < 1e-5


def test_supervised_loss_matches_trl(tmp_path):
    """The supervised step's loss (mean cross-entropy over the learned tokens of the batch, the LM
    head applied only at those positions) against TRL's SFTTrainer on the same pre-tokenised
    examples and labels (assistant-only loss), right-padded by TRL's own collator."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ftkit.local.jobs.training import steps

    tok = tiny_tokenizer()
    examples = []
    for i, (cat, text) in enumerate([("billing", "Subject: refund please"), ("technical", "The Hub is offline"),
                                     ("shipping", "Where is my parcel? It never arrived and I was charged twice.")]):
        messages = [SYSTEM, {"role": "user", "content": text},
                    {"role": "assistant", "content": json.dumps({"category": cat})}]
        if i == 1:  # two answers, the first not learned
            messages = messages[:2] + [{"role": "assistant", "content": "Which product?", "weight": 0},
                                       {"role": "user", "content": "hardware"}, messages[2]]
        examples.append(steps.encode_example(tok, {"messages": messages}, 512))
    model = _policy(seed=5)
    model.eval()
    ids, labels, mask = steps.collate(examples, tok.pad_token_id)
    with torch.no_grad():
        ours, accuracy, n = steps.token_loss_and_accuracy(model, ids, labels, mask)
    assert n == sum(e.learned_tokens for e in examples) < int(mask.sum()) // 2

    rows = [{"input_ids": e.ids, "labels": e.labels} for e in examples]
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, fp16=False,
                     per_device_train_batch_size=3)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    inputs = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    assert torch.equal(inputs["input_ids"], ids) and torch.equal(inputs["labels"], labels)
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, inputs)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-4)
    logged = trainer._metrics["eval" if not trainer.model.training else "train"].get("mean_token_accuracy")
    assert logged, "TRL logs its token accuracy"
    assert accuracy == pytest.approx(sum(logged) / len(logged), abs=1e-4)

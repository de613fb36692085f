"""ftkit's training losses against the reference implementation (TRL, a test-only dependency),
on one fixed batch and a tiny random model: the same numbers within 1e-4."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from tiny import tiny_llama, tiny_tokenizer  # noqa: E402

from ftkit.local.render import IGNORE_INDEX  # noqa: E402
from ftkit.local.training import dpo, recipe  # noqa: E402
from ftkit.local.training.loop import RunContext  # noqa: E402

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

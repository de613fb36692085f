"""Training throughput: ftkit's trainer step vs a naive padded per-example loop, same data, same run.

    python benchmarks/bench_train.py [--examples 64]

Both train fresh LoRA adapters (same rank, targets, seed, learning rate, effective batch of 8)
for one epoch over the same course examples and are then scored on the same validation examples.

* naive: one example at a time, every example padded to the longest in the set, float32,
  gradients accumulated over 8 examples -- the loop people write first;
* ftkit: the trainer's own code path (``Trainer.batches`` / ``collate`` / ``loss_and_accuracy``):
  length-grouped batches of 8 padded only to their longest member, bf16 mixed precision where
  the CPU supports it (fp32 otherwise; the fp32 variant is measured too).

Throughput counts real (non-padding) tokens per second. Goal (issue 3): >= 2x at equal loss.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from _common import save

ROOT = Path(__file__).resolve().parents[1]


def fresh_model(seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from ftkit.local.models import load_base_model
    from ftkit.local.trainer import LORA_ALPHA, LORA_RANK, LORA_TARGETS

    torch.manual_seed(seed)
    model, tokenizer = load_base_model(progress=None)
    model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    model.train()
    return model, tokenizer


def naive_epoch(examples, seed: int, lr: float, accumulate: int = 8):
    import torch

    from ftkit.local.render import IGNORE_INDEX

    model, tok = fresh_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    width = max(len(e.ids) for e in examples)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    tokens, start = 0, time.perf_counter()
    for k, i in enumerate(order, start=1):
        e = examples[i]
        ids = torch.full((1, width), tok.pad_token_id)
        labels = torch.full((1, width), IGNORE_INDEX)
        mask = torch.zeros((1, width), dtype=torch.long)
        ids[0, : len(e.ids)] = torch.tensor(e.ids)
        labels[0, : len(e.labels)] = torch.tensor(e.labels)
        mask[0, : len(e.ids)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / accumulate
        loss.backward()
        tokens += len(e.ids)
        if k % accumulate == 0 or k == len(order):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
    return model, tokens / (time.perf_counter() - start)


def ftkit_epoch(examples, seed: int, lr: float, precision: str, batch_size: int = 8):
    import torch

    from ftkit.local.trainer import Trainer

    model, tok = fresh_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    trainer = Trainer.__new__(Trainer)  # only the step code, no store or job needed
    trainer.precision = precision
    tokens, start = 0, time.perf_counter()
    for batch in trainer.batches(examples, 0, batch_size, seed):
        ids, labels, mask = trainer.collate([examples[i] for i in batch], tok.pad_token_id)
        loss, _, _ = trainer.loss_and_accuracy(model, ids, labels, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        tokens += int(mask.sum())
    return model, tokens / (time.perf_counter() - start), trainer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args(argv)

    import torch

    from ftkit.local.models import load_base_model
    from ftkit.local.trainer import BASE_LEARNING_RATE, Trainer, load_examples, training_precision

    _, tok = load_base_model(progress=None)
    train = load_examples(ROOT / "data" / "tickets" / "train.jsonl", tok)[: args.examples]
    valid = load_examples(ROOT / "data" / "tickets" / "validation.jsonl", tok)
    lr, seed = BASE_LEARNING_RATE, 0
    scorer = Trainer.__new__(Trainer)
    scorer.precision = "fp32"

    def valid_loss(model) -> float:
        with torch.no_grad():
            return scorer.evaluate(model, valid, tok.pad_token_id)[0]

    print(f"{len(train)} training examples, {sum(len(e.ids) for e in train):,} tokens, 1 epoch, effective batch 8")
    runs = {}
    model, tps = naive_epoch(train, seed, lr)
    runs["naive padded per-example (fp32)"] = (tps, valid_loss(model))
    model, tps, _ = ftkit_epoch(train, seed, lr, "fp32")
    runs["ftkit trainer (fp32)"] = (tps, valid_loss(model))
    precision = training_precision()
    if precision != "fp32":
        model, tps, _ = ftkit_epoch(train, seed, lr, precision)
        runs[f"ftkit trainer ({precision}, as configured)"] = (tps, valid_loss(model))
    base_tps = runs["naive padded per-example (fp32)"][0]
    print(f"\n{'loop':40} {'tokens/s':>9} {'speed-up':>9} {'valid loss':>11}")
    for name, (tps, loss) in runs.items():
        print(f"{name:40} {tps:9.0f} {tps / base_tps:8.2f}x {loss:11.3f}")
    best = list(runs)[-1]
    result = {"examples": len(train), "runs": {k: {"tokens_per_s": round(v[0], 1), "valid_loss": round(v[1], 4)}
                                               for k, v in runs.items()},
              "speedup": round(runs[best][0] / base_tps, 2)}
    print(f"\nftkit ({best}) vs naive: {result['speedup']}x (goal >= 2x at equal loss)")
    return save(result, args.out)


if __name__ == "__main__":
    main()

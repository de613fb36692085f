"""Training throughput: ftkit's trainer step vs a naive padded per-example loop, same data, same run.

    python benchmarks/bench_train.py [--examples 64]

Both train fresh LoRA adapters (same rank, targets, seed, learning rate, effective batch of 8)
for one epoch over the same course examples and are then scored on the same validation examples.

* naive: one example at a time, every example padded to the longest in the set, float32,
  gradients accumulated over 8 examples -- the loop people write first;
* ftkit: the trainer's own step functions (``ftkit.local.training.steps``: length-grouped batches
  of 8 padded only to their longest member, collation, the token loss, the optimiser step), bf16
  mixed precision where the CPU supports it (fp32 otherwise; the fp32 variant is measured too).

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

    from ftkit.local.models import load_base_model
    from ftkit.local.training.recipe import RECIPE

    torch.manual_seed(seed)
    model, tokenizer = load_base_model(progress=None)
    model = RECIPE.apply(model)  # the server's own LoRA recipe
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
    from ftkit.local.training import steps

    model, tok = fresh_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = steps.make_optimizer(params, lr)
    batches = steps.length_grouped_batches([len(e.ids) for e in examples], batch_size=batch_size, epoch=0, seed=seed)
    sched = steps.make_scheduler(opt, len(batches))
    tokens, start = 0, time.perf_counter()
    for batch in batches:
        ids, labels, mask = steps.collate([examples[i] for i in batch], tok.pad_token_id)
        loss, _, _ = steps.token_loss_and_accuracy(model, ids, labels, mask, precision)
        steps.optimizer_step(loss, params, opt, sched)
        tokens += int(mask.sum())
    return model, tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args(argv)

    from ftkit import lifecycle
    from ftkit.local.hyperparameters import BASE_LEARNING_RATE
    from ftkit.local.models import load_base_model, precision
    from ftkit.local.training import steps
    from ftkit.local.training.sft import Supervised

    _, tok = load_base_model(progress=None)
    train = Supervised().load(ROOT / "data" / "tickets" / "train.jsonl", tok)[: args.examples]
    valid = Supervised().load(ROOT / "data" / "tickets" / "validation.jsonl", tok)
    lr, seed = BASE_LEARNING_RATE[lifecycle.SUPERVISED], 0

    def valid_loss(model) -> float:
        return steps.evaluate_tokens(model, valid, tok.pad_token_id, precision="fp32")[0]

    print(f"{len(train)} training examples, {sum(len(e.ids) for e in train):,} tokens, 1 epoch, effective batch 8")
    runs = {}
    model, tps = naive_epoch(train, seed, lr)
    runs["naive padded per-example (fp32)"] = (tps, valid_loss(model))
    model, tps = ftkit_epoch(train, seed, lr, "fp32")
    runs["ftkit trainer (fp32)"] = (tps, valid_loss(model))
    configured = precision("FTKIT_TRAIN_PRECISION")
    if configured != "fp32":
        model, tps = ftkit_epoch(train, seed, lr, configured)
        runs[f"ftkit trainer ({configured}, as configured)"] = (tps, valid_loss(model))
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

"""SFT throughput: ftkit's trainer step vs TRL's SFTTrainer and vs a naive loop, same data, same run.

    python benchmarks/bench_train.py [--examples 64] [--threads N] [--no-naive] [--precisions fp32,bf16]

Every run trains a fresh LoRA adapter (the server's ``RECIPE``: rank 16 on every projection) on the
real SmolLM2-135M-Instruct (``_common.fresh_model``) for one epoch over the same course examples
(``data/tickets/train.jsonl``, the first N), batches of 8 (effective), the server's SFT base learning
rate, AdamW without weight decay, gradient clipping at 1.0, a linear decay, the same seed, the loss
on the assistant's answer only (its text and end-of-turn token), and is then scored on the same
validation examples by the same function (``steps.evaluate_tokens``, fp32).

* naive: one example at a time, every example padded to the longest in the set, float32,
  gradients accumulated over 8 examples -- the loop people write first (issue 3's baseline);
* ftkit: the trainer's own step functions (``ftkit.local.jobs.training.steps``: length-grouped batches
  of 8 padded only to their longest member, collation, the token loss computed only at labelled
  positions, the optimiser step; one warm-up step of the 5% rule, then linear decay), in fp32 and,
  where the CPU does bf16 natively, in bf16 mixed precision;
* TRL: ``trl.SFTTrainer`` as documented (1.16): ``peft_config`` = the same LoRA config, the
  conversational ``messages`` format, ``assistant_only_loss=True``, batch 8, one epoch,
  ``lr_scheduler_type="linear"`` with no warm-up, ``weight_decay=0``, ``max_grad_norm=1``, the
  seed; everything else at TRL's defaults -- notably ``gradient_checkpointing=True``,
  ``padding_free=False`` and ``packing=False`` (batches of 8 in random order, padded to their
  longest member) -- and fp32 or bf16 as the ftkit run beside it. SmolLM2's chat template has no
  ``{% generation %}`` markers and TRL has no patched version of it (``get_training_chat_template``
  refuses it), so, as TRL's error says, the template is given the markers by hand
  (:data:`SMOLLM2_TRAINING_TEMPLATE`: the same text, with the assistant's content and ``<|im_end|>``
  inside ``{% generation %}``). The benchmark checks that TRL's prepared dataset has exactly
  ftkit's token ids and labels, example by example, and that both runs train on the same number of
  real and labelled tokens.

Throughput: real (non-padding) tokens per second, over wall time and over the process's CPU time
(the machine may be shared: CPU seconds are the steadier figure). The data preparation of both
(ftkit's encoding, TRL's tokenisation in the trainer's constructor) is outside the timing.

Goals: >= 2x the naive loop at equal loss (issue 3); >= 1.5x TRL's real tokens/s at equal
validation loss on the slow kind (AVX2, no native bf16: the fp32 rows; issue 19). The result names
the CPU and its flags.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from _common import cpu_info, fresh_model, save

ROOT = Path(__file__).resolve().parents[1]

#: SmolLM2-135M-Instruct's chat template with TRL's ``{% generation %}`` markers around what ftkit
#: learns of an assistant turn (its content and ``<|im_end|>``, not the newline after it). It
#: renders the same text as the original (the markers print nothing).
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _lora_model(seed: int):
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    model = RECIPE.apply(base)  # the server's own LoRA recipe
    model.train()
    return model, tok


def _timed(run):
    """``run()``'s result with the wall and process CPU seconds it took."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = run()
    out.update(wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0)
    return out


def naive_epoch(examples, *, seed: int, lr: float, batch_size: int = 8) -> tuple:
    import torch

    from ftkit.local.inference.render import IGNORE_INDEX

    model, tok = _lora_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    width = max(len(e.ids) for e in examples)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)

    def run():
        tokens = 0
        for k, i in enumerate(order, start=1):
            e = examples[i]
            ids = torch.full((1, width), tok.pad_token_id)
            labels = torch.full((1, width), IGNORE_INDEX)
            mask = torch.zeros((1, width), dtype=torch.long)
            ids[0, : len(e.ids)] = torch.tensor(e.ids)
            labels[0, : len(e.labels)] = torch.tensor(e.labels)
            mask[0, : len(e.ids)] = 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / batch_size
            loss.backward()
            tokens += len(e.ids)
            if k % batch_size == 0 or k == len(order):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad()
        return {"steps": -(-len(order) // batch_size), "tokens": tokens,
                "learned": sum(e.learned_tokens for e in examples)}

    return model, _timed(run)


def ftkit_epoch(examples, *, seed: int, lr: float, precision: str, batch_size: int = 8) -> tuple:
    from ftkit.local.jobs.training import steps

    model, tok = _lora_model(seed)
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        opt = steps.make_optimizer(params, lr)
        batches = steps.length_grouped_batches([len(e.ids) for e in examples], batch_size=batch_size, epoch=0,
                                               seed=seed)
        sched = steps.make_scheduler(opt, len(batches))
        tokens = learned = 0
        for batch in batches:
            ids, labels, mask = steps.collate([examples[i] for i in batch], tok.pad_token_id)
            loss, _, n = steps.token_loss_and_accuracy(model, ids, labels, mask, precision)
            steps.optimizer_step(loss, params, opt, sched)
            tokens += int(mask.sum())
            learned += n
        return {"steps": len(batches), "tokens": tokens, "learned": learned}

    return model, _timed(run)


def trl_epoch(lines, examples, *, seed: int, lr: float, precision: str, batch_size: int = 8,
              gradient_checkpointing: bool = True) -> tuple:
    """TRL's SFTTrainer over ``lines`` (the chat examples ``examples`` were encoded from)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ftkit.local.inference.render import IGNORE_INDEX, template_messages
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    tok.chat_template = SMOLLM2_TRAINING_TEMPLATE
    rows = [{"messages": template_messages(line["messages"])} for line in lines]
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                         num_train_epochs=1, learning_rate=lr, lr_scheduler_type="linear", warmup_steps=0,
                         weight_decay=0.0, max_grad_norm=1.0, seed=seed, data_seed=seed, report_to=[],
                         logging_steps=1, save_strategy="no", use_cpu=True, bf16=precision == "bf16", fp16=False,
                         assistant_only_loss=True, gradient_checkpointing=gradient_checkpointing,
                         max_length=None, dataloader_num_workers=0, disable_tqdm=True)
        torch.manual_seed(seed)
        trainer = SFTTrainer(model=base, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=RECIPE.config())
        # TRL trains on exactly ftkit's tokens: same ids, same labelled positions
        prepared = trainer.train_dataset
        assert len(prepared) == len(examples), (len(prepared), len(examples))
        for k, (row, e) in enumerate(zip(prepared, examples)):
            assert row["input_ids"] == e.ids, f"example {k}: TRL's token ids differ from ftkit's"
            assert row["labels"] == e.labels, f"example {k}: TRL's labelled tokens differ from ftkit's"
        counts = {"tokens": 0, "learned": 0}
        collate = trainer.data_collator

        def counting(batch_rows):  # the real tokens TRL trains on
            batch = collate(batch_rows)
            counts["tokens"] += int(batch["attention_mask"].sum())
            counts["learned"] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            return batch

        trainer.data_collator = counting

        def run():
            trainer.train()
            return {"steps": trainer.state.global_step, **counts}

        timing = _timed(run)
    return trainer.model, timing


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=64, help="training examples (steps = examples / 8)")
    parser.add_argument("--valid", type=int, default=40, help="validation examples to score (at most 40)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--precisions", default="auto",
                        help="comma-separated fp32,bf16 for the ftkit/TRL pairs; auto: fp32, plus bf16 where native")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--no-trl", action="store_true", help="skip TRL")
    parser.add_argument("--trl-no-checkpointing", action="store_true",
                        help="TRL without gradient checkpointing (its default is on)")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args(argv)

    import torch

    from ftkit import lifecycle
    from ftkit.data import read_jsonl
    from ftkit.local.inference.weights import MAX_EXAMPLE_TOKENS, load_base_model
    from ftkit.local.inference.weights import precision as choose_precision
    from ftkit.local.jobs.hyperparameters import BASE_LEARNING_RATE
    from ftkit.local.jobs.training import steps
    from ftkit.local.jobs.training.sft import Supervised

    if args.threads:
        torch.set_num_threads(args.threads)
    _, tok = load_base_model(progress=None)
    lines = list(read_jsonl(ROOT / "data" / "tickets" / "train.jsonl"))[: args.examples]
    train = [steps.encode_example(tok, line, MAX_EXAMPLE_TOKENS) for line in lines]
    assert all(e.learned_tokens for e in train), "every ticket example has an answer to learn"
    valid = Supervised().load(ROOT / "data" / "tickets" / "validation.jsonl", tok)[: args.valid]
    lr, seed, bs = BASE_LEARNING_RATE[lifecycle.SUPERVISED], args.seed, args.batch_size
    if args.precisions == "auto":
        precisions = ["fp32"] + (["bf16"] if choose_precision("FTKIT_TRAIN_PRECISION", "auto") == "bf16" else [])
    else:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    def valid_scores(model) -> dict:
        loss, acc = steps.evaluate_tokens(model, valid, tok.pad_token_id, precision="fp32")
        return {"valid_loss": loss, "valid_accuracy": acc}

    info = cpu_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; AVX2: {'yes' if info['avx2'] else 'no'}, "
          f"AVX-512: {'yes' if info['avx512f'] else 'no'}, AVX512-BF16: {'yes' if info['avx512_bf16'] else 'no'}, "
          f"AMX-BF16: {'yes' if info['amx_bf16'] else 'no'}; torch threads {torch.get_num_threads()}")
    print(f"{len(train)} training examples, {sum(len(e.ids) for e in train):,} tokens "
          f"({sum(e.learned_tokens for e in train):,} learned), 1 epoch, batch {bs}, learning rate {lr:g}; "
          f"{len(valid)} validation examples")
    runs: dict[str, dict] = {}
    common = {"seed": seed, "lr": lr, "batch_size": bs}
    if not args.no_naive:
        model, r = naive_epoch(train, **common)
        runs["naive padded per-example (fp32)"] = {**r, **valid_scores(model)}
    for p in precisions:
        if not args.no_trl:
            model, r = trl_epoch(lines, train, precision=p, gradient_checkpointing=not args.trl_no_checkpointing,
                                 **common)
            runs[f"TRL SFTTrainer ({p})"] = {**r, **valid_scores(model)}
        model, r = ftkit_epoch(train, precision=p, **common)
        runs[f"ftkit trainer ({p})"] = {**r, **valid_scores(model)}
        if not args.no_trl:
            ours, theirs = runs[f"ftkit trainer ({p})"], runs[f"TRL SFTTrainer ({p})"]
            assert ours["tokens"] == theirs["tokens"] and ours["learned"] == theirs["learned"], (ours, theirs)
    del model

    print(f"\n{'run':32} {'steps':>5} {'tokens':>7} {'wall s':>7} {'CPU s':>7} {'tok/s':>7} {'tok/CPU-s':>9} "
          f"{'valid loss':>10} {'valid acc':>9}")
    for name, r in runs.items():
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_s"]
        print(f"{name:32} {r['steps']:5d} {r['tokens']:7d} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} "
              f"{r['tokens_per_s']:7.1f} {r['tokens_per_cpu_s']:9.1f} {r['valid_loss']:10.4f} "
              f"{r['valid_accuracy']:9.3f}")
    ratios = {}
    for p in precisions:
        ours = runs[f"ftkit trainer ({p})"]
        for other, key in (("TRL SFTTrainer", "vs_trl"), ("naive padded per-example", "vs_naive")):
            theirs = runs.get(f"{other} ({p})") or (runs.get(f"{other} (fp32)") if key == "vs_naive" else None)
            if theirs is None:
                continue
            ratios[f"{key}_{p}"] = {
                "wall": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2),
                "cpu": round(ours["tokens_per_cpu_s"] / theirs["tokens_per_cpu_s"], 2),
                "valid_loss_difference": round(ours["valid_loss"] - theirs["valid_loss"], 4)}
    print()
    for key, r in ratios.items():
        print(f"ftkit {key.replace('_', ' ')}: {r['wall']}x tokens/s (wall), {r['cpu']}x per CPU-second; "
              f"validation loss difference {r['valid_loss_difference']:+.4f}")
    print("goals: >= 2x the naive loop (issue 3); >= 1.5x TRL in fp32, the comparison for the slow kind (issue 19)")
    result = {**info, "torch_threads": torch.get_num_threads(), "examples": len(train), "valid_examples": len(valid),
              "batch_size": bs, "learning_rate": lr,
              "trl_gradient_checkpointing": not args.trl_no_checkpointing,
              "runs": {k: {key: (round(v, 4) if isinstance(v, float) else v) for key, v in r.items()}
                       for k, r in runs.items()},
              "ratios": ratios}
    # run_all's summary: ftkit at its configured precision vs the naive loop; vs TRL in fp32 (the slow kind's)
    last = precisions[-1]
    if f"vs_naive_{last}" in ratios:
        result["speedup"] = ratios[f"vs_naive_{last}"]["wall"]
    if "vs_trl_fp32" in ratios:
        result["speedup_vs_trl"] = ratios["vs_trl_fp32"]["wall"]
    return save(result, args.out)


if __name__ == "__main__":
    main()

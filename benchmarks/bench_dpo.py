"""DPO throughput: ftkit's DPO step vs Hugging Face TRL's DPOTrainer, same model, LoRA, data and run.

    python benchmarks/bench_dpo.py [--pairs 24] [--batch-size 4] [--beta 0.1]

Both train a fresh LoRA adapter (the server's ``RECIPE``: rank 16 on every projection) on the real
SmolLM2-135M-Instruct (``load_base_model``) for the same number of steps over the same house-style
preference pairs (``data/tone/preference_train.jsonl``), with the same batch size, beta, learning
rate (the server's DPO base rate), AdamW without weight decay, gradient clipping at 1.0 and a linear
decay. The reference model is, for both, the starting model with the new adapter switched off.

* ftkit: what the trainer runs (``ftkit.local.jobs.training.dpo`` with ``steps``): pairs encoded with
  their label masks, the reference log-probabilities computed once per pair before training
  (counted in the time), length-grouped batches padded to their longest member, one forward pass
  over the chosen and rejected sequences of a batch, ``dpo_loss``, ``steps.optimizer_step``;
* TRL: ``trl.DPOTrainer`` as documented, with ``peft_config`` = the same LoRA config and its
  default reference handling (the adapter disabled, one extra forward per step), given the same
  pairs in its conversational format (it renders them with the same chat template).

Throughput: pairs per second and real (non-padding) tokens per second -- over wall time and over
the process's CPU time (the machine may be shared: CPU seconds are the steadier figure). Equal
loss: after training, the DPO loss, reward margin and preference accuracy of both adapters on the
same validation pairs (``preference_validation.jsonl``), computed by the same function.

Goal (issue 10): at least TRL's throughput at equal loss. The result names the CPU and whether it
has AVX512-BF16.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import cpu_info, fresh_model, save

ROOT = Path(__file__).resolve().parents[1]


def validation_metrics(model, pairs, pad_id: int, beta: float, precision: str) -> dict:
    """DPO loss, reward margin and preference accuracy of ``model`` (a peft model) on ``pairs``, the
    reference being the same model with its adapter off -- one function for both runs."""
    import torch

    from ftkit.local.jobs.training import dpo

    model.eval()
    with torch.no_grad():
        chosen, rejected = dpo.sequence_logprobs(model, pairs, pad_id, precision)
        with model.disable_adapter():
            ref_chosen, ref_rejected = dpo.sequence_logprobs(model, pairs, pad_id, precision)
    loss, r_plus, r_minus = dpo.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    metrics = dpo.dpo_metrics("valid", loss, r_plus, r_minus)
    return {k.removeprefix("valid_"): v for k, v in metrics.items()}


def run_ftkit(lines, valid_lines, *, steps_n: int, batch_size: int, beta: float, lr: float, seed: int,
              precision: str) -> dict:
    import torch

    from ftkit.local.jobs.training import dpo, steps
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    model = RECIPE.apply(base)
    valid = [dpo.encode_pair(tok, line) for line in valid_lines]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    pairs = [dpo.encode_pair(tok, line) for line in lines]
    # the reference log-probabilities, once per pair (what DirectPreference.prepare does)
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        for b in range(0, len(pairs), 8):
            chunk = pairs[b : b + 8]
            chosen, rejected = dpo.sequence_logprobs(model, chunk, tok.pad_token_id, precision)
            for p, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
                p.ref_chosen, p.ref_rejected = c, r
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(params, lr)
    scheduler = steps.make_scheduler(optimizer, steps_n)
    lengths = [max(len(p.chosen.ids), len(p.rejected.ids)) for p in pairs]
    batches = steps.length_grouped_batches(lengths, batch_size=batch_size, epoch=0, seed=seed)[:steps_n]
    tokens, losses = 0, []
    for batch in batches:
        chunk = [pairs[i] for i in batch]
        chosen, rejected = dpo.sequence_logprobs(model, chunk, tok.pad_token_id, precision)
        ref_c = torch.tensor([p.ref_chosen for p in chunk])
        ref_r = torch.tensor([p.ref_rejected for p in chunk])
        loss, _, _ = dpo.dpo_loss(chosen, rejected, ref_c, ref_r, beta)
        steps.optimizer_step(loss, params, optimizer, scheduler)
        losses.append(loss.item())
        tokens += sum(len(p.chosen.ids) + len(p.rejected.ids) for p in chunk)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n_pairs = sum(len(b) for b in batches)
    return {"steps": len(batches), "pairs": n_pairs, "tokens": tokens, "wall_s": wall, "cpu_s": cpu,
            "train_loss_first": losses[0], "train_loss_last": losses[-1],
            "valid": validation_metrics(model, valid, tok.pad_token_id, beta, "fp32")}


def run_trl(lines, valid_lines, *, steps_n: int, batch_size: int, beta: float, lr: float, seed: int,
            precision: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ftkit.local.jobs.training import dpo
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    rows = [{"prompt": line["input"]["messages"], "chosen": line["preferred_output"],
             "rejected": line["non_preferred_output"]} for line in lines]
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                         max_steps=steps_n, learning_rate=lr, lr_scheduler_type="linear", warmup_steps=0,
                         weight_decay=0.0, max_grad_norm=1.0, beta=beta, seed=seed, report_to=[],
                         logging_steps=1, save_strategy="no", use_cpu=True, bf16=precision == "bf16",
                         fp16=False, precompute_ref_log_probs=False, dataloader_num_workers=0,
                         disable_tqdm=True)
        torch.manual_seed(seed)
        trainer = DPOTrainer(model=base, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=RECIPE.config())
        tokens = [0]
        collate = trainer.data_collator

        def counting(examples):  # the real tokens TRL trains on (prompt + completion, both answers)
            batch = collate(examples)
            tokens[0] += int(batch["attention_mask"].sum())
            return batch

        trainer.data_collator = counting
        wall0, cpu0 = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        model = trainer.model
    valid = [dpo.encode_pair(tok, line) for line in valid_lines]
    return {"steps": trainer.state.global_step, "pairs": trainer.state.global_step * batch_size, "tokens": tokens[0],
            "wall_s": wall, "cpu_s": cpu, "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None,
            "valid": validation_metrics(model, valid, tok.pad_token_id, beta, "fp32")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=24, help="training pairs (steps = pairs / batch size)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/dpo.json")
    args = parser.parse_args(argv)

    from ftkit import lifecycle
    from ftkit.data import read_jsonl
    from ftkit.local.inference.weights import precision as choose_precision
    from ftkit.local.jobs.hyperparameters import BASE_LEARNING_RATE

    lines = list(read_jsonl(ROOT / "data" / "tone" / "preference_train.jsonl"))[: args.pairs]
    valid_lines = list(read_jsonl(ROOT / "data" / "tone" / "preference_validation.jsonl"))
    steps_n = len(lines) // args.batch_size
    lr = BASE_LEARNING_RATE[lifecycle.DPO]
    precision = choose_precision("FTKIT_TRAIN_PRECISION")
    info = cpu_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; AVX-512: {'yes' if info['avx512f'] else 'no'}, "
          f"AVX512-BF16: {'yes' if info['avx512_bf16'] else 'no'}; precision {precision}")
    print(f"{steps_n} steps x {args.batch_size} pairs, beta {args.beta}, learning rate {lr:g}, "
          f"{len(valid_lines)} validation pairs")
    common = {"steps_n": steps_n, "batch_size": args.batch_size, "beta": args.beta, "lr": lr, "seed": args.seed,
              "precision": precision}
    runs = {"TRL DPOTrainer": run_trl(lines, valid_lines, **common), "ftkit DPO step": run_ftkit(lines, valid_lines, **common)}
    print(f"\n{'run':18} {'pairs/s':>8} {'tokens/s':>9} {'pairs/CPU-s':>12} {'tok/CPU-s':>10} "
          f"{'valid loss':>11} {'margin':>7} {'pref. acc.':>10}")
    for name, r in runs.items():
        r["pairs_per_s"] = r["pairs"] / r["wall_s"]
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        r["pairs_per_cpu_s"] = r["pairs"] / r["cpu_s"]
        r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_s"]
        v = r["valid"]
        print(f"{name:18} {r['pairs_per_s']:8.3f} {r['tokens_per_s']:9.1f} {r['pairs_per_cpu_s']:12.3f} "
              f"{r['tokens_per_cpu_s']:10.1f} {v['loss']:11.4f} {v['reward_margin']:7.3f} "
              f"{v['preference_accuracy']:10.2f}")
    ours, theirs = runs["ftkit DPO step"], runs["TRL DPOTrainer"]
    result = {
        **info, "precision": precision, "steps": steps_n, "batch_size": args.batch_size, "beta": args.beta,
        "runs": {k: {key: (round(v, 4) if isinstance(v, float) else v) for key, v in r.items()} for k, r in runs.items()},
        "speedup": round(ours["pairs_per_s"] / theirs["pairs_per_s"], 2),
        "speedup_cpu": round(ours["pairs_per_cpu_s"] / theirs["pairs_per_cpu_s"], 2),
        "valid_loss_difference": round(ours["valid"]["loss"] - theirs["valid"]["loss"], 4),
    }
    print(f"\nftkit vs TRL: {result['speedup']}x pairs/s (wall), {result['speedup_cpu']}x pairs per CPU-second; "
          f"validation loss {ours['valid']['loss']:.4f} vs {theirs['valid']['loss']:.4f} "
          f"(goal: >= 1x at equal loss)")
    return save(result, args.out)


if __name__ == "__main__":
    main()

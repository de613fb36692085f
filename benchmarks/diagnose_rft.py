"""Does reinforcement fine-tuning raise the reward it optimizes? ftkit's RFT job beside TRL's
GRPOTrainer on the same task, start model, grader, prompts, group size, steps, learning rate,
schedule and seed, with the reward curves of both: train (sampled) and held-out (greedy).

    python benchmarks/diagnose_rft.py [--train 24] [--heldout 12] [--sft-epochs 2]
        [--lr-multiplier auto] [--n-epochs auto] [--batch-size auto] [--compute-multiplier auto]
        [--only ftkit|trl] [--threads N] [--seed 0]

The task is issue 23's routing check, as a new user would try it:

* **data**: the first ``--train`` training tickets and the first ``--heldout`` validation tickets
  of ``data/tickets/tickets.csv``; the prompt asks for the team (the ticket's category) by name,
  one word; the grader is OpenAI's ``string_check`` ``eq`` of the answer against the category
  (1 or 0), run by ``ftkit.graders``;
* **start model**: SmolLM2-135M-Instruct after an ftkit supervised job of ``--sft-epochs`` epochs
  on the same training tickets with their answers (an ``ft:`` model, as the issue's user had);
* **ftkit**: an RFT job from that ``ft:`` model, run by the trainer's own loop
  (``ftkit.local.jobs.training.loop.JobRun`` on a temporary store, exactly what the server's worker
  runs) with the given hyperparameters (``auto`` = the server's defaults), the held-out tickets as
  its validation file and ``eval_interval`` 1, so every step reports the greedy held-out reward;
* **TRL**: ``trl.GRPOTrainer`` on the SFT model merged (what ftkit starts from), a fresh LoRA
  adapter of the server's ``RECIPE``, the hyperparameters the ftkit job resolved to: prompts per
  step (``per_device_train_batch_size`` = prompts x group size), ``num_generations`` = group
  size, the same prompts in the same steps (the order ftkit's ``length_grouped_batches`` chose),
  ``max_completion_length`` = ftkit's answer cut, temperature 1, ``beta=0``, ``loss_type="grpo"``,
  ``scale_rewards="group"``, the same learning rate and the same warm-up + linear-decay schedule
  (``steps.make_scheduler``), AdamW without weight decay, gradients clipped at 1. After every step
  a callback answers the held-out prompts greedily with the same decoder ftkit's validation uses
  (``training.sampling.generate``, temperature 0) and grades them with the same grader.

Step 0 is the start model (the same for both). Sampling is random, so the two runs draw
different answers; at this size one held-out ticket is 1/``--heldout`` of the reward, so read a
change of one or two tickets as noise. The result names the CPU and the load average.

First measurement (2026-12-05, Intel Xeon with AVX512-BF16, bf16, 2 cores shared with other jobs,
load average 5-7; ``--only ftkit``, defaults): SFT 2 epochs on 24 tickets took 1,243 s and gives
held-out greedy reward 0.25 (3 of 12); the default RFT job (6 steps of 4 prompts x 4 answers,
learning rate 5e-5, 775 s) left it at 0.25 at every step, train reward 0.25, 0.125, 0.25, 0.125,
0.19, 0.25: at the auto learning rate six steps do not change one greedy answer, so the "drop"
the issue saw is within noise. The TRL side and higher learning rates were not run yet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from _common import cpu_info, save

ROOT = Path(__file__).resolve().parents[1]
TEAMS = ("billing", "technical", "account", "shipping", "feature_request")
SYSTEM = ("Route the support ticket to one team: billing, technical, account, shipping or feature_request. "
          "Reply with the team's name only.")
#: 1 when the answer is exactly the ticket's team, else 0.
GRADER = {"type": "string_check", "name": "team", "operation": "eq", "input": "{{ sample.output_text }}",
          "reference": "{{ item.category }}"}


def tickets(split: str, n: int) -> list[dict]:
    import pandas as pd

    rows = pd.read_csv(ROOT / "data" / "tickets" / "tickets.csv")
    rows = rows[rows["split"] == split].head(n)
    return [{"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": f"Subject: {r.subject}\n\n{r.body}"}],
             "category": r.category} for r in rows.itertuples()]


def write_file(store, lines: list[dict]) -> str:
    import hashlib

    from ftkit.local.store import new_id

    file_id = new_id("file")
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    store.file_path(file_id).write_bytes(content)
    store.add_file(file_id, filename=f"{file_id}.jsonl", purpose="fine-tune", size=len(content),
                   sha256=hashlib.sha256(content).hexdigest())
    return file_id


def run_job(store, model: str, method: dict, train: str, valid: str | None, seed: int) -> dict:
    from ftkit import lifecycle as lc
    from ftkit.local.jobs import jobstate
    from ftkit.local.jobs.training.loop import JobRun
    from ftkit.local.store import new_id

    job = jobstate.create(store, {"id": new_id("ftjob"), "model": model, "training_file": train,
                                  "validation_file": valid, "suffix": "diag", "seed": seed, "method": method,
                                  "metadata": None, "integrations": []})
    jobstate.queue(store, job["id"])
    jobstate.start(store, job["id"])
    JobRun(store, store.get_job(job["id"]), log=lambda m: None).run()
    done = store.get_job(job["id"])
    if done["status"] != lc.SUCCEEDED:
        raise RuntimeError(f"job {done['id']} ended {done['status']}: {done['error']}")
    return done


def heldout_reward(model, tok, prompts: list, items: list[dict], grader, precision: str) -> float:
    """Greedy answers to the held-out prompts (the trainer's decoder), graded: the mean reward."""
    import torch

    from ftkit import graders
    from ftkit.local.jobs.training import rft, sampling

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = sampling.generate(model, tok, prompts, n=1, max_tokens=rft.MAX_COMPLETION_TOKENS, temperature=0.0,
                                seed=None, precision=precision)
    model.train(was_training)
    choices = [{"message": {"role": "assistant", "content": g[0].text}, "finish_reason": g[0].finish_reason}
               for g in out]
    results = graders.grade_many(grader, choices, items)
    return sum(r.reward for r in results) / len(results)


def run_ftkit(store, start_model: str, train_id: str, valid_id: str, hp: dict, seed: int) -> dict:
    from ftkit import lifecycle as lc

    method = {"type": lc.REINFORCEMENT, lc.REINFORCEMENT: {"grader": GRADER, "hyperparameters": {
        **hp, "eval_interval": 1, "eval_samples": 10_000}}}
    t0 = time.time()
    job = run_job(store, start_model, method, train_id, valid_id, seed)
    events, _ = store.list_events(job["id"], limit=10_000)
    rows = sorted((e["data"] for e in events if e["type"] == "metrics" and "train_reward_mean" in e["data"]),
                  key=lambda d: d["step"])
    return {"train_reward": [r["train_reward_mean"] for r in rows],
            "heldout_reward": [r["valid_reward_mean"] for r in rows],
            "completion_tokens": [r["train_completion_tokens"] for r in rows],
            "hyperparameters": job["method"][lc.REINFORCEMENT]["hyperparameters"],
            "wall_s": round(time.time() - t0, 1), "fine_tuned_model": job["fine_tuned_model"]}


def run_trl(store, start_model: str, train_lines: list[dict], heldout: list[dict], hp: dict, seed: int,
            precision: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ftkit import graders
    from ftkit.local.inference.render import render_prompt
    from ftkit.local.jobs import hyperparameters
    from ftkit.local.jobs.training import rft, starting, steps
    from ftkit.local.jobs.training.recipe import RECIPE

    t0 = time.time()
    torch.manual_seed(seed)
    start = starting.load_starting_model(store, start_model, progress=None)  # the SFT adapter merged
    tok = start.tokenizer
    grader = graders.compile_grader(GRADER)
    group = hyperparameters.samples_per_prompt(hp["compute_multiplier"])
    prompts_per_step, epochs = hp["batch_size"], hp["n_epochs"]
    lr = hyperparameters.learning_rate(lc_rft(), hp)
    lengths = [len(tok(render_prompt(tok, line["messages"]), add_special_tokens=False)["input_ids"])
               for line in train_lines]
    order = [i for e in range(epochs)
             for batch in steps.length_grouped_batches(lengths, batch_size=prompts_per_step, epoch=e, seed=seed)
             for i in batch]  # ftkit's batches, step by step
    total = math.ceil(len(train_lines) / prompts_per_step) * epochs
    rows = [{"prompt": train_lines[i]["messages"], "category": train_lines[i]["category"]} for i in order]
    # (a last, shorter ftkit batch has no TRL equal: choose --train a multiple of the batch size)
    heldout_ids = [tok(render_prompt(tok, h["messages"]), add_special_tokens=False)["input_ids"] for h in heldout]
    curve = {"train_reward": [], "heldout_reward": [], "completion_tokens": []}
    pending: list[float] = []
    tokens: list[int] = []

    def team(prompts, completions, completion_ids, category, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        choices = [{"message": {"role": "assistant", "content": t}, "finish_reason": "stop"} for t in texts]
        rewards = [r.reward for r in graders.grade_many(grader, choices, [{"category": c} for c in category])]
        pending.extend(rewards)
        tokens.extend(len(ids) for ids in completion_ids)
        return rewards

    class Curve(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            curve["train_reward"].append(round(sum(pending) / max(1, len(pending)), 4))
            curve["completion_tokens"].append(round(sum(tokens) / max(1, len(tokens)), 1))
            pending.clear()
            tokens.clear()
            curve["heldout_reward"].append(round(heldout_reward(model, tok, heldout_ids, heldout, grader, precision), 4))

    class SameSchedule(GRPOTrainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            self.lr_scheduler = steps.make_scheduler(optimizer or self.optimizer, num_training_steps)
            return self.lr_scheduler

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=prompts_per_step * group, gradient_accumulation_steps=1,
            num_generations=group, max_completion_length=rft.MAX_COMPLETION_TOKENS, temperature=rft.SAMPLING_TEMPERATURE,
            top_p=1.0, top_k=0, beta=0.0, loss_type="grpo", scale_rewards="group", num_iterations=1,
            epsilon=rft.CLIP_EPSILON, use_vllm=False, shuffle_dataset=False, max_steps=total, learning_rate=lr,
            weight_decay=0.0, max_grad_norm=steps.MAX_GRAD_NORM, seed=seed, report_to=[], logging_steps=1,
            save_strategy="no", use_cpu=True, bf16=precision == "bf16", fp16=False, dataloader_num_workers=0,
            disable_tqdm=True, log_completions=False)
        trainer = SameSchedule(model=start.model, reward_funcs=team, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tok, peft_config=RECIPE.config(), callbacks=[Curve()])
        trainer.train()
    curve["wall_s"] = round(time.time() - t0, 1)
    curve["group_size"], curve["learning_rate"], curve["steps"] = group, lr, total
    return curve


def lc_rft() -> str:
    from ftkit import lifecycle as lc

    return lc.REINFORCEMENT


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=24, help="training tickets (SFT and RFT prompts)")
    parser.add_argument("--heldout", type=int, default=12, help="held-out tickets (greedy reward)")
    parser.add_argument("--sft-epochs", type=int, default=2)
    for name in ("lr-multiplier", "n-epochs", "batch-size", "compute-multiplier"):
        parser.add_argument(f"--{name}", default="auto", help="an RFT hyperparameter (default: auto)")
    parser.add_argument("--only", choices=("ftkit", "trl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/diagnose_rft.json")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ftkit import graders
    from ftkit import lifecycle as lc
    from ftkit.local.inference.render import render_prompt
    from ftkit.local.inference.weights import DEFAULT_BASE_MODEL
    from ftkit.local.inference.weights import precision as choose_precision
    from ftkit.local.jobs import hyperparameters
    from ftkit.local.jobs.training import starting
    from ftkit.local.store import Store

    info = cpu_info()
    precision = choose_precision("FTKIT_TRAIN_PRECISION")
    print(f"CPU: {info['cpu']}, {info['cores']} cores, {torch.get_num_threads()} torch threads; AVX512-BF16: "
          f"{'yes' if info['avx512_bf16'] else 'no'}; precision {precision}; load average {load_average()}")
    train_lines, heldout = tickets("train", args.train), tickets("validation", args.heldout)
    sft_lines = [{"messages": [*t["messages"], {"role": "assistant", "content": t["category"]}]} for t in train_lines]
    requested = {"learning_rate_multiplier": args.lr_multiplier, "n_epochs": args.n_epochs,
                 "batch_size": args.batch_size, "compute_multiplier": args.compute_multiplier}
    requested = {k: (v if v == "auto" else float(v) if k.endswith("multiplier") else int(v))
                 for k, v in requested.items()}
    hp = hyperparameters.resolve(lc.REINFORCEMENT, requested, len(train_lines))

    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home))
        store.add_model(DEFAULT_BASE_MODEL, kind="base", owned_by="system", source=DEFAULT_BASE_MODEL)
        train_id, valid_id = write_file(store, train_lines), write_file(store, heldout)
        t0 = time.time()
        sft = run_job(store, DEFAULT_BASE_MODEL, {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": {
            "n_epochs": args.sft_epochs}}}, write_file(store, sft_lines), None, args.seed)
        start_model = sft["fine_tuned_model"]
        start = starting.load_starting_model(store, start_model, progress=None)
        tok = start.tokenizer
        heldout_ids = [tok(render_prompt(tok, h["messages"]), add_special_tokens=False)["input_ids"] for h in heldout]
        before = heldout_reward(start.model, tok, heldout_ids, heldout, graders.compile_grader(GRADER), precision)
        del start
        print(f"start model {start_model} (SFT {args.sft_epochs} epochs on {len(train_lines)} tickets, "
              f"{time.time() - t0:.0f} s): held-out greedy reward {before:.3f}")
        print(f"RFT hyperparameters: {hp} (group of {hyperparameters.samples_per_prompt(hp['compute_multiplier'])}, "
              f"learning rate {hyperparameters.learning_rate(lc.REINFORCEMENT, hp):g})")
        runs: dict = {}
        if args.only != "trl":
            runs["ftkit"] = run_ftkit(store, start_model, train_id, valid_id, requested, args.seed)
            print(f"ftkit ({runs['ftkit']['wall_s']} s, load {load_average()}): train {runs['ftkit']['train_reward']}"
                  f"\n  held-out {[round(before, 4)] + runs['ftkit']['heldout_reward']}")
        if args.only != "ftkit":
            runs["trl"] = run_trl(store, start_model, train_lines, heldout, hp, args.seed, precision)
            print(f"TRL ({runs['trl']['wall_s']} s, load {load_average()}): train {runs['trl']['train_reward']}"
                  f"\n  held-out {[round(before, 4)] + runs['trl']['heldout_reward']}")
    result = {**info, "torch_threads": torch.get_num_threads(), "precision": precision,
              "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_end": load_average(), "train": args.train,
              "heldout": args.heldout, "sft_epochs": args.sft_epochs, "seed": args.seed, "requested": requested,
              "resolved": hp, "grader": GRADER, "heldout_before": round(before, 4), "runs": runs}
    return save(result, args.out)


if __name__ == "__main__":
    main()

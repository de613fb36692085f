"""RFT step time: ftkit's reinforcement step vs Hugging Face TRL's GRPOTrainer, split into
sampling, grading and update, same model, LoRA, prompts, grader and run.

    python benchmarks/bench_rft.py [--prompts 2] [--group-size 4] [--max-tokens 32] [--steps 2] [--threads 1]

Both train a fresh LoRA adapter (the server's ``RECIPE``: rank 16 on every projection) on the real
SmolLM2-135M-Instruct (``load_base_model``), in the trainer's precision (fp32 on a CPU without
AVX512-BF16), for one warm-up step and then ``--steps`` measured steps. Each step takes the same
``--prompts`` ticket prompts (``data/tickets/train.jsonl``: the conversation without the
assistant's answer; steps take the file's lines in order), samples ``--group-size`` answers to
each at temperature 1 (no top-k, no top-p) of at most ``--max-tokens`` tokens, rewards every answer
with the same OpenAI grader run by ``ftkit.graders`` (a ``multi`` of three ``string_check`` graders:
one point per JSON field -- category, urgency, product -- that matches the ticket's label, the mean
of the three), normalises the rewards within each group and takes one AdamW step on the clipped
policy-gradient loss (GRPO; no KL term), at the server's reinforcement learning rate.

* ftkit: what the trainer runs, ``Reinforcement.step`` (``ftkit.local.jobs.training.rft``) then
  ``steps.optimizer_step``, as ``JobRun.train_epochs`` does. Sampling is
  ``Reinforcement.sample`` (every prompt and every sample of the step decoded together by the
  serving engine's batched decoder, ``training.sampling.generate``), grading is
  ``Reinforcement.grade`` (``graders.grade_many``); both are timed by wrapping the method's own
  functions. The update is the rest: the forward pass over prompt + answers, ``grpo_loss``,
  backward, clipping and the optimiser step.
* TRL: ``trl.GRPOTrainer`` as documented, with ``peft_config`` = the same LoRA config,
  ``num_generations`` = the group size, ``per_device_train_batch_size`` = prompts x group size
  (TRL counts answers, not prompts), ``max_completion_length``, ``beta=0``, ``loss_type="grpo"``,
  ``use_vllm=False``, no dataset shuffling (the same prompts in the same steps). Its reward
  function grades with the same compiled grader (``graders.grade_many``). Sampling is timed by
  wrapping the trainer's ``_generate_single_turn`` (its call to ``model.generate`` on the whole
  generation batch, and cutting the answers at the end-of-sequence token); grading inside the
  reward function; a ``TrainerCallback`` times each whole step (``on_step_begin`` to
  ``on_step_end``); the update is the rest (prompt tokenisation, the forward pass, loss,
  backward, optimiser step and TRL's bookkeeping).

Reported per step, over the measured steps: wall and CPU seconds for each part, answer tokens
sampled per second (the answers' tokens including the end-of-sequence token where an answer ended,
as both count them), the mean reward, the ratios ftkit / TRL of each time (below 1: ftkit is
faster) and ``speedup`` = TRL's step time / ftkit's (goal: >= 1x).
Sampling is random (different tokens for each library), so the answers' lengths differ: compare
the tokens per second of sampling and the step times with the answer tokens beside them. The
result names the CPU and whether it has AVX512-BF16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import cpu_info, fresh_model, save

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("category", "urgency", "product")

#: One point per ticket field the answer gets right (its JSON), averaged: partial credit.
GRADER = {
    "type": "multi",
    "name": "ticket fields",
    "graders": {
        field: {"type": "string_check", "name": field, "operation": "eq",
                "input": f"{{{{ sample.output_json.{field} }}}}", "reference": f"{{{{ item.{field} }}}}"}
        for field in FIELDS
    },
    "calculate_output": "(category + urgency + product) / 3",
}


def rft_lines(n: int) -> list[dict]:
    """The first ``n`` training tickets as RFT lines: the conversation up to the user's ticket,
    and the labelled fields the grader reads."""
    from ftkit.data import read_jsonl

    lines = []
    for line in list(read_jsonl(ROOT / "data" / "tickets" / "train.jsonl"))[:n]:
        *prompt, answer = line["messages"]
        lines.append({"messages": prompt, **{f: json.loads(answer["content"])[f] for f in FIELDS}})
    return lines


class Clock:
    """Wall and CPU seconds spent in the wrapped calls, per step."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall0
                self.cpu += time.process_time() - cpu0

        return timed

    def take(self) -> tuple[float, float]:
        out = (self.wall, self.cpu)
        self.wall = self.cpu = 0.0
        return out


def summarise(step_rows: list[dict]) -> dict:
    """Per-step means over the measured steps, sampled tokens per second and the mean reward."""
    n = len(step_rows)
    out = {"measured_steps": n}
    for key in ("step", "sampling", "grading", "update"):
        out[f"{key}_wall_s"] = sum(r[f"{key}_wall_s"] for r in step_rows) / n
        out[f"{key}_cpu_s"] = sum(r[f"{key}_cpu_s"] for r in step_rows) / n
    out["answers"] = sum(r["answers"] for r in step_rows)
    out["answer_tokens"] = sum(r["answer_tokens"] for r in step_rows)
    out["answer_tokens_per_answer"] = out["answer_tokens"] / out["answers"]
    out["sampled_tokens_per_s"] = out["answer_tokens"] / sum(r["sampling_wall_s"] for r in step_rows)
    out["sampled_tokens_per_cpu_s"] = out["answer_tokens"] / sum(r["sampling_cpu_s"] for r in step_rows)
    out["reward_mean"] = sum(r["reward_mean"] for r in step_rows) / n
    out["steps"] = step_rows
    return out


def split_row(step_wall: float, step_cpu: float, sampling: tuple, grading: tuple, answers: int, tokens: int,
              reward_mean: float) -> dict:
    return {"step_wall_s": step_wall, "step_cpu_s": step_cpu,
            "sampling_wall_s": sampling[0], "sampling_cpu_s": sampling[1],
            "grading_wall_s": grading[0], "grading_cpu_s": grading[1],
            "update_wall_s": step_wall - sampling[0] - grading[0], "update_cpu_s": step_cpu - sampling[1] - grading[1],
            "answers": answers, "answer_tokens": tokens, "reward_mean": reward_mean}


def run_ftkit(lines, *, prompts: int, group_size: int, max_tokens: int, steps_n: int, lr: float, seed: int,
              precision: str) -> dict:
    from ftkit import lifecycle as lc
    from ftkit.local.jobs.training import rft, steps
    from ftkit.local.jobs.training.loop import RunContext
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    model = RECIPE.apply(base)
    model.train()
    method = rft.Reinforcement()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        data = method.load(path, tok)  # the trainer's own prompt encoding
    hp = {"batch_size": prompts, "n_epochs": 1, "learning_rate_multiplier": 1.0,
          "compute_multiplier": group_size / rft.hyperparameters.SAMPLES_PER_PROMPT}
    job = {"method": {"type": lc.REINFORCEMENT, lc.REINFORCEMENT: {"grader": GRADER}}}
    ctx = RunContext(model, tok, hp, seed, precision, tok.pad_token_id, steps_n + 1, job=job, log=lambda m: None)
    method.prepare(ctx, data, [])
    assert method.group_size == group_size, method.group_size
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(params, lr)
    scheduler = steps.make_scheduler(optimizer, steps_n + 1)
    sampling, grading = Clock(), Clock()
    sampled: list = []  # the answers of the current step
    sample = sampling.wrap(method.sample)

    def sample_and_keep(*args, **kwargs):
        sampled[:] = sample(*args, **kwargs)
        return sampled

    method.sample = sample_and_keep  # step() calls self.sample and self.grade: timed here
    method.grade = grading.wrap(method.grade)
    saved, rft.MAX_COMPLETION_TOKENS = rft.MAX_COMPLETION_TOKENS, max_tokens
    rows = []
    try:
        for step in range(steps_n + 1):  # step 0 warms up
            batch = data[step * prompts : (step + 1) * prompts]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            ctx.step = step
            loss, metrics = method.step(ctx, batch)  # what JobRun.train_epochs runs
            steps.optimizer_step(loss, params, optimizer, scheduler)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            row = split_row(wall, cpu, sampling.take(), grading.take(), len(sampled),
                            sum(len(s.completion_ids) for s in sampled), metrics["train_reward_mean"])
            if step:
                rows.append(row)
    finally:
        rft.MAX_COMPLETION_TOKENS = saved
        method.close()
    result = summarise(rows)
    result["prompt_tokens"] = [len(p.prompt_ids) for p in data[: (steps_n + 1) * prompts]]
    return result


def run_trl(lines, *, prompts: int, group_size: int, max_tokens: int, steps_n: int, lr: float, seed: int,
            precision: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ftkit import graders
    from ftkit.local.jobs.training.recipe import RECIPE

    base, tok = fresh_model(seed)
    grader = graders.compile_grader(GRADER)
    sampling, grading = Clock(), Clock()
    answers = {"n": 0, "tokens": 0, "rewards": []}

    def ticket_fields(prompts, completions, completion_ids, **columns):
        """TRL's reward function: the same grader, on the same items (the line's fields)."""
        wall0, cpu0 = time.perf_counter(), time.process_time()
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        items = [{f: columns[f][i] for f in FIELDS} for i in range(len(texts))]
        rewards = [r.reward for r in graders.grade_many(grader, texts, items)]
        grading.wall += time.perf_counter() - wall0
        grading.cpu += time.process_time() - cpu0
        answers["n"] += len(completion_ids)
        answers["tokens"] += sum(len(ids) for ids in completion_ids)
        answers["rewards"] += rewards
        return rewards

    rows: list[dict] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            wall, cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
            rewards = answers["rewards"]
            rows.append(split_row(wall, cpu, sampling.take(), grading.take(), answers["n"], answers["tokens"],
                                  sum(rewards) / max(1, len(rewards))))
            answers.update(n=0, tokens=0, rewards=[])

    rows_in = [{"prompt": line["messages"], **{f: line[f] for f in FIELDS}} for line in lines]
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=prompts * group_size, gradient_accumulation_steps=1,
            num_generations=group_size, max_completion_length=max_tokens, temperature=1.0, top_p=1.0, top_k=0,
            beta=0.0, loss_type="grpo", scale_rewards="group", num_iterations=1, use_vllm=False,
            shuffle_dataset=False, max_steps=steps_n + 1, learning_rate=lr, lr_scheduler_type="linear",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=seed, report_to=[], logging_steps=1,
            save_strategy="no", use_cpu=True, bf16=precision == "bf16", fp16=False, dataloader_num_workers=0,
            disable_tqdm=True, log_completions=False)
        torch.manual_seed(seed)
        trainer = GRPOTrainer(model=base, reward_funcs=ticket_fields, args=args,
                              train_dataset=Dataset.from_list(rows_in), processing_class=tok,
                              peft_config=RECIPE.config(), callbacks=[StepClock()])
        trainer._generate_single_turn = sampling.wrap(trainer._generate_single_turn)
        trainer.train()
    result = summarise(rows[1:])  # the first step warms up
    result["prompt_tokens"] = [len(tok.apply_chat_template(line["messages"], add_generation_prompt=True,
                                                           tokenize=True, return_dict=True)["input_ids"])
                               for line in lines]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step (the job's batch_size)")
    parser.add_argument("--group-size", type=int, default=4, help="answers sampled per prompt")
    parser.add_argument("--max-tokens", type=int, default=32, help="most tokens per answer")
    parser.add_argument("--steps", type=int, default=2, help="measured steps, after one warm-up step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--only", choices=("ftkit", "trl"), help="run one side only")
    parser.add_argument("--out", default="benchmarks/results/rft.json")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from ftkit import lifecycle
    from ftkit.local.inference.weights import precision as choose_precision
    from ftkit.local.jobs.hyperparameters import BASE_LEARNING_RATE

    lines = rft_lines(args.prompts * (args.steps + 1))
    lr = BASE_LEARNING_RATE[lifecycle.REINFORCEMENT]
    precision = choose_precision("FTKIT_TRAIN_PRECISION")
    info = cpu_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores, {torch.get_num_threads()} torch threads; "
          f"AVX512-BF16: {'yes' if info['avx512_bf16'] else 'no'}; precision {precision}")
    print(f"1 warm-up + {args.steps} measured steps x {args.prompts} prompts x {args.group_size} answers, "
          f"at most {args.max_tokens} tokens each, learning rate {lr:g}")
    common = {"prompts": args.prompts, "group_size": args.group_size, "max_tokens": args.max_tokens,
              "steps_n": args.steps, "lr": lr, "seed": args.seed, "precision": precision}
    runs: dict = {}
    errors: dict = {}
    if args.only != "ftkit":
        try:
            runs["TRL GRPOTrainer"] = run_trl(lines, **common)
        except Exception as e:  # say why TRL could not run, and still measure ftkit
            errors["TRL GRPOTrainer"] = f"{type(e).__name__}: {e}"
            print(f"TRL's GRPOTrainer did not run: {errors['TRL GRPOTrainer']}")
    if args.only != "trl":
        runs["ftkit RFT step"] = run_ftkit(lines, **common)

    print(f"\n{'per step (mean)':16} {'step s':>7} {'CPU s':>6} {'sampling':>9} {'grading':>8} {'update':>7} "
          f"{'answer tok':>10} {'sampled tok/s':>13} {'reward':>7}")
    for name, r in runs.items():
        print(f"{name:16} {r['step_wall_s']:7.2f} {r['step_cpu_s']:6.2f} {r['sampling_wall_s']:9.2f} "
              f"{r['grading_wall_s']:8.3f} {r['update_wall_s']:7.2f} {r['answer_tokens'] / r['measured_steps']:10.0f} "
              f"{r['sampled_tokens_per_s']:13.1f} {r['reward_mean']:7.3f}")
    result = {**info, "torch_threads": torch.get_num_threads(), "precision": precision,
              "date": time.strftime("%Y-%m-%d"), "prompts_per_step": args.prompts, "group_size": args.group_size,
              "max_tokens": args.max_tokens, "measured_steps": args.steps, "learning_rate": lr,
              "grader": GRADER, "errors": errors,
              "runs": {k: {key: (round(v, 4) if isinstance(v, float) else v) for key, v in r.items()}
                       for k, r in runs.items()}}
    if len(runs) == 2:
        ours, theirs = runs["ftkit RFT step"], runs["TRL GRPOTrainer"]
        ratio = {key: round(ours[key] / theirs[key], 3) for key in
                 ("step_wall_s", "step_cpu_s", "sampling_wall_s", "grading_wall_s", "update_wall_s")}
        ratio["sampled_tokens_per_s"] = round(ours["sampled_tokens_per_s"] / theirs["sampled_tokens_per_s"], 3)
        result["ratio_ftkit_over_trl"] = ratio
        result["speedup"] = round(theirs["step_wall_s"] / ours["step_wall_s"], 2)  # TRL's step time / ftkit's
        result["speedup_cpu"] = round(theirs["step_cpu_s"] / ours["step_cpu_s"], 2)
        result["same_prompt_tokens"] = ours["prompt_tokens"] == theirs["prompt_tokens"]
        print(f"\nftkit / TRL: step time {ratio['step_wall_s']}x wall, {ratio['step_cpu_s']}x CPU; "
              f"sampling {ratio['sampling_wall_s']}x, grading {ratio['grading_wall_s']}x, "
              f"update {ratio['update_wall_s']}x; sampled tokens/s {ratio['sampled_tokens_per_s']}x "
              f"(below 1x time = ftkit faster); same prompt tokens: {result['same_prompt_tokens']}")
    return save(result, args.out)


if __name__ == "__main__":
    main()

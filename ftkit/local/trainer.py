"""LoRA supervised fine-tuning of a local chat model: one job, in its own process.

``python -m ftkit.local.trainer --home DIR --job ftjob-…`` is started by the server's worker. It
reads the job and its files from the store, trains, and writes back what the hosted API shows:
events (with the hosted wording), per-step metrics, a checkpoint per epoch, the results file,
the fine-tuned model. It never touches HTTP.

Hyperparameters (``auto`` rules, documented in the README):

* ``n_epochs``: the hosted API's heuristic (:func:`ftkit.cost.default_epochs`) -- 3 epochs,
  raised so that small files get about 100 example-passes and lowered so large ones get at most
  25,000, within 1..25 epochs;
* ``batch_size``: ceil(examples / 10), within 1..8 (about ten steps per epoch for small files);
* ``learning_rate_multiplier``: 1.0, times the LoRA base rate of 4e-4.

Loss is computed only on assistant tokens, honouring ``weight``; examples longer than the
training sequence length are truncated, as on the hosted platform. The same seed gives the same
run. Every epoch end saves a resumable state, so a job interrupted by a crash, a kill or a pause
continues from its last state.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .models import DEFAULT_BASE_MODEL, MAX_EXAMPLE_TOKENS
from .render import IGNORE_INDEX, encode_for_training
from .store import Store, new_id

BASE_LEARNING_RATE = 4e-4
LORA_RANK = 16
LORA_ALPHA = 32
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEEP_CHECKPOINTS = 3
MAX_BATCH_SIZE = 8


def auto_n_epochs(n_examples: int) -> int:
    """The hosted API's epochs heuristic, shared with the cost lesson (ftkit.cost.default_epochs)."""
    from ..cost import default_epochs

    return default_epochs(max(1, n_examples))


def training_precision() -> str:
    """"bf16" (mixed precision: bf16 matmuls, fp32 weights) where the hardware does bf16 natively,
    else "fp32". ``FTKIT_TRAIN_PRECISION=fp32|bf16`` overrides. On this course's reference CPU
    (AVX512-BF16) bf16 trains about 1.4x faster than the same loop in fp32."""
    from .models import precision

    return precision("FTKIT_TRAIN_PRECISION")


def resolve_hyperparameters(requested: dict | None, n_examples: int) -> dict:
    """Replace ``"auto"`` (or missing) hyperparameters with the values this run will use."""
    requested = requested or {}

    def given(name):
        value = requested.get(name, "auto")
        return None if value in (None, "auto") else value

    n_epochs = given("n_epochs") or auto_n_epochs(n_examples)
    batch_size = given("batch_size") or max(1, min(MAX_BATCH_SIZE, math.ceil(n_examples / 10)))
    lr_mult = given("learning_rate_multiplier") or 1.0
    return {"n_epochs": int(n_epochs), "batch_size": int(batch_size), "learning_rate_multiplier": float(lr_mult)}


def validate_hyperparameters(hp: dict | None) -> str | None:
    """An error message for an invalid hyperparameter (named), or None."""
    limits = {"n_epochs": (1, 50, int), "batch_size": (1, 256, int), "learning_rate_multiplier": (1e-4, 100.0, float)}
    for name, value in (hp or {}).items():
        if name not in limits:
            return f"unknown hyperparameter {name!r}"
        if value == "auto" or value is None:
            continue
        low, high, kind = limits[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            return f"hyperparameters.{name} must be 'auto' or a{'n integer' if kind is int else ' number'}, got {value!r}"
        if not low <= value <= high:
            return f"hyperparameters.{name} must be between {low} and {high}, got {value!r}"
    return None


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:local:<suffix>:<id>`` (the hosted shape, with "local" as the organisation)."""
    return f"ft:{base}:local:{suffix or ''}:{job_id[-8:].lower()}"


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]
    billed: int  # tokens billed per epoch (after truncation)


@dataclass
class TrainState:
    """Everything needed to continue a run where it stopped."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    results: list[dict] = field(default_factory=list)


def load_examples(path: Path, tokenizer, max_tokens: int = MAX_EXAMPLE_TOKENS) -> list[Encoded]:
    from ..data import read_jsonl

    out = []
    for ex in read_jsonl(path):
        ids, labels, total = encode_for_training(tokenizer, ex, max_tokens)
        if any(label != IGNORE_INDEX for label in labels):
            out.append(Encoded(ids, labels, min(total, max_tokens)))
    return out


@dataclass
class _Run:
    """What one training run works with, passed around as one thing."""

    model: object
    tokenizer: object
    train: list[Encoded]
    valid: list[Encoded]
    valid_sample: list[Encoded]
    state: TrainState
    hp: dict
    params: list
    optimizer: object
    scheduler: object
    pad: int
    seed: int
    total_steps: int
    eval_every: int
    ft_model: str
    step_times: list[float] = field(default_factory=list)


class JobStopped(Exception):
    """The job was cancelled or paused, or the server went away."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Trainer:
    def __init__(self, store: Store, job: dict, *, log=print, stop_requested=None) -> None:
        self.store = store
        self.stop_requested = stop_requested  # a threading.Event set on SIGTERM
        self.job = job
        self.job_id = job["id"]
        self.log = log
        self.parent = os.getppid()
        self.resume_path = store.job_dir(self.job_id) / "resume" / "state.pt"

    # -- plumbing -------------------------------------------------------------------------------

    def event(self, message: str, **kw) -> None:
        self.store.add_event(self.job_id, message, **kw)

    def check_continue(self) -> None:
        """Between steps: train on only while the job is ``running`` and the server is there."""
        if os.getppid() != self.parent or (self.stop_requested is not None and self.stop_requested.is_set()):
            raise JobStopped("server gone")
        status = self.store.get_job(self.job_id)["status"]
        if status != "running":
            raise JobStopped(status)  # paused or cancelled (anything else: stop and let the worker decide)

    # -- data -----------------------------------------------------------------------------------

    def batches(self, examples: list[Encoded], epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """Length-grouped batches: shuffled, then sorted by length within windows of 8 batches.

        Padding is paid only up to the longest example of a batch, and similar lengths travel
        together -- the main reason this loop beats a padded per-example loop.
        """
        rng = random.Random(seed * 1000 + epoch)
        order = list(range(len(examples)))
        rng.shuffle(order)
        window = batch_size * 8
        batches = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w : w + window], key=lambda i: len(examples[i].ids))
            batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        return batches

    @staticmethod
    def collate(examples: list[Encoded], pad_id: int):
        import torch

        width = max(len(e.ids) for e in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e.ids)
            ids[row, :n] = torch.tensor(e.ids)
            labels[row, :n] = torch.tensor(e.labels)
            mask[row, :n] = 1
        return ids, labels, mask

    precision = "fp32"

    def loss_and_accuracy(self, model, ids, labels, mask):
        """Mean cross-entropy over learned tokens, and the share of them predicted exactly."""
        import torch
        import torch.nn.functional as F

        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :].float()
        target = labels[:, 1:]
        learned = target != IGNORE_INDEX
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)
        correct = (logits.argmax(-1) == target) & learned
        accuracy = correct.sum().item() / max(1, learned.sum().item())
        return loss, accuracy, int(learned.sum().item())

    def evaluate(self, model, examples: list[Encoded], pad_id: int, batch_size: int = 8) -> tuple[float, float]:
        """Token-weighted loss and accuracy over ``examples`` (no gradients)."""
        import torch

        total_loss = total_correct = total_tokens = 0.0
        model.eval()
        with torch.no_grad():
            for b in range(0, len(examples), batch_size):
                ids, labels, mask = self.collate(examples[b : b + batch_size], pad_id)
                loss, acc, n = self.loss_and_accuracy(model, ids, labels, mask)
                total_loss += loss.item() * n
                total_correct += acc * n
                total_tokens += n
        model.train()
        return total_loss / max(1, total_tokens), total_correct / max(1, total_tokens)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        from .models import load_base_model

        started = time.time()
        self.precision = training_precision()
        job = self.job
        seed = int(job["seed"])
        random.seed(seed)
        torch.manual_seed(seed)
        base = self.store.get_model(job["model"])
        model, tokenizer = load_base_model(base["source"] if base else DEFAULT_BASE_MODEL, progress=self.log)
        train = load_examples(self.store.file_path(job["training_file"]), tokenizer)
        valid = load_examples(self.store.file_path(job["validation_file"]), tokenizer) if job["validation_file"] else []
        if not train:
            raise ValueError("the training file has no assistant tokens to learn from")
        requested = (job["method"].get("supervised") or {}).get("hyperparameters") or {}
        hp = resolve_hyperparameters(requested, len(train))
        method = {"type": "supervised", "supervised": {"hyperparameters": hp}}
        self.store.update_job(self.job_id, method=method)
        steps_per_epoch = math.ceil(len(train) / hp["batch_size"])
        total_steps = steps_per_epoch * hp["n_epochs"]

        state = TrainState()
        resume = self.resume_path.exists()
        if resume:
            saved = torch.load(self.resume_path, weights_only=False)
            model = PeftModel.from_pretrained(model, str(self.resume_path.parent / "adapter"), is_trainable=True)
            state = saved["state"]
        else:
            config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                task_type="CAUSAL_LM")
            model = get_peft_model(model, config)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=BASE_LEARNING_RATE * hp["learning_rate_multiplier"], weight_decay=0.0)
        warmup = max(1, min(10, total_steps // 20))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
        )
        if resume:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            self.event(f"Resuming from step {state.step}/{total_steps}")
        else:
            self.event("Fine-tuning job started", data={"precision": self.precision, "examples": len(train),
                                                         "steps": total_steps})
        pad = tokenizer.pad_token_id
        valid_sample = valid[: 2 * hp["batch_size"]]
        eval_every = max(1, total_steps // 10)
        ft_model = fine_tuned_model_id(job["model"], job["suffix"], self.job_id)

        run = _Run(model, tokenizer, train, valid, valid_sample, state, hp, params, optimizer, scheduler, pad, seed,
                   total_steps, eval_every, ft_model)
        while True:
            try:
                self.train_epochs(run)
                break
            except JobStopped as stop:
                if self.store.get_job(self.job_id)["status"] == "cancelled":
                    return
                self.save_resume(model, optimizer, scheduler, state)
                if stop.reason != "paused":
                    return  # the server is stopping: it resumes this job from the saved state
                # Acknowledge the pause -- unless it was withdrawn (resumed) meanwhile, which this
                # atomic update detects: then keep training in this process.
                if self.store.acknowledge_pause(self.job_id):
                    self.event(f"Job paused at step {state.step}/{total_steps}; resume it to continue")
                    return

        self.finish(model, tokenizer, train, valid, state, hp, ft_model, pad, started)

    def train_epochs(self, run: _Run) -> None:
        """Train from ``run.state`` to the last epoch; raises :class:`JobStopped` between steps."""
        import torch

        model, tokenizer, train, valid, valid_sample = run.model, run.tokenizer, run.train, run.valid, run.valid_sample
        state, hp, params, optimizer, scheduler = run.state, run.hp, run.params, run.optimizer, run.scheduler
        pad, seed, total_steps, eval_every, ft_model = run.pad, run.seed, run.total_steps, run.eval_every, run.ft_model
        step_times = run.step_times

        for epoch in range(state.epoch, hp["n_epochs"]):
            batches = self.batches(train, epoch, hp["batch_size"], seed)
            for b in range(state.batch_in_epoch, len(batches)):
                self.check_continue()
                t0 = time.time()
                ids, labels, mask = self.collate([train[i] for i in batches[b]], pad)
                loss, acc, _ = self.loss_and_accuracy(model, ids, labels, mask)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.batch_in_epoch = b + 1
                row = {"step": state.step, "train_loss": round(loss.item(), 4), "train_accuracy": round(acc, 4),
                       "valid_loss": None, "valid_mean_token_accuracy": None}
                message = f"Step {state.step}/{total_steps}: training loss={loss.item():.2f}"
                if valid_sample and (state.step % eval_every == 0 or state.step == total_steps):
                    v_loss, v_acc = self.evaluate(model, valid_sample, pad)
                    row["valid_loss"], row["valid_mean_token_accuracy"] = round(v_loss, 4), round(v_acc, 4)
                    message += f", validation loss={v_loss:.2f}"
                state.results.append(row)
                data = {"step": state.step, "train_loss": row["train_loss"],
                        "train_mean_token_accuracy": row["train_accuracy"], "total_steps": total_steps}
                if row["valid_loss"] is not None:
                    data["valid_loss"] = row["valid_loss"]
                    data["valid_mean_token_accuracy"] = row["valid_mean_token_accuracy"]
                self.event(message, type="metrics", data=data)
                step_times.append(time.time() - t0)
                recent = step_times[-10:]
                remaining = (total_steps - state.step) * sum(recent) / len(recent)
                self.store.update_job(self.job_id, estimated_finish=int(time.time() + remaining))
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            self.checkpoint(model, tokenizer, state, valid, pad, ft_model, hp)
            self.save_resume(model, optimizer, scheduler, state)

    def checkpoint(self, model, tokenizer, state: TrainState, valid, pad, ft_model: str, hp: dict) -> None:
        path = self.store.model_dir(self.job_id) / f"step-{state.step}"
        model.save_pretrained(path)
        last = state.results[-1]
        metrics = {"step": state.step, "train_loss": last["train_loss"], "train_mean_token_accuracy": last["train_accuracy"]}
        if valid:
            full_loss, full_acc = self.evaluate(model, valid, pad)
            metrics.update(valid_loss=last["valid_loss"] if last["valid_loss"] is not None else round(full_loss, 4),
                           valid_mean_token_accuracy=last["valid_mean_token_accuracy"]
                           if last["valid_mean_token_accuracy"] is not None else round(full_acc, 4),
                           full_valid_loss=round(full_loss, 4), full_valid_mean_token_accuracy=round(full_acc, 4))
        model_id = f"{ft_model}:ckpt-step-{state.step}"
        self.store.add_checkpoint(self.job_id, step=state.step, model_id=model_id, metrics=metrics, path=str(path))
        self.store.add_model(model_id, kind="checkpoint", owned_by="local", base=self.job["model"],
                             adapter_path=str(path), job_id=self.job_id)
        self.event(f"Checkpoint created at step {state.step}")
        for old in self.store.list_checkpoints(self.job_id)[KEEP_CHECKPOINTS:]:
            self.store.delete_checkpoint(old["id"])
            self.store.delete_model(old["model_id"])
            _remove_tree(Path(old["path"]))

    def save_resume(self, model, optimizer, scheduler, state: TrainState) -> None:
        import torch

        directory = self.resume_path.parent
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory / "adapter")
        tmp = self.resume_path.with_suffix(".tmp")
        torch.save({"state": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, self.resume_path)

    def finish(self, model, tokenizer, train, valid, state, hp, ft_model, pad, started) -> None:
        final = self.store.model_dir(self.job_id) / "final"
        model.save_pretrained(final)
        if valid:
            full_loss, full_acc = self.evaluate(model, valid, pad)
            self.event(f"Full validation: loss={full_loss:.2f}, mean token accuracy={full_acc:.2f}", type="metrics",
                       data={"step": state.step, "full_valid_loss": round(full_loss, 4),
                             "full_valid_mean_token_accuracy": round(full_acc, 4)})
        results_id = self.write_results(state.results)
        trained_tokens = sum(e.billed for e in train) * hp["n_epochs"]
        self.store.add_model(ft_model, kind="fine-tuned", owned_by="local", base=self.job["model"],
                             adapter_path=str(final), job_id=self.job_id)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = self.store.update_job(
            self.job_id, only_if_status=["running"], status="succeeded", fine_tuned_model=ft_model,
            finished_at=int(time.time()), trained_tokens=trained_tokens, result_files=[results_id],
            estimated_finish=None,
        )
        if not done:  # cancelled at the last moment: the cancel wins
            self.store.delete_model(ft_model)
            return
        self.event(f"New fine-tuned model created: {ft_model}")
        self.event("The job has successfully completed", data={
            "wall_seconds": round(time.time() - started, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "trained_tokens": trained_tokens,
        })
        _remove_tree(self.resume_path.parent)

    def write_results(self, results: list[dict]) -> str:
        """The hosted results file: step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy."""
        import hashlib

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        columns = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
        writer.writerow(columns)
        for r in results:
            writer.writerow(["" if r[c] is None else r[c] for c in columns])
        content = buf.getvalue().encode()
        file_id = new_id("file")
        self.store.file_path(file_id).write_bytes(content)
        self.store.add_file(file_id, filename="step_metrics.csv", purpose="fine-tune-results", size=len(content),
                            sha256=hashlib.sha256(content).hexdigest())
        return file_id


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the server that started it dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit.local.trainer")
    parser.add_argument("--home", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent()
    import signal

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    store = Store(args.home)
    job = store.get_job(args.job)
    if job is None:
        print(f"no job {args.job}", file=sys.stderr)
        return 2

    # SIGTERM (the server stopping, or dying: see _die_with_parent) only raises a flag; the loop
    # checks it between steps, so a resumable state is never written half-way.
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set())
    (store.job_dir(args.job)).mkdir(parents=True, exist_ok=True)
    (store.job_dir(args.job) / "trainer.pid").write_text(str(os.getpid()))
    trainer = Trainer(store, job, log=lambda m: print(m, flush=True), stop_requested=stop_requested)
    try:
        trainer.run()
    except JobStopped:
        return 0
    except Exception as e:  # the job fails with the reason; the server sees the status
        import traceback

        traceback.print_exc()
        message = f"Training failed: {type(e).__name__}: {e}"
        store.update_job(args.job, only_if_status=["running"], status="failed", finished_at=int(time.time()),
                         estimated_finish=None, error={"code": "training_failed", "message": message, "param": None})
        store.add_event(args.job, message, level="error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

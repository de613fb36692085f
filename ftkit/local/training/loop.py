"""The training loop every method shares: one job, from its files to a fine-tuned model.

:class:`JobRun` reads the job and its files from the store, builds the starting model with a
fresh LoRA adapter, and trains epoch by epoch. What differs between methods -- how examples are
read, the loss of a batch, the metrics -- comes from the method object (:mod:`.sft`, :mod:`.dpo`).
What is the same lives here, once:

* per-step ``metrics`` events in the hosted wording and the results file's rows;
* a small validation sample every tenth of the run (or every ``eval_interval`` steps);
* a checkpoint per epoch (full-validation metrics, servable as ``…:ckpt-step-N``; the last three
  kept), and a resumable state saved at every epoch end and at least once a minute;
* between steps, the job must still be ``running`` and the server still there: a pause saves the
  state and acknowledges, a cancel stops, a server that stops or dies gets the state saved and
  the job resumed later from it -- metrics events of steps that were lost are withdrawn, so no
  step is reported twice;
* at the end: the final adapter, full validation, the results file, the model, ``succeeded``;
* for a job with a ``wandb`` integration, the same config, steps and final metrics go to a W&B run
  (:mod:`.tracking`; offline under the job's folder when no ``WANDB_API_KEY`` is set).

Job transitions go through :mod:`ftkit.local.jobstate`; the trainer never touches HTTP.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ... import lifecycle as lc
from ... import methods
from .. import hyperparameters, jobstate
from ..store import Store, new_id
from . import starting, steps, tracking
from .contract import TrainingMethod

KEEP_CHECKPOINTS = 3
#: Save a resumable state at least this often (seconds of training), besides every epoch end.
RESUME_EVERY_SECONDS = 60.0
#: ``FTKIT_MIN_STEP_SECONDS``: every step lasts at least this long (default 0: as fast as it
#: trains). A knob for demonstrations and for the crash-recovery tests, which train a tiny model
#: whose steps take milliseconds and need it still running when they kill it.
MIN_STEP_ENV = "FTKIT_MIN_STEP_SECONDS"


def min_step_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(MIN_STEP_ENV, "0") or 0))
    except ValueError:
        return 0.0


class JobStopped(Exception):
    """The job was cancelled or paused, or the server went away."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:local:<suffix>:<id>`` (the hosted shape, with "local" as the organisation)."""
    return f"ft:{base}:local:{suffix or ''}:{job_id[-8:].lower()}"


@dataclass
class TrainState:
    """Where a run is: enough to continue it after a pause or a crash."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    results: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "results": self.results}


@dataclass
class RunContext:
    """What a method's step and evaluation work with."""

    model: object
    tokenizer: object
    hp: dict
    seed: int
    precision: str
    pad_id: int
    total_steps: int = 0
    step: int = 0  # steps done so far (methods that sample seed from it)
    store: Store | None = None
    job: dict | None = None
    log: Callable[[str], None] = print

    @property
    def device(self):
        return next(self.model.parameters()).device


def method_for(job: dict):
    """The method object for a job's ``method.type``: the trainer class its registry entry names
    (:mod:`ftkit.methods`), imported here, in the trainer process."""
    import importlib

    spec = methods.get((job.get("method") or {}).get("type", lc.SUPERVISED))
    module, _, name = spec.trainer.partition(":")
    method = getattr(importlib.import_module(module), name)()
    if not isinstance(method, TrainingMethod):  # the contract: every hook, none probed for
        raise TypeError(f"{spec.trainer} (method {spec.name!r}) must subclass ftkit.local.training.contract."
                        "TrainingMethod")
    return method


class JobRun:
    """Train one job to the end, or until it is paused, cancelled or the server goes away."""

    def __init__(self, store: Store, job: dict, *, log=print, stop_requested=None, load_base=None,
                 parent_pid: int | None = None) -> None:
        self.store = store
        self.job = job
        self.job_id = job["id"]
        self.log = log
        self.stop_requested = stop_requested  # a threading.Event set on SIGTERM
        self.load_base = load_base  # for tests: a function returning (model, tokenizer)
        self.parent = parent_pid if parent_pid is not None else os.getppid()
        self.resume_dir = store.job_dir(self.job_id) / "resume"
        self.method = method_for(job)
        self._last_resume_save = time.monotonic()
        self.tracking: tracking.WandbRun | tracking.NoTracking = tracking.NoTracking()

    # -- plumbing -------------------------------------------------------------------------------

    def event(self, message: str, **kw) -> None:
        self.store.add_event(self.job_id, message, **kw)

    def check_continue(self) -> None:
        """Between steps: train on only while the job is ``running`` and the server is there."""
        if os.getppid() != self.parent or (self.stop_requested is not None and self.stop_requested.is_set()):
            raise JobStopped("server gone")
        status = self.store.get_job(self.job_id)["status"]
        if status != lc.RUNNING:
            raise JobStopped(status)  # paused or cancelled (anything else: stop, the worker decides)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        import torch

        from ..models import precision as choose_precision

        started = time.time()
        job, method = self.job, self.method
        seed = int(job["seed"])
        torch.manual_seed(seed)
        start = starting.load_starting_model(self.store, job["model"], load_base=self.load_base, progress=self.log)
        tokenizer = start.tokenizer
        train = method.load(self.store.file_path(job["training_file"]), tokenizer)
        valid = method.load(self.store.file_path(job["validation_file"]), tokenizer) if job["validation_file"] else []
        if not train:
            raise ValueError("the training file has no tokens to learn from")
        requested = (job["method"].get(method.name) or {}).get("hyperparameters") or {}
        hp = hyperparameters.resolve(method.name, requested, len(train))
        resolved_method = {**job["method"], "type": method.name,
                           method.name: {**(job["method"].get(method.name) or {}), "hyperparameters": hp}}
        self.store.update_job(self.job_id, method=resolved_method)
        steps_per_epoch = math.ceil(len(train) / hp["batch_size"])
        total_steps = steps_per_epoch * hp["n_epochs"]

        state = TrainState()
        saved = self._load_resume()
        model = starting.add_adapter(start.model, resume_from=self.resume_dir / saved["adapter"] if saved else None)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = steps.make_optimizer(params, hyperparameters.learning_rate(method.name, hp))
        scheduler = steps.make_scheduler(optimizer, total_steps)
        ctx = RunContext(model, tokenizer, hp, seed, choose_precision("FTKIT_TRAIN_PRECISION"),
                         tokenizer.pad_token_id, total_steps=total_steps, store=self.store, job=job, log=self.log)
        method.prepare(ctx, train, valid)
        if saved:
            state = TrainState(**saved["state"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            withdrawn = self.store.delete_metrics_events_after(self.job_id, state.step)
            note = f" ({withdrawn} metrics events of lost steps withdrawn)" if withdrawn else ""
            self.event(lc.JOB_RESUMED_FROM.format(step=state.step, total_steps=total_steps) + note)
        elif self.store.delete_metrics_events_after(self.job_id, 0):
            # a crash before any saved state: every step is done again, none reported twice
            self.event(lc.RESTARTED, level="warn")
        else:
            self.event(lc.JOB_STARTED, data={"method": method.name, "precision": ctx.precision,
                                             "device": str(ctx.device), "examples": len(train),
                                             "steps": total_steps})
        ft_model = fine_tuned_model_id(start.base_id, job["suffix"], self.job_id)
        run = _Run(ctx, train, valid, state, params, optimizer, scheduler, ft_model, start)
        config = tracking.run_config(job, hp, examples=len(train), total_steps=total_steps,
                                     precision=ctx.precision, device=str(ctx.device))
        self.tracking = tracking.start(job, self.store.job_dir(self.job_id), config, event=self.event)

        try:
            while True:
                try:
                    self.train_epochs(run)
                    break
                except JobStopped as stop:
                    if self.store.get_job(self.job_id)["status"] == lc.CANCELLED:
                        shutil.rmtree(self.resume_dir, ignore_errors=True)
                        return
                    self.save_resume(run)
                    if stop.reason != lc.PAUSED:
                        return  # the server is stopping: it resumes this job from the saved state
                    # Acknowledge the pause -- unless it was withdrawn (resumed) meanwhile, which this
                    # atomic update detects: then keep training in this process.
                    if jobstate.acknowledge_pause(self.store, self.job_id, step=state.step, total_steps=total_steps):
                        return
            self.finish(run, started)
        except BaseException:
            self.tracking.finish(lc.FAILED)  # the trainer marks the job failed (or resumes it later)
            raise
        finally:
            self.tracking.finish(self.store.get_job(self.job_id)["status"])  # no-op once finished
            method.close()

    def train_epochs(self, run: _Run) -> None:
        """Train from ``run.state`` to the last epoch; raises :class:`JobStopped` between steps."""
        ctx, state, method = run.ctx, run.state, self.method
        hp, total = ctx.hp, ctx.total_steps
        eval_every = method.eval_every(total, hp)
        valid_sample = method.valid_sample(run.valid, hp)
        lengths = [method.length(e) for e in run.train]
        pace = min_step_seconds()
        if state.batch_in_epoch == 0 and state.epoch > 0:
            self.checkpoint(run)  # resumed right after an epoch end: its checkpoint may be missing
        for epoch in range(state.epoch, hp["n_epochs"]):
            batches = steps.length_grouped_batches(lengths, batch_size=hp["batch_size"], epoch=epoch, seed=ctx.seed)
            for b in range(state.batch_in_epoch, len(batches)):
                self.check_continue()
                t0 = time.time()
                ctx.step = state.step
                loss, metrics = method.step(ctx, [run.train[i] for i in batches[b]])
                self.check_continue()  # paused or cancelled meanwhile: this step is dropped, not applied
                if loss is not None:
                    steps.optimizer_step(loss, run.params, run.optimizer, run.scheduler)
                else:
                    run.scheduler.step()
                if pace and time.time() - t0 < pace:
                    time.sleep(pace - (time.time() - t0))
                state.step += 1
                state.batch_in_epoch = b + 1
                data = {lc.STEP: state.step, **metrics, lc.TOTAL_STEPS: total}
                if valid_sample and (state.step % eval_every == 0 or state.step == total):
                    data.update(method.evaluate(ctx, valid_sample, "valid"))
                row = method.results_row(data)
                state.results.append(row)
                self.tracking.log_step(row)
                message = method.message(data, total)
                self.event(message, type=lc.EVENT_TYPE_METRICS, data=data)
                run.step_times.append(time.time() - t0)
                recent = run.step_times[-10:]
                remaining = (total - state.step) * sum(recent) / len(recent)
                self.store.update_job(self.job_id, estimated_finish=int(time.time() + remaining))
                if time.monotonic() - self._last_resume_save > RESUME_EVERY_SECONDS and state.step < total:
                    self.save_resume(run)
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            self.save_resume(run)  # first: a crash after it re-creates the checkpoint, never twice
            self.checkpoint(run)

    def checkpoint(self, run: _Run) -> None:
        """A servable checkpoint of the current adapter, with full-validation metrics (once per step)."""
        state = run.state
        if any(c["step"] == state.step for c in self.store.list_checkpoints(self.job_id)):
            return
        path = self.store.model_dir(self.job_id) / f"step-{state.step}"
        starting.save_servable(run.ctx.model, path, start_adapter=run.start.start_adapter)
        last = state.results[-1] if state.results else {}
        full = self.method.evaluate(run.ctx, run.valid, "full_valid") if run.valid else {}
        metrics = {lc.STEP: state.step, **self.method.checkpoint_metrics(last, full)}
        model_id = f"{run.ft_model}:ckpt-step-{state.step}"
        self.store.add_checkpoint(self.job_id, step=state.step, model_id=model_id, metrics=metrics, path=str(path))
        self.store.add_model(model_id, kind="checkpoint", owned_by="local", base=run.start.base_id,
                             adapter_path=str(path), job_id=self.job_id)
        self.event(lc.CHECKPOINT_CREATED.format(step=state.step))
        for old in self.store.list_checkpoints(self.job_id)[KEEP_CHECKPOINTS:]:
            self.store.delete_checkpoint(old["id"])
            self.store.delete_model(old["model_id"])
            shutil.rmtree(old["path"], ignore_errors=True)

    # -- resumable state ------------------------------------------------------------------------

    def save_resume(self, run: _Run) -> None:
        """Save what a new trainer needs to continue: the adapter (a new folder each time), then the
        optimizer, schedule, random state and progress in ``state.pt`` naming that folder, replaced
        atomically. A kill at any moment leaves the previous state whole; older folders go last."""
        import torch

        self.resume_dir.mkdir(parents=True, exist_ok=True)
        adapter = f"adapter-step-{run.state.step}-{time.time_ns()}"
        run.ctx.model.save_pretrained(self.resume_dir / adapter)
        path = self.resume_dir / "state.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"state": run.state.as_dict(), "adapter": adapter, "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, path)
        for old in self.resume_dir.glob("adapter-*"):
            if old.name != adapter:
                shutil.rmtree(old, ignore_errors=True)
        self._last_resume_save = time.monotonic()

    def _load_resume(self) -> dict | None:
        import torch

        path = self.resume_dir / "state.pt"
        if not path.exists():
            return None
        try:
            saved = torch.load(path, weights_only=True)
            if not (self.resume_dir / saved["adapter"] / starting.ADAPTER_CONFIG).exists():
                raise FileNotFoundError(saved["adapter"])
            return saved
        except Exception as e:  # an unreadable state (older format, damage): start over, say so
            self.event(f"The saved training state could not be read ({type(e).__name__}); starting from the "
                       "beginning", level="warn")
            shutil.rmtree(self.resume_dir, ignore_errors=True)
            self.store.delete_metrics_events_after(self.job_id, 0)
            return None

    # -- the end --------------------------------------------------------------------------------

    def finish(self, run: _Run, started: float) -> None:
        ctx, state = run.ctx, run.state
        final = self.store.model_dir(self.job_id) / "final"
        starting.save_servable(ctx.model, final, start_adapter=run.start.start_adapter)
        full = {}
        if run.valid:
            full = self.method.evaluate(ctx, run.valid, "full_valid")
            self.event(_full_validation_message(full), type=lc.EVENT_TYPE_METRICS,
                       data={lc.STEP: state.step, **full})
        results_id = self.write_results(state.results)
        trained_tokens = sum(self.method.billed(e) for e in run.train) * ctx.hp["n_epochs"]
        self.store.add_model(run.ft_model, kind="fine-tuned", owned_by="local", base=run.start.base_id,
                             adapter_path=str(final), job_id=self.job_id)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = jobstate.succeed(self.store, self.job_id, fine_tuned_model=run.ft_model, trained_tokens=trained_tokens,
                                result_files=[results_id], completion_data={
                                    "wall_seconds": round(time.time() - started, 1),
                                    "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                                    "trained_tokens": trained_tokens})
        if not done:  # cancelled at the last moment: the cancel wins
            self.store.delete_model(run.ft_model)
            shutil.rmtree(final, ignore_errors=True)
            return
        self.tracking.log_final({**full, "fine_tuned_model": run.ft_model, "trained_tokens": trained_tokens})
        shutil.rmtree(self.resume_dir, ignore_errors=True)

    def write_results(self, results: list[dict]) -> str:
        """The results file (``step_metrics.csv``) with the method's columns, base64-encoded as the
        hosted API serves it (:func:`ftkit.lifecycle.results_csv` reads either form)."""
        columns = methods.get(self.method.name).result_columns
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in results:
            writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
        content = lc.encode_results(buf.getvalue())
        file_id = new_id("file")
        self.store.file_path(file_id).write_bytes(content)
        self.store.add_file(file_id, filename=lc.RESULTS_FILENAME, purpose=lc.RESULTS_PURPOSE, size=len(content),
                            sha256=hashlib.sha256(content).hexdigest())
        return file_id


@dataclass
class _Run:
    """The objects one run trains with."""

    ctx: RunContext
    train: list
    valid: list
    state: TrainState
    params: list
    optimizer: object
    scheduler: object
    ft_model: str
    start: starting.StartingModel
    step_times: list[float] = field(default_factory=list)



def _full_validation_message(full: dict) -> str:
    parts = [f"{key.removeprefix('full_valid_').replace('_', ' ')}={value:.2f}" for key, value in full.items()]
    return "Full validation: " + ", ".join(parts)

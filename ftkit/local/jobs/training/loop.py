"""The training loop every method shares: one job, from its files to a fine-tuned model.

:class:`JobRun` reads the job and its files from the store, builds the starting model with a
fresh LoRA adapter, and trains epoch by epoch: :meth:`JobRun.run` is :meth:`~JobRun.set_up`,
:meth:`~JobRun.resume`, :meth:`~JobRun.train`, :meth:`~JobRun.finish`, over one run-state object,
:class:`RunContext` (what a method works with, what the loop trains with, where the run is). What differs between methods -- how examples are
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

Job transitions go through :mod:`ftkit.local.jobs.jobstate`; the trainer never touches HTTP.
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

from .... import lifecycle as lc
from .... import methods
from ...store import Store, new_id
from .. import hyperparameters, jobstate
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
class RunContext:
    """One run's state, in one object: what a method's hooks work with (model, tokenizer,
    hyperparameters, seed, precision, the job ...), what the loop trains with (the files'
    examples, the optimizer and schedule, the starting model) and where the run is (epoch, batch,
    step, results rows: :meth:`progress`, saved for a resume). Methods read the first group only;
    a test or benchmark builds one with those fields alone."""

    # what a method works with
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
    # what the loop trains with
    train: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    params: list = field(default_factory=list)
    optimizer: object = None
    scheduler: object = None
    start: starting.StartingModel | None = None
    ft_model: str = ""
    # where the run is, besides ``step``
    epoch: int = 0
    batch_in_epoch: int = 0
    results: list[dict] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def progress(self) -> dict:
        """Where the run is: enough to continue it after a pause or a crash (``state.pt``)."""
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "results": self.results}

    def restore(self, progress: dict) -> None:
        """Continue from a saved :meth:`progress`."""
        self.epoch, self.batch_in_epoch = int(progress["epoch"]), int(progress["batch_in_epoch"])
        self.step, self.results = int(progress["step"]), list(progress["results"])


def method_for(job: dict):
    """The method object for a job's ``method.type``: the trainer class its registry entry names
    (:mod:`ftkit.methods`), imported here, in the trainer process."""
    import importlib

    spec = methods.get((job.get("method") or {}).get("type", lc.SUPERVISED))
    module, _, name = spec.trainer.partition(":")
    method = getattr(importlib.import_module(module), name)()
    if not isinstance(method, TrainingMethod):  # the contract: every hook, none probed for
        raise TypeError(f"{spec.trainer} (method {spec.name!r}) must subclass ftkit.local.jobs.training.contract."
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
        """Set up, resume (or start), train, finish: the job ends succeeded, or stops paused,
        cancelled or for a server that went away (its state saved to resume from)."""
        started = time.time()
        ctx, saved = self.set_up()
        self.resume(ctx, saved)
        config = tracking.run_config(self.job, ctx.hp, examples=len(ctx.train), total_steps=ctx.total_steps,
                                     precision=ctx.precision, device=str(ctx.device))
        self.tracking = tracking.start(self.job, self.store.job_dir(self.job_id), config, event=self.event)
        try:
            if self.train(ctx):
                self.finish(ctx, started)
        except BaseException:
            self.tracking.finish(lc.FAILED)  # the trainer marks the job failed (or resumes it later)
            raise
        finally:
            self.tracking.finish(self.store.get_job(self.job_id)["status"])  # no-op once finished
            self.method.close()

    def set_up(self) -> tuple[RunContext, dict | None]:
        """The run's objects and the saved state to resume from (None for a fresh start): the
        starting model with its adapter (fresh, or the saved one), the files as the method reads
        them, the hyperparameters resolved (and recorded on the job), the optimizer and schedule,
        the method prepared."""
        import torch

        from ...inference.weights import precision as choose_precision

        job, method = self.job, self.method
        seed = int(job["seed"])
        torch.manual_seed(seed)
        start = starting.load_starting_model(self.store, job["model"], load_base=self.load_base, progress=self.log)
        tokenizer = start.tokenizer
        train = method.load(self.store.file_path(job["training_file"]), tokenizer)
        valid = method.load(self.store.file_path(job["validation_file"]), tokenizer) if job["validation_file"] else []
        if not train:
            raise ValueError("the training file has no tokens to learn from")
        hp = self._resolve_hyperparameters(len(train))
        total_steps = math.ceil(len(train) / hp["batch_size"]) * hp["n_epochs"]
        saved = self._load_resume()
        model = starting.add_adapter(start.model, resume_from=self.resume_dir / saved["adapter"] if saved else None)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = steps.make_optimizer(params, hyperparameters.learning_rate(method.name, hp))
        ctx = RunContext(model, tokenizer, hp, seed, choose_precision("FTKIT_TRAIN_PRECISION"), tokenizer.pad_token_id,
                         total_steps=total_steps, store=self.store, job=job, log=self.log, train=train, valid=valid,
                         params=params, optimizer=optimizer, scheduler=steps.make_scheduler(optimizer, total_steps),
                         start=start, ft_model=fine_tuned_model_id(start.base_id, job["suffix"], self.job_id))
        method.prepare(ctx, train, valid)
        return ctx, saved

    def _resolve_hyperparameters(self, n_examples: int) -> dict:
        """The job's hyperparameters with "auto" resolved for ``n_examples``, recorded on the job."""
        job, name = self.job, self.method.name
        settings = job["method"].get(name) or {}
        hp = hyperparameters.resolve(name, settings.get("hyperparameters") or {}, n_examples)
        self.store.update_job(self.job_id, method={**job["method"], "type": name,
                                                   name: {**settings, "hyperparameters": hp}})
        return hp

    def resume(self, ctx: RunContext, saved: dict | None) -> None:
        """Continue from ``saved`` (progress, optimizer, schedule, random state; metrics events of
        lost steps withdrawn), or say that the job starts -- or starts again after a crash that
        left no saved state, its earlier metrics events withdrawn so no step is reported twice."""
        import torch

        if saved:
            ctx.restore(saved["state"])
            ctx.optimizer.load_state_dict(saved["optimizer"])
            ctx.scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            withdrawn = self.store.delete_metrics_events_after(self.job_id, ctx.step)
            note = f" ({withdrawn} metrics events of lost steps withdrawn)" if withdrawn else ""
            self.event(lc.JOB_RESUMED_FROM.format(step=ctx.step, total_steps=ctx.total_steps) + note)
        elif self.store.delete_metrics_events_after(self.job_id, 0):
            self.event(lc.RESTARTED, level="warn")
        else:
            self.event(lc.JOB_STARTED, data={"method": self.method.name, "precision": ctx.precision,
                                             "device": str(ctx.device), "examples": len(ctx.train),
                                             "steps": ctx.total_steps})

    def train(self, ctx: RunContext) -> bool:
        """Train to the last epoch (True), or stop between steps (False): a cancel removes the saved
        state, a pause or a stopping server saves it. A pause withdrawn (resumed) before it was
        acknowledged keeps training in this process."""
        while True:
            try:
                self.train_epochs(ctx)
                return True
            except JobStopped as stop:
                if self.store.get_job(self.job_id)["status"] == lc.CANCELLED:
                    shutil.rmtree(self.resume_dir, ignore_errors=True)
                    return False
                self.save_resume(ctx)
                if stop.reason != lc.PAUSED:
                    return False  # the server is stopping: it resumes this job from the saved state
                # acknowledge the pause -- unless it was withdrawn meanwhile, which this atomic update detects
                if jobstate.acknowledge_pause(self.store, self.job_id, step=ctx.step, total_steps=ctx.total_steps):
                    return False

    def train_epochs(self, ctx: RunContext) -> None:
        """Train from where ``ctx`` is to the last epoch; raises :class:`JobStopped` between steps."""
        method, hp, total = self.method, ctx.hp, ctx.total_steps
        eval_every = method.eval_every(total, hp)
        valid_sample = method.valid_sample(ctx.valid, hp)
        lengths = [method.length(e) for e in ctx.train]
        pace = min_step_seconds()
        if ctx.batch_in_epoch == 0 and ctx.epoch > 0:
            self.checkpoint(ctx)  # resumed right after an epoch end: its checkpoint may be missing
        for epoch in range(ctx.epoch, hp["n_epochs"]):
            batches = steps.length_grouped_batches(lengths, batch_size=hp["batch_size"], epoch=epoch, seed=ctx.seed)
            for b in range(ctx.batch_in_epoch, len(batches)):
                self.check_continue()
                t0 = time.time()
                loss, metrics = method.step(ctx, [ctx.train[i] for i in batches[b]])
                self.check_continue()  # paused or cancelled meanwhile: this step is dropped, not applied
                if loss is not None:
                    steps.optimizer_step(loss, ctx.params, ctx.optimizer, ctx.scheduler)
                else:
                    ctx.scheduler.step()
                if pace and time.time() - t0 < pace:
                    time.sleep(pace - (time.time() - t0))
                ctx.step += 1
                ctx.batch_in_epoch = b + 1
                self._report_step(ctx, metrics, valid_sample if ctx.step % eval_every == 0 or ctx.step == total else [])
                ctx.step_times.append(time.time() - t0)
                recent = ctx.step_times[-10:]
                remaining = (total - ctx.step) * sum(recent) / len(recent)
                self.store.update_job(self.job_id, estimated_finish=int(time.time() + remaining))
                if time.monotonic() - self._last_resume_save > RESUME_EVERY_SECONDS and ctx.step < total:
                    self.save_resume(ctx)
            ctx.epoch, ctx.batch_in_epoch = epoch + 1, 0
            self.save_resume(ctx)  # first: a crash after it re-creates the checkpoint, never twice
            self.checkpoint(ctx)

    def _report_step(self, ctx: RunContext, metrics: dict, valid_sample: list) -> None:
        """A step's figures (with the validation sample's, when it is evaluated at this step): a
        results row, the W&B step and the metrics event."""
        data = {lc.STEP: ctx.step, **metrics, lc.TOTAL_STEPS: ctx.total_steps}
        if valid_sample:
            data.update(self.method.evaluate(ctx, valid_sample, "valid"))
        row = self.method.results_row(data)
        ctx.results.append(row)
        self.tracking.log_step(row)
        self.event(self.method.message(data, ctx.total_steps), type=lc.EVENT_TYPE_METRICS, data=data)

    def checkpoint(self, ctx: RunContext) -> None:
        """A servable checkpoint of the current adapter, with full-validation metrics (once per step)."""
        if any(c["step"] == ctx.step for c in self.store.list_checkpoints(self.job_id)):
            return
        path = self.store.model_dir(self.job_id) / f"step-{ctx.step}"
        starting.save_servable(ctx.model, path, start_adapter=ctx.start.start_adapter)
        last = ctx.results[-1] if ctx.results else {}
        full = self.method.evaluate(ctx, ctx.valid, "full_valid") if ctx.valid else {}
        metrics = {lc.STEP: ctx.step, **self.method.checkpoint_metrics(last, full)}
        model_id = f"{ctx.ft_model}:ckpt-step-{ctx.step}"
        self.store.add_checkpoint(self.job_id, step=ctx.step, model_id=model_id, metrics=metrics, path=str(path))
        self.store.add_model(model_id, kind="checkpoint", owned_by="local", base=ctx.start.base_id,
                             adapter_path=str(path), job_id=self.job_id)
        self.event(lc.CHECKPOINT_CREATED.format(step=ctx.step))
        for old in self.store.list_checkpoints(self.job_id)[KEEP_CHECKPOINTS:]:
            self.store.delete_checkpoint(old["id"])
            self.store.delete_model(old["model_id"])
            shutil.rmtree(old["path"], ignore_errors=True)

    # -- resumable state ------------------------------------------------------------------------

    def save_resume(self, ctx: RunContext) -> None:
        """Save what a new trainer needs to continue: the adapter (a new folder each time), then the
        optimizer, schedule, random state and progress in ``state.pt`` naming that folder, replaced
        atomically. A kill at any moment leaves the previous state whole; older folders go last."""
        import torch

        self.resume_dir.mkdir(parents=True, exist_ok=True)
        adapter = f"adapter-step-{ctx.step}-{time.time_ns()}"
        ctx.model.save_pretrained(self.resume_dir / adapter)
        path = self.resume_dir / "state.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"state": ctx.progress(), "adapter": adapter, "optimizer": ctx.optimizer.state_dict(),
                    "scheduler": ctx.scheduler.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)
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

    def finish(self, ctx: RunContext, started: float) -> None:
        """The final adapter, full validation, the results file, the model, ``succeeded`` (unless
        cancelled at the last moment: then nothing of the model is left)."""
        final = self.store.model_dir(self.job_id) / "final"
        starting.save_servable(ctx.model, final, start_adapter=ctx.start.start_adapter)
        full = {}
        if ctx.valid:
            full = self.method.evaluate(ctx, ctx.valid, "full_valid")
            self.event(_full_validation_message(full), type=lc.EVENT_TYPE_METRICS,
                       data={lc.STEP: ctx.step, **full})
        results_id = self.write_results(ctx.results)
        trained_tokens = sum(self.method.billed(e) for e in ctx.train) * ctx.hp["n_epochs"]
        self.store.add_model(ctx.ft_model, kind="fine-tuned", owned_by="local", base=ctx.start.base_id,
                             adapter_path=str(final), job_id=self.job_id)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = jobstate.succeed(self.store, self.job_id, fine_tuned_model=ctx.ft_model, trained_tokens=trained_tokens,
                                result_files=[results_id], completion_data={
                                    "wall_seconds": round(time.time() - started, 1),
                                    "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                                    "trained_tokens": trained_tokens})
        if not done:  # cancelled at the last moment: the cancel wins
            self.store.delete_model(ctx.ft_model)
            shutil.rmtree(final, ignore_errors=True)
            return
        self.tracking.log_final({**full, "fine_tuned_model": ctx.ft_model, "trained_tokens": trained_tokens})
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


def _full_validation_message(full: dict) -> str:
    parts = [f"{key.removeprefix('full_valid_').replace('_', ' ')}={value:.2f}" for key, value in full.items()]
    return "Full validation: " + ", ".join(parts)

"""The job worker: moves jobs through the hosted lifecycle, one training at a time.

``validating_files`` → ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``, plus
``paused`` (transitions: :mod:`ftkit.local.jobstate`). Validation runs here (ftkit's validator with the model's own tokenizer); training runs
in a child process (``ftkit.local.trainer``) so the API keeps answering and a cancel can stop it.
The child reports through the store; the worker watches it and makes sure no job is ever left
``running`` without a trainer: on start-up, jobs cut off by a crash or kill are queued again and
resume from their last saved state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import lifecycle as lc
from . import jobstate
from .models import MAX_EXAMPLE_TOKENS
from .store import Store

MAX_INTERRUPTIONS = 3
CLEANUP_EVERY_SECONDS = 5.0
#: The kind of training file each method trains on (ftkit.validation's report.kind).
FILE_KIND = {lc.SUPERVISED: "chat", lc.DPO: "preference", lc.REINFORCEMENT: "reinforcement"}


class Worker:
    def __init__(self, store: Store, engine, *, log=print, poll: float = 0.3, trainer_threads: int | None = None):
        self.store = store
        self.engine = engine
        self.log = log
        self.poll = poll
        self.trainer_threads = trainer_threads
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._child_job: str | None = None
        self._stop_seen_at: float | None = None  # when the running job was cancelled or paused
        self._last_cleanup = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="ftkit-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop the worker; a training child is asked to save its state and exit."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=60)
        self._terminate_child(grace=60)

    def recover(self) -> None:
        """Jobs left ``running`` by a crash or kill: queue them again to resume (or fail them)."""
        for job in self.store.jobs_with_status(lc.PAUSED):  # their trainer is gone with the old server
            _wait_for_previous_trainer(self.store.job_dir(job["id"]) / "trainer.pid")
            jobstate.record_trainer(self.store, job["id"], None)
        for job in self.store.jobs_with_status(lc.RUNNING):
            _wait_for_previous_trainer(self.store.job_dir(job["id"]) / "trainer.pid")
            resumable = (self.store.job_dir(job["id"]) / "resume" / "state.pt").exists()
            jobstate.requeue_after_crash(self.store, job["id"], max_interruptions=MAX_INTERRUPTIONS,
                                         resumable=resumable)

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # keep the worker alive; the log says what happened
                self.log(f"worker error: {type(e).__name__}: {e}")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _tick(self) -> None:
        if time.monotonic() - self._last_cleanup > CLEANUP_EVERY_SECONDS:
            self._last_cleanup = time.monotonic()
            self.remove_stale_resume_state()
        for job in self.store.jobs_with_status(lc.VALIDATING_FILES):
            self._validate(job)
        if self._child is not None:
            self._watch_child()
        if self._child is None and not self._stop.is_set():
            queued = self.store.jobs_with_status(lc.QUEUED)
            if queued:
                self._start(queued[0])

    def remove_stale_resume_state(self) -> None:
        """Delete the resume state (adapter and optimizer: weights trained on the user's data) of
        jobs that ended -- cancelled or failed while paused or queued, when no trainer was there
        to clean up after itself."""
        import shutil

        for resume in self.store.home.glob("jobs/*/resume"):
            job = self.store.get_job(resume.parent.name)
            if job is not None and job["status"] in lc.TERMINAL_STATUSES and job["trainer_pid"] is None:
                shutil.rmtree(resume, ignore_errors=True)

    def _validate(self, job: dict) -> None:
        from ..validation import MIN_EXAMPLES_FOR, validate
        from .render import HFTokenCounter

        try:
            tokenizer = self.engine.tokenizer_for(job["model"])
        except Exception as e:
            self._fail(job["id"], "model_unavailable", f"The base model {job['model']} could not be loaded: {e}")
            return
        method = job["method"].get("type", lc.SUPERVISED)
        counter = HFTokenCounter(tokenizer, MAX_EXAMPLE_TOKENS)
        grader_fields: set[str] = set()
        if method == lc.REINFORCEMENT:
            from .. import graders

            grader_fields = graders.compile_grader(job["method"][lc.REINFORCEMENT]["grader"]).item_fields()
        for kind, file_id in (("training", job["training_file"]), ("validation", job["validation_file"])):
            if not file_id:
                continue
            report = validate(self.store.file_path(file_id), token_counter=counter, encoding=job["model"] + " tokenizer",
                              max_example_tokens=MAX_EXAMPLE_TOKENS, min_examples=MIN_EXAMPLES_FOR[kind],
                              method=method, grader_fields=grader_fields)
            report.source = file_id
            expected = FILE_KIND[method]
            if report.ok and report.kind != expected:
                self._fail(job["id"], f"invalid_{kind}_file",
                           f"The job failed due to an invalid {kind} file {file_id}: it holds {report.kind} examples, "
                           f"but method {method!r} trains on {expected} examples"
                           + (" (use method 'dpo' for preference pairs)" if report.kind == "preference" else ""),
                           param=f"{kind}_file")
                return
            if not report.ok:
                shown = "; ".join(str(p) for p in report.errors[:3])
                more = f" (and {len(report.errors) - 3} more errors)" if len(report.errors) > 3 else ""
                self._fail(job["id"], f"invalid_{kind}_file",
                           f"The job failed due to an invalid {kind} file {file_id}: {shown}{more}",
                           param=f"{kind}_file")
                return
            for w in report.warnings[:5]:
                self.store.add_event(job["id"], f"{kind.capitalize()} file {file_id}: {w}", level="warn")
        jobstate.queue(self.store, job["id"])

    def _start(self, job: dict) -> None:
        if not jobstate.start(self.store, job["id"]):
            return
        cmd = [sys.executable, "-m", "ftkit.local.trainer", "--home", str(self.store.home), "--job", job["id"]]
        if self.trainer_threads:
            cmd += ["--threads", str(self.trainer_threads)]
        log_path = self.store.job_dir(job["id"]) / "trainer.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._child_job = job["id"]
        jobstate.record_trainer(self.store, job["id"], self._child.pid)  # a resume now withdraws a pause
        self.log(f"training {job['id']} (pid {self._child.pid})")

    def _watch_child(self) -> None:
        job = self.store.get_job(self._child_job)
        code = self._child.poll()
        if code is None:
            if job["status"] in (lc.CANCELLED, lc.PAUSED):
                # the trainer sees the status at its next step and stops by itself (saving its
                # state when paused); only a trainer that does not stop is signalled
                self._stop_seen_at = self._stop_seen_at or time.monotonic()
                if time.monotonic() - self._stop_seen_at > 60:
                    self._terminate_child(grace=30)
                    self._finish_child()
            return
        if job["status"] == lc.RUNNING and code < 0 and not self._stop.is_set():
            # killed by a signal (kill -9, the out-of-memory killer): like a server crash, the job
            # resumes from its last saved state (and fails after too many interruptions)
            resumable = (self.store.job_dir(job["id"]) / "resume" / "state.pt").exists()
            jobstate.requeue_after_crash(self.store, job["id"], max_interruptions=MAX_INTERRUPTIONS,
                                         resumable=resumable, trainer_died=_signal_name(-code))
        elif job["status"] == lc.RUNNING:  # the trainer exited without saying how the job ended
            tail = _tail(self.store.job_dir(job["id"]) / "trainer.log")
            self._fail(job["id"], "training_failed",
                       f"Training stopped unexpectedly (exit code {code}). Last output: {tail}")
        self._finish_child()

    def _finish_child(self) -> None:
        if self._child_job:
            jobstate.record_trainer(self.store, self._child_job, None)
        self._child = None
        self._child_job = None
        self._stop_seen_at = None

    def _terminate_child(self, grace: float) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _fail(self, job_id: str, code: str, message: str, param: str | None = None) -> None:
        jobstate.fail(self.store, job_id, code, message, param)


def _wait_for_previous_trainer(pid_file: Path, timeout: float = 60) -> None:
    """A trainer of a server that died gets SIGTERM and saves its state: let it finish first."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _signal_name(number: int) -> str:
    try:
        return f"signal {signal.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-500:] or "(empty log)"

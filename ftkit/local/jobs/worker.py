"""The job worker: moves jobs through the hosted lifecycle, one training at a time.

``validating_files`` → ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``, plus
``paused`` (transitions: :mod:`ftkit.local.jobs.jobstate`). Validation runs here (ftkit's validator with the model's own tokenizer); training runs
in a child process (``ftkit.local.jobs.trainer``) so the API keeps answering and a cancel can stop it.
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
from dataclasses import dataclass
from pathlib import Path

from ... import lifecycle as lc
from ... import methods
from ..inference.weights import MAX_EXAMPLE_TOKENS
from ..store import Store
from . import jobstate

MAX_INTERRUPTIONS = 3
CLEANUP_EVERY_SECONDS = 5.0
#: The kind of training file each method trains on (ftkit.validation's report.kind): a view of
#: the method registry.
FILE_KIND = methods.view("file_kind")
#: Fewest examples per file: the hosted API's 10 for training, any for validation.
#: Seconds a trainer may take to stop by itself after a cancel or pause before it is signalled.
STOP_GRACE_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------
# The worker's decisions, as pure functions (tests/test_worker_decisions.py tables them)


@dataclass(frozen=True)
class FileVerdict:
    """What one validated file means for its job: go on (with ``warnings`` as events) or fail
    with ``code``, ``message`` and ``param`` (the hosted API's error fields)."""

    ok: bool
    code: str | None = None
    message: str | None = None
    param: str | None = None
    warnings: tuple[str, ...] = ()


def judge_file(role: str, file_id: str, method: str, report) -> FileVerdict:
    """Files -> queue or fail, for one file: ``role`` is ``"training"`` or ``"validation"``,
    ``report`` ftkit's :class:`~ftkit.validation.ValidationReport` of it (``ok``, ``kind``,
    ``errors``, ``warnings``). Errors fail the job naming the first three; a valid file of the
    wrong kind for ``method`` (preference pairs for a supervised job ...) fails it too."""
    expected = FILE_KIND[method]
    if not report.ok:
        shown = "; ".join(str(p) for p in report.errors[:3])
        more = f" (and {len(report.errors) - 3} more errors)" if len(report.errors) > 3 else ""
        return FileVerdict(False, f"invalid_{role}_file",
                           f"The job failed due to an invalid {role} file {file_id}: {shown}{more}", f"{role}_file")
    if report.kind != expected:
        fitting = [name for name in methods.names() if methods.get(name).file_kind == report.kind]
        hint = f" (use method {fitting[0]!r} for {report.kind} examples)" if fitting else ""
        return FileVerdict(False, f"invalid_{role}_file",
                           f"The job failed due to an invalid {role} file {file_id}: it holds {report.kind} examples, "
                           f"but method {method!r} trains on {expected} examples{hint}", f"{role}_file")
    return FileVerdict(True, warnings=tuple(f"{role.capitalize()} file {file_id}: {w}" for w in report.warnings[:5]))


# What the worker does about its training child (:func:`trainer_action`).
WAIT = "wait"  # still training, or stopping by itself
TERMINATE = "terminate"  # asked to stop (cancel, pause) long ago and still going: signal it
REQUEUE = "requeue"  # killed by a signal while running: resume from the last saved state
FAIL = "fail"  # exited while the job still says running: it never said how the job ended
FINISH = "finish"  # exited after recording the end (succeeded, failed, cancelled, paused)


def trainer_action(status: str, exit_code: int | None, *, stopping: bool, stop_seen_for: float | None) -> str:
    """Status x exit code x stopping -> wait, terminate, requeue, fail or finish.

    ``status``: the job's status in the store; ``exit_code``: the child's (None while it runs,
    negative when a signal killed it); ``stopping``: the server is shutting down;
    ``stop_seen_for``: seconds since the worker first saw the job cancelled or paused (None if not).
    """
    if exit_code is None:
        stop_asked = status in (lc.CANCELLED, lc.PAUSED)
        overdue = stop_seen_for is not None and stop_seen_for > STOP_GRACE_SECONDS
        return TERMINATE if stop_asked and overdue else WAIT
    if status != lc.RUNNING:
        return FINISH
    # kill -9, the out-of-memory killer: like a server crash (not our own shutdown)
    return REQUEUE if exit_code < 0 and not stopping else FAIL


# ---------------------------------------------------------------------------------------------
# The worker


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
        from ...validation import MIN_EXAMPLES_FOR, validate
        from ..inference.render import HFTokenCounter

        try:
            tokenizer = self.engine.tokenizer_for(job["model"])
        except Exception as e:
            self._fail(job["id"], "model_unavailable", f"The base model {job['model']} could not be loaded: {e}")
            return
        method = job["method"].get("type", lc.SUPERVISED)
        counter = HFTokenCounter(tokenizer, MAX_EXAMPLE_TOKENS)
        grader_fields: set[str] = set()
        if methods.get(method).needs_grader:
            from ... import graders

            grader_fields = graders.compile_grader(job["method"][method]["grader"]).item_fields()
        for kind, file_id in (("training", job["training_file"]), ("validation", job["validation_file"])):
            if not file_id:
                continue
            report = validate(self.store.file_path(file_id), token_counter=counter, encoding=job["model"] + " tokenizer",
                              max_example_tokens=MAX_EXAMPLE_TOKENS, min_examples=MIN_EXAMPLES_FOR[kind],
                              method=method, grader_fields=grader_fields)
            report.source = file_id
            verdict = judge_file(kind, file_id, method, report)
            if not verdict.ok:
                self._fail(job["id"], verdict.code, verdict.message, param=verdict.param)
                return
            for warning in verdict.warnings:
                self.store.add_event(job["id"], warning, level="warn")
        jobstate.queue(self.store, job["id"])

    def _start(self, job: dict) -> None:
        if not jobstate.start(self.store, job["id"]):
            return
        cmd = [sys.executable, "-m", "ftkit.local.jobs.trainer", "--home", str(self.store.home), "--job", job["id"]]
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
        if code is None and job["status"] in (lc.CANCELLED, lc.PAUSED):
            # the trainer sees the status at its next step and stops by itself (saving its state
            # when paused); only a trainer that does not stop is signalled
            self._stop_seen_at = self._stop_seen_at or time.monotonic()
        seen_for = None if self._stop_seen_at is None else time.monotonic() - self._stop_seen_at
        action = trainer_action(job["status"], code, stopping=self._stop.is_set(), stop_seen_for=seen_for)
        if action == WAIT:
            return
        if action == TERMINATE:
            self._terminate_child(grace=30)
        elif action == REQUEUE:  # resumes from its last saved state (fails after too many interruptions)
            resumable = (self.store.job_dir(job["id"]) / "resume" / "state.pt").exists()
            jobstate.requeue_after_crash(self.store, job["id"], max_interruptions=MAX_INTERRUPTIONS,
                                         resumable=resumable, trainer_died=_signal_name(-code))
        elif action == FAIL:
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

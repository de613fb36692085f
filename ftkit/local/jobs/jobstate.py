"""The job state machine of the local server: one function per transition.

::

    validating_files --queue--> queued --start--> running --succeed--> succeeded
          |                       |  ^               |  \\
          |                       |  '--requeue------'   '--fail--> failed
          '----------fail---------+--------------------------------> failed
    any active status --cancel--> cancelled
    queued | running --pause--> paused --resume--> queued (trainer gone) | running (trainer still up)

Each function does its conditional update in one SQL statement (so a transition either happens
or reports that the job had already moved on) and writes the event the hosted API would show.
The HTTP service, the worker and the trainer process all move jobs only through these
functions; the texts come from :mod:`ftkit.lifecycle`.
"""

from __future__ import annotations

import time

from ... import lifecycle as lc
from ..store import Store


def _now() -> int:
    return int(time.time())


def create(store: Store, fields: dict) -> dict:
    """Record a new job in ``validating_files`` and say which files are being validated."""
    job = store.create_job({**fields, "status": lc.VALIDATING_FILES})
    if job["validation_file"]:
        text = lc.JOB_CREATED_WITH_VALIDATION.format(training_file=job["training_file"],
                                                     validation_file=job["validation_file"])
    else:
        text = lc.JOB_CREATED.format(training_file=job["training_file"])
    store.add_event(job["id"], text)
    return job


def queue(store: Store, job_id: str) -> bool:
    """``validating_files`` -> ``queued``, once the files passed validation."""
    if store.update_job(job_id, only_if_status=[lc.VALIDATING_FILES], status=lc.QUEUED):
        store.add_event(job_id, lc.FILES_VALIDATED)
        return True
    return False


def start(store: Store, job_id: str) -> bool:
    """``queued`` -> ``running``: the worker is about to start a trainer for it."""
    return store.update_job(job_id, only_if_status=[lc.QUEUED], status=lc.RUNNING)


def record_trainer(store: Store, job_id: str, pid: int | None) -> None:
    """Remember (or forget, with None) the trainer process of a job. While one is recorded, a
    resume withdraws a pause instead of queueing the job again (see :func:`resume`)."""
    store.update_job(job_id, trainer_pid=pid)


def cancel(store: Store, job_id: str) -> bool:
    """Any active status -> ``cancelled``. False when the job had already ended."""
    if store.update_job(job_id, only_if_status=lc.ACTIVE_STATUSES, status=lc.CANCELLED, finished_at=_now(),
                        estimated_finish=None):
        store.add_event(job_id, lc.CANCELLED_MESSAGE)
        return True
    return False


def pause(store: Store, job_id: str) -> bool:
    """``running`` | ``queued`` -> ``paused``. The trainer notices at its next step, saves its
    state and acknowledges (:func:`acknowledge_pause`)."""
    if store.update_job(job_id, only_if_status=[lc.RUNNING, lc.QUEUED], status=lc.PAUSED, estimated_finish=None):
        store.add_event(job_id, lc.PAUSED_MESSAGE)
        return True
    return False


def resume(store: Store, job_id: str) -> str | None:
    """``paused`` -> ``running`` if its trainer has not stopped yet (the pause is withdrawn), else
    ``queued`` (a new trainer continues from the saved state). The new status, or None if the job
    was not paused."""
    for status, trainer_alive in ((lc.RUNNING, True), (lc.QUEUED, False)):
        if store.update_job(job_id, only_if_status=[lc.PAUSED], only_if_trainer=trainer_alive, status=status):
            store.add_event(job_id, lc.RESUMED_MESSAGE)
            return status
    return None


def acknowledge_pause(store: Store, job_id: str, *, step: int, total_steps: int) -> bool:
    """The trainer stopped for a pause with its state saved: forget the trainer. False when the
    pause was withdrawn meanwhile (the job is ``running`` again): the trainer then trains on. One
    statement, so a resume cannot fall between the check and the update."""
    if store.update_job(job_id, only_if_status=[lc.PAUSED], trainer_pid=None):
        store.add_event(job_id, lc.PAUSED_AT.format(step=step, total_steps=total_steps))
        return True
    return False


def fail(store: Store, job_id: str, code: str, message: str, param: str | None = None) -> bool:
    """Any active status -> ``failed`` with the hosted ``error`` object."""
    if store.update_job(job_id, only_if_status=lc.ACTIVE_STATUSES, status=lc.FAILED, finished_at=_now(),
                        estimated_finish=None, error={"code": code, "message": message, "param": param}):
        store.add_event(job_id, message, level="error")
        return True
    return False


def succeed(store: Store, job_id: str, *, fine_tuned_model: str, trained_tokens: int, result_files: list[str],
            completion_data: dict) -> bool:
    """``running`` -> ``succeeded``. False when the job was cancelled at the last moment (the
    cancel wins; the caller then removes the model it made)."""
    if not store.update_job(job_id, only_if_status=[lc.RUNNING], status=lc.SUCCEEDED,
                            fine_tuned_model=fine_tuned_model, finished_at=_now(), trained_tokens=trained_tokens,
                            result_files=result_files, estimated_finish=None):
        return False
    store.add_event(job_id, lc.MODEL_CREATED.format(model=fine_tuned_model))
    store.add_event(job_id, lc.COMPLETED, data=completion_data)
    return True


def requeue_after_crash(store: Store, job_id: str, *, max_interruptions: int, resumable: bool,
                        trainer_died: str | None = None) -> str | None:
    """A job left ``running`` by a server that crashed or was killed -- or whose trainer alone was
    killed (``trainer_died``: how, e.g. "signal SIGKILL") -- ``queued`` again to resume from its
    last saved state (or from the start), or ``failed`` after too many interruptions. The new
    status, or None if the job was not running."""
    job = store.get_job(job_id)
    if job is None or job["status"] != lc.RUNNING:
        return None
    count = job["interruptions"] + 1
    if count > max_interruptions:
        fail(store, job_id, "training_interrupted", lc.INTERRUPTED_TOO_OFTEN.format(count=count))
        return lc.FAILED
    if store.update_job(job_id, only_if_status=[lc.RUNNING], status=lc.QUEUED, interruptions=count,
                        estimated_finish=None, trainer_pid=None):
        where = "its last saved state" if resumable else "the beginning"
        text = (lc.TRAINER_DIED.format(reason=trainer_died, where=where) if trainer_died
                else lc.REQUEUED_AFTER_CRASH.format(where=where))
        store.add_event(job_id, text, level="warn")
        return lc.QUEUED
    return None


def is_running(store: Store, job_id: str) -> bool:
    job = store.get_job(job_id)
    return job is not None and job["status"] == lc.RUNNING

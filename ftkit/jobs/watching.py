"""Watching a job: :func:`watch` (a progress bar over steps, new events, the estimated finish).

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from .. import lifecycle
from ..backend import backend_of
from .api import (
    ACTIVE_STATUSES,
    KNOWN_STATUSES,
    TERMINAL_STATUSES,
    StoppedWatching,
    WatchTimeout,
    _as_dict,
    _duration,
    _is_transient,
    _job_id,
    _local_time,
)


class _EventFeed:
    """New events of a job, oldest first, each exactly once (the API lists newest first)."""

    def __init__(self, client, job_id: str) -> None:
        self.client, self.job_id = client, job_id
        self.seen: set[str] = set()

    def poll(self) -> list:
        fresh = []
        after = None
        while True:
            kwargs = {"limit": 100}
            if after:
                kwargs["after"] = after
            page = self.client.fine_tuning.jobs.list_events(self.job_id, **kwargs)
            data = list(page.data)
            stop = False
            for event in data:
                if event.id in self.seen:
                    stop = True
                    break
                fresh.append(event)
            if stop or not data or not getattr(page, "has_more", False):
                break
            after = data[-1].id
        fresh.reverse()
        self.seen.update(e.id for e in fresh)
        return fresh


def _metric_data(event) -> dict | None:
    """The step metrics of a metrics event (``step``, ``train_loss``, ``total_steps`` ...), else None."""
    data = _as_dict(getattr(event, "data", None))
    if getattr(event, "type", None) == "metrics" and "step" in data and "train_loss" in data:
        return data
    return None


def _preference_parts(metrics: Mapping) -> list[str]:
    """The method's own figures of a step's metrics, short: DPO ("margin 0.42", "pref. acc.
    0.80"), reinforcement ("reward 0.62 ± 0.21", "valid. reward 0.70"); [] for supervised jobs."""
    parts = []
    for key, label in (("train_reward_margin", "margin"), ("train_preference_accuracy", "pref. acc.")):
        if metrics.get(key) is not None:
            parts.append(f"{label} {float(metrics[key]):.2f}")
    if metrics.get("train_reward_mean") is not None:
        spread = metrics.get("train_reward_std")
        parts.append(f"reward {float(metrics['train_reward_mean']):.2f}"
                     + (f" ± {float(spread):.2f}" if spread is not None else ""))
    if metrics.get("valid_reward_mean") is not None:
        parts.append(f"valid. reward {float(metrics['valid_reward_mean']):.2f}")
    return parts


def _event_line(event) -> str:
    when = _local_time(getattr(event, "created_at", None))
    level = getattr(event, "level", "info") or "info"
    tag = "" if level == "info" else f"{level.upper()}  "
    return f"{when:%H:%M:%S}  {tag}{event.message}" if when else f"{tag}{event.message}"


def _finish_text(job) -> str:
    eta = getattr(job, "estimated_finish", None)
    if not eta:
        return ""
    left = eta - time.time()
    return f"finish ~{_local_time(eta):%H:%M:%S} (in {_duration(left)})" if left > 0 else "finishing"


def _is_finished(job) -> bool:
    return job.status in TERMINAL_STATUSES or (job.status not in ACTIVE_STATUSES and job.finished_at is not None)


def watch(
    client,
    job,
    *,
    poll: float | None = None,
    timeout: float | None = None,
    print_events: bool = True,
    metrics_every: int | None = None,
    return_when_paused: bool = True,
):
    """Follow a job until it ends: a progress bar over training steps, the status, new events as
    they arrive, the estimated finish. Returns the final ``FineTuningJob``.

    * The bar (``tqdm.auto``) appears with the first metrics event, whose ``total_steps`` sets
      its length; its label shows the status, the latest training loss and the estimated finish.
    * Events are printed once each, oldest first. Metrics events ("Step 12/99: training
      loss=...") move the bar; one in ``metrics_every`` is printed (default: about ten per job).
    * Returns when the job succeeded, failed or was cancelled -- and, by default, when it is
      **paused**: a paused job does not move until someone resumes it, so waiting would hang the
      cell. Call :func:`resume`, then ``watch`` again (``return_when_paused=False`` waits instead).
    * A status ftkit does not know (the API adds some, e.g. ``paused`` appeared after the SDK's
      list) is shown and watched like a running one; a job with ``finished_at`` set is finished.
    * **Ctrl-C / interrupting the cell stops the watching, not the job**: it keeps training on the
      server. :class:`StoppedWatching` (a ``KeyboardInterrupt``) says so and how to come back.
      ``timeout`` (seconds) raises :class:`WatchTimeout` in the same spirit.
    * Network hiccups and server errors while polling are retried with a growing pause.

    ``poll``: seconds between checks (default 2 on the local backend, 10 on hosted ones).

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    job_id = _job_id(job)
    poll = poll if poll is not None else (2.0 if not backend_of(client).paid else 10.0)
    feed = _EventFeed(client, job_id)
    progress = _Progress(job_id, print_events, metrics_every)
    started = time.monotonic()
    failures = 0
    current = job if not isinstance(job, str) else None
    try:
        while True:
            try:
                current = client.fine_tuning.jobs.retrieve(job_id)
                new = feed.poll()
                failures = 0
            except Exception as e:
                if not _is_transient(e):
                    raise
                failures = _back_off(e, failures, poll, progress.say)
                continue
            progress.show_events(new)
            progress.show_status(current)
            if _is_finished(current) or (current.status == lifecycle.PAUSED and return_when_paused):
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise WatchTimeout(
                    f"stopped watching {job_id} after {_duration(timeout)}; the job keeps going on the server "
                    f"(status {current.status}). Watch again with ftkit.jobs.watch(client, '{job_id}').", current)
            time.sleep(poll)
    except KeyboardInterrupt:
        status = current.status if current is not None else "unknown"
        raise StoppedWatching(
            f"Stopped watching {job_id}. The job itself keeps going on the server (status: {status}).\n"
            f"Watch again with ftkit.jobs.watch(client, '{job_id}'), or stop it with "
            f"ftkit.jobs.cancel(client, '{job_id}').", current) from None
    finally:
        progress.close(current)
    _print_outcome(current, time.monotonic() - started)
    return current


def _back_off(error: Exception, failures: int, poll: float, say) -> int:
    """Wait after a transient API error (a growing pause, at most a minute); the new failure count."""
    failures += 1
    wait = min(60.0, poll * 2 ** min(failures, 5))
    say(f"(could not reach the API: {type(error).__name__}; retrying in {wait:.0f} s -- the job is unaffected)")
    time.sleep(wait)
    return failures


class _Progress:
    """What :func:`watch` shows: a ``tqdm.auto`` bar over training steps, made by the first metrics
    event (its ``total_steps`` sets the length), labelled with the status, the latest figures and
    the estimated finish; other events printed once each, metrics events one in ``every``."""

    def __init__(self, job_id: str, print_events: bool, metrics_every: int | None) -> None:
        self.job_id, self.print_events, self.metrics_every = job_id, print_events, metrics_every
        self.bar = None
        self.every = 1
        self.last_metrics: dict = {}
        self.last_status: str | None = None
        self.shown_label = ""

    def say(self, line: str) -> None:
        if self.print_events:
            (self.bar.write if self.bar is not None else print)(line)

    def show_events(self, new: list) -> None:
        for event in new:
            data = _metric_data(event)
            if data is None:
                self.say(_event_line(event))
                continue
            self.last_metrics = data
            if self._advance(data):
                self.say(_event_line(event))

    def _advance(self, data: dict) -> bool:
        """Move the bar to this metrics event's step; whether the event deserves a printed line."""
        total = data.get("total_steps")
        if self.bar is None and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=int(total), desc=self.job_id, unit="step", dynamic_ncols=True)
            self.every = self.metrics_every or max(1, int(total) // 10)
        if self.bar is None:
            return False
        if total and self.bar.total != int(total):
            self.bar.total = int(total)
        step = int(data["step"])
        self.bar.update(max(0, step - self.bar.n))
        return (step % self.every == 0 or step == self.bar.total or "valid_loss" in data
                or "valid_reward_mean" in data)

    def show_status(self, job) -> None:
        status = job.status
        if status != self.last_status:
            if status not in KNOWN_STATUSES:
                self.say(f"status: {status} (a status ftkit does not know; shown as is, still watching)")
            elif self.bar is None:
                self.say(f"status: {status}")
            self.last_status = status
        if self.bar is not None:
            label = _bar_label(job, self.last_metrics)
            if label != self.shown_label:  # redraw only on change: logs stay short where there is no TTY
                self.bar.set_postfix_str(label, refresh=True)
                self.shown_label = label

    def close(self, job) -> None:
        if self.bar is None:
            return
        if job is not None and job.status == lifecycle.SUCCEEDED and self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def _bar_label(job, metrics: Mapping) -> str:
    """The bar's label: status | loss | the method's own figures | estimated finish."""
    parts = [job.status]
    if "train_loss" in metrics:
        parts.append(f"loss {float(metrics['train_loss']):.3f}")
    parts += _preference_parts(metrics)
    eta = getattr(job, "estimated_finish", None)
    if eta and job.status not in TERMINAL_STATUSES:
        parts.append(f"finish ~{_local_time(eta):%H:%M}")
    return " | ".join(parts)


def _print_outcome(job, waited: float) -> None:
    took = (job.finished_at - job.created_at) if job.finished_at and job.created_at else None
    if job.status == lifecycle.SUCCEEDED:
        print(f"{job.id} succeeded in {_duration(took)}: {job.fine_tuned_model}")
    elif job.status == lifecycle.FAILED:
        error = _as_dict(job.error)
        print(f"{job.id} failed: {error.get('message') or error or 'no reason given'}")
    elif job.status == lifecycle.CANCELLED:
        print(f"{job.id} was cancelled")
    elif job.status == lifecycle.PAUSED:
        print(f"{job.id} is paused: it will not move until resumed -- ftkit.jobs.resume(client, '{job.id}'), "
              "then watch it again")
    else:
        print(f"{job.id} ended with status {job.status!r}")

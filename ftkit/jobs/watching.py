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
    from tqdm.auto import tqdm

    job_id = _job_id(job)
    poll = poll if poll is not None else (2.0 if not backend_of(client).paid else 10.0)
    feed = _EventFeed(client, job_id)
    started = time.monotonic()
    bar = None
    last_status = None
    last_metrics: dict = {}
    failures = 0
    shown_postfix = ""
    current = job if not isinstance(job, str) else None

    def say(line: str) -> None:
        if print_events:
            (bar.write if bar is not None else print)(line)

    try:
        while True:
            try:
                current = client.fine_tuning.jobs.retrieve(job_id)
                new = feed.poll()
                failures = 0
            except Exception as e:
                if not _is_transient(e):
                    raise
                failures += 1
                wait = min(60.0, poll * 2 ** min(failures, 5))
                say(f"(could not reach the API: {type(e).__name__}; retrying in {wait:.0f} s -- the job is unaffected)")
                time.sleep(wait)
                continue
            for event in new:
                data = _metric_data(event)
                if data is None:
                    say(_event_line(event))
                    continue
                last_metrics = data
                total = data.get("total_steps")
                if bar is None and total:
                    bar = tqdm(total=int(total), desc=job_id, unit="step", dynamic_ncols=True)
                    every = metrics_every or max(1, int(total) // 10)
                if bar is not None:
                    if total and bar.total != int(total):
                        bar.total = int(total)
                    bar.update(max(0, int(data["step"]) - bar.n))
                    step = int(data["step"])
                    if step % every == 0 or step == bar.total or "valid_loss" in data or "valid_reward_mean" in data:
                        say(_event_line(event))
            status = current.status
            if status != last_status:
                if status not in KNOWN_STATUSES:
                    say(f"status: {status} (a status ftkit does not know; shown as is, still watching)")
                elif bar is None:
                    say(f"status: {status}")
                last_status = status
            if bar is not None:
                parts = [status]
                if "train_loss" in last_metrics:
                    parts.append(f"loss {float(last_metrics['train_loss']):.3f}")
                parts += _preference_parts(last_metrics)
                eta = getattr(current, "estimated_finish", None)
                if eta and status not in TERMINAL_STATUSES:
                    parts.append(f"finish ~{_local_time(eta):%H:%M}")
                postfix = " | ".join(parts)
                if postfix != shown_postfix:  # redraw only on change: logs stay short where there is no TTY
                    bar.set_postfix_str(postfix, refresh=True)
                    shown_postfix = postfix
            if _is_finished(current):
                break
            if status == "paused" and return_when_paused:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise WatchTimeout(
                    f"stopped watching {job_id} after {_duration(timeout)}; the job keeps going on the server "
                    f"(status {status}). Watch again with ftkit.jobs.watch(client, '{job_id}').", current)
            time.sleep(poll)
    except KeyboardInterrupt:
        status = current.status if current is not None else "unknown"
        raise StoppedWatching(
            f"Stopped watching {job_id}. The job itself keeps going on the server (status: {status}).\n"
            f"Watch again with ftkit.jobs.watch(client, '{job_id}'), or stop it with "
            f"ftkit.jobs.cancel(client, '{job_id}').", current) from None
    finally:
        if bar is not None:
            if current is not None and current.status == lifecycle.SUCCEEDED and bar.total:
                bar.update(bar.total - bar.n)
            bar.close()
    _print_outcome(current, time.monotonic() - started)
    return current


def _print_outcome(job, waited: float) -> None:
    took = (job.finished_at - job.created_at) if job.finished_at and job.created_at else None
    if job.status == lifecycle.SUCCEEDED:
        print(f"{job.id} succeeded in {_duration(took)}: {job.fine_tuned_model}")
    elif job.status == "failed":
        error = _as_dict(job.error)
        print(f"{job.id} failed: {error.get('message') or error or 'no reason given'}")
    elif job.status == lifecycle.CANCELLED:
        print(f"{job.id} was cancelled")
    elif job.status == "paused":
        print(f"{job.id} is paused: it will not move until resumed -- ftkit.jobs.resume(client, '{job.id}'), "
              "then watch it again")
    else:
        print(f"{job.id} ended with status {job.status!r}")

"""The live monitor: :class:`JobMonitor` / :func:`monitor`, an ipywidgets dashboard updated by a
background thread, with a static copy of the final state for exported HTML and CI.

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

from .. import lifecycle
from ..backend import backend_of
from .api import TERMINAL_STATUSES, _as_dict, _is_transient, _job_id
from .plotting import plot_metrics
from .reading import checkpoints, step_metrics_from_events
from .watching import (
    _event_line,
    _EventFeed,
    _finish_text,
    _is_finished,
    _metric_data,
    _preference_parts,
)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


class JobMonitor:
    """A live dashboard of one job for JupyterLab: status, a loss chart that grows while the job
    trains, the latest events and the checkpoints -- updated by a background thread, so the
    kernel stays free (you can keep working, or run :func:`watch` in the next cell).

    The thread polls every ``poll`` seconds and stops by itself when the job ends, after
    ``max_minutes``, after repeated API errors, or when you press *Stop monitoring* (or call
    :meth:`stop`). The job is never touched.

    Displaying it shows the widget and, below, a static copy (chart + tables as plain HTML)
    that is refreshed when the job ends -- what exported HTML and CI logs keep where widgets
    cannot run. Without ipywidgets only the static copy is shown (refreshed on each poll).
    :meth:`snapshot_html` gives that copy at any time; :meth:`wait` blocks until the job ends.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """

    def __init__(self, client, job, *, poll: float | None = None, max_minutes: float = 12 * 60,
                 n_events: int = 8, start: bool = True) -> None:
        self.client = client
        self.job_id = _job_id(job)
        self.job = job if not isinstance(job, str) else None
        self.poll = poll if poll is not None else (3.0 if not backend_of(client).paid else 15.0)
        self.max_minutes = max_minutes
        self.n_events = n_events
        self.events: list = []
        self.metrics_rows: list[dict] = []
        self.checkpoints_df = None
        self.error: str | None = None
        self.updates = 0
        self._feed = _EventFeed(client, self.job_id)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._chart_steps = -1
        self._static_handle = None
        self._lock = threading.Lock()
        self.widget = self._build_widget()
        if start:
            self.start()

    # -- widgets ---------------------------------------------------------------------------------

    def _build_widget(self):
        try:
            import ipywidgets as w
        except ImportError:
            return None
        self.w_status = w.HTML(value=f"<b>{self.job_id}</b>: starting...")
        self.w_chart = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.w_events = w.HTML()
        self.w_checkpoints = w.HTML()
        self.w_stop = w.Button(description="Stop monitoring", tooltip="Stops this monitor; the job keeps going",
                               icon="stop", layout=w.Layout(width="auto"))
        self.w_stop.on_click(lambda _: self.stop())
        box = w.VBox([self.w_status, self.w_chart,
                      w.HTML("<b>Latest events</b>"), self.w_events,
                      w.HTML("<b>Checkpoints</b>"), self.w_checkpoints, self.w_stop])
        box.add_class("ftkit-job-monitor")
        return box

    # -- the polling thread ------------------------------------------------------------------------

    def start(self) -> JobMonitor:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._done.clear()
            self._thread = threading.Thread(target=self._run, name=f"ftkit-monitor-{self.job_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop monitoring (the job is not touched)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the monitor stops (the job ended, or it was stopped); return the job."""
        self._done.wait(timeout)
        return self.job

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_minutes * 60
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.refresh()
                    failures = 0
                except Exception as e:  # keep the kernel's thread quiet; show the problem
                    failures += 1
                    self.error = f"{type(e).__name__}: {e}"
                    self._render(final=False)
                    if failures >= 10 or not _is_transient(e) and failures >= 3:
                        self.error += " -- monitoring stopped (the job is not affected)"
                        break
                if self.job is not None and _is_finished(self.job):
                    break
                if time.monotonic() > deadline:
                    self.error = f"monitoring stopped after {self.max_minutes:g} minutes (the job is not affected)"
                    break
                self._stop.wait(self.poll * (1 + min(failures, 5)))
        finally:
            try:
                self._render(final=True)
            finally:
                self._done.set()

    def refresh(self) -> None:
        """Poll the API once and redraw (the thread calls this; you may too)."""
        with self._lock:
            self.job = self.client.fine_tuning.jobs.retrieve(self.job_id)
            new = self._feed.poll()
            for event in new:
                data = _metric_data(event)
                if data is not None:
                    self.metrics_rows.append(data)
            self.events.extend(new)
            if self.checkpoints_df is None or any("Checkpoint" in e.message for e in new) or _is_finished(self.job):
                self.checkpoints_df = checkpoints(self.client, self.job)
            self.updates += 1
        self._render(final=False)

    # -- rendering ---------------------------------------------------------------------------------

    def metrics(self):
        """Step metrics seen so far (from metrics events), with the results file's columns."""
        import pandas as pd

        return step_metrics_from_events(pd.DataFrame({"data": list(self.metrics_rows)}))

    def status_html(self) -> str:
        import html

        job = self.job
        if job is None:
            return f"<b>{html.escape(self.job_id)}</b>: waiting for the first poll"
        colour = {lifecycle.SUCCEEDED: "#1a7f37", lifecycle.FAILED: "#cf222e", lifecycle.CANCELLED: "#6e7781"}.get(job.status, "#0969da")
        parts = [f"<b>{html.escape(job.id)}</b> on {html.escape(job.model)}: "
                 f"<b style='color:{colour}'>{html.escape(str(job.status))}</b>"]
        if self.metrics_rows:
            last = self.metrics_rows[-1]
            total = last.get("total_steps")
            parts.append(f"step {last['step']}{f'/{total}' if total else ''}, "
                         f"training loss {float(last['train_loss']):.3f}"
                         + "".join(f", {p}" for p in _preference_parts(last)))
        finish = _finish_text(job)
        if finish and job.status not in TERMINAL_STATUSES:
            parts.append(finish)
        if job.fine_tuned_model:
            parts.append(f"model <code>{html.escape(job.fine_tuned_model)}</code>")
        error = _as_dict(job.error).get("message")
        if error:
            parts.append(f"<span style='color:#cf222e'>{html.escape(error)}</span>")
        if self.error:
            parts.append(f"<span style='color:#9a6700'>{html.escape(self.error)}</span>")
        if not self.running and job.status not in TERMINAL_STATUSES:
            parts.append("<i>(not monitoring)</i>")
        return " &middot; ".join(parts)

    def events_html(self) -> str:
        import html

        recent = [e for e in self.events if _metric_data(e) is None][-self.n_events:]
        if self.metrics_rows and self.events and _metric_data(self.events[-1]) is not None:
            recent = (recent + [self.events[-1]])[-self.n_events:]
        if not recent:
            return "<i>no events yet</i>"
        items = "".join(f"<li><code>{html.escape(_event_line(e))}</code></li>" for e in recent)
        return f"<ul style='margin:0'>{items}</ul>"

    def checkpoints_html(self) -> str:
        df = self.checkpoints_df
        if df is None or not len(df):
            return "<i>none yet (one per epoch)</i>"
        cols = ["step", "checkpoint", "train_loss", "full_valid_loss", "full_valid_mean_token_accuracy",
                "full_valid_reward_margin", "full_valid_preference_accuracy", "full_valid_reward_mean",
                "full_valid_reward_std"]
        cols = [c for c in cols if c in df and (c in ("step", "checkpoint") or df[c].notna().any())]
        return df[cols].to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="")

    def figure(self):
        """The chart of the metrics seen so far (None before the first step)."""
        df = self.metrics()
        if not len(df):
            return None
        total = self.metrics_rows[-1].get("total_steps") if self.metrics_rows else None
        return plot_metrics(df, self.checkpoints_df, title=f"{self.job_id}: {self.job.status if self.job else ''}",
                            total_steps=total)

    def snapshot_html(self) -> str:
        """A static copy of the current state: status, chart (PNG), events and checkpoints."""
        fig = self.figure()
        img = ""
        if fig is not None:
            png = base64.b64encode(_figure_png(fig)).decode("ascii")
            img = f"<img alt='training curves' src='data:image/png;base64,{png}' style='max-width:100%'/>"
        return (f"<div class='ftkit-job-monitor-static'><p>{self.status_html()}</p>{img}"
                f"<p><b>Latest events</b></p>{self.events_html()}"
                f"<p><b>Checkpoints</b></p>{self.checkpoints_html()}</div>")

    def _render(self, *, final: bool) -> None:
        try:
            if self.widget is not None:
                self.w_status.value = self.status_html()
                steps = len(self.metrics_rows)
                if steps != self._chart_steps or final:
                    fig = self.figure()
                    if fig is not None:
                        self.w_chart.value = _figure_png(fig)
                    self._chart_steps = steps
                self.w_events.value = self.events_html()
                self.w_checkpoints.value = self.checkpoints_html()
                if final:
                    self.w_stop.disabled = True
                    self.w_stop.description = "Monitoring stopped"
            if self._static_handle is not None and (final or self.widget is None):
                from IPython.display import HTML

                note = ("<p><i>Static copy of the monitor's final state (kept in exported HTML).</i></p>" if final
                        else "")
                self._static_handle.update(HTML(note + self.snapshot_html()))
        except Exception as e:  # drawing must never kill the thread or the kernel
            self.error = f"display problem: {type(e).__name__}: {e}"

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if self.widget is not None:
            display(self.widget)
            first = ("<p><i>A static copy of the final state (chart and tables) appears here when the job ends, "
                     "for exported HTML; the live monitor above updates while it runs.</i></p>")
        else:
            first = self.snapshot_html()
        if self._done.is_set():
            first = ("<p><i>Static copy of the monitor's final state (kept in exported HTML).</i></p>"
                     + self.snapshot_html())
        self._static_handle = display(HTML(first), display_id=True)
        if self._done.is_set():
            self._render(final=True)

    def __repr__(self) -> str:
        status = self.job.status if self.job is not None else "?"
        return f"JobMonitor({self.job_id}, status={status}, monitoring={self.running})"


def monitor(client, job, *, poll: float | None = None, max_minutes: float = 12 * 60) -> JobMonitor:
    """A live :class:`JobMonitor` for ``job``; show it as a cell's last expression. It updates in
    the background (the kernel stays free) and leaves a static copy of the final state.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    return JobMonitor(client, job, poll=poll, max_minutes=max_minutes)

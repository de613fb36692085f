"""ftkit.jobs against the real local server (tests/conftest.py), with tiny files and tiny jobs.

Tests that train are marked slow; each trains 10-20 short examples for 1 epoch (or is cancelled
early). The two tests of watch() that need statuses or interruptions a real server cannot be made
to produce on demand (an unknown status, Ctrl-C) use a scripted stand-in for the client.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
import types

import openai
import pandas as pd
import pytest
from conftest import tiny_chat_file, wait_for_job

from ftkit import catalog, course, jobs, lifecycle
from ftkit.backend import Backend

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True, scope="module")
def private_upload_record(tmp_path_factory):
    """Keep the upload record of these tests out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_UPLOADS_RECORD", str(tmp_path_factory.mktemp("record") / "uploads.json"))
        yield


def _file_ids(client) -> set[str]:
    return {f.id for f in client.files.list()}


def _job_ids(client) -> set[str]:
    return {j.id for j in client.fine_tuning.jobs.list(limit=100)}


def _counting_client(local_server):
    """A client for the same server that records every HTTP request it sends."""
    sent: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: sent.append(f"{r.method} {r.url.path}")]})
    c = openai.OpenAI(base_url=local_server.base_url, api_key=local_server.key, max_retries=0, http_client=http)
    return c, sent


# -- upload --------------------------------------------------------------------------------------


def test_upload_reuses_identical_content_only(client, tmp_path, capsys):
    path = tiny_chat_file(tmp_path / "train.jsonl", n=10, seed=11)
    first = jobs.upload(client, path)
    assert first.reused is False and first.bytes == path.stat().st_size
    assert "uploaded train.jsonl" in capsys.readouterr().out
    before = _file_ids(client)

    again = jobs.upload(client, path)
    assert again.id == first.id and again.reused is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "reused" in out and first.id in out  # one clear line
    # the same examples as a list, and as a DataFrame, are the same bytes: reused too
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert jobs.upload(client, records).id == first.id
    assert jobs.upload(client, pd.DataFrame(records)).id == first.id
    assert _file_ids(client) == before  # nothing new on the server

    changed = tiny_chat_file(tmp_path / "train2.jsonl", n=11, seed=11)
    second = jobs.upload(client, changed)
    assert second.id != first.id and second.reused is False
    assert jobs.file_sha256(changed) != jobs.file_sha256(path)

    client.files.delete(first.id)  # gone from the server: never reused
    third = jobs.upload(client, path)
    assert third.id not in (first.id, second.id) and third.reused is False
    assert client.files.content(third.id).content == path.read_bytes()


def test_upload_refuses_invalid_data_and_sends_nothing(client, tmp_path):
    path = tiny_chat_file(tmp_path / "bad.jsonl", n=12)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"role": "assistant"', '"role": "assistent"')
    path.write_text("\n".join(lines) + "\n")
    before = _file_ids(client)
    with pytest.raises(jobs.UploadRefused) as err:
        jobs.upload(client, path)
    message = str(err.value)
    assert "nothing was uploaded" in message and "line 5" in message and "unrecognized_role" in message
    assert err.value.report.errors[0].line == 5
    assert isinstance(err.value, ValueError)  # and an ftkit InvalidTrainingFile
    shown = err.value._render_traceback_()  # what a notebook shows: the summary, no traceback
    assert shown[0].startswith("UploadRefused: nothing was uploaded") and not any("Traceback" in s for s in shown)
    with pytest.raises(jobs.UploadRefused, match="too_few_examples"):
        jobs.upload(client, [json.loads(x) for x in lines[:3]])
    assert _file_ids(client) == before


# -- estimates and budgets -----------------------------------------------------------------------


def test_estimate_for_the_local_backend_says_cpu_time(client, tmp_path):
    path = tiny_chat_file(tmp_path / "est.jsonl", n=10, seed=3)
    f = jobs.upload(client, path, verbose=False)
    est = jobs.estimate(client, f, n_epochs=2)
    report = jobs._validate_for(path, MODEL, 10)
    assert est.backend == "local" and not est.paid and est.usd is None
    assert est.n_examples == 10 and est.n_epochs == 2 and est.tokens_per_epoch == report.billed_tokens(1) > 0
    assert est.billed_tokens == 2 * est.tokens_per_epoch
    assert "CPU time" in str(est) and "upload record" in str(est)
    auto = jobs.estimate(client, path)  # from the data itself; epochs: the API's rule for 10 examples
    assert auto.n_epochs == 10 and auto.tokens_per_epoch == est.tokens_per_epoch


def test_budget_refused_on_a_paid_backend_before_any_request(local_server, client, tmp_path):
    path = tiny_chat_file(tmp_path / "paid.jsonl", n=10, seed=5)
    f = jobs.upload(client, path, verbose=False)
    paid, sent = _counting_client(local_server)
    paid.ftkit_backend = Backend("openai", "test")  # bills like the hosted platform
    jobs_before = _job_ids(client)

    with pytest.raises(jobs.OverBudget) as err:
        jobs.create_job(paid, f, max_cost_usd=0.001)
    assert sent == []  # refused before any request
    est = err.value.estimate
    price = catalog.lookup("gpt-4.1-mini-2025-04-14").training_usd_per_1m
    assert est.model == "gpt-4.1-mini-2025-04-14" and est.n_epochs == 10  # the API default for 10 examples
    assert est.usd == pytest.approx(est.tokens_per_epoch * 10 * price / 1e6) and est.usd > 0.001
    assert "above max_cost_usd=$0.001" in str(err.value)

    with pytest.raises(jobs.ModelUnavailable, match="shut down"):  # gpt-4.1-nano shut down on 2026-10-23
        jobs.create_job(paid, f, model="gpt-4.1-nano-2025-04-14")
    assert sent == []

    # within budget, the request is sent (and this server, not being OpenAI, refuses the model)
    with pytest.raises(jobs.JobsError, match="not available for fine-tuning"):
        jobs.create_job(paid, f, max_cost_usd=5.0)
    assert sent == ["POST /v1/fine_tuning/jobs"]
    sent.clear()
    with pytest.raises(jobs.JobsError, match="not available for fine-tuning"):
        jobs.create_job(paid, f, max_cost_usd=0.001, allow_over_budget=True)
    assert sent == ["POST /v1/fine_tuning/jobs"]
    assert _job_ids(client) == jobs_before  # nothing created on the server


# -- results files -------------------------------------------------------------------------------

RESULTS_CSV = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
    "1,2.5,0.4,2.6,0.38\n2,1.25,0.6,,\n3,0.5,0.9,0.7,0.85\n"
)


def test_results_plain_and_base64_csv(client, tmp_path):
    encoded = base64.b64encode(RESULTS_CSV.encode()).decode()
    wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"  # as MIME wraps it
    frames = []
    for name, text in (("plain.csv", RESULTS_CSV), ("b64.csv", wrapped)):
        f = client.files.create(file=(name, text.encode()), purpose="fine-tune")
        frames.append(jobs.results(client, f.id))
    plain, decoded = frames
    pd.testing.assert_frame_equal(plain, decoded)
    assert list(plain.columns) == jobs.RESULT_COLUMNS
    assert plain["step"].tolist() == [1, 2, 3] and plain["train_loss"].tolist() == [2.5, 1.25, 0.5]
    assert plain["valid_loss"].isna().tolist() == [False, True, False]
    with pytest.raises(jobs.JobsError, match="neither CSV nor base64"):
        jobs.parse_results(b"\x00\x01 not a results file")


def test_plot_metrics_draws_the_expected_lines():
    res = jobs.parse_results(RESULTS_CSV)
    ckpts = pd.DataFrame({"step": [1, 3], "full_valid_loss": [2.4, 0.8], "full_valid_mean_token_accuracy": [0.4, 0.8]})
    fig = jobs.plot_metrics(res, ckpts)
    loss_ax, acc_ax = fig.axes
    labels = {line.get_label(): line for line in loss_ax.get_lines()}
    assert {"train loss", "validation loss", "full validation loss", "checkpoint"} <= set(labels)
    assert list(labels["train loss"].get_ydata()) == [2.5, 1.25, 0.5]
    assert list(labels["validation loss"].get_xdata()) == [1, 3]  # the step without validation is skipped
    assert list(labels["full validation loss"].get_ydata()) == [2.4, 0.8]
    acc_labels = {line.get_label() for line in acc_ax.get_lines()}
    assert {"train token accuracy", "validation token accuracy", "full validation token accuracy"} <= acc_labels
    long = pd.DataFrame({"step": range(1, 101), "train_loss": [1 / s for s in range(1, 101)]})
    smoothed = [line.get_label() for line in jobs.plot_metrics(long).axes[0].get_lines()]
    assert smoothed == ["train loss", "train loss (5-step average)"]


def test_triage_format_ok_is_the_trained_format():
    good = '{"category": "billing", "urgency": "low", "product": "api"}'
    assert course.triage_format_ok(good) and course.triage_format_ok(f"  {good}\n")
    for bad in ('{"urgency": "low", "category": "billing", "product": "api"}',  # key order
                '{"category": "payments", "urgency": "low", "product": "api"}',  # unknown label
                '{"category": "billing", "urgency": "low"}', f"Sure! {good}", None, "[]"):
        assert not course.triage_format_ok(bad), bad


# -- watch: statuses a real server cannot be made to show on demand ---------------------------------


class _ScriptedJobs:
    """Stands in for client.fine_tuning.jobs: each retrieve() returns the next scripted status."""

    def __init__(self, statuses, interrupt_at=None):
        self.statuses, self.calls, self.interrupt_at = list(statuses), 0, interrupt_at
        self.cancelled = False

    def retrieve(self, job_id):
        from openai.types.fine_tuning import FineTuningJob

        self.calls += 1
        if self.interrupt_at and self.calls >= self.interrupt_at:
            raise KeyboardInterrupt
        status = self.statuses[min(self.calls, len(self.statuses)) - 1]
        done = status in ("succeeded", "failed", "cancelled")
        return FineTuningJob.construct(id=job_id, status=status, model=MODEL, created_at=100,
                                       finished_at=160 if done else None, fine_tuned_model="ft:x" if done else None,
                                       estimated_finish=None, error=None)

    def list_events(self, job_id, **kw):
        from openai.types.fine_tuning import FineTuningJobEvent

        n = min(self.calls, 3)
        data = [FineTuningJobEvent.construct(id=f"ev{i}", created_at=100 + i, level="info", message=f"event {i}",
                                             object="fine_tuning.job.event", type="message", data={})
                for i in range(n, 0, -1)]
        return types.SimpleNamespace(data=data, has_more=False)

    def cancel(self, job_id):
        self.cancelled = True


def _scripted_client(scripted):
    return types.SimpleNamespace(fine_tuning=types.SimpleNamespace(jobs=scripted), base_url="http://127.0.0.1:1/v1",
                                 ftkit_backend=Backend("local", "test"))


def test_watch_shows_unknown_statuses_and_prints_each_event_once(capsys):
    scripted = _ScriptedJobs(["queued", "reticulating_splines", "reticulating_splines", "succeeded"])
    job = jobs.watch(_scripted_client(scripted), "ftjob-scripted", poll=0.01)
    out = capsys.readouterr().out
    assert job.status == "succeeded" and scripted.calls == 4
    assert "status: reticulating_splines (a status ftkit does not know" in out
    assert [out.count(f"event {i}") for i in (1, 2, 3)] == [1, 1, 1]
    assert out.index("event 1") < out.index("event 2") < out.index("event 3")


def test_interrupting_watch_stops_watching_not_the_job():
    scripted = _ScriptedJobs(["running"] * 10, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt) as err:
        jobs.watch(_scripted_client(scripted), "ftjob-scripted", poll=0.01)
    assert isinstance(err.value, jobs.StoppedWatching)
    assert "keeps going on the server (status: running)" in str(err.value)
    assert err.value.job.status == "running" and not scripted.cancelled


def test_paused_job_returns_unknown_finished_status_too(capsys):
    paused = jobs.watch(_scripted_client(_ScriptedJobs(["running", "paused"])), "ftjob-p", poll=0.01)
    assert paused.status == "paused" and "resume" in capsys.readouterr().out
    # a status ftkit does not know, with finished_at set, ends the watch
    from openai.types.fine_tuning import FineTuningJob

    scripted = _ScriptedJobs(["running"])
    scripted.retrieve = lambda job_id: FineTuningJob.construct(
        id=job_id, status="expired", model=MODEL, created_at=1, finished_at=2, estimated_finish=None, error=None)
    assert jobs.watch(_scripted_client(scripted), "ftjob-e", poll=0.01).status == "expired"


# -- DPO jobs: frames, plots, checkpoints and the monitor, from a DPO job's events and files ------

# The columns and numbers a DPO job of the local server writes (ftkit.lifecycle.RESULT_COLUMNS["dpo"]).
DPO_RESULTS_CSV = (
    "step,train_loss,train_reward_margin,train_preference_accuracy,train_chosen_reward,train_rejected_reward,"
    "valid_loss,valid_reward_margin,valid_preference_accuracy,valid_chosen_reward,valid_rejected_reward\n"
    "1,0.6931,0.0,0.0,0.0,0.0,0.6931,0.0,0.0,0.0,0.0\n"
    "2,0.61,0.2,0.6,0.05,-0.15,,,,,\n"
    "3,0.4,0.9,1.0,0.3,-0.6,0.45,0.8,0.75,0.2,-0.6\n"
)


def _dpo_event(n: int, data: dict, *, kind: str = "metrics"):
    from openai.types.fine_tuning import FineTuningJobEvent

    return FineTuningJobEvent.construct(id=f"ev{n}", created_at=100 + n, level="info", message=f"event {n}",
                                        object="fine_tuning.job.event", type=kind, data=data)


def _dpo_step_data() -> list[dict]:
    rows = jobs.parse_results(DPO_RESULTS_CSV).to_dict("records")
    return [{k: (int(v) if k == "step" else v) for k, v in row.items() if v == v} | {"total_steps": 3} for row in rows]


class _Page(list):
    """A page of the SDK: iterable, with ``.data`` and ``.has_more``."""

    has_more = False

    @property
    def data(self):
        return list(self)


class _ScriptedDpoJobs:
    """Stands in for client.fine_tuning.jobs of a finished DPO job: its events (newest first, as the
    API lists them) and its checkpoints, with the metric names the local server uses."""

    def __init__(self):
        data = _dpo_step_data()
        self.events = [_dpo_event(0, {}, kind="message")] + [_dpo_event(i + 1, d) for i, d in enumerate(data)]
        self.events.append(_dpo_event(9, {"step": 3, "full_valid_loss": 0.42, "full_valid_reward_margin": 0.85,
                                          "full_valid_preference_accuracy": 0.75, "full_valid_chosen_reward": 0.25,
                                          "full_valid_rejected_reward": -0.6}))
        self.checkpoints = types.SimpleNamespace(list=self._checkpoints)

    def retrieve(self, job_id):
        from openai.types.fine_tuning import FineTuningJob

        return FineTuningJob.construct(id=job_id, status="succeeded", model="ft:sft", created_at=100, finished_at=160,
                                       fine_tuned_model="ft:dpo", estimated_finish=None, error=None,
                                       method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}})

    def list_events(self, job_id, **kw):
        return _Page(reversed(self.events))

    def _checkpoints(self, job_id, **kw):
        from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

        metrics = {"step": 3, "train_loss": 0.4, "train_reward_margin": 0.9, "train_preference_accuracy": 1.0,
                   "train_chosen_reward": 0.3, "train_rejected_reward": -0.6, "valid_loss": 0.45,
                   "full_valid_loss": 0.42, "full_valid_reward_margin": 0.85, "full_valid_preference_accuracy": 0.75,
                   "full_valid_chosen_reward": 0.25, "full_valid_rejected_reward": -0.6}
        return [FineTuningJobCheckpoint.model_validate({
            "id": "ftckpt-1", "created_at": 150, "fine_tuned_model_checkpoint": "ft:dpo:ckpt-step-3",
            "fine_tuning_job_id": job_id, "metrics": metrics, "object": "fine_tuning.job.checkpoint",
            "step_number": 3})]


def test_dpo_results_and_events_give_the_dpo_columns():
    res = jobs.parse_results(DPO_RESULTS_CSV)
    assert list(res.columns) == lifecycle.RESULT_COLUMNS[lifecycle.DPO]
    assert jobs.method_of_metrics(res.columns) == "dpo"
    assert jobs.method_of_metrics(jobs.parse_results(RESULTS_CSV).columns) == "supervised"
    assert res["train_reward_margin"].tolist() == [0.0, 0.2, 0.9]
    assert res["valid_preference_accuracy"].isna().tolist() == [False, True, False]

    scripted = _ScriptedDpoJobs()
    ev = jobs.events(_scripted_client(scripted), "ftjob-dpo")
    frame = jobs.step_metrics_from_events(ev)  # while a job runs: the same columns as its results file
    assert list(frame.columns) == lifecycle.RESULT_COLUMNS[lifecycle.DPO]
    pd.testing.assert_frame_equal(frame, res, check_dtype=False)  # the full-validation event is not a step
    # a supervised job's events still give the supervised columns
    sft = pd.DataFrame({"data": [{"step": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.5, "total_steps": 2}]})
    assert list(jobs.step_metrics_from_events(sft).columns) == jobs.RESULT_COLUMNS


def test_dpo_checkpoints_and_best_checkpoint():
    client = _scripted_client(_ScriptedDpoJobs())
    ck = jobs.checkpoints(client, "ftjob-dpo")  # a bare id: the method comes from the metrics
    assert list(ck.columns) == ["step", "checkpoint", *jobs.DPO_CHECKPOINT_METRICS, "created_at", "id"]
    row = ck.iloc[0]
    assert row["full_valid_reward_margin"] == 0.85 and row["full_valid_preference_accuracy"] == 0.75
    assert row["train_rejected_reward"] == -0.6 and pd.isna(row["valid_reward_margin"])
    two = pd.DataFrame({"step": [2, 4], "full_valid_loss": [0.5, 0.6], "full_valid_reward_margin": [0.4, 0.9],
                        "full_valid_rejected_reward": [-0.1, -0.5]})
    assert jobs.best_checkpoint(two)["step"] == 2  # lowest loss
    assert jobs.best_checkpoint(two, "full_valid_reward_margin")["step"] == 4  # highest margin
    assert jobs.best_checkpoint(two, "full_valid_rejected_reward")["step"] == 4  # lowest rejected reward


def test_plot_metrics_draws_the_dpo_panels():
    res = jobs.parse_results(DPO_RESULTS_CSV)
    ckpts = pd.DataFrame({"step": [3], "full_valid_loss": [0.42], "full_valid_reward_margin": [0.85],
                          "full_valid_preference_accuracy": [0.75], "full_valid_chosen_reward": [0.25],
                          "full_valid_rejected_reward": [-0.6]})
    fig = jobs.plot_metrics(res, ckpts)
    loss_ax, margin_ax, acc_ax, rewards_ax = fig.axes

    def lines(ax):
        return {line.get_label(): line for line in ax.get_lines()}

    assert {"train loss", "validation loss", "full validation loss", "checkpoint"} <= set(lines(loss_ax))
    margin = lines(margin_ax)
    assert list(margin["train reward margin"].get_ydata()) == [0.0, 0.2, 0.9]
    assert list(margin["validation reward margin"].get_xdata()) == [1, 3]
    assert list(margin["full validation reward margin"].get_ydata()) == [0.85]
    acc = lines(acc_ax)
    assert {"train preference accuracy", "validation preference accuracy", "full validation preference accuracy",
            "chance (0.5)"} <= set(acc)
    assert acc_ax.get_ylim()[1] <= 1.05
    rewards = lines(rewards_ax)
    assert list(rewards["train chosen reward"].get_ydata()) == [0.0, 0.05, 0.3]
    assert list(rewards["train rejected reward"].get_ydata()) == [0.0, -0.15, -0.6]
    assert list(rewards["full validation rejected reward"].get_ydata()) == [-0.6]
    assert [ax.get_title() for ax in fig.axes] == ["DPO loss", "Reward margin (chosen - rejected)",
                                                  "Preference accuracy", "Chosen and rejected rewards"]
    assert len(jobs.plot_metrics(jobs.parse_results(RESULTS_CSV)).axes) == 2  # supervised: as before


def test_monitor_and_watch_show_a_dpo_job(capsys):
    scripted = _ScriptedDpoJobs()
    mon = jobs.JobMonitor(_scripted_client(scripted), "ftjob-dpo", start=False)
    mon.refresh()
    assert list(mon.metrics().columns) == lifecycle.RESULT_COLUMNS[lifecycle.DPO] and len(mon.metrics()) == 3
    status = mon.status_html()
    assert "training loss 0.400" in status and "margin 0.90" in status and "pref. acc. 1.00" in status
    assert "full_valid_reward_margin" in mon.checkpoints_html() and "0.8500" in mon.checkpoints_html()
    assert len(mon.figure().axes) == 4
    html = mon.snapshot_html()
    assert "<img" in html and "ckpt-step-3" in html
    job = jobs.watch(_scripted_client(_ScriptedDpoJobs()), "ftjob-dpo", poll=0.01)
    assert job.status == "succeeded" and "succeeded in" in capsys.readouterr().out


def test_create_job_sends_the_dpo_method_shape():
    sent = {}

    class _Jobs:
        def create(self, **kwargs):
            from openai.types.fine_tuning import FineTuningJob

            sent.update(kwargs)
            return FineTuningJob.construct(id="ftjob-new", status="validating_files", model=kwargs["model"])

    client = types.SimpleNamespace(fine_tuning=types.SimpleNamespace(jobs=_Jobs()), base_url="http://127.0.0.1:1/v1",
                                   ftkit_backend=Backend("local", "test"))
    jobs.create_job(client, "file-abc", model="ft:base:local:sft:1", method="dpo", beta=0.2, n_epochs=2,
                    training_data=[], verbose=False)
    assert sent["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}}}
    with pytest.raises(ValueError, match="beta"):
        jobs.create_job(client, "file-abc", beta=0.2, training_data=[], verbose=False)  # supervised has no beta
    with pytest.raises(ValueError, match="method must be one of"):
        jobs.create_job(client, "file-abc", method="rlhf", training_data=[], verbose=False)


# -- RFT jobs: frames, plots, checkpoints and the monitor, from a reinforcement job's events ------

# The columns and numbers a reinforcement job of the local server writes
# (ftkit.lifecycle.RESULT_COLUMNS["reinforcement"]).
RFT_RESULTS_CSV = (
    "step,train_loss,train_reward_mean,train_reward_std,train_grader_errors,train_completion_tokens,"
    "valid_reward_mean,valid_reward_std,valid_grader_errors,valid_completion_tokens\n"
    "1,0.0,0.4,0.3,2,24.5,,,,\n"
    "2,-0.01,0.55,0.25,1,23.0,0.5,0.2,0,22.0\n"
    "3,0.02,0.7,0.1,0,22.5,0.75,0.1,0,22.0\n"
)
RFT_CHECKPOINT = {"step": 3, "train_loss": 0.02, "train_reward_mean": 0.7, "train_reward_std": 0.1,
                  "train_grader_errors": 0, "train_completion_tokens": 22.5, "valid_reward_mean": 0.75,
                  "full_valid_reward_mean": 0.8, "full_valid_reward_std": 0.2, "full_valid_grader_errors": 0,
                  "full_valid_completion_tokens": 21.0}


class _ScriptedRftJobs(_ScriptedDpoJobs):
    """A finished reinforcement job: its step events and checkpoint, with the local server's names."""

    def __init__(self):
        rows = jobs.parse_results(RFT_RESULTS_CSV).to_dict("records")
        data = [{k: (int(v) if k == "step" else v) for k, v in row.items() if v == v} | {"total_steps": 3}
                for row in rows]
        self.events = [_dpo_event(0, {}, kind="message")] + [_dpo_event(i + 1, d) for i, d in enumerate(data)]
        self.checkpoints = types.SimpleNamespace(list=self._checkpoints)

    def retrieve(self, job_id):
        from openai.types.fine_tuning import FineTuningJob

        return FineTuningJob.construct(id=job_id, status="succeeded", model="ft:sft", created_at=100, finished_at=160,
                                       fine_tuned_model="ft:rft", estimated_finish=None, error=None,
                                       method={"type": "reinforcement", "reinforcement": {"hyperparameters": {}}})

    def _checkpoints(self, job_id, **kw):
        from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

        return [FineTuningJobCheckpoint.model_validate({
            "id": "ftckpt-1", "created_at": 150, "fine_tuned_model_checkpoint": "ft:rft:ckpt-step-3",
            "fine_tuning_job_id": job_id, "metrics": RFT_CHECKPOINT, "object": "fine_tuning.job.checkpoint",
            "step_number": 3})]


def test_rft_results_events_and_checkpoints_give_the_rft_columns():
    res = jobs.parse_results(RFT_RESULTS_CSV)
    assert list(res.columns) == lifecycle.RESULT_COLUMNS[lifecycle.REINFORCEMENT]
    assert jobs.method_of_metrics(res.columns) == "reinforcement"
    frame = jobs.step_metrics_from_events(jobs.events(_scripted_client(_ScriptedRftJobs()), "ftjob-rft"))
    pd.testing.assert_frame_equal(frame, res, check_dtype=False)
    ck = jobs.checkpoints(_scripted_client(_ScriptedRftJobs()), "ftjob-rft")  # a bare id: method from the metrics
    assert list(ck.columns) == ["step", "checkpoint", *jobs.RFT_CHECKPOINT_METRICS, "created_at", "id"]
    assert ck.iloc[0]["full_valid_reward_mean"] == 0.8 and ck.iloc[0]["train_reward_std"] == 0.1
    two = pd.DataFrame({"step": [2, 4], "full_valid_reward_mean": [0.9, 0.6]})
    assert jobs.best_checkpoint(two, "full_valid_reward_mean")["step"] == 2  # the highest reward


def test_plot_metrics_draws_the_rft_panels():
    res = jobs.parse_results(RFT_RESULTS_CSV)
    ckpts = pd.DataFrame({"step": [3], "full_valid_reward_mean": [0.8], "full_valid_completion_tokens": [21.0]})
    fig = jobs.plot_metrics(res, ckpts)
    assert [ax.get_title() for ax in fig.axes] == ["Reward", "Answer length", "Grader errors"]
    reward_ax = fig.axes[0]
    lines = {line.get_label(): line for line in reward_ax.get_lines()}
    assert list(lines["train reward"].get_ydata()) == [0.4, 0.55, 0.7]
    assert list(lines["validation reward"].get_xdata()) == [2, 3]
    assert list(lines["full validation reward"].get_ydata()) == [0.8]
    band = next(c for c in reward_ax.collections if c.get_label() == "train reward ± std (samples)")
    top = band.get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(0.8) and top.min() == pytest.approx(0.1)  # mean ± std: 0.55 + 0.25, 0.4 - 0.3
    errors = {line.get_label(): line for line in fig.axes[2].get_lines()}
    assert list(errors["train grader errors"].get_ydata()) == [2, 1, 0]


def test_monitor_and_watch_show_an_rft_job(capsys):
    mon = jobs.JobMonitor(_scripted_client(_ScriptedRftJobs()), "ftjob-rft", start=False)
    mon.refresh()
    status = mon.status_html()
    assert "reward 0.70 ± 0.10" in status and "valid. reward 0.75" in status
    assert "full_valid_reward_mean" in mon.checkpoints_html() and "0.8000" in mon.checkpoints_html()
    assert len(mon.figure().axes) == 3
    job = jobs.watch(_scripted_client(_ScriptedRftJobs()), "ftjob-rft", poll=0.01)
    assert job.status == "succeeded" and "succeeded in" in capsys.readouterr().out


def test_create_job_and_upload_speak_reinforcement():
    sent = {}

    class _Jobs:
        def create(self, **kwargs):
            from openai.types.fine_tuning import FineTuningJob

            sent.update(kwargs)
            return FineTuningJob.construct(id="ftjob-new", status="validating_files", model=kwargs["model"])

    client = types.SimpleNamespace(fine_tuning=types.SimpleNamespace(jobs=_Jobs()), base_url="http://127.0.0.1:1/v1",
                                   ftkit_backend=Backend("local", "test"))
    grader = {"type": "string_check", "name": "category", "operation": "eq",
              "input": "{{ sample.output_json.category }}", "reference": "{{ item.category }}"}
    jobs.create_job(client, "file-abc", model="ft:base:local:sft:1", method="reinforcement", grader=grader,
                    hyperparameters={"compute_multiplier": 2.0, "eval_samples": 2}, training_data=[], verbose=False)
    assert sent["method"] == {"type": "reinforcement", "reinforcement": {
        "grader": grader, "hyperparameters": {"compute_multiplier": 2.0, "eval_samples": 2}}}
    with pytest.raises(ValueError, match="needs a grader"):
        jobs.create_job(client, "file-abc", method="reinforcement", training_data=[], verbose=False)
    with pytest.raises(ValueError, match="compute_multiplier"):
        jobs.create_job(client, "file-abc", hyperparameters={"compute_multiplier": 2}, training_data=[], verbose=False)
    # upload validates RFT lines with the grader's fields, before anything is sent
    lines = [{"messages": [{"role": "user", "content": f"ticket {i}"}], "category": "billing"} for i in range(10)]
    lines[3] = {"messages": [{"role": "user", "content": "ticket 3"}]}  # no category for the grader
    with pytest.raises(jobs.UploadRefused) as refused:
        jobs.upload(client, lines, model=MODEL, method="reinforcement", grader=grader, verbose=False)
    problems = [(p.line, p.code) for p in refused.value.report.problems if p.severity == "error"]
    assert problems == [(4, "missing_grader_field")], problems
    with pytest.raises(jobs.UploadRefused):  # the same lines read as chat examples lack an answer
        jobs.upload(client, lines[:3] + lines[4:] + lines[:1], model=MODEL, verbose=False)


# -- real jobs -----------------------------------------------------------------------------------


# The jobs below test the lifecycle through ftkit.jobs (watch, events, results, checkpoints,
# pause, resume, cancel, cleanup, reuse), not what a model learns: they train the tiny registered
# model (conftest.tiny_model), through the same server, trainer and loop as SmolLM2.


@pytest.fixture(scope="module")
def tiny_job(client, tiny_model, tmp_path_factory):
    """One finished tiny job (10 examples, 1 epoch, batches of 5, a 4-example validation file)."""
    folder = tmp_path_factory.mktemp("tiny")
    train = jobs.upload(client, tiny_chat_file(folder / "train.jsonl", n=10, seed=21), verbose=False)
    valid = jobs.upload(client, tiny_chat_file(folder / "valid.jsonl", n=4, seed=22), min_examples=1, verbose=False)
    job = jobs.create_job(client, train, model=tiny_model, validation_file=valid, n_epochs=1, batch_size=5, seed=3,
                          suffix="jobs-test", metadata={"test": "test_jobs"}, verbose=False)
    assert job.model == tiny_model
    assert job.method.type == "supervised" and job.method.supervised.hyperparameters.n_epochs == 1
    return job


@pytest.mark.slow
def test_watch_returns_on_success_and_the_job_reads_back(client, tiny_job, tiny_model, capsys, tmp_path):
    tiny_examples = [json.loads(x) for x in tiny_chat_file(tmp_path / "q.jsonl", n=3, seed=99).read_text().splitlines()]
    job = jobs.watch(client, tiny_job, poll=0.5)
    out = capsys.readouterr().out
    assert job.status == "succeeded", job.error
    assert out.count("Fine-tuning job started") == 1 and out.count("The job has successfully completed") == 1
    assert "succeeded in" in out and job.fine_tuned_model in out

    ev = jobs.events(client, job)
    assert list(ev.columns) == ["created_at", "level", "type", "message", "step", "data", "id"]
    assert ev["created_at"].is_monotonic_increasing and ev["message"].iloc[-1] == jobs.COMPLETED_MESSAGE
    metrics = jobs.step_metrics_from_events(ev)
    assert metrics["step"].tolist() == [1, 2]

    res = jobs.results(client, job)
    assert list(res.columns) == jobs.RESULT_COLUMNS and res["step"].tolist() == [1, 2]
    assert (res["train_loss"] > 0).all() and res["train_accuracy"].between(0, 1).all()
    assert res["train_loss"].tolist() == metrics["train_loss"].tolist()  # the file and the events agree
    assert res["valid_loss"].notna().all()  # a validation file was given

    ck = jobs.checkpoints(client, job)
    assert ck["step"].tolist() == [2]
    assert ck["checkpoint"].iloc[0] == f"{job.fine_tuned_model}:ckpt-step-2"
    assert 0 < ck["full_valid_loss"].iloc[0] < 10 and 0 <= ck["full_valid_mean_token_accuracy"].iloc[0] <= 1
    assert jobs.best_checkpoint(ck)["step"] == 2

    fig = jobs.plot_metrics(res, ck)
    assert {"train loss", "validation loss", "full validation loss", "checkpoint"} <= {
        line.get_label() for line in fig.axes[0].get_lines()}

    recent = jobs.recent_jobs(client, 5, metadata={"test": "test_jobs"})
    row = recent.set_index("id").loc[job.id]
    assert row["status"] == "succeeded" and row["n_epochs"] == 1 and row["batch_size"] == 5
    assert row["trained_tokens"] == job.trained_tokens > 0

    side = jobs.ask_models(client, {"final": job.fine_tuned_model, "checkpoint": ck["checkpoint"].iloc[0],
                                    "base": tiny_model}, tiny_examples[:3], max_tokens=12)
    assert list(side.columns) == ["ticket", "expected", "final", "checkpoint", "base"] and len(side) == 3
    assert side["ticket"].iloc[0] == tiny_examples[0]["messages"][1]["content"]
    assert side["expected"].iloc[0] == tiny_examples[0]["messages"][2]["content"]
    assert side[["final", "checkpoint", "base"]].map(lambda a: isinstance(a, str) and len(a) > 0).all().all()
    assert (side["final"] == side["checkpoint"]).all()  # one epoch: the last checkpoint is the final model

    mon = jobs.JobMonitor(client, job, poll=0.2)  # on a finished job: one poll, then it stops
    assert mon.wait(30).status == "succeeded" and not mon.running
    html = mon.snapshot_html()
    assert "succeeded" in html and "<img" in html and "ckpt-step-2" in html
    assert mon.w_chart.value[:4] == b"\x89PNG" and "succeeded" in mon.w_status.value


@pytest.mark.slow
def test_watch_returns_on_failure(client, tiny_model, tmp_path, capsys):
    path = tiny_chat_file(tmp_path / "bad.jsonl", n=12)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"role": "assistant"', '"role": "assistent"')
    path.write_text("\n".join(lines) + "\n")
    raw = client.files.create(file=path.open("rb"), purpose="fine-tune")  # around upload()'s validation
    job = jobs.create_job(client, raw, model=tiny_model, n_epochs=1, verbose=False)
    job = jobs.watch(client, job, poll=0.5, timeout=300)
    out = capsys.readouterr().out
    assert job.status == "failed" and job.error.code == "invalid_training_file"
    assert "failed: The job failed due to an invalid training file" in out and "line 3" in out


@pytest.mark.slow
def test_pause_resume_cancel_with_watch_and_monitor(client, tiny_model, tmp_path, capsys):
    f = jobs.upload(client, tiny_chat_file(tmp_path / "long.jsonl", n=20, seed=9), verbose=False)
    # 60 steps of at least 50 ms (the test server's FTKIT_MIN_STEP_SECONDS): time to pause and cancel
    job = jobs.create_job(client, f, model=tiny_model, n_epochs=3, batch_size=1, verbose=False)
    mon = jobs.JobMonitor(client, job, poll=0.5)

    def when_step(step, then):
        def run():
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                steps = [e.data.get("step", 0) for e in client.fine_tuning.jobs.list_events(job.id, limit=5).data
                         if e.type == "metrics"]
                if max(steps, default=0) >= step:
                    then(client, job)
                    return
                time.sleep(0.3)
        threading.Thread(target=run, daemon=True).start()

    when_step(2, jobs.pause)
    paused = jobs.watch(client, job, poll=0.5, timeout=300)
    assert paused.status == "paused"
    assert "is paused" in capsys.readouterr().out
    _wait_for_event(client, job.id, "Job paused at step")  # the trainer has stopped and saved its state
    assert jobs.resume(client, job).status == "queued"
    wait_for_job(client, job.id, statuses=("running",))
    when_step(4, jobs.cancel)
    cancelled = jobs.watch(client, job, poll=0.5, timeout=300)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert "was cancelled" in capsys.readouterr().out
    with pytest.raises(jobs.JobsError, match="cannot cancel"):
        jobs.cancel(client, job)
    with pytest.raises(jobs.NotReady, match="no results file"):
        jobs.results(client, job)

    assert mon.wait(30).status == "cancelled" and not mon.running
    seen = mon.metrics()["step"].tolist()
    assert seen[:4] == [1, 2, 3, 4] and seen == sorted(seen) and mon.updates >= 3  # it followed the run live


def _wait_for_event(client, job_id, prefix, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.message.startswith(prefix) for e in client.fine_tuning.jobs.list_events(job_id, limit=20).data):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no event starting {prefix!r}")


@pytest.mark.slow
def test_triage_job_runs_once_then_reuses(client, tiny_model, monkeypatch, capsys):
    from ftkit import backend

    tiny = course.TriageSettings("quick", 10, 4, 1, 5, None, seed=1, why="test-sized")
    monkeypatch.setitem(course.TRIAGE_SETTINGS, "quick", tiny)
    monkeypatch.setitem(backend.DEFAULT_BASE_MODELS, "local", tiny_model)  # the backend's base model: the tiny one
    first = course.triage_job(client, quick=True)
    assert first.status == "succeeded" and first.user_provided_suffix == "ticket-triage"
    assert first.model == tiny_model
    assert first.metadata == {"course": "ftkit", "lesson": "04", "mode": "quick", "recipe": tiny.recipe}
    assert "Training the ticket-triage model" in capsys.readouterr().out
    again = course.triage_job(client, quick=True)
    assert again.id == first.id and "Reusing" in capsys.readouterr().out
    other = course.TriageSettings("quick", 10, 4, 1, 5, None, seed=2)
    assert other.recipe != tiny.recipe  # another recipe would not reuse it


@pytest.mark.slow
def test_cleanup_dry_run_then_real(client, tiny_job, tiny_model, tmp_path):
    job = wait_for_job(client, tiny_job.id)
    extra = jobs.upload(client, tiny_chat_file(tmp_path / "old.jsonl", n=10, seed=33), verbose=False)
    named_files = [extra.id, job.training_file]
    named_models = [job.fine_tuned_model, tiny_model]

    dry = jobs.cleanup(client, files=named_files, models=named_models)
    assert set(dry["id"]) == {*named_files, *named_models}
    actions = dict(zip(dry["id"], dry["action"]))
    assert actions[tiny_model] == "kept: a base model is never deleted"
    assert {actions[i] for i in [*named_files, job.fine_tuned_model]} == {"would delete"}
    assert client.files.retrieve(extra.id).id == extra.id  # a dry run deletes nothing
    assert client.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model

    recent = jobs.cleanup(client, files=True, models=True, older_than="1d")  # everything here is newer
    assert recent.empty

    done = jobs.cleanup(client, files=named_files, models=named_models, dry_run=False)
    assert dict(zip(done["id"], done["action"]))[extra.id] == "deleted"
    for file_id in named_files:
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)
    assert client.models.retrieve(tiny_model).id == tiny_model  # the base model is still there
    # the upload record forgets deleted files: the same content is uploaded anew
    assert jobs.upload(client, tmp_path / "old.jsonl", verbose=False).reused is False



@pytest.mark.slow
def test_resume_right_after_pause_never_trains_while_queued(client, tiny_model, tmp_path):
    """Resuming before the trainer has stopped withdraws the pause; it never trains while queued."""
    f = jobs.upload(client, tiny_chat_file(tmp_path / "race.jsonl", n=16, seed=4), verbose=False)
    # 48 steps of at least 50 ms: the job is still training when the pause and the resume arrive
    job = jobs.create_job(client, f, model=tiny_model, n_epochs=3, batch_size=1, verbose=False)
    _wait_for_step(client, job.id, 2)
    client.fine_tuning.jobs.pause(job.id)
    client.fine_tuning.jobs.resume(job.id)  # at once: the trainer has not seen the pause yet
    trained_while_queued = []
    seen = _last_step(client, job.id)
    while (current := client.fine_tuning.jobs.retrieve(job.id)).status not in jobs.TERMINAL_STATUSES:
        step = _last_step(client, job.id)
        if step > seen and current.status == "queued":
            trained_while_queued.append(step)
        seen = step
        time.sleep(0.3)
    assert current.status == "succeeded"
    assert trained_while_queued == []  # a queued job does not train


def _last_step(client, job_id) -> int:
    return max((e.data.get("step", 0) for e in client.fine_tuning.jobs.list_events(job_id, limit=20).data
                if e.type == "metrics" and "train_loss" in (e.data or {})), default=0)


def _wait_for_step(client, job_id, step, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    while _last_step(client, job_id) < step:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} did not reach step {step}")
        time.sleep(0.2)


def test_recipe_fingerprint_follows_what_shapes_the_result():
    examples = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
                for i in range(10)]
    recipe = jobs.Recipe("a test run", examples, "train.jsonl", hyperparameters={"n_epochs": 1},
                         labels={"course": "ftkit", "lesson": "test"})
    meta = recipe.metadata
    assert meta["course"] == "ftkit" and meta["lesson"] == "test" and len(meta["recipe"]) == 12
    assert jobs.Recipe("another name", examples, "other.jsonl", hyperparameters={"n_epochs": 1},
                       labels=recipe.labels).metadata == meta  # names and file names do not shape the model
    changed = [dataclasses.replace(recipe, hyperparameters={"n_epochs": 2}),
               dataclasses.replace(recipe, training=examples[:-1]),
               dataclasses.replace(recipe, model="ft:other"), dataclasses.replace(recipe, seed=7),
               dataclasses.replace(recipe, method=lifecycle.DPO), dataclasses.replace(recipe, validation=examples[:2])]
    assert len({r.metadata["recipe"] for r in changed} | {meta["recipe"]}) == len(changed) + 1
    assert dataclasses.replace(recipe, fingerprint="given").metadata["recipe"] == "given"


def test_ensure_job_runs_a_recipe_through_create_job(fake_client, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FTKIT_UPLOADS_RECORD", str(tmp_path / "uploads.json"))
    examples = [{"messages": [{"role": "user", "content": f"ensure {i}"}, {"role": "assistant", "content": "ok"}]}
                for i in range(10)]
    recipe = jobs.Recipe("the ensure test run", examples, "ensure-train.jsonl", validation=examples[:2],
                         validation_filename="ensure-valid.jsonl", hyperparameters={"n_epochs": 1, "batch_size": 2},
                         suffix="ensure", seed=3, labels={"course": "ftkit", "lesson": "test"},
                         description="test-sized")
    # the fake engine has no tokenizer, so the real server fails the job while validating its files
    with pytest.raises(RuntimeError, match="the ensure test run: the job ftjob-.* ended failed"):
        jobs.ensure_job(fake_client, recipe, timeout=60)
    out = capsys.readouterr().out
    assert "Training the ensure test run (test-sized)." in out and "Estimate for" in out  # create_job's estimate
    [created] = fake_client.fine_tuning.jobs.list(metadata=recipe.metadata, limit=10).data
    assert created.metadata == recipe.metadata and created.user_provided_suffix == "ensure" and created.seed == 3
    assert created.method.type == lifecycle.SUPERVISED
    assert created.method.supervised.hyperparameters.n_epochs == 1
    assert created.method.supervised.hyperparameters.batch_size == 2
    assert created.validation_file is not None
    # a failed job is never reused: the same recipe runs again
    with pytest.raises(RuntimeError, match="ended failed"):
        jobs.ensure_job(fake_client, recipe, timeout=60, verbose=False)
    assert len(fake_client.fine_tuning.jobs.list(metadata=recipe.metadata, limit=10).data) == 2


def test_hyperparameter_table_reads_the_spec_and_the_local_recipe():
    from ftkit import methods
    from ftkit.jobs import hyperparameter_table
    from ftkit.local.jobs.training.recipe import RECIPE

    table = hyperparameter_table()
    assert list(table.index) == ["n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha"]
    # OpenAI's spec (FineTuneSupervisedHyperparameters): epochs 1..50, batch 1..256, multiplier > 0
    assert table.loc["n_epochs", "hosted range"] == "1..50 or 'auto'"
    assert table.loc["batch_size", "hosted range"] == "1..256 or 'auto'"
    assert table.loc["learning_rate_multiplier", "hosted range"] == "> 0 (no maximum) or 'auto'"
    assert f"{methods.get('supervised').base_learning_rate:g}" in table.loc["learning_rate_multiplier", "local server"]
    assert f"fixed: {RECIPE.rank}," in table.loc["lora_rank", "local server"]
    assert f"fixed: {RECIPE.alpha} " in table.loc["lora_alpha", "local server"]
    assert table.loc["lora_rank", "hosted range"] == "not an API parameter"
    assert table[["if it underfits, try", "if it overfits, try"]].map(bool).all().all()

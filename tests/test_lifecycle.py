"""The job state machine (ftkit.local.jobs.jobstate) on a temporary store: every transition, its
event, and the races between the HTTP side, the worker and the trainer."""

from __future__ import annotations

import pytest

from ftkit import lifecycle as lc
from ftkit.local.api import wire
from ftkit.local.jobs import hyperparameters, jobstate
from ftkit.local.store import Store, new_id


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home")


def _job(store, **fields) -> str:
    job = jobstate.create(store, {"id": new_id("ftjob"), "model": "m", "training_file": "file-" + "a" * 24,
                                  "validation_file": None, "suffix": None, "seed": 1,
                                  "method": {"type": lc.SUPERVISED}, "metadata": None, "integrations": [],
                                  **fields})
    return job["id"]


def _status(store, job_id) -> str:
    return store.get_job(job_id)["status"]


def _messages(store, job_id) -> list[str]:
    events, _ = store.list_events(job_id, limit=100)
    return [e["message"] for e in reversed(events)]


def test_create_then_queue_start_succeed(store):
    job_id = _job(store)
    assert _status(store, job_id) == lc.VALIDATING_FILES
    assert _messages(store, job_id) == [lc.JOB_CREATED.format(training_file="file-" + "a" * 24)]
    assert jobstate.queue(store, job_id) and _status(store, job_id) == lc.QUEUED
    assert not jobstate.queue(store, job_id)  # only from validating_files
    assert jobstate.start(store, job_id) and _status(store, job_id) == lc.RUNNING
    assert not jobstate.start(store, job_id)
    assert jobstate.succeed(store, job_id, fine_tuned_model="ft:m:local::x", trained_tokens=10,
                            result_files=["file-r"], completion_data={"cpu_seconds": 1.0})
    job = store.get_job(job_id)
    assert job["status"] == lc.SUCCEEDED and job["fine_tuned_model"] == "ft:m:local::x"
    assert job["finished_at"] is not None and job["trained_tokens"] == 10 and job["result_files"] == ["file-r"]
    assert _messages(store, job_id)[-2:] == [lc.MODEL_CREATED.format(model="ft:m:local::x"), lc.COMPLETED]
    for transition in (jobstate.cancel, jobstate.pause):
        assert not transition(store, job_id)  # a terminal job never changes again
    assert not jobstate.fail(store, job_id, "x", "too late")
    assert _status(store, job_id) == lc.SUCCEEDED


def test_validation_event_names_both_files(store):
    job_id = _job(store, validation_file="file-" + "b" * 24)
    assert "and validation file: file-bbb" in _messages(store, job_id)[0]


def test_fail_from_every_active_status(store):
    for advance in ([], [jobstate.queue], [jobstate.queue, jobstate.start], [jobstate.queue, jobstate.pause]):
        job_id = _job(store)
        for step in advance:
            assert step(store, job_id)
        assert jobstate.fail(store, job_id, "invalid_training_file", "line 3: bad", "training_file")
        job = store.get_job(job_id)
        assert job["status"] == lc.FAILED
        assert job["error"] == {"code": "invalid_training_file", "message": "line 3: bad", "param": "training_file"}
        assert _messages(store, job_id)[-1] == "line 3: bad"


def test_cancel_wins_over_a_finishing_trainer(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    jobstate.start(store, job_id)
    assert jobstate.cancel(store, job_id)
    # the trainer finished its last step at the same moment: its success must not overwrite the cancel
    assert not jobstate.succeed(store, job_id, fine_tuned_model="ft:x", trained_tokens=1, result_files=[],
                                completion_data={})
    job = store.get_job(job_id)
    assert job["status"] == lc.CANCELLED and job["fine_tuned_model"] is None
    assert lc.MODEL_CREATED.format(model="ft:x") not in _messages(store, job_id)


def test_finish_before_cancel_cannot_be_cancelled(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    jobstate.start(store, job_id)
    assert jobstate.succeed(store, job_id, fine_tuned_model="ft:x", trained_tokens=1, result_files=[],
                            completion_data={})
    assert not jobstate.cancel(store, job_id)
    assert _status(store, job_id) == lc.SUCCEEDED


def test_pause_then_resume_before_the_trainer_acknowledged(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    jobstate.start(store, job_id)
    jobstate.record_trainer(store, job_id, 4242)
    assert jobstate.pause(store, job_id) and _status(store, job_id) == lc.PAUSED
    # resumed while the trainer is still up: the pause is withdrawn, the job runs on
    assert jobstate.resume(store, job_id) == lc.RUNNING
    # the trainer then tries to acknowledge the pause it saw: refused, so it keeps training
    assert not jobstate.acknowledge_pause(store, job_id, step=3, total_steps=10)
    job = store.get_job(job_id)
    assert job["status"] == lc.RUNNING and job["trainer_pid"] == 4242


def test_pause_acknowledged_then_resume_queues_again(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    jobstate.start(store, job_id)
    jobstate.record_trainer(store, job_id, 4242)
    assert jobstate.pause(store, job_id)
    assert jobstate.acknowledge_pause(store, job_id, step=3, total_steps=10)
    assert store.get_job(job_id)["trainer_pid"] is None
    assert _messages(store, job_id)[-1] == lc.PAUSED_AT.format(step=3, total_steps=10)
    assert jobstate.resume(store, job_id) == lc.QUEUED  # a new trainer continues from the saved state
    assert jobstate.resume(store, job_id) is None  # not paused any more
    assert _messages(store, job_id)[-1] == lc.RESUMED_MESSAGE


def test_pause_a_queued_job_and_resume_it(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    assert jobstate.pause(store, job_id)
    assert jobstate.resume(store, job_id) == lc.QUEUED
    assert not jobstate.pause(store, _job(store))  # validating_files cannot be paused


def test_requeue_after_crash_counts_interruptions_then_fails(store):
    job_id = _job(store)
    jobstate.queue(store, job_id)
    for attempt in range(1, 3):
        jobstate.start(store, job_id)
        jobstate.record_trainer(store, job_id, 99)
        assert jobstate.requeue_after_crash(store, job_id, max_interruptions=2, resumable=attempt > 1) == lc.QUEUED
        job = store.get_job(job_id)
        assert job["interruptions"] == attempt and job["trainer_pid"] is None
    assert "resume from its last saved state" in _messages(store, job_id)[-1]
    jobstate.start(store, job_id)
    assert jobstate.requeue_after_crash(store, job_id, max_interruptions=2, resumable=True) == lc.FAILED
    assert store.get_job(job_id)["error"]["code"] == "training_interrupted"
    assert jobstate.requeue_after_crash(store, job_id, max_interruptions=2, resumable=True) is None


def test_withdrawn_metrics_events(store):
    job_id = _job(store)
    for step in (1, 2, 3, 4):
        store.add_event(job_id, f"Step {step}", type="metrics", data={"step": step, "train_loss": 1.0})
    store.add_event(job_id, "Full validation", type="metrics", data={"step": 4, "full_valid_loss": 0.5})
    assert store.delete_metrics_events_after(job_id, 2) == 3
    steps = [e["data"]["step"] for e in store.list_events(job_id, limit=100)[0] if e["type"] == "metrics"]
    assert sorted(steps) == [1, 2]


# -- hyperparameters -------------------------------------------------------------------------------


def test_hyperparameter_ranges_per_method():
    assert hyperparameters.check(lc.DPO, {"beta": 2}) == {"batch_size": "auto", "learning_rate_multiplier": "auto",
                                                        "n_epochs": "auto", "beta": 2}
    for method, hp, name in [(lc.DPO, {"beta": 0}, "beta"), (lc.DPO, {"beta": 2.5}, "beta"),
                             (lc.SUPERVISED, {"beta": 0.1}, "beta"), (lc.SUPERVISED, {"n_epochs": 51}, "n_epochs"),
                             (lc.SUPERVISED, {"n_epochs": 2.5}, "n_epochs"), (lc.SUPERVISED, {"batch_size": True},
                                                                                 "batch_size"),
                             (lc.SUPERVISED, {"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
                             (lc.SUPERVISED, {"learning_rate_multiplier": float("nan")}, "learning_rate_multiplier"),
                             (lc.REINFORCEMENT, {"reasoning_effort": "max"}, "reasoning_effort"),
                             (lc.REINFORCEMENT, {"compute_multiplier": 11}, "compute_multiplier"),
                             (lc.REINFORCEMENT, {"eval_interval": 0}, "eval_interval")]:
        with pytest.raises(hyperparameters.InvalidHyperparameter) as err:
            hyperparameters.check(method, hp)
        assert err.value.name == name, (method, hp)


def test_auto_values_are_resolved():
    sft = hyperparameters.resolve(lc.SUPERVISED, {}, 259)
    assert sft == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}
    assert hyperparameters.resolve(lc.SUPERVISED, {"n_epochs": 2}, 40) == {"n_epochs": 2, "batch_size": 4,
                                                                          "learning_rate_multiplier": 1.0}
    assert hyperparameters.resolve(lc.SUPERVISED, {}, 20)["n_epochs"] == 5  # ~100 example-passes
    dpo = hyperparameters.resolve(lc.DPO, {"beta": "auto"}, 40)
    assert dpo["beta"] == hyperparameters.DEFAULT_BETA == 0.1
    rft = hyperparameters.resolve(lc.REINFORCEMENT, {"compute_multiplier": 2}, 40)
    assert rft["n_epochs"] == 1 and rft["eval_interval"] == 1 and rft["reasoning_effort"] == "default"
    assert hyperparameters.samples_per_prompt(rft["compute_multiplier"]) == 8
    assert hyperparameters.learning_rate(lc.DPO, dpo) == hyperparameters.BASE_LEARNING_RATE[lc.DPO]


def test_reinforcement_jobs_echo_only_values_the_spec_allows(store, check_schema):
    """reasoning_effort has no "auto" in the spec: a job echoes the value sent or the spec's
    default ("default"), as created (queued) and once training resolved the rest."""
    grader = {"type": "string_check", "name": "g", "operation": "eq", "input": "{{ sample.output_text }}",
              "reference": "x"}
    for sent, echoed in [({}, "default"), ({"reasoning_effort": "high"}, "high"),
                         ({"reasoning_effort": "auto"}, "default")]:  # "auto": jobs stored before the fix
        checked = hyperparameters.check(lc.REINFORCEMENT, sent)
        assert checked["reasoning_effort"] == echoed and checked["n_epochs"] == "auto"
        method = {"type": lc.REINFORCEMENT, lc.REINFORCEMENT: {"grader": grader, "hyperparameters": checked}}
        job_id = _job(store, method=method)
        check_schema(wire.job_object(store.get_job(job_id)), "FineTuningJob")
        resolved = hyperparameters.resolve(lc.REINFORCEMENT, checked, 24)
        assert resolved["reasoning_effort"] == echoed
        store.update_job(job_id, method={**method, lc.REINFORCEMENT: {"grader": grader, "hyperparameters": resolved}})
        check_schema(wire.job_object(store.get_job(job_id)), "FineTuningJob")

"""Fine-tuning methods beyond supervised on the real server, driven by the official SDK exactly as
for OpenAI: a DPO job on top of a supervised one (SFT then DPO), its echo of the method, metrics,
results file and checkpoints, serving the result, and files of the wrong kind for a method.

What is tested is the methods' plumbing (the API shapes, metrics, checkpoints, chaining an ``ft:``
model), so the jobs train the tiny registered model (tests/tiny.py) through the same trainer and
loop as SmolLM2; DPO's maths is checked against TRL in tests/test_reference_losses.py."""

from __future__ import annotations

import csv
import io

import pytest
from conftest import TINY_MODEL, tiny_chat_file, tiny_preference_file, wait_for_job

from ftkit import lifecycle as lc

pytestmark = pytest.mark.slow

MODEL = TINY_MODEL


@pytest.fixture(scope="module")
def sft_model(client, tiny_model, tmp_path_factory):
    path = tiny_chat_file(tmp_path_factory.mktemp("m") / "sft.jsonl", n=10)
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, suffix="sft", seed=3,
                                         method={"type": "supervised",
                                                 "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}})
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    return job.fine_tuned_model


@pytest.fixture(scope="module")
def preference_files(client, tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo")
    train = client.files.create(file=tiny_preference_file(d / "train.jsonl", n=10).open("rb"), purpose="fine-tune")
    valid = client.files.create(file=tiny_preference_file(d / "valid.jsonl", n=4, seed=1).open("rb"),
                                purpose="fine-tune")
    return train, valid


def test_dpo_job_on_a_fine_tuned_model(client, check_schema, sft_model, preference_files):
    train, valid = preference_files
    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=sft_model, training_file=train.id, validation_file=valid.id, suffix="dpo", seed=11,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}}})
    check_schema(raw.http_response.json(), "FineTuningJob")
    created = raw.parse()
    assert created.method.type == "dpo" and created.method.dpo.hyperparameters.beta == "auto"
    job = wait_for_job(client, created.id)
    assert job.status == "succeeded", job.error
    check_schema(client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json(), "FineTuningJob")
    hp = job.method.dpo.hyperparameters
    assert (hp.beta, hp.n_epochs, hp.batch_size) == (0.1, 2, 5)  # "auto" resolved and echoed
    assert job.hyperparameters.n_epochs == 2 and job.model == sft_model
    assert job.fine_tuned_model.startswith(f"ft:{MODEL}:local:dpo:")

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert sorted(m["step"] for m in metrics) == [1, 2, 3, 4]
    assert {"train_reward_margin", "train_preference_accuracy", "train_chosen_reward",
            "train_rejected_reward"} <= set(metrics[0])
    results = lc.results_csv(client.files.content(job.result_files[0]).read())
    rows = list(csv.DictReader(io.StringIO(results)))
    assert list(rows[0]) == lc.RESULT_COLUMNS[lc.DPO] and [int(r["step"]) for r in rows] == [1, 2, 3, 4]

    checkpoints = client.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id)
    check_schema(checkpoints.http_response.json(), "ListFineTuningJobCheckpointsResponse")
    ckpts = checkpoints.parse().data
    assert [c.step_number for c in ckpts] == [4, 2]
    assert {"full_valid_loss", "full_valid_reward_margin", "full_valid_preference_accuracy"} <= set(
        ckpts[0].metrics.model_dump(exclude_none=True) | (ckpts[0].metrics.model_extra or {}))

    for model in (job.fine_tuned_model, ckpts[-1].fine_tuned_model_checkpoint):
        answer = client.chat.completions.create(model=model, max_tokens=12, temperature=0,
                                                messages=[{"role": "user", "content": "Ticket: my invoice is wrong"}])
        assert answer.choices[0].message.content is not None


def test_files_of_the_wrong_kind_fail_the_job_naming_it(client, tiny_model, preference_files, tmp_path):
    train, _ = preference_files
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id)  # supervised on DPO pairs
    job = wait_for_job(client, job.id)
    assert job.status == "failed" and job.error.param == "training_file"
    assert "preference" in job.error.message and "'dpo'" in job.error.message
    chat = client.files.create(file=tiny_chat_file(tmp_path / "c.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=chat.id, method={"type": "dpo"})
    job = wait_for_job(client, job.id)
    assert job.status == "failed" and "chat examples" in job.error.message

"""ftkit.distill: stored completions of a teacher -> a validated chat training file (issue 24).
Fast: the real app on the fake engine, through the official SDK."""

from __future__ import annotations

import json

import pytest
from conftest import wait_for_job

from ftkit.distill import distill_file

MODEL = "SmolLM2-135M-Instruct"


def test_stored_completions_become_a_valid_training_file(fake_client, tmp_path):
    for i in range(12):
        fake_client.chat.completions.create(
            model=MODEL, store=True, metadata={"distill": "run1" if i < 10 else "other"}, max_tokens=4,
            messages=[{"role": "system", "content": "Triage."}, {"role": "user", "content": f"Ticket {i}"}])
    path, report = distill_file(fake_client, MODEL, {"distill": "run1"}, tmp_path / "student.jsonl", page_size=3)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 10  # paged 3 at a time, the other run's left out
    assert sorted(line["messages"][1]["content"] for line in lines) == sorted(f"Ticket {i}" for i in range(10))
    assert all([m["role"] for m in line["messages"]] == ["system", "user", "assistant"] for line in lines)
    assert lines[0]["messages"][2]["content"] == "Hello from the fake "
    assert report.ok, report


@pytest.mark.slow
def test_distil_the_tiny_teacher_and_train_a_student(client, tiny_model, tmp_path):
    """The whole path on the real server: store a teacher's answers, distil, train, and ask the
    student (an ft: model) through the legacy completions endpoint too."""
    for i in range(10):
        client.chat.completions.create(model=tiny_model, store=True, metadata={"distill": "tiny"}, max_tokens=8,
                                       temperature=0, messages=[{"role": "user", "content": f"Ticket {i}: refund"}])
    path, report = distill_file(client, tiny_model, {"distill": "tiny"}, tmp_path / "student.jsonl")
    assert report.ok, report
    assert len(path.read_text().splitlines()) == 10
    file = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_model, training_file=file.id,
                                         hyperparameters={"n_epochs": 1, "batch_size": 2})
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    answer = client.completions.create(model=job.fine_tuned_model, prompt="Ticket 3", max_tokens=3, temperature=0)
    assert answer.model == job.fine_tuned_model and answer.usage.completion_tokens >= 1

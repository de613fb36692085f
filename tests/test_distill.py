"""ftkit.distill: stored completions of a teacher -> a validated chat training file (issue 24).
Fast: the real app on the fake engine, through the official SDK."""

from __future__ import annotations

import json

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

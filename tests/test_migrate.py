"""The migration round trip between two real local servers, one playing the hosted platform.

A tiny job is trained on the "hosted" server; ``python -m ftkit migrate snapshot`` records it
through the variables the ``openai`` SDK reads (OPENAI_BASE_URL / OPENAI_API_KEY); a snapshot
cut off half way resumes without downloading or asking anything twice (requests are counted);
``replay`` re-creates the job on the course's local server (the shared test server) and ``compare``
reports how the replayed model agrees with the golden set.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import httpx
import openai
import pytest
from conftest import TINY_MODEL, LocalServer, register_tiny_model, tiny_chat_file, wait_for_job

from ftkit import migrate

pytestmark = pytest.mark.slow

# The round trip moves jobs, files and answers between two servers; what the model learns is not
# its subject, so both servers train the tiny registered model (tests/tiny.py, the same weights on
# both), through the same trainer and loop as SmolLM2. ftkit's catalog does not price the tiny
# model, so the golden set is approved with yes=True / --yes (a catalog model on the local backend
# costs 0 and needs no approval: tests/test_migrate_unit.py).
MODEL = TINY_MODEL
GOLDEN = 3


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    """The "hosted platform": a second local server with one finished tiny job."""
    home = tmp_path_factory.mktemp("hosted-home")
    register_tiny_model(home, tmp_path_factory.mktemp("hosted-tiny-llama"))
    server = LocalServer(home).start()
    client = server.client()
    data = tmp_path_factory.mktemp("hosted-data")
    train = client.files.create(file=tiny_chat_file(data / "train.jsonl", n=10).open("rb"), purpose="fine-tune")
    valid = client.files.create(file=tiny_chat_file(data / "valid.jsonl", n=5, seed=2).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=train.id, validation_file=valid.id, suffix="hosted", seed=11,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}},
        metadata={"team": "support"})
    job = wait_for_job(client, job.id, timeout=900)  # generous: CI machines can be busy
    assert job.status == "succeeded", job.error
    yield server, job
    server.stop()


def _counting_client(server, counts: collections.Counter, *, stop_at_chat: int | None = None):
    """An SDK client for ``server`` that counts requests by kind -- and, like a Ctrl-C or a lost
    connection, stops the program at the ``stop_at_chat``-th chat request."""

    def hook(request: httpx.Request) -> None:
        path = request.url.path
        kind = "download" if path.endswith("/content") else "chat" if path.endswith("/chat/completions") else "other"
        counts[kind] += 1
        if kind == "chat" and counts["chat"] == stop_at_chat:
            raise KeyboardInterrupt

    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0,
                         http_client=httpx.Client(event_hooks={"request": [hook]}, timeout=600))


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftkit", "migrate", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_snapshot_replay_compare_round_trip(hosted, local_server, client, tiny_model, tmp_path):
    assert tiny_model == MODEL  # the replay's target knows the same base model
    server, job = hosted
    snap = tmp_path / "snapshot"
    env = {k: v for k, v in os.environ.items() if k not in ("FTKIT_BACKEND", "AZURE_OPENAI_API_KEY")}
    env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=server.key, FTKIT_HOME=str(tmp_path / "unused-home"))

    # 1. A snapshot cut off after its first golden answer.
    counts: collections.Counter = collections.Counter()
    with pytest.raises(KeyboardInterrupt):
        migrate.snapshot(_counting_client(server, counts, stop_at_chat=2), snap, golden=GOLDEN, max_tokens=12,
                         yes=True, concurrency=1, progress=False, say=lambda _m: None)
    assert counts["download"] == 3  # training, validation and results files
    manifest = migrate.load_manifest(snap)
    record = manifest["jobs"][job.id]
    assert record["job"]["seed"] == 11 and record["job"]["metadata"] == {"team": "support"}
    assert record["job"]["method"]["supervised"]["hyperparameters"]["batch_size"] == 5
    assert len(record["checkpoints"]) == 1
    files = {f: manifest["files"][f] for f in (job.training_file, job.validation_file, *job.result_files)}
    assert all(f["status"] == "downloaded" for f in files.values())
    stamps = {f: (snap / e["path"]).stat().st_mtime_ns for f, e in files.items()}
    golden_path = snap / record["golden"]["path"]
    assert len(golden_path.read_text().splitlines()) == 1

    # 2. Resumed: nothing downloaded again, only the two missing answers asked.
    counts.clear()
    migrate.snapshot(_counting_client(server, counts), snap, golden=GOLDEN, max_tokens=12, yes=True, concurrency=1,
                     progress=False, say=lambda _m: None)
    assert (counts["download"], counts["chat"]) == (0, GOLDEN - 1)
    assert {f: (snap / e["path"]).stat().st_mtime_ns for f, e in files.items()} == stamps
    golden = [json.loads(line) for line in golden_path.read_text().splitlines()]
    assert len({g["index"] for g in golden}) == GOLDEN and all(g["model"] == job.fine_tuned_model for g in golden)
    assert all(g["messages"][-1]["role"] == "user" and g["reference"] for g in golden)

    # 3. The CLI, reading OPENAI_BASE_URL / OPENAI_API_KEY like the SDK: all recorded, nothing asked.
    again = _cli("snapshot", "--out", str(snap), "--golden", str(GOLDEN), "--max-tokens", "12", "--yes", env=env)
    assert again.returncode == 0, again.stderr
    assert "openai backend" in again.stdout and "every answer is already recorded" in again.stdout
    assert len(golden_path.read_text().splitlines()) == GOLDEN
    for path in [*snap.rglob("*"), None]:
        text = again.stdout + again.stderr if path is None else path.read_text(errors="ignore") if path.is_file() else ""
        assert server.key not in text  # the key is never printed or stored

    # 4. Replay onto the course's local server (the default target, whatever OPENAI_API_KEY says).
    replay = _cli("replay", str(snap), "--home", str(local_server.home), "--wait", env=env)
    assert replay.returncode == 0, replay.stderr + replay.stdout
    assert f"{MODEL} -> {MODEL}" in replay.stdout
    state = next(iter(migrate.load_manifest(snap)["replays"].values()))
    new_id = state["jobs"][job.id]["job_id"]
    new = client.fine_tuning.jobs.retrieve(new_id)
    assert new.status == "succeeded" and new.seed == 11 and new.user_provided_suffix == "hosted"
    assert new.metadata == {"team": "support", migrate.MIGRATED_FROM_KEY: job.id}
    assert new.method.supervised.hyperparameters.batch_size == 5
    assert new.method.supervised.hyperparameters.n_epochs == 1
    assert client.files.content(new.training_file).content == server.client().files.content(job.training_file).content

    # ... and running it again creates nothing twice.
    twice = _cli("replay", str(snap), "--home", str(local_server.home), env=env)
    assert twice.returncode == 0 and "already replayed" in twice.stdout
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={migrate.MIGRATED_FROM_KEY: job.id})] == [new_id]

    # 5. Compare the replayed model with the golden set.
    result = _cli("compare", str(snap), "--home", str(local_server.home), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(next(snap.glob("comparison-*.json")).read_text())
    (summary,) = report["summary"]
    assert summary["prompts"] == GOLDEN and summary["replayed_model"] == new.fine_tuned_model
    answers = report["answers"]
    assert [a["hosted"] for a in answers] == [g["answer"] for g in sorted(golden, key=lambda g: g["index"])]
    assert summary["identical"] == pytest.approx(sum(a["hosted"] == a["replayed"] for a in answers) / GOLDEN)
    first = sorted(golden, key=lambda g: g["index"])[0]
    now = client.chat.completions.create(model=new.fine_tuned_model, messages=first["messages"], temperature=0,
                                         max_tokens=12).choices[0].message.content
    assert answers[0]["replayed"] == now  # the report holds the replayed model's own answers
    assert "identical" in result.stdout and "report:" in result.stdout

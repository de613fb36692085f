"""kill -9 at the worst moments loses nothing (issue 12): the real server, one tiny job each.

One job (20 examples, 2 epochs of 10 steps) is hit by SIGKILL of the server at validation, just
after the first epoch's checkpoint and mid-epoch; after each restart it goes on and succeeds.
Then the home must be sound: SQLite's integrity check passes, every metric step is reported once
and in order (events and results file), every checkpoint once, nothing is left that the database
does not know (files/, models/), the resume state is gone, and every path is private.
A second job has its trainer killed: alone mid-epoch (a kill -9, the OOM killer), then with the
server (a power cut).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import LocalServer, loose_paths, register_tiny_model, tiny_chat_file, wait_for_job

from ftkit import lifecycle as lc
from ftkit.local.jobs.training.loop import MIN_STEP_ENV

pytestmark = pytest.mark.slow

STEPS = 20  # 20 examples, batch 2, 2 epochs
PACE_S = "0.3"  # each step of the tiny model lasts at least this long: a job lasts some 6 s, long
# enough to be killed at each moment these tests aim at, short enough to repeat


def _server(tmp_path: Path) -> LocalServer:
    """A server whose home knows the tiny model (tests/tiny.py), its trainers paced."""
    register_tiny_model(tmp_path / "home", tmp_path / "tiny-llama")
    return LocalServer(tmp_path / "home", env={MIN_STEP_ENV: PACE_S})


def _job_row(home: Path, job_id: str) -> dict:
    with sqlite3.connect(home / "ftkit.db") as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def _events(client, job_id: str) -> list:
    """Every event of the job, oldest first (the SDK follows has_more / after)."""
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))[::-1]


def _metric_steps(client, job_id: str) -> list[int]:
    return [e.data["step"] for e in _events(client, job_id) if e.type == "metrics" and "train_loss" in (e.data or {})]


def _wait_until(client, job_id: str, done, what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(client, job_id)
        if done(events):
            return
        status = client.fine_tuning.jobs.retrieve(job_id).status
        assert status in ("validating_files", "queued", "running"), f"job {status} while waiting for {what}"
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id}: no {what} within {timeout} s")


def _reached_step(step: int):
    return lambda events: any(e.type == "metrics" and (e.data or {}).get("step", 0) >= step for e in events)


def _checkpoint_at(step: int):
    return lambda events: any(e.message == f"Checkpoint created at step {step}" for e in events)


def _kill_trainer(home: Path, job_id: str) -> int:
    pid = int((home / "jobs" / job_id / "trainer.pid").read_text())
    assert _job_row(home, job_id)["trainer_pid"] == pid  # the server's record names the same process
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        time.sleep(0.05)  # a zombie until the server's worker reaps it: gone from its view anyway
        if _job_row(home, job_id)["trainer_pid"] != pid:
            return pid
    return pid


def _create_job(client, tmp_path: Path, suffix: str):
    train = client.files.create(file=tiny_chat_file(tmp_path / f"{suffix}.jsonl", n=20).open("rb"), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id, suffix=suffix, seed=5,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}})


def _check_nothing_lost(server: LocalServer, job_id: str) -> None:
    """After the job succeeded and the server stopped: a sound, complete, private home."""
    home = server.home
    with sqlite3.connect(home / "ftkit.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        files = {row[0] for row in conn.execute("SELECT id FROM files WHERE deleted = 0")}
        checkpoints = [(row[0], row[1]) for row in conn.execute(
            "SELECT step, path FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,))]
        adapters = {row[0] for row in conn.execute(
            "SELECT adapter_path FROM models WHERE job_id = ? AND deleted = 0", (job_id,))}
    assert [step for step, _ in checkpoints] == [STEPS // 2, STEPS]  # one per epoch, each once
    # nothing under files/ or models/ that the database does not know
    assert {p.name for p in (home / "files").iterdir()} == files
    model_dirs = {str(p) for p in (home / "models" / job_id).iterdir()}
    assert model_dirs == {path for _, path in checkpoints} | {str(home / "models" / job_id / "final")}
    assert adapters == model_dirs
    assert not (home / "jobs" / job_id / "resume").exists()  # the resume state goes with success
    assert not [p for p in home.rglob("*") if p.suffix == ".tmp"]
    assert loose_paths(home) == []
    log = (home / "server.log").read_text()
    assert "Traceback" not in log and "made the home" not in log  # a new home is private from the start


def _check_steps_once(client, job_id: str) -> None:
    assert _metric_steps(client, job_id) == list(range(1, STEPS + 1))  # each step once, in order
    job = client.fine_tuning.jobs.retrieve(job_id)
    rows = list(csv.DictReader(io.StringIO(lc.results_csv(client.files.content(job.result_files[0]).read()))))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert [c.step_number for c in checkpoints] == [STEPS, STEPS // 2]


def test_kill_9_of_the_server_at_validation_after_a_checkpoint_and_mid_epoch_loses_nothing(tmp_path):
    server = _server(tmp_path).start()
    home = server.home
    try:
        c = server.client()
        job = _create_job(c, tmp_path, "srvkill")
        server.kill()  # 1. while its files are being validated
        assert _job_row(home, job.id)["status"] == "validating_files"
        c = server.start().client()

        _wait_until(c, job.id, _checkpoint_at(STEPS // 2), "first checkpoint")
        server.kill()  # 2. just after the first epoch's checkpoint (its trainer saves its state and exits)
        c = server.start().client()
        events_before = {e.id for e in _events(c, job.id)}

        _wait_until(c, job.id, _reached_step(STEPS // 2 + 4), "a step mid-epoch 2")
        server.kill()  # 3. mid-epoch
        c = server.start().client()

        job = wait_for_job(c, job.id, timeout=900)
        assert job.status == "succeeded", job.error
        uploaded = c.files.retrieve(job.training_file)
        assert c.files.content(uploaded.id).content == (tmp_path / "srvkill.jsonl").read_bytes()
        events = _events(c, job.id)
        assert events_before <= {e.id for e in events}  # nothing lost
        messages = [e.message for e in events]
        assert messages.count("Files validated, moving job to queued state") == 1
        assert messages.count("Fine-tuning job started") == 1
        assert sum(m.startswith("The server stopped while this job was running; it will resume from its last "
                                "saved state") for m in messages) == 2
        assert sum(m.startswith("Resuming from step") for m in messages) == 2
        _check_steps_once(c, job.id)
        answer = c.chat.completions.create(model=job.fine_tuned_model, max_tokens=3,
                                           messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content is not None
    finally:
        server.stop()
    _check_nothing_lost(server, job.id)


def test_kill_9_of_the_trainer_mid_epoch_and_of_both_after_a_checkpoint_resumes_and_loses_nothing(tmp_path):
    server = _server(tmp_path).start()
    try:
        c = server.client()
        job = _create_job(c, tmp_path, "trkill")
        _wait_until(c, job.id, _reached_step(4), "a step mid-epoch 1")
        first = _kill_trainer(server.home, job.id)  # 1. the trainer alone, mid-epoch, before any saved state
        _wait_until(c, job.id, _checkpoint_at(STEPS // 2), "first checkpoint")
        assert _job_row(server.home, job.id)["trainer_pid"] != first

        _wait_until(c, job.id, _reached_step(STEPS // 2 + 3), "a step mid-epoch 2")
        trainer = int((server.home / "jobs" / job.id / "trainer.pid").read_text())
        server.kill()  # 2. the server and its trainer at once, as in a power cut: the trainer gets
        os.kill(trainer, signal.SIGKILL)  # no time to save its state at its next step
        c = server.start().client()
        job = wait_for_job(c, job.id, timeout=900)
        assert job.status == "succeeded", job.error
        _check_steps_once(c, job.id)
    finally:
        server.stop()
    _check_nothing_lost(server, job.id)


def test_a_cancelled_job_leaves_no_resume_state_behind(client, local_server, tiny_model, tmp_path):
    train = client.files.create(file=tiny_chat_file(tmp_path / "c.jsonl", n=10).open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_model, training_file=train.id, seed=1, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 1}}})
    _wait_until(client, job.id, _reached_step(1), "the first step")
    client.fine_tuning.jobs.pause(job.id)
    deadline = time.monotonic() + 300
    while not any(e.message.startswith("Job paused at step") for e in _events(client, job.id)):
        assert time.monotonic() < deadline, "the trainer did not stop for the pause"
        time.sleep(0.2)
    resume = local_server.home / "jobs" / job.id / "resume"
    assert (resume / "state.pt").exists()  # the pause saved the state to continue from
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    deadline = time.monotonic() + 15  # a cleanup may run in the worker's next round
    while resume.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not resume.exists(), sorted(p.name for p in resume.iterdir())

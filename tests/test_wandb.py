"""The ``wandb`` integration: a job created through the SDK with a W&B integration trains on the
shared loop (tiny random Llama, in-process) and logs its config, steps and final metrics to an
offline W&B run under the job's folder; then wandb's own ``WandbLogger.sync`` reads the job and
its results file back from the server (the real app, in-process, on the fake engine)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny import load_tiny  # noqa: E402

from ftkit import lifecycle as lc  # noqa: E402
from ftkit.local.jobs import jobstate  # noqa: E402
from ftkit.local.jobs.training import tracking  # noqa: E402
from ftkit.local.jobs.training.loop import JobRun  # noqa: E402
from ftkit.local.store import Store  # noqa: E402

SYSTEM = {"role": "system", "content": "Triage the support ticket. Reply with JSON: category, urgency, product."}
LABELS = ["billing", "technical", "shipping"]
INTEGRATION = {"type": "wandb", "wandb": {"project": "ftkit-tests", "name": "triage-run", "entity": None,
                                          "tags": ["course", "tiny"]}}


def chat(i: int) -> dict:
    cat = LABELS[i % 3]
    return {"messages": [SYSTEM, {"role": "user", "content": f"Subject: ticket {i} about {cat}"},
                         {"role": "assistant", "content": json.dumps({"category": cat})}]}


def jsonl(lines) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


# -- reading an offline run back ---------------------------------------------------------------------
# wandb writes an offline run as one ``run-<id>.wandb`` file: a LevelDB-style log of protobuf
# ``Record`` messages (a 7-byte header ":W&B", 0xBEE1, version; then 32 KiB blocks of chunks, each
# with a crc32, a length and a type: full, first, middle, last). wandb >= 0.20 has no Python
# reader left, so this one reads it with wandb's own protobuf classes.

def _records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # newer wandb sends every key as nested_key


def read_offline_run(folder: Path) -> dict:
    """The run's id, name, project, tags, config, history (step -> metrics) and summary."""
    (path,) = folder.glob("run-*.wandb")
    out = {"config": {}, "history": {}, "summary": {}}
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(id=run.run_id, name=run.display_name, project=run.project, tags=list(run.tags))
            out["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            items = {_key(i): json.loads(i.value_json) for i in record.history.item}
            out["history"][record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


# -- one job with the integration, trained in-process, served by the app ------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, SDK client, job id): a supervised job created through the SDK with a W&B
    integration and trained to the end on the shared loop; no WANDB_API_KEY, so offline."""
    import openai
    from fake_engine import FakeEngine
    from fastapi.testclient import TestClient

    from ftkit.local.api.app import create_app

    home = tmp_path_factory.mktemp("wandb-home")
    Store(home).add_model("tiny", kind="base", owned_by="system", source="tiny")
    app = create_app(home, engine=FakeEngine(), start_background=False, log=lambda message: None)
    store = app.state.store
    with pytest.MonkeyPatch.context() as env, \
            TestClient(app, base_url="http://local.test", raise_server_exceptions=False) as http:
        env.delenv("WANDB_API_KEY", raising=False)
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(home / "elsewhere"))  # the trainer's run goes under the job, not here
        http.headers["Authorization"] = f"Bearer {app.state.key}"
        client = openai.OpenAI(base_url="http://local.test/v1", api_key=app.state.key, http_client=http,
                               max_retries=0)
        training = client.files.create(file=("train.jsonl", jsonl(chat(i) for i in range(6))), purpose="fine-tune")
        validation = client.files.create(file=("valid.jsonl", jsonl([chat(20)])), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=training.id, validation_file=validation.id, suffix="wb", seed=3,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}},
            integrations=[INTEGRATION])
        assert job.integrations[0].wandb.project == "ftkit-tests"
        jobstate.queue(store, job.id)
        jobstate.start(store, job.id)
        # paused after its first step, then resumed by a new trainer: one run, written in two parts
        first = JobRun(store, store.get_job(job.id), log=lambda m: None, load_base=load_tiny)
        check = first.check_continue

        def pause_after_one_step():
            reported = [e for e in store.list_events(job.id, limit=100)[0] if e["type"] == "metrics"]
            if reported and store.get_job(job.id)["status"] == lc.RUNNING:
                jobstate.pause(store, job.id)
            check()

        first.check_continue = pause_after_one_step
        first.run()
        assert store.get_job(job.id)["status"] == lc.PAUSED
        jobstate.resume(store, job.id)
        jobstate.start(store, job.id)
        JobRun(store, store.get_job(job.id), log=lambda m: None, load_base=load_tiny).run()
        wandb.teardown()  # what the trainer process's exit does: wandb's service writes out the run
        yield store, client, job.id, home


def test_a_job_with_the_wandb_integration_logs_an_offline_run_under_its_folder(trained):
    store, _client, job_id, home = trained
    job = store.get_job(job_id)
    assert job["status"] == lc.SUCCEEDED, job["error"]
    assert not (home / "elsewhere").exists()
    # two trainers (before and after the pause), two offline folders of the same run
    first, second = sorted((store.job_dir(job_id) / "wandb").glob("offline-run-*"))  # by start time
    parts = [read_offline_run(first), read_offline_run(second)]
    for run in parts:
        assert run["id"] == job_id and run["name"] == "triage-run" and run["project"] == "ftkit-tests"
        assert run["tags"] == ["openai/finetune", "openai/tiny", f"openai/{job_id}", "course", "tiny"]
        # the config: the job and every resolved hyperparameter
        assert run["config"]["id"] == job_id and run["config"]["training_file"] == job["training_file"]
        assert run["config"]["method"] == lc.SUPERVISED and run["config"]["total_steps"] == 3
        assert run["config"]["hyperparameters"] == {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0}
        assert run["exit_code"] == 0
    assert sorted(parts[0]["history"]) == [1] and sorted(parts[1]["history"]) == [2, 3]
    assert parts[0]["summary"]["status"] == lc.PAUSED and "fine_tuned_model" not in parts[0]["summary"]
    # every step, with the results file's columns and values
    history = {**parts[0]["history"], **parts[1]["history"]}
    rows = lc.results_csv(store.file_path(job["result_files"][0]).read_bytes()).splitlines()
    columns = rows[0].split(",")
    assert columns == lc.RESULT_COLUMNS[lc.SUPERVISED] and len(rows) == 4
    for line in rows[1:]:
        values = dict(zip(columns, line.split(",")))
        logged = history[int(values["step"])]
        assert {k for k, v in values.items() if v and k != "step"} == set(logged)
        assert all(logged[k] == pytest.approx(float(values[k])) for k in logged)
    # the final figures
    summary = parts[1]["summary"]
    assert summary["status"] == lc.SUCCEEDED
    assert summary["fine_tuned_model"] == job["fine_tuned_model"] and summary["trained_tokens"] == job["trained_tokens"]
    (checkpoint,) = store.list_checkpoints(job_id)
    assert summary["full_valid_loss"] == pytest.approx(checkpoint["metrics"]["full_valid_loss"])
    # and the job says where each part is
    events, _ = store.list_events(job_id, limit=100)
    said = [e["data"]["wandb_dir"] for e in events if e["message"].startswith("Weights & Biases: logging offline")]
    assert sorted(said) == sorted([str(first), str(second)])


def test_wandb_logger_sync_reads_the_job_back_from_the_local_server(trained, tmp_path, monkeypatch):
    from wandb.integration.openai.fine_tuning import WandbLogger

    store, client, job_id, _home = trained
    # Two things wandb does not do offline, whatever the server: WandbLogger first checks W&B
    # credentials with wandb.login(), which always answers False offline (a user syncing for real
    # has run `wandb login`), and it links the training files as artifacts with use_artifact,
    # which raises offline -- so log_datasets=False here, and the files' part is checked below.
    # Everything it asks the server (the job, the results file) runs unchanged.
    monkeypatch.setattr(WandbLogger, "_logged_in", True)
    done = WandbLogger.sync(fine_tune_job_id=job_id, openai_client=client, project="synced", dir=str(tmp_path),
                            log_datasets=False)
    wandb.teardown()
    assert done == "🎉 wandb sync completed successfully"
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_offline_run(folder)
    assert run["id"] == job_id and run["project"] == "synced"
    # it read the results file (plain CSV, after its base64 attempt failed), the job and its files
    job = store.get_job(job_id)
    assert sorted(run["history"]) == [1, 2, 3]
    assert run["summary"]["fine_tuned_model"] == job["fine_tuned_model"] and run["summary"]["status"] == "succeeded"
    assert run["config"]["trained_tokens"] == job["trained_tokens"]
    assert run["config"]["result_files"] == job["result_files"][0]
    assert run["config"]["hyperparameters"]["n_epochs"] == 1
    # the training files, as WandbLogger turns them into tables when it logs datasets
    table, rows = WandbLogger._make_table(client.files.content(job["training_file"]).text)
    assert rows == 6 and table.data[0][2] == json.dumps({"category": "billing"})


def test_tags_and_config_follow_the_hosted_integration():
    job = {"id": "ftjob-abc", "model": "SmolLM2-135M-Instruct", "integrations": [INTEGRATION],
           "method": {"type": lc.DPO}, "training_file": "file-1", "seed": 1}
    assert tracking.wandb_settings(job) == INTEGRATION["wandb"]
    assert tracking.wandb_settings({**job, "integrations": []}) is None
    assert tracking.default_tags(job) == ["openai/finetune", "openai/SmolLM2-135M-Instruct", "openai/ftjob-abc"]
    assert all(len(t) <= 64 for t in tracking.default_tags({**job, "model": "ft:" + "x" * 80}))
    config = tracking.run_config(job, {"beta": 0.1}, examples=3)
    assert config["method"] == lc.DPO and config["hyperparameters"] == {"beta": 0.1} and config["examples"] == 3


def test_without_wandb_installed_the_job_trains_and_says_so_once(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    said = []
    job = {"id": "ftjob-abc", "model": "tiny", "integrations": [INTEGRATION]}
    tracker = tracking.start(job, tmp_path / "job", {}, event=lambda message, **kw: said.append((message, kw)))
    assert isinstance(tracker, tracking.NoTracking)
    assert len(said) == 1 and "wandb package is not installed" in said[0][0] and said[0][1]["level"] == "warn"
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("wandb_settings, param", [
    ({"name": "no project"}, "integrations[0].wandb.project"),
    ({"project": "p", "tags": ["ok", "x" * 65]}, "integrations[0].wandb.tags[1]"),
    ({"project": "p", "tags": [""]}, "integrations[0].wandb.tags[0]"),
])
def test_a_bad_integration_is_a_400_naming_it(trained, wandb_settings, param):
    import openai

    store, client, job_id, _home = trained
    job = store.get_job(job_id)
    before = len(store.list_jobs())
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="tiny", training_file=job["training_file"],
                                       integrations=[{"type": "wandb", "wandb": wandb_settings}])
    assert err.value.body["param"] == param
    assert len(store.list_jobs()) == before


class _Run:
    """Stands in for a wandb run whose backend breaks after ``works`` calls to ``log``."""

    def __init__(self, works: int) -> None:
        self.works, self.logged, self.summary, self.exit_codes = works, [], {}, []

    def log(self, metrics, step):
        if len(self.logged) == self.works:
            raise OSError("disk full")
        self.logged.append((step, metrics))

    def finish(self, exit_code=0):
        self.exit_codes.append(exit_code)


def test_a_tracking_failure_is_said_once_and_never_fails_the_job():
    said, run = [], _Run(works=1)
    tracker = tracking.WandbRun(run, event=lambda message, **kw: said.append((message, kw.get("level"))))
    tracker.log_step({"step": 1, "train_loss": 2.0, "valid_loss": None})
    tracker.log_step({"step": 2, "train_loss": 1.5})  # breaks: said once, run closed with exit code 1
    tracker.log_step({"step": 3, "train_loss": 1.0})
    tracker.log_final({"full_valid_loss": 1.0})
    tracker.finish(lc.SUCCEEDED)
    assert run.logged == [(1, {"train_loss": 2.0})] and run.exit_codes == [1] and run.summary == {}
    assert said == [("Weights & Biases logging stopped (OSError: disk full); training goes on", "warn")]


def test_a_failed_job_closes_its_run_with_exit_code_1():
    run = _Run(works=5)
    tracker = tracking.WandbRun(run, event=lambda message, **kw: None)
    tracker.finish(lc.FAILED)
    tracker.finish(lc.FAILED)  # the loop's finally calls it again: nothing happens
    assert run.summary == {"status": lc.FAILED} and run.exit_codes == [1]

"""The local server, driven by the real ``openai`` SDK against the real server process.

Raw responses are validated against OpenAI's OpenAPI spec (tests/data/openai-openapi.yaml).
Training jobs here are tiny (10-20 short examples, 1-2 epochs) so they finish in seconds.
"""

from __future__ import annotations

import base64
import concurrent.futures
import csv
import io
import json
import time

import httpx
import openai
import pytest
from conftest import needs_constrained_engine, tiny_chat_file, wait_for_job

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def training_file(client, tmp_path_factory):
    path = tiny_chat_file(tmp_path_factory.mktemp("data") / "train.jsonl", n=10)
    return client.files.create(file=path.open("rb"), purpose="fine-tune")


@pytest.fixture(scope="module")
def finished_job(client, training_file, tiny_model, tmp_path_factory):
    """One complete tiny job with a validation file, shared by the lifecycle tests. It trains the
    tiny registered model (conftest.tiny_model): these tests are about the job's life and its
    wire shapes, which the same server, trainer and loop give for any base model."""
    valid = tiny_chat_file(tmp_path_factory.mktemp("data") / "valid.jsonl", n=4, seed=1)
    valid_file = client.files.create(file=valid.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=tiny_model, training_file=training_file.id, validation_file=valid_file.id, suffix="tiny", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 5}}},
        metadata={"course": "ftkit", "test": "lifecycle"},
    )
    assert job.status == "validating_files"
    return wait_for_job(client, job.id)


# -- files ---------------------------------------------------------------------------------------


def test_file_create_list_retrieve_content_delete(client, check_schema, tmp_path):
    path = tiny_chat_file(tmp_path / "f.jsonl", n=10)
    raw = client.files.with_raw_response.create(file=path.open("rb"), purpose="fine-tune")
    check_schema(raw.http_response.json(), "OpenAIFile")
    created = raw.parse()
    assert created.bytes == path.stat().st_size and created.filename == "f.jsonl" and created.purpose == "fine-tune"

    listing = client.files.with_raw_response.list()
    check_schema(listing.http_response.json(), "ListFilesResponse")
    assert created.id in [f.id for f in listing.parse().data]
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).content == path.read_bytes()

    deleted = client.files.with_raw_response.delete(created.id)
    check_schema(deleted.http_response.json(), "DeleteFileResponse")
    assert deleted.parse().deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_batch_purpose_accepted_other_purposes_rejected(client, tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    assert client.files.create(file=path.open("rb"), purpose="batch").purpose == "batch"
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=path.open("rb"), purpose="assistants")
    assert err.value.body["param"] == "purpose"


def test_upload_over_the_cap_is_413(local_server, client, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"messages": []}\n' * int(local_server.max_upload_mb * 1e6 / 17 + 1000))
    stored_before = sorted((local_server.home / "files").iterdir())
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=big.open("rb"), purpose="fine-tune")
    assert err.value.status_code == 413
    assert err.value.body["code"] == "file_too_large"
    assert sorted((local_server.home / "files").iterdir()) == stored_before  # nothing half-stored


# -- auth and errors -----------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(local_server):
    no_key = httpx.get(f"{local_server.base_url}/models")
    assert no_key.status_code == 401
    assert set(no_key.json()["error"]) == {"message", "type", "param", "code"}
    wrong = openai.OpenAI(base_url=local_server.base_url, api_key="ftkit-local-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.body["code"] == "invalid_api_key"
    assert httpx.get(f"http://127.0.0.1:{local_server.port}/health").status_code == 200  # health needs no key


def test_key_file_is_private(local_server):
    assert (local_server.home / "api_key").stat().st_mode & 0o777 == 0o600


def test_unknown_ids_are_404_and_cannot_escape_the_home(client, local_server, check_schema):
    for call in (lambda: client.files.retrieve("file-doesnotexist"),
                 lambda: client.files.content("../../api_key"),
                 lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"),
                 lambda: client.models.retrieve("ft:nope")):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        check_schema(err.value.response.json(), "ErrorResponse")
    escaped = httpx.get(f"{local_server.base_url}/files/..%2F..%2Fapi_key/content",
                        headers={"Authorization": f"Bearer {local_server.key}"})
    assert escaped.status_code == 404 and local_server.key not in escaped.text


def test_invalid_job_requests_are_400_with_the_param(client, training_file, tmp_path):
    batch_path = tmp_path / "batch.jsonl"
    batch_path.write_text('{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    batch_file = client.files.create(file=batch_path.open("rb"), purpose="batch")
    cases = [
        (dict(model="gpt-9-imaginary", training_file=training_file.id), "model"),
        (dict(model=MODEL, training_file=batch_file.id), "training_file"),
        (dict(model=MODEL, training_file="file-missing"), "training_file"),
        (dict(model=MODEL, training_file=training_file.id, hyperparameters={"n_epochs": 0}),
         "hyperparameters.n_epochs"),
        (dict(model=MODEL, training_file=training_file.id, hyperparameters={"learning_rate_multiplier": "fast"}),
         "hyperparameters.learning_rate_multiplier"),
        (dict(model=MODEL, training_file=training_file.id, hyperparameters={"learning_rate_multiplier": 1000}),
         "hyperparameters.learning_rate_multiplier"),  # within the spec, beyond what the trainer accepts
        (dict(model=MODEL, training_file=training_file.id, method={"type": "rlhf"}), "method.type"),
        (dict(model=MODEL, training_file=training_file.id,
              method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}), "method.dpo.hyperparameters.beta"),
        (dict(model=MODEL, training_file=training_file.id,
              method={"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}),
         "method.supervised.hyperparameters.beta"),
        (dict(model=MODEL, training_file=training_file.id, method={"type": "dpo"},
              hyperparameters={"n_epochs": 1}), "hyperparameters"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(**kwargs)
        assert err.value.body["param"] == param, kwargs


def test_unknown_route_uses_the_error_envelope(local_server):
    r = httpx.get(f"{local_server.base_url}/nothing-here", headers={"Authorization": f"Bearer {local_server.key}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


# -- the job lifecycle ---------------------------------------------------------------------------


def test_job_lifecycle_events_and_results(client, finished_job, tiny_model, check_schema, local_server):
    job = finished_job
    assert job.status == "succeeded", job.error
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job.id)
    check_schema(raw.http_response.json(), "FineTuningJob")
    assert job.fine_tuned_model == f"ft:{tiny_model}:local:tiny:{job.id[-8:].lower()}"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 5
    assert job.finished_at >= job.created_at and job.estimated_finish is None

    events_raw = client.fine_tuning.jobs.with_raw_response.list_events(job.id, limit=100)
    check_schema(events_raw.http_response.json(), "ListFineTuningJobEventsResponse")
    events = events_raw.parse().data
    assert events[0].created_at >= events[-1].created_at  # newest first
    messages = [e.message for e in reversed(events)]
    expected_order = [
        f"Validating training file: {job.training_file}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        "Step 1/4: training loss=",
        "Checkpoint created at step 2",
        "Checkpoint created at step 4",
        f"New fine-tuned model created: {job.fine_tuned_model}",
        "The job has successfully completed",
    ]
    position = 0
    for wanted in expected_order:
        position = next(i for i in range(position, len(messages)) if messages[i].startswith(wanted))
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert [e.data["step"] for e in reversed(metrics)] == [1, 2, 3, 4]
    assert all(e.data["total_steps"] == 4 for e in metrics)
    assert any("validation loss=" in e.message for e in metrics)  # a validation file was given
    done = events[0]
    assert done.message == "The job has successfully completed"
    assert done.data["cpu_seconds"] > 0 and done.data["trained_tokens"] == job.trained_tokens

    # trained_tokens are the billed tokens: every token of the training file, per epoch, counted
    # with the trained model's tokenizer (the tiny model's, tests/tiny.py)
    from tiny import tiny_tokenizer

    from ftkit.data import read_jsonl
    from ftkit.local.inference.render import encode_for_training

    tokenizer = tiny_tokenizer()
    content = client.files.content(job.training_file).content
    path = local_server.home / "recount.jsonl"
    path.write_bytes(content)
    per_epoch = sum(encode_for_training(tokenizer, ex, 2048)[2] for ex in read_jsonl(path))
    assert job.trained_tokens == per_epoch * 2

    # the results file has the hosted columns and one row per step, with real, falling loss
    results = client.files.retrieve(job.result_files[0])
    assert results.purpose == "fine-tune-results"
    # served base64-encoded as hosted: the cookbook's base64.b64decode(content.read()) gives the CSV
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(client.files.content(results.id).read()).decode())))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_checkpoints_and_models(client, finished_job, check_schema):
    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(finished_job.id)
    check_schema(raw.http_response.json(), "ListFineTuningJobCheckpointsResponse")
    checkpoints = raw.parse().data
    assert [c.step_number for c in checkpoints] == [4, 2]  # newest first, one per epoch
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{finished_job.fine_tuned_model}:ckpt-step-4"
    assert checkpoints[0].metrics.full_valid_loss is not None
    models_raw = client.models.with_raw_response.list()
    check_schema(models_raw.http_response.json(), "ListModelsResponse")
    ids = [m.id for m in models_raw.parse().data]
    assert MODEL in ids and finished_job.fine_tuned_model in ids
    check_schema(client.models.with_raw_response.retrieve(finished_job.fine_tuned_model).http_response.json(), "Model")


def test_fine_tuned_model_and_checkpoint_answer(client, finished_job, check_schema):
    messages = [{"role": "system", "content": "Triage. Reply with JSON."},
                {"role": "user", "content": "Ticket 42: problem with my billing (123)"}]
    for model in (finished_job.fine_tuned_model, f"{finished_job.fine_tuned_model}:ckpt-step-2", MODEL):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0,
                                                              max_tokens=20)
        check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
        r = raw.parse()
        assert r.model == model and r.choices[0].message.role == "assistant"
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert 0 < r.usage.completion_tokens <= 20


@needs_constrained_engine
def test_fine_tuned_model_and_checkpoint_structured_output(client, finished_job):
    from typing import Literal

    from pydantic import BaseModel

    class Category(BaseModel):  # labels, not free text: the tiny random model's string would never end
        category: Literal["billing", "technical", "shipping"]

    messages = [{"role": "system", "content": "Triage. Reply with JSON."},
                {"role": "user", "content": "Ticket 42: problem with my billing (123)"}]
    for model in (finished_job.fine_tuned_model, f"{finished_job.fine_tuned_model}:ckpt-step-2"):
        r = client.chat.completions.parse(model=model, messages=messages, response_format=Category, temperature=0,
                                          max_tokens=30)
        assert isinstance(r.choices[0].message.parsed, Category), model
        answer = client.responses.parse(model=model, input=messages[1]["content"], instructions=messages[0]["content"],
                                        text_format=Category, temperature=0, max_output_tokens=30)
        assert isinstance(answer.output_parsed, Category), model


def test_list_jobs_pagination_and_metadata_filter(client, finished_job, check_schema):
    raw = client.fine_tuning.jobs.with_raw_response.list(limit=1)
    check_schema(raw.http_response.json(), "ListPaginatedFineTuningJobsResponse")
    found = client.fine_tuning.jobs.list(metadata={"test": "lifecycle"}).data
    assert [j.id for j in found] == [finished_job.id]
    assert client.fine_tuning.jobs.list(metadata={"test": "no-such-value"}).data == []
    everything = client.fine_tuning.jobs.list(limit=100).data
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.has_more == (len(everything) > 1)
    if len(everything) > 1:
        assert client.fine_tuning.jobs.list(limit=1, after=first.data[0].id).data[0].id == everything[1].id


def test_events_pagination(client, finished_job):
    all_events = client.fine_tuning.jobs.list_events(finished_job.id, limit=100).data
    page1 = client.fine_tuning.jobs.list_events(finished_job.id, limit=3)
    assert page1.has_more and [e.id for e in page1.data] == [e.id for e in all_events[:3]]
    page2 = client.fine_tuning.jobs.list_events(finished_job.id, limit=3, after=page1.data[-1].id)
    assert [e.id for e in page2.data] == [e.id for e in all_events[3:6]]


def test_invalid_training_file_fails_the_job_naming_the_line(client, tiny_model, tmp_path):
    path = tiny_chat_file(tmp_path / "bad.jsonl", n=12)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"role": "assistant"', '"role": "assistent"')
    path.write_text("\n".join(lines) + "\n")
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = wait_for_job(client, client.fine_tuning.jobs.create(model=tiny_model, training_file=f.id).id)
    assert job.status == "failed"
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert "line 5" in job.error.message and "assistent" in job.error.message
    assert job.fine_tuned_model is None


def test_same_seed_same_run(client, training_file, tiny_model):
    def run():
        job = client.fine_tuning.jobs.create(model=tiny_model, training_file=training_file.id, seed=123,
                                             hyperparameters={"n_epochs": 1, "batch_size": 5})
        job = wait_for_job(client, job.id)
        assert job.status == "succeeded", job.error
        return client.files.content(job.result_files[0]).text

    assert run() == run()


def test_cancel_stops_a_running_job(client, tmp_path, tiny_model):
    path = tiny_chat_file(tmp_path / "long.jsonl", n=20)
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_model, training_file=f.id,  # 100 steps, >= 5 s
                                         hyperparameters={"n_epochs": 5, "batch_size": 1})
    wait_for_job(client, job.id, statuses=("running",))
    _wait_for_step(client, job.id, 2)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(3)
    steps_then = _last_step(client, job.id)
    time.sleep(3)
    assert _last_step(client, job.id) == steps_then  # the trainer really stopped
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_and_resume_continue_where_they_stopped(client, tmp_path, tiny_model):
    path = tiny_chat_file(tmp_path / "pause.jsonl", n=20)
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_model, training_file=f.id,  # 80 steps, >= 4 s
                                         hyperparameters={"n_epochs": 4, "batch_size": 1})
    _wait_for_step(client, job.id, 3)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    # The trainer stops at its next step, saves its state and says so; until then a resume would
    # withdraw the pause (status "running", same trainer). Wait for that, however busy the machine.
    paused_at = _wait_for_event(client, job.id, "Job paused at step ")
    assert paused_at == f"Job paused at step {_last_step(client, job.id)}/80; resume it to continue"
    paused_at = _last_step(client, job.id)
    time.sleep(1)
    assert _last_step(client, job.id) == paused_at and client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"  # a new trainer continues the saved state
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert f"Resuming from step {paused_at}/80" in messages
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
             if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert sorted(steps) == list(range(1, 81))  # every step exactly once across the pause


def test_delete_fine_tuned_model_not_base(client, finished_job, check_schema):
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(MODEL)
    ckpt = f"{finished_job.fine_tuned_model}:ckpt-step-2"
    raw = client.models.with_raw_response.delete(ckpt)
    check_schema(raw.http_response.json(), "DeleteModelResponse")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=ckpt, messages=[{"role": "user", "content": "hi"}], max_tokens=2)


# -- chat completions ----------------------------------------------------------------------------


def test_chat_parameters(client):
    msgs = [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}]
    greedy = [client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=12)
              for _ in range(2)]
    assert greedy[0].choices[0].message.content == greedy[1].choices[0].message.content
    assert greedy[0].choices[0].finish_reason == "length" and greedy[0].usage.completion_tokens == 12
    stopped = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=40, stop=[","])
    assert "," not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    sampled = [client.chat.completions.create(model=MODEL, messages=msgs, temperature=1.0, top_p=0.9, seed=5, n=2,
                                              max_tokens=10, max_completion_tokens=10) for _ in range(2)]
    assert len(sampled[0].choices) == 2
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=msgs, temperature=3)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ft:unknown", messages=msgs)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=100_000)
    assert err.value.body["code"] == "context_length_exceeded"


def test_streaming_chunks_match_the_spec_and_the_full_answer(client, local_server, check_schema):
    msgs = [{"role": "user", "content": "Name three colours."}]
    full = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=20)
    with httpx.stream("POST", f"{local_server.base_url}/chat/completions",
                      headers={"Authorization": f"Bearer {local_server.key}"},
                      json={"model": MODEL, "messages": msgs, "temperature": 0, "max_tokens": 20, "stream": True,
                            "stream_options": {"include_usage": True}}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    for c in chunks:
        check_schema(c, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full.choices[0].message.content
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == full.usage.completion_tokens
    # and through the SDK
    streamed = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model=MODEL, messages=msgs, temperature=0, max_tokens=20, stream=True) if ch.choices)
    assert streamed == full.choices[0].message.content


def test_tool_definitions_and_calls_round_trip(client):
    tools = [{"type": "function", "function": {"name": "get_order", "description": "Look up an order",
                                               "parameters": {"type": "object",
                                                              "properties": {"id": {"type": "string"}}}}}]
    r = client.chat.completions.create(model=MODEL, tools=tools, temperature=0, max_tokens=40, messages=[
        {"role": "user", "content": "Where is order 123?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"id": "123"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    ])
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_concurrent_requests_are_batched(client, local_server):
    before = local_server.health()["engine"]
    msgs = [[{"role": "user", "content": f"Say the number {i}."}] for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda m: client.chat.completions.create(model=MODEL, messages=m, temperature=0,
                                                                          max_tokens=8), msgs))
    after = local_server.health()["engine"]
    assert all(a.choices[0].message.content for a in answers)
    rows, batches = after["rows"] - before["rows"], after["batches"] - before["batches"]
    assert rows == 12 and batches < 12  # several requests shared a forward pass


def test_api_answers_while_a_job_trains(client, tmp_path, tiny_model):
    path = tiny_chat_file(tmp_path / "busy.jsonl", n=20)
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_model, training_file=f.id,
                                         hyperparameters={"n_epochs": 2, "batch_size": 1})
    _wait_for_step(client, job.id, 1)
    start = time.monotonic()
    client.files.list()
    client.fine_tuning.jobs.retrieve(job.id)
    assert time.monotonic() - start < 2.0
    second = client.fine_tuning.jobs.create(model=tiny_model, training_file=f.id, hyperparameters={"n_epochs": 1,
                                                                                              "batch_size": 10})
    assert client.fine_tuning.jobs.retrieve(second.id).status in ("validating_files", "queued")
    assert wait_for_job(client, job.id).status == "succeeded"
    assert wait_for_job(client, second.id).status == "succeeded"  # queued, then trained: none lost


# -- batches -------------------------------------------------------------------------------------


def test_batch_api_round_trip(client, check_schema, tmp_path):
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 5,
                       "temperature": 0}} for i in range(6)]
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}})
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    f = client.files.create(file=path.open("rb"), purpose="batch")
    raw = client.batches.with_raw_response.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h")
    check_schema(raw.http_response.json(), "Batch")
    batch = raw.parse()
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    assert batch.request_counts.total == 7 and batch.request_counts.completed == 6 and batch.request_counts.failed == 1
    out = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == [f"q{i}" for i in range(6)]
    for o in out:
        assert o["response"]["status_code"] == 200
        check_schema(o["response"]["body"], "CreateChatCompletionResponse")
    direct = client.chat.completions.create(**lines[0]["body"])
    first = next(o for o in out if o["custom_id"] == "q0")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == direct.choices[0].message.content
    errors = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "bad" and errors[0]["response"]["status_code"] == 404


# -- durability: kill -9 at the worst moments is tests/test_durability.py -----------------------


def _metric_steps(client, job_id):
    return [e.data["step"] for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data
            if e.type == "metrics" and "train_loss" in (e.data or {})]


def _last_step(client, job_id) -> int:
    return max(_metric_steps(client, job_id), default=0)


def _wait_for_event(client, job_id, prefix: str, timeout: float = 240) -> str:
    """The first event message of the job that starts with ``prefix`` (polls until one exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)
                 if e.message.startswith(prefix)]
        if found:
            return found[0]
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id}: no event starting {prefix!r}")


def _wait_for_step(client, job_id, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _last_step(client, job_id) >= step:
            return
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status in ("validating_files", "queued", "running"), (job.status, job.error)
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not reach step {step}")


def test_chunked_upload_over_the_cap_is_refused_while_streaming(local_server):
    """No Content-Length: the cap is enforced on the bytes as they arrive."""
    chunk = b"x" * 1_000_000

    def body():
        yield (b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\r\n")
        for _ in range(int(local_server.max_upload_mb) + 3):
            yield chunk
        yield b"\r\n--b--\r\n"

    stored_before = sorted((local_server.home / "files").iterdir())
    r = httpx.post(f"{local_server.base_url}/files", content=body(), timeout=60,
                   headers={"Authorization": f"Bearer {local_server.key}",
                            "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert sorted((local_server.home / "files").iterdir()) == stored_before


def test_register_a_base_model_from_a_local_directory(local_server, client):
    import subprocess
    import sys

    from ftkit.local.inference.weights import cached_dir

    out = subprocess.run([sys.executable, "-m", "ftkit.local", "--home", str(local_server.home), "register-model",
                          "my-smol", str(cached_dir())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "my-smol" in [m.id for m in client.models.list().data]
    answer = client.chat.completions.create(model="my-smol", messages=[{"role": "user", "content": "Hi"}],
                                            temperature=0, max_tokens=5)
    reference = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                               temperature=0, max_tokens=5)
    assert answer.choices[0].message.content == reference.choices[0].message.content  # same weights
    bad = subprocess.run([sys.executable, "-m", "ftkit.local", "--home", str(local_server.home), "register-model",
                          "nothing", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

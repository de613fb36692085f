"""The Evals API (``/v1/evals``, ``ftkit/local/services/evals.py``) and stored chat completions
(``ftkit/local/services/stored_completions.py``) through the official SDK, on the real app with a fake engine: every
answer checked against OpenAI's spec, runs executed by the background runner with counts for every
row and one output item each, the graders as testing criteria, cancel and delete, bad requests as
400s naming the field, and stored completions listed by metadata. Fast: no model is loaded.
"""

from __future__ import annotations

import time
import warnings

import openai
import pytest
from fake_engine import DEFAULT_TEXT

MODEL = "SmolLM2-135M-Instruct"
ITEM_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "expected": {"type": "string"}},
               "required": ["question", "expected"]}
# the fake engine answers every question with DEFAULT_TEXT: "fake engine" is in it, "weather" is not
ROWS = [{"item": {"question": "Who are you?", "expected": "fake engine"}},
        {"item": {"question": "Say hello", "expected": "Hello"}},
        {"item": {"question": "What is the weather?", "expected": "weather"}}]
CONTAINS = {"type": "string_check", "name": "contains", "operation": "ilike",
            "input": "{{ sample.output_text }}", "reference": "{{ item.expected }}"}


@pytest.fixture(autouse=True)
def _quiet_deprecation():
    # client.evals warns "deprecated ... Use Promptfoo instead": the point here is that it still works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _raw(response, check_schema, schema: str):
    body = response.http_response.json()
    check_schema(body, schema)
    return response.parse(), body


def _wait(fake_client, eval_id: str, run_id: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        run = fake_client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled") or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def _eval(fake_client, check_schema, criteria=(CONTAINS,), **extra):
    created, body = _raw(fake_client.evals.with_raw_response.create(
        name="smoke", data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=list(criteria), metadata={"lesson": "10"}, **extra), check_schema, "Eval")
    return created, body


def _completions_source(content=ROWS, **sampling):
    return {"type": "completions", "model": MODEL,
            "input_messages": {"type": "template", "template": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "{{ item.question }}"}]},
            "sampling_params": {"temperature": 0, "max_completion_tokens": 32, **sampling},
            "source": {"type": "file_content", "content": list(content)}}


def test_create_run_completes_with_counts_and_one_output_item_per_row(fake_client, fake_engine, check_schema):
    created, body = _eval(fake_client, check_schema)
    assert created.id.startswith("eval_") and body["data_source_config"]["schema"]["properties"]["item"] == ITEM_SCHEMA
    assert body["testing_criteria"][0]["name"] == "contains" and body["metadata"] == {"lesson": "10"}
    asked = len(fake_engine.requests)
    run, body = _raw(fake_client.evals.runs.with_raw_response.create(
        created.id, name="first", data_source=_completions_source()), check_schema, "EvalRun")
    assert body["status"] in ("queued", "in_progress", "completed") and body["eval_id"] == created.id
    run = _wait(fake_client, created.id, run.id)
    raw = fake_client.evals.runs.with_raw_response.retrieve(run.id, eval_id=created.id)
    run, body = _raw(raw, check_schema, "EvalRun")
    assert run.status == "completed", body["error"]
    assert body["result_counts"] == {"total": 3, "errored": 0, "failed": 1, "passed": 2}
    assert body["per_testing_criteria_results"] == [{"testing_criteria": "contains", "passed": 2, "failed": 1}]
    [usage] = body["per_model_usage"]
    assert usage["model_name"] == MODEL and usage["invocation_count"] == 3 and usage["completion_tokens"] > 0
    # the template was filled from item.* and the sampling parameters reached the engine
    sent = fake_engine.requests[asked:]
    assert sorted(r.messages[1]["content"] for r in sent) == sorted(row["item"]["question"] for row in ROWS)
    assert all(r.temperature == 0 and r.max_tokens == 32 for r in sent)

    items, page = _raw(fake_client.evals.runs.output_items.with_raw_response.list(run.id, eval_id=created.id),
                       check_schema, "EvalRunOutputItemList")
    assert len(page["data"]) == 3 and [i["datasource_item_id"] for i in page["data"]] == [0, 1, 2]
    for item, row in zip(page["data"], ROWS):
        assert item["datasource_item"] == row["item"] and len(item["results"]) == 1
        assert item["sample"]["output"] == [{"role": "assistant", "content": DEFAULT_TEXT}]
        assert item["sample"]["input"][1] == {"role": "user", "content": row["item"]["question"]}
    assert [i["status"] for i in page["data"]] == ["pass", "pass", "fail"]
    assert [i["results"][0]["passed"] for i in page["data"]] == [True, True, False]
    failed = fake_client.evals.runs.output_items.list(run.id, eval_id=created.id, status="fail")
    assert [i.datasource_item_id for i in failed.data] == [2]
    one, _ = _raw(fake_client.evals.runs.output_items.with_raw_response.retrieve(
        page["data"][0]["id"], eval_id=created.id, run_id=run.id), check_schema, "EvalRunOutputItem")
    assert one.results[0].score == 1.0 and one.results[0].passed


def test_jsonl_source_grades_given_samples_with_every_grader_type(fake_client, check_schema):
    criteria = [
        CONTAINS,
        {"type": "text_similarity", "name": "similar", "input": "{{ sample.output_text }}",
         "reference": "{{ item.expected }}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.8},
        {"type": "python", "name": "short", "pass_threshold": 1.0,
         "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 12 else 0.0\n"},
    ]
    created, _ = _eval(fake_client, check_schema, criteria)
    content = [{"item": {"question": "q1", "expected": "fake engine"}, "sample": {"output_text": "fake engine"}},
               {"item": {"question": "q2", "expected": "Hello"}, "sample": {"output_text": "a much longer answer"}}]
    run = fake_client.evals.runs.create(created.id, data_source={
        "type": "jsonl", "source": {"type": "file_content", "content": content}})
    run = _wait(fake_client, created.id, run.id)
    assert run.status == "completed" and run.result_counts.total == 2
    results = {r.testing_criteria: (r.passed, r.failed) for r in run.per_testing_criteria_results}
    assert results == {"contains": (1, 1), "similar": (1, 1), "short": (1, 1)}
    assert (run.result_counts.passed, run.result_counts.failed) == (1, 1)
    page = fake_client.evals.runs.output_items.list(run.id, eval_id=created.id).model_dump()
    check_schema(page, "EvalRunOutputItemList")
    assert [r["name"] for r in page["data"][0]["results"]] == ["contains", "similar", "short"]


def test_file_id_source_and_responses_data_source(fake_client, check_schema, tmp_path):
    import json

    created, _ = _eval(fake_client, check_schema)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row["item"]) + "\n" for row in ROWS))  # bare items are rows too
    file = fake_client.files.create(file=path.open("rb"), purpose="evals")
    source = {**_completions_source(), "type": "responses", "source": {"type": "file_id", "id": file.id}}
    source["sampling_params"] = {"temperature": 0, "max_completion_tokens": 32}
    run = fake_client.evals.runs.create(created.id, data_source=source)
    run = _wait(fake_client, created.id, run.id)
    _raw(fake_client.evals.runs.with_raw_response.retrieve(run.id, eval_id=created.id), check_schema, "EvalRun")
    assert run.status == "completed" and run.result_counts.model_dump() == {
        "total": 3, "errored": 0, "failed": 1, "passed": 2}


def test_model_graders_are_judged_by_a_served_model(fake_client, check_schema):
    label = {"type": "label_model", "name": "tone", "model": MODEL, "labels": ["polite", "rude"],
             "passing_labels": ["polite"], "input": [{"role": "user", "content": "Label: {{ sample.output_text }}"}]}
    created, _ = _eval(fake_client, check_schema, [label])
    run = fake_client.evals.runs.create(created.id, data_source=_completions_source(ROWS[:2]))
    run = _wait(fake_client, created.id, run.id)
    assert run.status == "completed" and run.result_counts.total == 2
    # the fake engine's constrained answer is the schema's first label: "polite"
    assert run.result_counts.passed == 2
    usage = {u.model_name: u.invocation_count for u in run.per_model_usage}
    assert usage == {MODEL: 4}  # two answers and two judgements


def test_list_update_cancel_delete(fake_client, check_schema, fake_server):
    created, _ = _eval(fake_client, check_schema)
    updated, _ = _raw(fake_client.evals.with_raw_response.update(created.id, name="renamed", metadata={"v": "2"}),
                      check_schema, "Eval")
    assert updated.name == "renamed" and fake_client.evals.retrieve(created.id).metadata == {"v": "2"}
    listed, body = _raw(fake_client.evals.with_raw_response.list(limit=100, order="desc"), check_schema, "EvalList")
    assert body["data"][0]["id"] == created.id

    run = fake_client.evals.runs.create(created.id, data_source=_completions_source(ROWS * 50))
    cancelled = fake_server.post(f"/v1/evals/{created.id}/runs/{run.id}")
    if cancelled.status_code == 200:  # it may have finished first on a fast machine
        check_schema(cancelled.json(), "EvalRun")
        assert cancelled.json()["status"] == "canceled"
        time.sleep(0.3)
        after = fake_client.evals.runs.retrieve(run.id, eval_id=created.id)
        assert after.status == "canceled" and after.result_counts.total < 150
    else:
        assert cancelled.status_code == 409
    runs, body = _raw(fake_client.evals.runs.with_raw_response.list(created.id), check_schema, "EvalRunList")
    assert [r["id"] for r in body["data"]] == [run.id]
    deleted = fake_client.evals.runs.delete(run.id, eval_id=created.id)
    assert deleted.deleted and deleted.run_id == run.id
    gone = fake_client.evals.delete(created.id)
    assert gone.deleted and gone.eval_id == created.id
    with pytest.raises(openai.NotFoundError):
        fake_client.evals.retrieve(created.id)


@pytest.mark.parametrize(("request_body", "param"), [
    ({"testing_criteria": [{**CONTAINS, "operation": "startswith"}]}, "testing_criteria[0].operation"),
    ({"testing_criteria": [{**CONTAINS, "input": "{{ sample.output_text"}]}, "testing_criteria[0].input"),
    ({"testing_criteria": [{"type": "label_model", "name": "j", "model": "no-such-model", "labels": ["a"],
                            "passing_labels": ["a"], "input": [{"role": "user", "content": "x"}]}]},
     "testing_criteria[0].model"),
    ({"testing_criteria": [CONTAINS, CONTAINS]}, "testing_criteria[1].name"),
    ({"data_source_config": {"type": "custom", "item_schema": {"type": "nonsense"}}}, "data_source_config.item_schema"),
])
def test_bad_evals_are_400s_naming_the_field(fake_server, request_body, param):
    body = {"data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA}, "testing_criteria": [CONTAINS],
            **request_body}
    answer = fake_server.post("/v1/evals", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_bad_runs_are_400s_naming_the_field(fake_client, fake_server, check_schema):
    created, _ = _eval(fake_client, check_schema)
    cases = [
        ({**_completions_source(), "model": "no-such-model"}, "data_source.model"),
        (_completions_source([{"item": {"question": "q"}}]), "data_source.source.content[0].item.expected"),
        ({**_completions_source(), "source": {"type": "file_id", "id": "file-doesnotexist"}}, "data_source.source.id"),
        ({"type": "jsonl", "source": {"type": "file_content", "content": ROWS}}, "data_source.source.content[0].sample"),
        ({**_completions_source(), "input_messages": {"type": "template", "template": [
            {"role": "user", "content": "{{ item.question"}]}}, "data_source.input_messages.template[0].content"),
    ]
    for source, param in cases:
        answer = fake_server.post(f"/v1/evals/{created.id}/runs", json={"data_source": source})
        assert answer.status_code == 400, (param, answer.text)
        assert answer.json()["error"]["param"] == param


def test_runs_survive_a_restart(tmp_path, fake_engine):
    """A run is kept in the store: a new app over the same home lists it, with its output items."""
    from fastapi.testclient import TestClient

    from ftkit.local.api.app import create_app

    def client_for(http):
        return openai.OpenAI(base_url="http://local.test/v1", api_key=http.headers["Authorization"][7:],
                             http_client=http, max_retries=0)

    app = create_app(tmp_path, engine=fake_engine, log=lambda message: None)
    with TestClient(app, base_url="http://local.test") as http:
        http.headers["Authorization"] = f"Bearer {app.state.key}"
        client = client_for(http)
        created = client.evals.create(data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
                                      testing_criteria=[CONTAINS])
        run = _wait(client, created.id, client.evals.runs.create(created.id, data_source=_completions_source()).id)
        assert run.status == "completed"
    app = create_app(tmp_path, engine=fake_engine, log=lambda message: None)
    with TestClient(app, base_url="http://local.test") as http:
        http.headers["Authorization"] = f"Bearer {app.state.key}"
        client = client_for(http)
        again = client.evals.runs.retrieve(run.id, eval_id=created.id)
        assert again.result_counts.model_dump() == run.result_counts.model_dump()
        assert len(client.evals.runs.output_items.list(run.id, eval_id=created.id).data) == 3


# -- stored chat completions ----------------------------------------------------------------------


def test_stored_completions_list_by_metadata_update_and_delete(fake_client, check_schema):
    tag = f"t{time.monotonic_ns()}"
    kept = []
    for i in range(3):
        raw = fake_client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
            store=True, metadata={"run": tag, "half": str(i % 2)})
        kept.append(_raw(raw, check_schema, "CreateChatCompletionResponse")[0].id)
    fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "not kept"}],
                                        metadata={"run": tag})
    page, body = _raw(fake_client.chat.completions.with_raw_response.list(metadata={"run": tag}), check_schema,
                      "ChatCompletionList")
    assert [c["id"] for c in body["data"]] == kept and body["data"][0]["metadata"]["run"] == tag
    odd = fake_client.chat.completions.list(metadata={"run": tag, "half": "1"}, model=MODEL)
    assert [c.id for c in odd.data] == [kept[1]]
    paged = fake_client.chat.completions.list(metadata={"run": tag}, limit=2)
    assert len(paged.data) == 2 and paged.has_more
    assert [c.id for c in paged] == kept  # the SDK's auto-paging follows `after`
    assert [c.id for c in fake_client.chat.completions.list(metadata={"run": tag}, order="desc")] == kept[::-1]

    one, _ = _raw(fake_client.chat.completions.with_raw_response.retrieve(kept[0]), check_schema,
                  "CreateChatCompletionResponse")
    assert one.choices[0].message.content == DEFAULT_TEXT
    messages, body = _raw(fake_client.chat.completions.messages.with_raw_response.list(kept[0]), check_schema,
                          "ChatCompletionMessageList")
    assert [(m["role"], m["content"]) for m in body["data"]] == [("system", "Be brief."), ("user", "q0")]
    updated, _ = _raw(fake_client.chat.completions.with_raw_response.update(kept[0], metadata={"run": tag, "ok": "y"}),
                      check_schema, "CreateChatCompletionResponse")
    assert updated.metadata == {"run": tag, "ok": "y"}
    assert [c.id for c in fake_client.chat.completions.list(metadata={"ok": "y"})] == [kept[0]]
    deleted = fake_client.chat.completions.delete(kept[0])
    check_schema(deleted.model_dump(), "ChatCompletionDeleted")
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        fake_client.chat.completions.retrieve(kept[0])


def test_streamed_answers_are_stored_too(fake_client):
    tag = f"s{time.monotonic_ns()}"
    chunks = list(fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                      stream=True, store=True, metadata={"run": tag}))
    [stored] = fake_client.chat.completions.list(metadata={"run": tag}).data
    assert stored.id == chunks[0].id and stored.choices[0].message.content == DEFAULT_TEXT


def test_stored_completions_as_an_eval_source(fake_client, check_schema):
    tag = f"e{time.monotonic_ns()}"
    for question in ("Who are you?", "What is the weather?"):
        fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            store=True, metadata={"run": tag})
    created, _ = _raw(fake_client.evals.with_raw_response.create(
        data_source_config={"type": "stored_completions", "metadata": {"run": tag}},
        testing_criteria=[{"type": "string_check", "name": "engine", "operation": "ilike",
                           "input": "{{ sample.output_text }}", "reference": "fake engine"}]), check_schema, "Eval")
    run = fake_client.evals.runs.create(created.id, data_source={
        "type": "completions", "model": MODEL, "source": {"type": "stored_completions", "metadata": {"run": tag}}})
    run = _wait(fake_client, created.id, run.id)
    assert run.status == "completed" and run.result_counts.model_dump() == {
        "total": 2, "errored": 0, "failed": 0, "passed": 2}
    items = fake_client.evals.runs.output_items.list(run.id, eval_id=created.id).data
    assert [i.datasource_item["input"][0]["content"] for i in items] == ["Who are you?", "What is the weather?"]

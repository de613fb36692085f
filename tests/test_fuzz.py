"""Fuzzing the local server from OpenAI's spec (issue 12): schemathesis generates requests for
every operation the server implements, valid ones and invalid ones, from
``tests/data/openai-openapi.yaml``, sends them over HTTP with the bearer key, and checks each
answer: no 5xx, a documented status code and content type, a body valid against the spec's
response schema (errors against OpenAI's ``ErrorResponse`` envelope), invalid requests refused
with a 4xx. Afterwards the server must still answer.

The server is the real app (routes, request checks, services, store) served by uvicorn on a
free port, on the fake engine of ``tests/fake_engine.py`` (answers in milliseconds) and with
its background loops off: the worker that would start trainer processes and the batch runner
never run, so a job the fuzzer creates stays queued and costs nothing.

Deliberate deviations from the spec's response schemas are data in
``ftkit/local/api/parameters.py`` (``RESPONSE_DEVIATIONS``, in the README's deviations table); the
spec is amended by exactly those before fuzzing (``conftest.amend_spec``), no check is silenced.

Bounded and seeded in ``make test`` (``FUZZ_EXAMPLES`` examples per operation and mode, fixed
seeds); ``make fuzz`` runs the same test with many more examples and random seeds
(``FTKIT_FUZZ_EXAMPLES``, ``FTKIT_FUZZ_RANDOM=1``; a failure prints the ``@seed`` to replay it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
from conftest import amend_spec, load_spec, tiny_chat_file

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("uvicorn")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ftkit.local.api.parameters import POLICY  # noqa: E402
from ftkit.local.api.wire import APIError  # noqa: E402

# Every operation the local server implements (ftkit/local/api/routes/), by the spec's operationId.
OPERATIONS = [
    "listModels", "retrieveModel", "deleteModel",
    "createFile", "listFiles", "retrieveFile", "downloadFile", "deleteFile",
    "createFineTuningJob", "listPaginatedFineTuningJobs", "retrieveFineTuningJob", "listFineTuningEvents",
    "listFineTuningJobCheckpoints", "pauseFineTuningJob", "resumeFineTuningJob", "cancelFineTuningJob",
    "runGrader", "validateGrader",
    "createChatCompletion", "createCompletion",
    "createBatch", "listBatches", "retrieveBatch", "cancelBatch",
    "createResponse", "getResponse", "listInputItems", "deleteResponse",
    "getChatCompletion", "updateChatCompletion", "deleteChatCompletion",
    "getChatCompletionMessages",
    "createEval", "listEvals", "getEval", "updateEval", "deleteEval", "createEvalRun", "getEvalRuns", "getEvalRun",
    "cancelEvalRun", "deleteEvalRun", "getEvalRunOutputItems", "getEvalRunOutputItem",
]
FUZZ_EXAMPLES = int(os.environ.get("FTKIT_FUZZ_EXAMPLES", "8"))
RANDOM_SEEDS = os.environ.get("FTKIT_FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
# the parameters (path or body) that name objects, by kind, so that some requests name ones that exist
ID_PARAMETERS = {"model": "models", "file_id": "files", "fine_tuning_job_id": "jobs", "batch_id": "batches",
                 "response_id": "responses", "training_file": "training_files", "validation_file": "training_files",
                 "input_file_id": "batch_files"}


class FuzzTarget:
    """The app on a fake engine, background loops off, served by uvicorn in a thread."""

    def __init__(self, home) -> None:
        import uvicorn
        from fake_engine import FakeEngine

        from ftkit.local.api.app import create_app

        self.log: list[str] = []
        self.app = create_app(home, engine=FakeEngine(), start_background=False, log=self.log.append)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.known: dict[str, list[str]] = {}
        self.answers: dict[str, list[int]] = {}  # operationId -> the status codes the fuzzer got

    def start(self) -> FuzzTarget:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the fuzz server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def session(self):
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.app.state.key}"
        return session

    def seed_objects(self, tmp_path) -> None:
        """One object of each kind, so that generated requests can name ids that exist."""
        http = self.session()

        def ok(response):
            assert response.status_code == 200, response.text[:300]
            return response.json()

        models = [m["id"] for m in ok(http.get(f"{self.base_url}/models"))["data"]]
        training = tiny_chat_file(tmp_path / "train.jsonl", n=10)
        with training.open("rb") as f:
            file = ok(http.post(f"{self.base_url}/files", files={"file": f}, data={"purpose": "fine-tune"}))
        job = ok(http.post(f"{self.base_url}/fine_tuning/jobs", json={"model": models[0], "training_file": file["id"]}))
        line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": models[0], "messages": [{"role": "user", "content": "hi"}]}})
        batch_file = ok(http.post(f"{self.base_url}/files", files={"file": ("in.jsonl", line.encode() + b"\n")},
                                  data={"purpose": "batch"}))
        batch = ok(http.post(f"{self.base_url}/batches", json={"input_file_id": batch_file["id"],
                                                              "endpoint": "/v1/chat/completions",
                                                              "completion_window": "24h"}))
        response = ok(http.post(f"{self.base_url}/responses", json={"model": models[0], "input": "hi"}))
        self.known = {"models": models, "files": [file["id"], batch_file["id"]], "jobs": [job["id"]],
                      "batches": [batch["id"]], "responses": [response["id"]], "training_files": [file["id"]],
                      "batch_files": [batch_file["id"]]}


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    target = FuzzTarget(tmp_path_factory.mktemp("ftkit-fuzz-home")).start()
    target.seed_objects(tmp_path_factory.mktemp("fuzz-data"))
    yield target
    target.stop()


@pytest.fixture(scope="module")
def fuzz_schema():
    from schemathesis.config import SchemathesisConfig

    # the bearer key is sent by the session; generating (and negating) it would only test auth
    config = SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_dict(amend_spec(load_spec(), OPERATIONS), config=config)


def steered(operation, target: FuzzTarget):
    """Valid requests, half of them steered past the door: top-level parameters the spec does not
    name (its schemas allow extra properties, the server refuses them) and the ones the server
    refuses on principle (``POLICY``) are left out, and the parameters that name objects (the
    model, always; files, ids in the path) name ones that exist. Without this nearly every valid request
    would stop at a 400 for an unknown parameter or a 404 for a random id, and the services
    behind the routes would go untested."""
    operation_id = operation.definition.raw["operationId"]
    policy = POLICY.get(operation_id, {})

    def unwanted(name: str, value) -> bool:
        if name not in policy:
            return True
        try:
            policy[name].check(name, value)
        except APIError:
            return True
        return False

    def steer(drawn):
        case, steer_it, pick = drawn
        if not steer_it:
            return case
        if isinstance(case.body, dict) and policy:
            for name in [n for n, v in case.body.items() if unwanted(n, v)]:
                del case.body[name]
            if "model" in policy:  # optional in createResponse's schema, needed without stored prompts
                case.body.setdefault("model", "")
        for where in (case.body if isinstance(case.body, dict) else {}, case.path_parameters or {}):
            for name in where:
                known = target.known.get(ID_PARAMETERS.get(name, ""), [])
                if known:
                    where[name] = known[pick % len(known)]
        return case

    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    return st.tuples(cases, st.booleans(), st.integers(0, 99)).map(steer)


def _cases(operation, mode: GenerationMode, target: FuzzTarget):
    if mode is GenerationMode.POSITIVE:
        return steered(operation, target)
    return operation.as_strategy(generation_mode=mode)


def _has_negatable_input(operation) -> bool:
    """Whether schemathesis can make an invalid request for ``operation`` at all: a free-form
    string in the path (an id) has no invalid value, so only bodies and query strings count."""
    return operation.body or any(p.location.value == "query" for p in operation.iter_parameters())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz_operation(operation_id, mode, fuzz_schema, fuzz_target):
    operation = fuzz_schema.find_operation_by_id(operation_id)
    if mode is GenerationMode.NEGATIVE and not _has_negatable_input(operation):
        pytest.skip(f"{operation_id} has only free-form path parameters: no request is invalid by the spec")
    http = fuzz_target.session()

    @given(case=_cases(operation, mode, fuzz_target))
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=not RANDOM_SEEDS, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink] if RANDOM_SEEDS else [Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=RANDOM_SEEDS)
    def fuzz(case):
        response = case.call(base_url=fuzz_target.base_url, session=http, timeout=60)
        fuzz_target.answers.setdefault(operation_id, []).append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_server_still_answers_after_fuzzing(fuzz_target):
    """Runs after the fuzzing above (same module, same server): nothing it sent broke the server,
    and no trainer was started."""
    http = fuzz_target.session()
    models = http.get(f"{fuzz_target.base_url}/models", timeout=10)
    assert models.status_code == 200 and models.json()["data"], models.text[:300]
    chat = http.post(f"{fuzz_target.base_url}/chat/completions", timeout=30,
                     json={"model": fuzz_target.known["models"][0], "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200, chat.text[:300]
    assert fuzz_target.app.state.worker._child is None, "the fuzz run must not start a trainer"
    # the fuzzing reached the services behind the doors (a wrong key would make every answer 401)
    if len(fuzz_target.answers) == len(OPERATIONS):
        succeeded = sorted(op for op, statuses in fuzz_target.answers.items() if any(s < 300 for s in statuses))
        assert len(succeeded) >= len(OPERATIONS) // 2, fuzz_target.answers
        assert not any(set(statuses) == {401} for statuses in fuzz_target.answers.values()), fuzz_target.answers
    assert not [line for line in fuzz_target.log if "internal error" in line], fuzz_target.log


# -- what the fuzzer found, kept fixed --------------------------------------------------------------


def test_job_metadata_filters(fuzz_target, tmp_path):
    """``metadata=null`` lists the jobs without metadata (it was ignored: every job was listed),
    and a filter the spec cannot mean (``metadata[]=x``: no key) is a 400 (it listed nothing)."""
    http, url = fuzz_target.session(), f"{fuzz_target.base_url}/fine_tuning/jobs"
    with tiny_chat_file(tmp_path / "train.jsonl").open("rb") as f:
        file = http.post(f"{fuzz_target.base_url}/files", files={"file": f}, data={"purpose": "fine-tune"}).json()["id"]
    model = fuzz_target.known["models"][0]
    plain = http.post(url, json={"model": model, "training_file": file}).json()["id"]
    tagged = http.post(url, json={"model": model, "training_file": file, "metadata": {"run": "fuzz-filter"}}).json()["id"]

    def listed(query: str) -> list[str]:
        r = http.get(f"{url}?limit=100&{query}")
        assert r.status_code == 200, r.text[:300]
        return [job["id"] for job in r.json()["data"]]

    assert plain in listed("metadata=null") and tagged not in listed("metadata=null")
    assert listed("metadata[run]=fuzz-filter") == [tagged]
    assert {plain, tagged} <= set(listed(""))
    for query in ("metadata[]=x", "metadata=yes", "metadata[a][b]=x", "metadata=null&metadata[run]=fuzz-filter"):
        r = http.get(f"{url}?{query}")
        assert r.status_code == 400 and r.json()["error"]["param"] == "metadata", (query, r.text[:300])

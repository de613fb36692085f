"""Shared fixtures: a real local server process, an ``openai`` client for it, and the OpenAPI spec.

The server is started once per test session in a temporary home (the dequantised model cache
in ~/.cache/ftkit is shared, so only the first run on a machine pays the ~20 s conversion).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# OpenAI's official OpenAPI spec (MIT, see tests/data/openai-openapi.LICENSE and .VERSION): the
# contract the local server is tested against.
SPEC_PATH = ROOT / "tests" / "data" / "openai-openapi.yaml"


#: tests/test_notebooks.py's quick-mode course run, one dict per notebook (``ftkit.course.run``'s
#: results), filled by its fixture: printed in the terminal summary of every run that ran it, next
#: to pytest's slowest durations (``--durations=30`` in pyproject.toml), so a CI log shows where
#: the time went.
NOTEBOOK_RESULTS: list[dict] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not NOTEBOOK_RESULTS:
        return
    tr = terminalreporter
    tr.section("quick-mode notebooks (tests/test_notebooks.py)")
    for r in NOTEBOOK_RESULTS:
        tr.write_line(f"{r['notebook']:40} {'ok' if r['ok'] else 'FAILED':7} {r['seconds']:7.1f} s wall  "
                      f"{r.get('cpu_seconds', 0):7.1f} CPU-s")
    wall = sum(r["seconds"] for r in NOTEBOOK_RESULTS)
    cpu = sum(r.get("cpu_seconds", 0) for r in NOTEBOOK_RESULTS)
    tr.write_line(f"{'all notebooks':40} {'':7} {wall:7.1f} s wall  {cpu:7.1f} CPU-s  "
                  f"(load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A ``python -m ftkit.local serve`` process with its own home directory."""

    def __init__(self, home: Path, max_upload_mb: float = 2.0, env: dict | None = None) -> None:
        self.home = home
        self.env = env or {}
        self.port = _free_port()
        self.max_upload_mb = max_upload_mb
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def key(self) -> str:
        return (self.home / "api_key").read_text().strip()

    def start(self, timeout: float = 180) -> LocalServer:
        import httpx

        from ftkit.local.control import open_log

        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # as ftkit.client() makes it
        log = open_log(self.home)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftkit.local", "serve", "--home", str(self.home), "--port", str(self.port),
             "--max-upload-mb", str(self.max_upload_mb)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FTKIT_HOME": str(self.home), **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + (self.home / "server.log").read_text()[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def health(self) -> dict:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.key, max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory):
    pytest.importorskip("torch")
    # steps last at least 50 ms: the tiny model's jobs (below) stay long enough to pause or cancel
    # on any machine; the real model's steps take longer anyway
    server = LocalServer(tmp_path_factory.mktemp("ftkit-home"), env={"FTKIT_MIN_STEP_SECONDS": "0.05"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(local_server):
    return local_server.client()


#: A tiny random Llama (tests/tiny.py) registered as a base model: jobs whose subject is the job's
#: life (events, cancel, pause, resume, crashes, seeds) train it in milliseconds per step, through
#: exactly the same server, trainer and loop as the real model.
TINY_MODEL = "tiny-llama"


def tiny_model_dir(folder: Path) -> Path:
    """Save the tiny model and its tokenizer as a Hugging Face directory (once per folder)."""
    from tiny import tiny_llama, tiny_tokenizer

    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        tiny_llama().save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    return folder


def register_tiny_model(home: Path, folder: Path) -> str:
    """Register the tiny model in ``home`` as ``register-model`` does (the server may be running)."""
    from ftkit.local.services.platform import Platform
    from ftkit.local.store import Store

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store(home)
    if not any(m["id"] == TINY_MODEL for m in store.list_models()):
        Platform(store, max_upload_bytes=0).register_base_model(TINY_MODEL, str(tiny_model_dir(folder)))
    return TINY_MODEL


@pytest.fixture(scope="session")
def tiny_model(local_server, tmp_path_factory) -> str:
    """The tiny model's id on the shared server."""
    return register_tiny_model(local_server.home, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def openapi_spec() -> dict:
    return load_spec()


def load_spec() -> dict:
    """A fresh copy of OpenAI's spec as a dict (libyaml's parser when there is one: 1-2 s, not 7)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)


def amend_spec(spec: dict, operations=()) -> dict:
    """``spec`` amended, in place, by the local server's documented deviations and nothing else
    (``ftkit.local.api.parameters``: ``RESPONSE_DEVIATIONS``, ``MEDIA_TYPE_DEVIATIONS``,
    ``ERROR_RESPONSE``): the values those response fields may also take, and, for each operationId
    in ``operations``, its media type and errors as a 4xx with OpenAI's error envelope."""
    from ftkit.local.api.parameters import (
        ERROR_RESPONSE,
        MEDIA_TYPE_DEVIATIONS,
        RESPONSE_DEVIATIONS,
    )

    schemas = spec["components"]["schemas"]
    for deviation in RESPONSE_DEVIATIONS:
        for name in deviation.fields:  # a dotted name reaches into an inline object ("sample.error")
            field = schemas[deviation.schema]
            for part in name.split("."):
                if "properties" not in field and "items" in field:  # and into an array's items ("choices.x")
                    field = field["items"]
                field = field["properties"][part]
            if "enum" in field and None not in deviation.also:
                field["enum"] = [*field["enum"], *(v for v in deviation.also if v not in field["enum"])]
            else:
                original = dict(field)
                field.clear()
                field["anyOf"] = [original, *({"type": "null"} if v is None else {"const": v} for v in deviation.also)]
    _map_discriminators(spec)
    _overlapping_unions(spec)
    error = {"description": "OpenAI's error envelope",
             "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_RESPONSE}"}}}}
    wanted = set(operations)
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") in wanted:
                responses = operation.setdefault("responses", {})
                for status in [s for s in responses if s.startswith("4")]:
                    del responses[status]
                responses["4XX"] = error
                if operation["operationId"] in MEDIA_TYPE_DEVIATIONS:
                    status, media_type, _ = MEDIA_TYPE_DEVIATIONS[operation["operationId"]]
                    responses[status]["content"] = {media_type: {"schema": {"type": "string", "format": "binary"}}}
    return spec


@pytest.fixture(scope="session")
def check_schema(openapi_spec):
    """check_schema(instance, "FineTuningJob") validates raw JSON against the spec's schema."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    # the local server's documented deviations (ftkit/local/api/parameters.py), and nothing else
    spec = _to_2020_12(amend_spec(copy.deepcopy(openapi_spec)))
    registry = Registry().with_resource("urn:openai", DRAFT202012.create_resource(spec))

    def check(instance, schema_name: str) -> None:
        validator = Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{schema_name}"}, registry=registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: e.path)
        assert not errors, f"{schema_name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])

    return check


# Unions of the spec whose branches overlap for every real value, so that ``oneOf`` (exactly one
# branch) refuses what the spec's own examples send: an eval run's ``input_messages.template``
# message ``{"role": "user", "content": "..."}`` is both an ``EasyInputMessage`` (or the inline
# role/content object) and an ``EvalItem``. Read as ``anyOf``, as the request extract reads every
# union (scripts/extract_request_schemas.py).
OVERLAPPING_UNIONS = [  # (schema, the path to the union inside it)
    ("CreateEvalCompletionsRunDataSource", ("properties", "input_messages", "oneOf", 0, "properties", "template", "items")),
    ("CreateEvalResponsesRunDataSource", ("properties", "input_messages", "oneOf", 0, "properties", "template", "items")),
]


def _overlapping_unions(spec: dict) -> None:
    """A reading of the spec, not a deviation: see :data:`OVERLAPPING_UNIONS`."""
    for name, path in OVERLAPPING_UNIONS:
        node = spec["components"]["schemas"][name]
        for step in path:
            node = node[step]
        node["anyOf"] = node.pop("oneOf")


def _map_discriminators(spec: dict) -> None:
    """A reading of the spec, not a deviation: OpenAI's spec marks its unions with
    ``discriminator: {propertyName: type}`` and no ``mapping``, meaning the branches' ``type``
    values ("message", "function_call" ...); OpenAPI reads a missing mapping as the schemas'
    names ("InputMessageResource" ...), so an OpenAPI tool (schemathesis) would refuse every real
    item. Each such discriminator gets the mapping the spec means, from the branches' own
    ``const`` / ``enum`` values; one whose branches do not all name distinct values (input and
    output messages are both "message") is dropped: the ``oneOf`` / ``anyOf`` still validates."""
    schemas = spec["components"]["schemas"]

    def tag_values(branch: dict, name: str, depth: int = 0) -> list:
        if "$ref" in branch:
            branch = schemas.get(branch["$ref"].rsplit("/", 1)[-1], {})
        prop = branch.get("properties", {}).get(name, {})
        if "const" in prop or "enum" in prop:
            return [prop["const"]] if "const" in prop else list(prop["enum"])
        parts = branch.get("allOf", []) if depth < 5 else []
        return next((found for part in parts if (found := tag_values(part, name, depth + 1))), [])

    def walk(node) -> None:
        if isinstance(node, dict):
            found = node.get("discriminator")
            if isinstance(found, dict) and "mapping" not in found:
                branches = node.get("oneOf") or node.get("anyOf") or []
                mapping = {}
                for branch in branches:
                    values = tag_values(branch, found.get("propertyName", "")) if "$ref" in branch else []
                    if not values or any(value in mapping for value in values):  # unnamed, or ambiguous
                        mapping = None
                        break
                    mapping.update({value: branch["$ref"] for value in values if isinstance(value, str)})
                if mapping:
                    found["mapping"] = mapping
                else:
                    del node["discriminator"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)


def _to_2020_12(node):
    """The spec mixes in two OpenAPI 3.0 idioms that JSON Schema 2020-12 reads differently:
    boolean ``exclusiveMinimum: true`` (meaning "> minimum", read as the number 1) and
    ``nullable: true`` (ignored, so null is rejected; also beside a ``$ref``). Rewrite both to
    2020-12."""
    if isinstance(node, dict):
        if node.pop("nullable", False):
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"].append(None)
            if "type" not in node and "enum" not in node:  # e.g. a nullable $ref: null or the reference
                inner = dict(node)
                node.clear()
                node["anyOf"] = [inner, {"type": "null"}]
        for bound in ("Minimum", "Maximum"):
            flag = node.get(f"exclusive{bound}")
            if isinstance(flag, bool):
                limit = node.pop(bound.lower(), None)
                node.pop(f"exclusive{bound}")
                if limit is not None:
                    node[f"exclusive{bound}" if flag else bound.lower()] = limit
        for value in node.values():
            _to_2020_12(value)
    elif isinstance(node, list):
        for value in node:
            _to_2020_12(value)
    return node


def loose_paths(home: Path) -> list[str]:
    """Every path under ``home`` (itself included) that its group or other users may use: what a
    private home (0700 folders, 0600 files) never has."""
    import stat

    loose = []
    for path in [home, *sorted(home.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode & 0o077:
            loose.append(f"{path.relative_to(home)} {mode:o}")
    return loose


def tiny_chat_file(path: Path, n: int = 10, *, seed: int = 0) -> Path:
    """A small valid SFT file: short tickets answered with JSON."""
    import random

    from ftkit import data

    rng = random.Random(seed)
    cats = ["billing", "technical", "shipping"]
    examples = []
    for i in range(n):
        cat = cats[i % 3]
        examples.append(data.chat_example([
            data.system("Triage. Reply with JSON."),
            data.user(f"Ticket {i}: problem with my {cat} ({rng.randint(100, 999)})"),
            data.assistant(json.dumps({"category": cat})),
        ]))
    data.write_jsonl(examples, path)
    return path


def tiny_preference_file(path: Path, n: int = 10, *, seed: int = 0) -> Path:
    """A small valid DPO file: the JSON answer preferred over a chatty one."""
    import random

    rng = random.Random(seed)
    cats = ["billing", "technical", "shipping"]
    lines = []
    for i in range(n):
        cat = cats[i % 3]
        prompt = [{"role": "system", "content": "Triage. Reply with JSON."},
                  {"role": "user", "content": f"Ticket {i}: problem with my {cat} ({rng.randint(100, 999)})"}]
        lines.append({"input": {"messages": prompt},
                      "preferred_output": [{"role": "assistant", "content": json.dumps({"category": cat})}],
                      "non_preferred_output": [{"role": "assistant", "content": f"This looks like {cat} to me."}]})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def wait_for_job(client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")


# -- the app with a fake engine: fast tests of routes, request checks and the chat service ----------


@pytest.fixture(scope="session")
def fake_engine():
    from fake_engine import FakeEngine

    return FakeEngine()


@pytest.fixture(scope="session")
def fake_server(fake_engine, tmp_path_factory):
    """The real app (routes, checks, services, store, batch runner) in-process, on a fake engine:
    a ``TestClient`` (an ``httpx.Client``) with the app's key set."""
    from fastapi.testclient import TestClient

    from ftkit.local.api.app import create_app

    app = create_app(tmp_path_factory.mktemp("ftkit-fake-home"), engine=fake_engine, log=lambda message: None)
    # server errors come back as the 500 a client sees (tests check status codes), not as exceptions
    with TestClient(app, base_url="http://local.test", raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {app.state.key}"
        yield http


@pytest.fixture(scope="session")
def fake_client(fake_server):
    """The official ``openai`` SDK talking to :func:`fake_server`."""
    import openai

    return openai.OpenAI(base_url="http://local.test/v1", api_key=fake_server.headers["Authorization"][7:],
                         http_client=fake_server, max_retries=0)


def engine_supports_constraints() -> bool:
    """Whether this checkout's engine does constrained decoding and logprobs (the engine side of
    issue 11 brings ``ftkit/local/inference/grammar.py``)."""
    import importlib.util

    return importlib.util.find_spec("ftkit.local.inference.grammar") is not None


needs_constrained_engine = pytest.mark.skipif(
    not engine_supports_constraints(),
    reason="engine supports constraints and logprobs: needs ftkit/local/inference/grammar.py (the engine side of issue 11)")

"""Notebook 05's optional capable competitor: named by one setting, run with the schema, skipped
with one clear line when the backend does not serve it. The competitor here is the tiny random
Llama (tests/tiny.py) registered as register-model does: its answers are nonsense, so what the
test checks is the plumbing -- found, served, constrained to the schema -- not its accuracy."""

from __future__ import annotations

import json

import pytest

from ftkit import evaluate as ev

LABELS = {"category": ["billing", "technical"], "urgency": ["low", "high"], "product": ["api", "hardware"]}
EXAMPLES = [
    {"id": f"T{i}", "messages": [{"role": "system", "content": "Triage."},
                                 {"role": "user", "content": f"ticket {i}: the API returns 500"},
                                 {"role": "assistant", "content": json.dumps(
                                     {"category": "technical", "urgency": "high", "product": "api"})}]}
    for i in range(3)
]


@pytest.mark.slow  # starts the local server
def test_a_registered_model_competes_with_the_schema(client, tiny_model, monkeypatch):
    monkeypatch.setenv(ev.COMPETITOR_ENV, tiny_model)
    model, why = ev.find_competitor(client)
    assert model == tiny_model and ev.COMPETITOR_ENV in why
    schema = ev.label_schema(LABELS, name="ticket_triage")
    result = ev.evaluate(client, EXAMPLES, [ev.Config("competitor + schema", model, system="Triage.",
                                                      response_format=schema, max_tokens=40)],
                         labels=LABELS, concurrency=3)
    rows = result.of("competitor + schema")
    assert len(rows) == 3
    assert rows["valid_json"].all()  # constrained decoding: the schema holds whatever the model wants
    for answer in rows["prediction"]:
        value = json.loads(answer)
        assert list(value) == list(LABELS) and all(value[k] in LABELS[k] for k in LABELS)


@pytest.mark.slow  # starts the local server
def test_no_competitor_is_one_clear_line(client, monkeypatch):
    monkeypatch.delenv(ev.COMPETITOR_ENV, raising=False)
    model, why = ev.find_competitor(client)
    assert model is None and "register-model" in why and "\n" not in why
    model, why = ev.find_competitor(client, "no-such-model")
    assert model is None and "'no-such-model'" in why and "not served" in why


def test_a_hosted_backend_competes_with_its_base_model(monkeypatch):
    import openai

    from ftkit.backend import DEFAULT_BASE_MODELS

    monkeypatch.delenv(ev.COMPETITOR_ENV, raising=False)
    hosted = openai.OpenAI(api_key="not-a-key", base_url="https://api.openai.com/v1")  # never called
    model, why = ev.find_competitor(hosted)
    assert model == DEFAULT_BASE_MODELS["openai"] and "hosted base model" in why

"""Client-compatibility details of the local server (issue 24) through the official ``openai``
SDK on the fake engine: the ``x-request-id`` header, the validator's minimum for validation files.
Fast: no model is loaded.
"""

from __future__ import annotations

import re

import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "hi"}]
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


def test_every_response_carries_an_x_request_id(fake_client, fake_server):
    raw = fake_client.chat.completions.with_raw_response.create(model=MODEL, messages=HI, max_tokens=2)
    assert REQUEST_ID.match(raw.headers["x-request-id"])
    assert raw.parse()._request_id == raw.headers["x-request-id"]  # the SDK's request_id works
    other = fake_client.models.with_raw_response.list().headers["x-request-id"]
    assert REQUEST_ID.match(other) and other != raw.headers["x-request-id"]  # one per request
    # errors carry it too: the SDK's APIError.request_id, an unknown URL, a bad key
    with pytest.raises(openai.NotFoundError) as err:
        fake_client.chat.completions.create(model="no-such-model", messages=HI)
    assert REQUEST_ID.match(err.value.request_id or "")
    assert REQUEST_ID.match(fake_server.get("/v1/nowhere").headers["x-request-id"])
    unauthorised = fake_server.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert unauthorised.status_code == 401 and REQUEST_ID.match(unauthorised.headers["x-request-id"])
    assert REQUEST_ID.match(fake_server.get("/health").headers["x-request-id"])


def test_a_four_example_validation_file_is_valid_as_the_server_says(tmp_path):
    """The validator and the server's worker share one minimum per role (training 10, validation 1):
    ``ftkit validate --role validation`` passes the 4-example file the server trains with."""
    import json
    import subprocess
    import sys

    from ftkit.validation import MIN_EXAMPLES_FOR, validate

    path = tmp_path / "valid.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(4)))
    assert validate(path, min_examples=MIN_EXAMPLES_FOR["validation"]).ok
    training = validate(path, min_examples=MIN_EXAMPLES_FOR["training"])
    assert [p.code for p in training.problems if p.code == "too_few_examples"] == ["too_few_examples"]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ftkit", "validate", str(path), *args],
                              capture_output=True, text=True, timeout=60)

    as_validation, as_training = cli("--role", "validation"), cli()
    assert as_validation.returncode == 0 and "too_few_examples" not in as_validation.stdout
    assert as_training.returncode != 0 and "too_few_examples" in as_training.stdout
    assert "a validation file needs 1" in as_training.stdout

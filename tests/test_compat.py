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

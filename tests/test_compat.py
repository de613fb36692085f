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


def test_the_results_file_is_base64_csv_as_hosted_and_readers_take_both(tmp_path):
    """The trainer writes the results file base64-encoded (the cookbook's
    ``base64.b64decode(client.files.content(id).read())`` gives the CSV); ftkit's readers take
    plain and base64 CSV alike."""
    import base64
    import csv
    import io
    from types import SimpleNamespace

    from ftkit import jobs
    from ftkit import lifecycle as lc
    from ftkit.local.jobs.training.loop import JobRun
    from ftkit.local.store import Store

    store = Store(tmp_path)
    rows = [{"step": 1, "train_loss": 2.5, "train_accuracy": 0.4},
            {"step": 2, "train_loss": 1.5, "train_accuracy": 0.6, "valid_loss": 1.75}]
    job_run = SimpleNamespace(method=SimpleNamespace(name=lc.SUPERVISED), store=store)
    file_id = JobRun.write_results(job_run, rows)
    raw = store.file_path(file_id).read_bytes()
    assert b"," not in raw and store.get_file(file_id)["bytes"] == len(raw)
    decoded = list(csv.DictReader(io.StringIO(base64.b64decode(raw).decode())))
    assert list(decoded[0]) == lc.RESULT_COLUMNS[lc.SUPERVISED]
    assert [(r["step"], r["train_loss"], r["valid_loss"]) for r in decoded] == [("1", "2.5", ""), ("2", "1.5", "1.75")]
    plain = base64.b64decode(raw).decode()
    for content in (raw, plain, plain.encode(), base64.urlsafe_b64encode(plain.encode()).rstrip(b"=")):
        assert lc.results_csv(content) == plain
        frame = jobs.parse_results(content)
        assert frame["train_loss"].tolist() == [2.5, 1.5] and frame["step"].tolist() == [1, 2]
    assert lc.results_csv(b"\x00\x01 neither") is None
    # the export's model card reads the last row from the store
    from ftkit.local.export import _results_last_row

    assert _results_last_row(store, {"result_files": [file_id]}) == {
        "step": 2, "train_loss": 1.5, "train_accuracy": 0.6, "valid_loss": 1.75}


def test_adjust_logits_matches_the_hand_computation():
    """OpenAI's formula by hand: logit[j] -= c[j] * frequency + (c[j] > 0) * presence; += bias[j]."""
    import torch

    from ftkit.local.inference.engine import adjust_logits

    logits = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    generated = [2, 2, 2, 4]  # token 2 three times, token 4 once
    adjust_logits(logits, generated, presence=0.5, frequency=0.25, bias={0: 10.0, 4: -100.0})
    expected = [1.0 + 10.0, 2.0, 3.0 - (3 * 0.25 + 0.5), 4.0, 5.0 - (1 * 0.25 + 0.5) - 100.0]
    assert logits.tolist() == pytest.approx(expected)
    untouched = torch.tensor([1.0, 2.0])
    adjust_logits(untouched, [], presence=2.0, frequency=2.0)  # nothing generated yet: nothing to penalise
    assert untouched.tolist() == [1.0, 2.0]


def test_penalties_and_logit_bias_reach_the_engine(fake_client, fake_engine):
    completion = fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, presence_penalty=0.5,
                                                     frequency_penalty=-1, logit_bias={"42": 5, "7": -100})
    assert completion.choices[0].message.content
    request = fake_engine.requests[-1]
    assert (request.presence_penalty, request.frequency_penalty, request.logit_bias) == (0.5, -1.0, {42: 5.0, 7: -100.0})
    for bias, message in (({"49152": 1}, "Invalid key in 'logit_bias': 49152"),
                          ({"abc": 1}, "Invalid key in 'logit_bias': abc"),
                          ({"5": 101}, "Invalid value in 'logit_bias' for token 5: 101")):
        with pytest.raises(openai.BadRequestError) as err:
            fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, logit_bias=bias)
        assert err.value.body["param"] == "logit_bias" and message in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:  # the spec's range, -2 to 2
        fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, presence_penalty=3)
    assert err.value.body["param"] == "presence_penalty"

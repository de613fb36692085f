"""Notebook 07's Promptfoo config (``notebooks/promptfoo/``, ``ftkit.promptfoo``), run by the real
``promptfoo eval``: its javascript assertions grade answers exactly as ftkit's ``string_check``
graders do (Promptfoo's ``echo`` provider returns crafted answers), and the config's OpenAI
provider evaluates a model of the real local server, every case graded and the counts equal to
ftkit's grader on the same answers, with the key in neither the config nor the results.

Slow (Promptfoo is a Node.js program; the second test starts the real server). Skipped, with one
line, where Node.js is not installed; where it is, Promptfoo is installed once into
~/.cache/ftkit/promptfoo (``ftkit.promptfoo.install``) and reused.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from tiny_models import TICKET_SCHEMA

from ftkit import graders
from ftkit import promptfoo as pf
from ftkit import reinforcement as rl

pytestmark = [pytest.mark.slow, pytest.mark.skipif(pf.missing() is not None, reason=pf.missing() or "")]

FIELDS = list(rl.FIELDS)
CONFIG_DIR = pf.CONFIG.parent


@pytest.fixture(scope="module")
def program():
    return pf.executable() or pf.install()


def _ftkit_passes(answer: str, item: dict) -> dict[str, bool]:
    """Each field's string_check (notebook 07's testing criteria) run by ftkit.graders."""
    return {f: graders.run_grader({"grader": rl.field_grader(f), "model_sample": answer, "item": item})["reward"] == 1
            for f in FIELDS}


def _config(tmp_path, **changes) -> dict:
    """The committed config with its file:// references made absolute (it is written elsewhere)."""
    config = yaml.safe_load(pf.CONFIG.read_text(encoding="utf-8"))

    def absolute(ref: str) -> str:
        return "file://" + str(CONFIG_DIR / ref[len("file://"):]) if ref.startswith("file://") else ref

    config["prompts"] = [{**p, "id": absolute(p["id"])} for p in config["prompts"]]
    config["tests"] = [{**t, "path": absolute(t["path"])} for t in config["tests"]]
    config["defaultTest"]["assert"] = [{**a, "value": absolute(a["value"])} for a in config["defaultTest"]["assert"]]
    config.update(changes)
    return config


def test_the_assertions_grade_as_ftkits_string_check(program, tmp_path):
    """Crafted answers (right, fields wrong, keys reordered, a label that does not exist, prose,
    cut-off JSON, non-string values, not an object) through the config's assertions, with
    Promptfoo's echo provider: each field passes exactly when ftkit's string_check gives 1."""
    items = rl.eval_items(rl.rft_settings(quick=True).test_examples()[:3])
    cases = []
    for item in items:
        labels = {f: item[f] for f in FIELDS}
        answers = [*rl.sample_answers(labels).values(), json.dumps({**labels, "urgency": 3}),
                   json.dumps([labels]), "null", json.dumps(labels["category"])]
        cases += [(answer, item) for answer in answers]
    config = _config(tmp_path, prompts=["{{ answer }}"], providers=["echo"],
                     tests=[{"description": f"case {i}", "vars": {"answer": a, **item}} for i, (a, item) in enumerate(cases)])
    (tmp_path / "echo.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "echo.json"
    done = subprocess.run(pf.command(out, config=tmp_path / "echo.yaml", program=program),
                          env={**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1",
                               "PROMPTFOO_CONFIG_DIR": str(tmp_path / ".promptfoo")},
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    rows = sorted(pf.graded(json.loads(out.read_text())), key=lambda r: int(r["description"].split()[1]))
    assert len(rows) == len(cases) and all(r["error"] is None for r in rows)
    for row, (answer, item) in zip(rows, cases):
        assert row["output"] == answer
        assert row["passed"] == _ftkit_passes(answer, item), (answer, row["passed"])
    passes = [p for r in rows for p in r["passed"].values()]
    assert any(passes) and not all(passes)  # both verdicts were exercised


def test_the_config_evaluates_a_model_of_the_local_server(program, client, tiny_model, tmp_path):
    """The committed config's provider, prompt, test generator and assertions against the real
    server (the tiny model, its answers held to the triage schema so that they parse and some
    fields match): every case answered and graded, the counts those of ftkit's string_check on the
    same answers, the prompt the notebook's, and no key in the config or the results."""
    config = _config(tmp_path)
    config["providers"][0]["config"]["response_format"] = {
        "type": "json_schema", "json_schema": {"name": "triage", "schema": TICKET_SCHEMA, "strict": True}}
    (tmp_path / "promptfooconfig.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    n = 6
    results = pf.run(client, tiny_model, tmp_path / "results.json", config=tmp_path / "promptfooconfig.yaml",
                     first=n, extra_env={"FTKIT_QUICK": "1"})

    expected = pf.test_cases(rl.rft_settings(quick=True).test_examples())[:n]
    rows = pf.graded(results)
    assert sorted(r["description"] for r in rows) == sorted(c["description"] for c in expected)
    by_id = {c["description"]: c["vars"] for c in expected}
    counts = dict.fromkeys(FIELDS, 0)
    for row in rows:
        assert row["error"] is None and isinstance(row["output"], str), row
        assert row["vars"] == by_id[row["description"]]
        assert set(row["passed"]) == set(FIELDS)
        mine = _ftkit_passes(row["output"], row["vars"])
        assert row["passed"] == mine, (row["output"], row["passed"], mine)
        for f in FIELDS:
            counts[f] += mine[f]
    summary = pf.counts(results)
    assert {f: summary[f] for f in FIELDS} == counts and summary["items"] == n and summary["errored"] == 0

    # the prompt sent is the notebook's: the short system prompt, then the ticket
    first = next(r for r in results["results"]["results"] if r["testCase"]["description"] == rows[0]["description"])
    sent = json.loads(first["prompt"]["raw"])
    assert [m["role"] for m in sent] == ["system", "user"] and sent[1]["content"] == by_id[rows[0]["description"]]["ticket"]

    key = client.api_key
    assert key not in pf.CONFIG.read_text() and key not in (tmp_path / "results.json").read_text()

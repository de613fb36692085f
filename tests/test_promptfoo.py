"""Notebook 07's Promptfoo config (``notebooks/promptfoo/``, ``ftkit.promptfoo``), run by the real
``promptfoo eval``: its javascript assertions grade answers exactly as ftkit's ``string_check``
graders do (Promptfoo's ``echo`` provider returns crafted answers), and the config's OpenAI
provider evaluates a model of the real local server, every case graded and the counts equal to
ftkit's grader on the same answers, with the key in neither the config nor the results.

The two tests that run Promptfoo are slow (it is a Node.js program; the second starts the real
server) and skipped, with one line, where Node.js is not installed; where it is, Promptfoo is
installed once into ~/.cache/ftkit/promptfoo (``ftkit.promptfoo.install``) and reused. The fast
tests check the config, the test cases and the results reader without Node.js.
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
from ftkit.course import data_path

needs_node = pytest.mark.skipif(pf.missing() is not None, reason=pf.missing() or "")

FIELDS = list(rl.FIELDS)
CONFIG_DIR = pf.CONFIG.parent


@pytest.fixture(scope="module")
def program():
    return pf.executable() or pf.install()


def _text(output) -> str:
    """An answer as text: Promptfoo hands JSON answers over parsed."""
    return output if isinstance(output, str) else json.dumps(output)


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


def test_the_test_cases_are_the_notebooks_test_tickets():
    examples = rl.rft_settings(quick=True).test_examples()
    cases = pf.test_cases(examples)
    system = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))["short_system"]
    n = rl.rft_settings(quick=True).test_tickets
    assert len(cases) == len(examples) == n and len({c["description"] for c in cases}) == n
    for case, ex in zip(cases, examples):
        labels = json.loads(ex["messages"][-1]["content"])
        assert case["vars"] == {"system": system, "ticket": ex["messages"][-2]["content"],
                                **{f: labels[f] for f in FIELDS}}
    # the notebook's Evals API items are the same rows
    assert [{k: v for k, v in c["vars"].items() if k != "system"} for c in cases] == rl.eval_items(examples)


def test_the_config_is_the_notebooks_evaluation_and_holds_no_key():
    text = pf.CONFIG.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    (provider,) = config["providers"]
    assert provider["id"] == "openai:chat:{{ env.FTKIT_EVAL_MODEL }}"
    assert provider["config"] == {"temperature": 0, "max_tokens": 40}  # notebook 07's sampling_params
    assert not {"apiKey", "apiBaseUrl"} & set(provider["config"]) and "sk-" not in text and "ftkit-local-" not in text
    asserts = config["defaultTest"]["assert"]
    assert [a["metric"] for a in asserts] == FIELDS and {a["type"] for a in asserts} == {"javascript"}
    refs = [config["prompts"][0]["id"], config["tests"][0]["path"], *(a["value"] for a in asserts)]
    for ref in refs:
        assert ref.startswith("file://") and (CONFIG_DIR / ref[len("file://"):].split(":")[0]).is_file(), ref


def test_counts_and_graded_read_a_results_file():
    def row(desc, output, passes, error=None):
        return {"testCase": {"description": desc}, "vars": {"ticket": desc}, "response": {"output": output},
                "error": error, "gradingResult": {"componentResults": [
                    {"pass": p, "assertion": {"type": "javascript", "metric": f}} for f, p in zip(FIELDS, passes)]}}
    results = {"results": {"version": 3, "results": [
        row("a", "{}", (True, True, True)), row("b", "{}", (True, False, True)),
        row("c", None, (False, False, False), error="timeout") | {"failureReason": 2}]}}
    assert pf.counts(results) == {"all checks passed": 1, "category": 2, "product": 2, "urgency": 1,
                                  "errored": 1, "items": 3}
    assert pf.graded(results)[1] == {"description": "b", "vars": {"ticket": "b"}, "output": "{}", "error": None,
                                     "passed": {"category": True, "urgency": False, "product": True}}


def test_the_command_and_environment_keep_the_key_out_of_the_command_line(tmp_path):
    class Client:
        base_url, api_key = "http://127.0.0.1:9/v1/", "ftkit-local-" + "0" * 48

    cmd = pf.command(tmp_path / "r.json", first=3)
    assert cmd[:3] == ["npx", "-y", pf.PROMPTFOO] and cmd[3:5] == ["eval", "-c"]
    assert cmd[-2:] == ["--filter-first-n", "3"] and "--no-cache" in cmd and "--no-share" in cmd
    env = pf.environment(Client(), "ft:m")
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1" and env["OPENAI_API_KEY"] == Client.api_key
    assert env["FTKIT_EVAL_MODEL"] == "ft:m" and env["PROMPTFOO_DISABLE_TELEMETRY"] == "1"
    assert Client.api_key not in " ".join(cmd)


@pytest.mark.slow
@needs_node
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
        assert row["output"] == answer or (not isinstance(row["output"], str) and row["output"] == json.loads(answer))
        assert row["passed"] == _ftkit_passes(answer, item), (answer, row["passed"])
    passes = [p for r in rows for p in r["passed"].values()]
    assert any(passes) and not all(passes)  # both verdicts were exercised


@pytest.mark.slow
@needs_node
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
        assert row["error"] is None and row["output"] is not None, row
        assert row["vars"] == by_id[row["description"]]
        assert set(row["passed"]) == set(FIELDS)
        mine = _ftkit_passes(_text(row["output"]), row["vars"])
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

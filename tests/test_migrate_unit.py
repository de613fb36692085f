"""ftkit.migrate's logic without a server: model maps, cost estimates and approval, golden-set files.

The end-to-end round trip between two real local servers is in test_migrate.py.
"""

from __future__ import annotations

import json

import pytest

from ftkit import cost, migrate


def test_default_map_sends_gpt_models_to_the_local_base_and_refuses_others():
    mapping = migrate.resolve_model_map(
        ["gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "SmolLM2-135M-Instruct", "babbage-002"],
        ["SmolLM2-135M-Instruct"], target_is_local=True, default_base="SmolLM2-135M-Instruct")
    assert mapping["gpt-4o-mini-2024-07-18"][0] == "SmolLM2-135M-Instruct"
    assert "gpt-*" in mapping["gpt-4.1-2025-04-14"][1]
    assert mapping["SmolLM2-135M-Instruct"] == ("SmolLM2-135M-Instruct", "the target offers the same model")
    assert mapping["babbage-002"] is None  # no rule: refused, never guessed


def test_explicit_map_wins_and_a_hosted_target_gets_no_default():
    explicit = {"gpt-4o*": "my-base", "babbage-002": "SmolLM2-135M-Instruct"}
    mapping = migrate.resolve_model_map(["gpt-4o-2024-08-06", "gpt-4.1-mini-2025-04-14", "babbage-002"],
                                        ["SmolLM2-135M-Instruct", "my-base"], target_is_local=True, explicit=explicit)
    assert mapping["gpt-4o-2024-08-06"] == ("my-base", "--map gpt-4o*=my-base")
    assert mapping["babbage-002"][0] == "SmolLM2-135M-Instruct"
    assert mapping["gpt-4.1-mini-2025-04-14"][0] == "SmolLM2-135M-Instruct"  # the default rule still applies
    hosted = migrate.resolve_model_map(["gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14"], ["gpt-4.1-mini-2025-04-14"],
                                       target_is_local=False)
    assert hosted == {"gpt-4o-mini-2024-07-18": None,
                      "gpt-4.1-mini-2025-04-14": ("gpt-4.1-mini-2025-04-14", "the target offers the same model")}


def _records(n: int, answer: str = '{"category": "billing"}') -> list[dict]:
    return [{"index": i, "messages": [{"role": "system", "content": "Triage."},
                                      {"role": "user", "content": f"My invoice {i} is wrong, please check it."}],
             "reference": answer} for i in range(n)]


def test_golden_cost_is_priced_as_fine_tuned_inference():
    model = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    est = migrate.estimate_golden_cost({model: _records(10)}, max_tokens=100, on="2026-11-27")
    row = est.rows[0]
    assert row["requests"] == 10 and row["prompt_tokens"] > 10 * 10
    worst = cost.inference_cost(model, row["prompt_tokens"], 100 * 10, fine_tuned=True, on="2026-11-27")
    assert est.worst_usd == pytest.approx(worst.per_request_usd)
    assert 0 < est.expected_usd < est.worst_usd  # the expected answers are shorter than max_tokens
    assert "priced as gpt-4o-mini-2024-07-18" in str(est)


def test_golden_cost_is_zero_locally_and_unknown_for_unlisted_models():
    local = migrate.estimate_golden_cost({"ft:SmolLM2-135M-Instruct:local:t:ab12": _records(3)}, max_tokens=50)
    assert local.worst_usd == 0 and local.expected_usd == 0
    unknown = migrate.estimate_golden_cost({"my-azure-deployment": _records(3),
                                            "ft:SmolLM2-135M-Instruct:local:t:ab12": _records(1)}, max_tokens=50)
    assert unknown.worst_usd is None and unknown.requests == 4
    assert "unknown" in str(unknown)


def test_approval_rules():
    paid = migrate.GoldenEstimate(({"model": "m", "requests": 5, "prompt_tokens": 100, "expected_usd": 0.01,
                                    "worst_usd": 0.02, "note": ""},))
    unknown = migrate.GoldenEstimate(({"model": "m", "requests": 5, "prompt_tokens": 0, "expected_usd": None,
                                       "worst_usd": None, "note": ""},))
    free = migrate.GoldenEstimate(({"model": "m", "requests": 5, "prompt_tokens": 0, "expected_usd": 0.0,
                                    "worst_usd": 0.0, "note": ""},))
    migrate._approve(free, yes=False, max_cost_usd=None, confirm=lambda q: False)  # free: nobody is asked
    migrate._approve(paid, yes=True, max_cost_usd=None, confirm=None)
    migrate._approve(paid, yes=False, max_cost_usd=0.05, confirm=None)
    with pytest.raises(migrate.CostNotApproved, match="above --max-cost-usd"):
        migrate._approve(paid, yes=False, max_cost_usd=0.01, confirm=None)
    with pytest.raises(migrate.CostNotApproved, match="cannot be estimated"):
        migrate._approve(unknown, yes=False, max_cost_usd=1.0, confirm=None)
    asked = []
    with pytest.raises(migrate.CostNotApproved, match="not approved"):
        migrate._approve(paid, yes=False, max_cost_usd=None, confirm=lambda q: asked.append(q) or False)
    assert "$0.0200" in asked[0]
    migrate._approve(paid, yes=False, max_cost_usd=None, confirm=lambda q: True)


def test_approval_without_a_terminal_refuses(monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    paid = migrate.GoldenEstimate(({"model": "m", "requests": 1, "prompt_tokens": 1, "expected_usd": 0.01,
                                    "worst_usd": 0.01, "note": ""},))
    with pytest.raises(migrate.CostNotApproved, match="--yes or --max-cost-usd"):
        migrate._approve(paid, yes=False, max_cost_usd=None, confirm=None)


def test_prompt_is_the_conversation_up_to_the_last_assistant_turn():
    example = {"messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first", "weight": 0}, {"role": "user", "content": "b"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "lookup", "arguments": "{\"x\": 1}"}}]}]}
    prompt, reference = migrate._prompt_of(example)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert "weight" not in prompt[2]  # a training-only key is not sent
    assert json.loads(reference) == [{"name": "lookup", "arguments": "{\"x\": 1}"}]
    assert migrate._prompt_of({"messages": [{"role": "user", "content": "no answer"}]}) is None
    assert migrate._prompt_of({"messages": "broken"}) is None


def test_golden_file_survives_a_cut_last_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"index": 3, "answer": "x"}) + "\n" + '{"index": 7, "ans', encoding="utf-8")
    assert [r["index"] for r in migrate._read_golden(path)] == [3]


def test_manifest_urls_carry_no_credentials():
    assert migrate._safe_url("https://user:secret@api.example.com:8443/v1?api-key=abc") == \
        "https://api.example.com:8443/v1"


def test_missing_snapshot_is_a_clear_error(tmp_path):
    with pytest.raises(migrate.MigrationError, match="holds no snapshot"):
        migrate.load_manifest(tmp_path)
    (tmp_path / migrate.MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(migrate.MigrationError, match="not valid JSON"):
        migrate.load_manifest(tmp_path)


def test_cli_refuses_bad_pairs_and_missing_snapshots(tmp_path, capsys, monkeypatch):
    from ftkit.__main__ import main

    monkeypatch.setenv("FTKIT_HOME", str(tmp_path / "home"))  # should anything try to start a server
    monkeypatch.setenv("FTKIT_TARGET_API_KEY", "not-a-real-key")
    target = ["--base-url", "http://127.0.0.1:9/v1"]  # nothing listens there: no request may be needed
    assert main(["migrate", "replay", str(tmp_path), "--map", "gpt-4o", *target]) == 2
    assert "--map takes KEY=VALUE, got 'gpt-4o'" in capsys.readouterr().err
    assert main(["migrate", "compare", str(tmp_path), *target]) == 2
    assert "holds no snapshot" in capsys.readouterr().err
    monkeypatch.delenv("FTKIT_TARGET_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["migrate", "compare", str(tmp_path), *target]) == 2
    assert "FTKIT_TARGET_API_KEY" in capsys.readouterr().err
    assert main(["migrate", "snapshot", "--out", str(tmp_path), "--golden", "-1"]) == 2
    assert "--golden must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # refused before any server was started


def test_agreement_is_exact_and_per_json_field():
    hosted = ['{"category": "billing", "urgency": "high"}', '{"category": "shipping", "urgency": "low"}',
              '{"category": "technical"}', "Sorry, I cannot help.", None]
    replayed = ['{"urgency": "high", "category": "billing"}', '{"category": "shipping", "urgency": "high"}',
                '{"category": "technical"}', "sorry,  I cannot help.", "anything"]
    rows, rates = migrate.agreement(hosted, replayed)
    assert [r["identical"] for r in rows] == [False, False, True, False, False]
    assert [r["equal"] for r in rows] == [True, False, True, True, False]  # key order, case and spacing aside
    assert rates["identical"] == pytest.approx(1 / 5) and rates["equal"] == pytest.approx(3 / 5)
    assert rates["category_same"] == 1.0  # 3 of the 3 hosted answers that have it
    assert rates["urgency_same"] == 0.5  # 1 of the 2 that have it
    assert rates["hosted_valid_json"] == pytest.approx(3 / 5)
    assert "urgency_same" not in rows[2]
    with pytest.raises(ValueError, match="2 hosted answers but 1"):
        migrate.agreement(["a", "b"], ["a"])

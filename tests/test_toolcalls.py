"""Notebook 09's tool-calling data and scoring: the generator is seeded, its lines valid and its
arguments read off the ticket text; the committed files are what it writes; the splits are
disjoint; the scorer judges tool choice and arguments through the real app (on the fake engine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ftkit import data as ftd
from ftkit import toolcalls as tc
from ftkit.course import TOOL_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DATA = ROOT / "data" / "tools"
MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def conversations() -> list[dict]:
    return tc.make_conversations()


def test_generator_is_deterministic_and_follows_its_plan(conversations):
    assert conversations == tc.make_conversations()
    assert tc.make_conversations(seed=1) != conversations
    assert len(conversations) == sum(tc.PLAN.values()) == 300
    kinds = pd.Series([tc.tool_of(ex) for ex in conversations]).value_counts().to_dict()
    assert kinds == tc.PLAN
    texts = [ex["messages"][1]["content"] for ex in conversations]
    assert len(set(texts)) == len(texts)


def test_lines_are_valid_function_calling_examples(conversations):
    report = ftd.validate(conversations, model="gpt-4o-mini-2024-07-18")
    assert report.ok and not report.problems, report.summary()
    for ex in conversations:
        assert ex["tools"] == tc.TOOLS and ex["parallel_tool_calls"] is False
        assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
        assert ex["messages"][0]["content"] == tc.SUPPORT_SYSTEM


def test_the_lookup_tool_is_notebook_02s():
    nb = json.loads((ROOT / "notebooks" / "02_data_formatting.ipynb").read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    start = code.index("lookup_order = ftd.function_tool(")
    scope = {"ftd": ftd}
    exec(code[start: code.index("\n})\n", start) + 3], scope)  # the cell's own definition
    assert scope["lookup_order"] == tc.LOOKUP_ORDER


def test_arguments_are_read_off_the_ticket_and_obey_the_schemas(conversations):
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tc.TOOLS}
    for ex in conversations:
        call, text = tc.expected_call(ex), ex["messages"][1]["content"]
        if call is None:
            assert ex["messages"][2]["content"], "a ticket without a tool gets an answer"
            continue
        schema = schemas[call["name"]]
        assert set(call["arguments"]) == set(schema["required"])
        for key, value in call["arguments"].items():
            if "enum" in schema["properties"][key]:
                assert value in schema["properties"][key]["enum"]
            else:
                assert value in text  # an order number or email address, exactly as written
        if call["name"] == "escalate_ticket":
            urgent = any(cue in text for cue in tc.URGENT_CUES)
            assert call["arguments"]["priority"] == ("urgent" if urgent else "normal")


def test_committed_files_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tool_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=120)
    produced = sorted(p.name for p in (tmp_path / "tools").iterdir())
    assert produced == sorted(p.name for p in TOOLS_DATA.iterdir())
    for name in produced:
        assert (tmp_path / "tools" / name).read_bytes() == (TOOLS_DATA / name).read_bytes(), name


def test_splits_are_disjoint_stratified_and_cover_every_kind(conversations):
    parts = {name: list(ftd.read_jsonl(TOOLS_DATA / f"{name}.jsonl")) for name in ("train", "validation", "test")}
    assert sum(len(rows) for rows in parts.values()) == len(conversations)
    texts = {name: {ex["messages"][1]["content"] for ex in rows} for name, rows in parts.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert ftd.check_leakage(parts, near=False).empty
    table = tc.kinds_table(parts)
    assert (table[["train", "test"]] > 0).all().all()
    shares = table["test"] / table["all"]
    assert shares.between(0.2, 0.3).all()


def test_quick_test_set_asks_every_decision():
    quick = TOOL_SETTINGS["quick"].test_set()
    assert len(quick) == TOOL_SETTINGS["quick"].test_examples
    assert {tc.tool_of(ex) for ex in quick} == set(tc.PLAN)
    assert len(TOOL_SETTINGS["full"].test_set()) == len(list(ftd.read_jsonl(TOOLS_DATA / "test.jsonl")))


# ---------------------------------------------------------------------------------------------
# Scoring


def _pick(conversations, kind, **arguments):
    return next(ex for ex in conversations if tc.tool_of(ex) == kind
                and all(tc.expected_call(ex)["arguments"].get(k) == v for k, v in arguments.items()))


@pytest.fixture
def cases(conversations):
    return [_pick(conversations, "lookup_order"), _pick(conversations, "request_refund"),
            _pick(conversations, "escalate_ticket", team="billing", priority="normal"),
            _pick(conversations, "escalate_ticket", team="shipping"),
            next(ex for ex in conversations if tc.tool_of(ex) == tc.NO_TOOL)]


def test_scorer_auto_text_answer_is_right_only_where_no_tool_is_needed(fake_client, fake_engine, cases):
    scores = tc.score_tool_calls(fake_client, MODEL, cases, progress=False)
    assert list(scores["called"]) == [tc.NO_TOOL] * 5
    assert list(scores["right_tool"]) == [False, False, False, False, True]
    assert list(scores["right_call"]) == [False, False, False, False, True]
    request = fake_engine.requests[-1]
    assert request.tools == tc.TOOLS and request.constraint is None  # auto: tools shown, nothing forced


def test_scorer_separates_the_right_tool_from_the_right_arguments(fake_client, fake_engine, cases):
    # the fake engine forces the simplest valid call: the named tool, the first enum values, "text"
    oracle = tc.score_tool_calls(fake_client, MODEL, cases, tool_choice=tc.expected_tool_choice, progress=False)
    assert list(oracle["right_tool"]) == [True] * 5
    assert list(oracle["right_call"]) == [False, False, True, False, True]  # only billing/normal matches
    assert json.loads(oracle.loc[0, "arguments"]) == {"order_id": "text"}
    required = tc.score_tool_calls(fake_client, MODEL, cases, tool_choice="required", progress=False)
    assert list(required["called"]) == ["lookup_order"] * 5  # forced to call: the no-tool ticket is lost
    assert list(required["right_tool"]) == [True, False, False, False, False]
    assert set(required["finish_reason"]) == {"tool_calls"} and set(oracle["finish_reason"]) == {"tool_calls", "stop"}


def test_scorer_compares_arguments_as_parsed_json(fake_client, fake_engine, cases):
    expected = tc.expected_call(cases[1])
    reordered = dict(reversed(list(expected["arguments"].items())))
    fake_engine.text = f'<tool_call>{{"name": "request_refund", "arguments": {json.dumps(reordered, indent=1)}}}</tool_call>'
    try:
        scores = tc.score_tool_calls(fake_client, MODEL, cases[:2], ids=["a", "b"], progress=False)
        wrong = {**expected["arguments"], "reason": "changed_mind" if expected["arguments"]["reason"] != "changed_mind"
                 else "damaged"}
        fake_engine.text = f'<tool_call>{{"name": "request_refund", "arguments": {json.dumps(wrong)}}}</tool_call>'
        off = tc.score_tool_calls(fake_client, MODEL, cases[1:2], progress=False)
    finally:
        fake_engine.text = fake_engine.__class__().text
    assert list(scores.index) == ["a", "b"]
    assert list(scores["right_tool"]) == [False, True] and list(scores["right_call"]) == [False, True]
    assert bool(off.loc[0, "right_tool"]) and not bool(off.loc[0, "right_call"])


def test_scorer_records_errors_as_wrong(fake_client, cases):
    scores = tc.score_tool_calls(fake_client, "no-such-model", cases[:2], progress=False)
    assert scores["error"].str.contains("NotFound").all()
    assert not scores["right_tool"].any() and not scores["right_call"].any()


def test_rates_and_compare_give_intervals_and_a_verdict():
    before = pd.DataFrame({"right_tool": [False] * 30 + [True] * 10, "right_call": [False] * 40})
    after = pd.DataFrame({"right_tool": [True] * 38 + [False] * 2, "right_call": [True] * 30 + [False] * 10})
    table = tc.rates({"base": before, "tuned": after})
    assert table.loc[("tuned", "right_call"), "rate"] == 0.75
    assert table.loc[("tuned", "right_call"), "low"] < 0.75 < table.loc[("tuned", "right_call"), "high"]
    result = tc.compare(before, after, "right_call")
    assert (result["gained"], result["lost"], result["both_wrong"]) == (30, 0, 10)
    assert result["difference"] == 0.75 and 0 < result["low"] < 0.75 < result["high"]
    assert result["verdict"] == "better"
    same = tc.compare(after, after, "right_tool")  # nothing flipped: 40 conversations still cannot prove equal
    assert same["difference"] == 0 and same["verdict"] == "cannot tell at n = 40"
    assert tc.compare(after, after, "right_tool", margin=0.1)["verdict"] == "non-inferior within 10 points"
    with pytest.raises(ValueError, match="same conversations"):
        tc.compare(before, after.iloc[::-1])

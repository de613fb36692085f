"""ftkit.data: building examples, streaming JSONL, splits, duplicates and leakage."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections import Counter

import pandas as pd
import pytest

from ftkit import data

TICKETS = pd.DataFrame({
    "subject": ["Refund", "App crash", "Login"],
    "body": ["I was charged twice.", "The app closes on start.", "I cannot sign in."],
    "category": ["billing", "technical", "account"],
    "urgency": ["medium", "high", "low"],
})


def test_build_from_columns_template_and_function():
    examples = data.build_chat_examples(
        TICKETS, system="Triage.", user="Subject: {subject}\n\n{body}",
        assistant=lambda row: {"category": row["category"], "urgency": row["urgency"]},
    )
    assert len(examples) == 3
    first = examples[0]["messages"]
    assert first[0] == {"role": "system", "content": "Triage."}
    assert first[1]["content"] == "Subject: Refund\n\nI was charged twice."
    assert json.loads(first[2]["content"]) == {"category": "billing", "urgency": "medium"}
    by_columns = data.build_chat_examples(TICKETS.to_dict("records"), user=["subject", "body"], assistant="category")
    assert by_columns[1]["messages"] == [{"role": "user", "content": "App crash\n\nThe app closes on start."},
                                         {"role": "assistant", "content": "technical"}]
    assert data.validate(examples * 4).ok


def test_build_errors_name_the_row_and_column():
    broken = TICKETS.copy()
    broken.loc[1, "body"] = math.nan
    with pytest.raises(ValueError, match="row 1: column 'body'"):
        data.build_chat_examples(broken, user="body", assistant="category")
    with pytest.raises(ValueError, match="neither a column"):
        data.build_chat_examples(TICKETS, user="bdy", assistant="category")
    with pytest.raises(ValueError, match="row 0: the user template uses 'missing'"):
        data.build_chat_examples(TICKETS, user="{missing}", assistant="category")


def test_multi_turn_tools_and_dpo_helpers_make_valid_examples():
    call = data.tool_call("lookup", {"order": "A1"})
    assert call == data.tool_call("lookup", {"order": "A1"})  # stable id, run after run
    assert json.loads(call["function"]["arguments"]) == {"order": "A1"}
    tools = [data.function_tool("lookup", "Find an order", {"type": "object", "properties": {"order": {"type": "string"}}})]
    sft = [data.chat_example([data.system("s"), data.user(f"where is A{i}?"), data.assistant(None, tool_calls=[call]),
                              data.tool({"status": "late"}, call["id"]), data.assistant("It is late.", weight=1)],
                             tools=tools) for i in range(10)]
    assert data.validate(sft).ok
    with pytest.raises(ValueError):
        data.assistant("x", weight=2)
    pairs = data.build_preference_pairs(
        pd.DataFrame({"q": [f"question {i}" for i in range(10)], "good": ["a"] * 10, "bad": ["b"] * 10}),
        user="q", preferred="good", non_preferred="bad", system="Be kind.")
    report = data.validate(pairs)
    assert report.ok and report.kind == "preference"
    assert pairs[0]["input"]["messages"][0] == {"role": "system", "content": "Be kind."}


def test_from_prompt_completion_strips_the_legacy_markers():
    legacy = [{"prompt": "Ticket: refund please\n\n###\n\n", "completion": " billing END"}]
    (converted,) = data.from_prompt_completion(legacy, system_prompt="Triage.")
    assert converted["messages"] == [{"role": "system", "content": "Triage."},
                                     {"role": "user", "content": "Ticket: refund please"},
                                     {"role": "assistant", "content": "billing"}]
    with pytest.raises(ValueError, match="record 1"):
        list(data.from_prompt_completion([{"text": "no"}]))


def test_jsonl_round_trip_and_errors_name_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    records = [{"messages": [{"role": "user", "content": f"héllo {i} ✓"}]} for i in range(3)]
    assert data.write_jsonl(records, path) == 3
    assert path.read_bytes()[:3] != b"\xef\xbb\xbf" and "héllo" in path.read_text(encoding="utf-8")
    assert list(data.read_jsonl(path)) == records
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\n{broken\n")
    with pytest.raises(data.JsonlError, match=r"x\.jsonl, line 5: invalid JSON"):
        list(data.read_jsonl(path))
    assert len(list(data.read_jsonl(path, on_error="skip"))) == 3  # BOM and blank line skipped too


def test_write_is_atomic_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "train.jsonl"
    data.write_jsonl([{"a": 1}], path)

    def records():
        yield {"a": 2}
        yield {"a": object()}  # not JSON-serialisable

    with pytest.raises(ValueError, match="record 2"):
        data.write_jsonl(records(), path)
    assert list(data.read_jsonl(path)) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # no temporary file left behind


def test_streaming_keeps_memory_flat(tmp_path):
    path = tmp_path / "big.jsonl"
    data.write_jsonl(({"messages": [{"role": "user", "content": "x" * 200}]} for _ in range(50_000)), path)
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    n = sum(1 for _ in data.read_jsonl(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 50_000 and peak < 1_000_000  # a few lines at a time, never the file


def test_split_is_seeded_and_stratified():
    items = [{"label": "a" if i % 4 else "b", "i": i} for i in range(200)]  # 150 a, 50 b
    one = data.split(items, validation=0.1, test=0.2, seed=1, stratify="label")
    again = data.split(items, validation=0.1, test=0.2, seed=1, stratify="label")
    other = data.split(items, validation=0.1, test=0.2, seed=2, stratify="label")
    assert one == again and one != other
    assert (len(one.train), len(one.validation), len(one.test)) == (140, 20, 40)
    assert Counter(x["label"] for x in one.test) == {"a": 30, "b": 10}
    assert sorted(x["i"] for part in one for x in part) == list(range(200))
    frame = data.split(TICKETS.loc[TICKETS.index.repeat(10)].reset_index(drop=True), test=0.3, validation=0.0,
                       stratify="category", seed=0)
    assert len(frame.test) == 9 and frame.test["category"].value_counts().tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        data.split(items, validation=0.5, test=0.5)


def test_exact_and_near_duplicates():
    base = "My order 1234 arrived broken and the box was wet, please send a replacement quickly"
    examples = [data.chat_example([data.user(t), data.assistant("x")]) for t in (
        base,
        base.upper() + "!!",                       # exact after normalisation
        base.replace("quickly", "soon"),          # near
        "How do I change my password on the web dashboard?",
    )]
    dupes = data.find_duplicates(examples, threshold=0.7)
    assert dupes[["first", "second", "kind"]].values.tolist() == [[0, 1, "exact"], [0, 2, "near"], [1, 2, "near"]]
    assert dupes.query("kind == 'near'")["similarity"].between(0.7, 0.99).all()
    assert data.find_duplicates(examples, near=False)["kind"].tolist() == ["exact"]


def test_leakage_across_splits():
    train = [data.chat_example([data.user(f"ticket number {i} about a late parcel from the warehouse"),
                                data.assistant("shipping")]) for i in range(20)]
    test = [data.chat_example([data.user("ticket number 3 about a late parcel from the warehouse"),
                               data.assistant("shipping")]),
            data.chat_example([data.user("completely different question about invoices"), data.assistant("billing")])]
    leaks = data.check_leakage({"train": train, "test": test}, near=False)
    assert leaks[["split_a", "index_a", "split_b", "index_b", "kind"]].values.tolist() == [["train", 3, "test", 0, "exact"]]
    assert data.check_leakage({"train": train[:2], "test": test[1:]}).empty

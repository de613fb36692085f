"""The house-style preference data (data/tone/preference_*.jsonl, data/tone/test.jsonl): made by
scripts/make_preference_data.py, byte for byte; valid; pairs that mean what they say; held-out
drafts that no training file has seen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ftkit import data as ftd
from ftkit.preference import HOUSE_STYLE_SYSTEM, check_house_style, greeted_name, prompt_customer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
TONE = DATA / "tone"
MODEL = "gpt-4o-mini-2024-07-18"
MADE_HERE = ("tone/preference_train.jsonl", "tone/preference_validation.jsonl", "tone/test.jsonl")


def _pairs(name: str) -> list[dict]:
    return list(ftd.read_jsonl(TONE / f"{name}.jsonl"))


def test_script_rewrites_the_committed_files_byte_for_byte(tmp_path):
    shutil.copy(DATA / "README.md", tmp_path / "README.md")  # the card make_data.py wrote, with our section
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--out", str(tmp_path)],
                       check=True, env=env, capture_output=True, text=True, timeout=300)
        for rel in (*MADE_HERE, "README.md"):  # the card section is replaced, not appended twice
            assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel


def test_files_validate_and_have_the_documented_sizes():
    for rel, kind, n in (("preference_train", "preference", 48), ("preference_validation", "preference", 12),
                         ("test", "chat", 48)):
        report = ftd.validate(TONE / f"{rel}.jsonl", model=MODEL, min_examples=1)
        assert report.ok and report.n_examples == n and report.kind == kind, report.summary()
    card = (DATA / "README.md").read_text(encoding="utf-8")
    assert "| `tone/preference_train.jsonl` | 48 |" in card and "| `tone/test.jsonl` | 48 |" in card


def test_the_system_prompt_is_the_house_style_sets_own():
    sft = list(ftd.read_jsonl(TONE / "train.jsonl"))
    assert {ex["messages"][0]["content"] for ex in sft} == {HOUSE_STYLE_SYSTEM}
    for pair in _pairs("preference_train") + _pairs("preference_validation"):
        assert pair["input"]["messages"][0] == {"role": "system", "content": HOUSE_STYLE_SYSTEM}


def test_every_pair_prefers_the_house_style():
    kinds = {"greets_by_name": 0, "signs_off": 0, "under_max_words": 0, "plain_words": 0, "none": 0}
    for pair in _pairs("preference_train") + _pairs("preference_validation"):
        name = prompt_customer(pair["input"]["messages"])
        good = pair["preferred_output"][0]["content"]
        bad = pair["non_preferred_output"][0]["content"]
        assert check_house_style(good, name).ok, good
        assert greeted_name(good) == name
        failed = check_house_style(bad, name).failed
        for f in failed:
            kinds[f] += 1
        if not failed:  # the rule cannot see these: the reply lost its next step
            kinds["none"] += 1
            assert good.startswith(bad.split("\n")[0]) and len(bad) < len(good)
    assert all(v >= 5 for v in kinds.values()), kinds  # every way of breaking the style is there


def test_held_out_drafts_share_nothing_with_training():
    test = list(ftd.read_jsonl(TONE / "test.jsonl"))
    training_text = json.dumps([*ftd.read_jsonl(TONE / "train.jsonl"), *_pairs("preference_train"),
                                *_pairs("preference_validation")])
    scenarios = {row["scenario"] for row in test}
    assert len(scenarios) == 12 and {row["form"] for row in test} == {"single_0", "single_1", "multi_turn", "nameless"}
    for row in test:
        draft = row["messages"][1]["content"].split("\n\n")[-1] if row["form"] != "multi_turn" \
            else row["messages"][2]["content"]
        assert draft not in training_text, row["id"]
        if row["customer"]:
            assert row["customer"] not in training_text, row["customer"]  # a name never seen in training
            assert row["customer"] in json.dumps(row["messages"][:-1])  # ... but given in the prompt
            assert check_house_style(row["messages"][-1]["content"], row["customer"]).ok
        else:
            assert not any(name in json.dumps(row["messages"][:-1]) for name in
                           {r["customer"] for r in test if r["customer"]})
    assert len({row["id"] for row in test}) == len(test)


def test_prompt_customer_reads_the_name_every_prompt_gives():
    for pair in _pairs("preference_train") + _pairs("preference_validation"):
        assert prompt_customer(pair["input"]["messages"]) == greeted_name(pair["preferred_output"][0]["content"])
    for row in ftd.read_jsonl(TONE / "test.jsonl"):
        assert prompt_customer(row["messages"][:-1]) == row["customer"]
    assert prompt_customer([{"role": "user", "content": "Rewrite this reply in our house style:\n\nok"}]) is None


def test_quick_test_sample_is_spread_over_situations_and_forms():
    from ftkit.preference import TONE_SETTINGS

    quick = TONE_SETTINGS["quick"].test_examples()
    assert len(quick) == TONE_SETTINGS["quick"].test_prompts and len({r["id"] for r in quick}) == len(quick)
    # every prompt form (one draft of each in quick mode), and (nearly) one situation per draft
    assert len({r["scenario"] for r in quick}) >= min(6, len(quick) - 1) and len({r["form"] for r in quick}) == 4
    assert len(TONE_SETTINGS["full"].test_examples()) == 48

"""The course data in data/: made by scripts/make_data.py, deterministic, balanced, leak-free, valid."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ftkit import data as ftd
from ftkit.tokens import TokenCounter

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MODEL = "gpt-4o-mini-2024-07-18"
SPLITS = ("train", "validation", "test")
LABELS = {
    "category": ["billing", "technical", "account", "shipping", "feature_request"],
    "urgency": ["low", "medium", "high"],
    "product": ["mobile_app", "web_app", "api", "hardware"],
}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _generate(out: Path, hash_seed: str) -> None:
    # make_data.py writes the course data and its card; make_preference_data.py (notebook 06) then
    # adds the house-style preference files and appends its section to the card; make_tool_data.py
    # (notebook 09) writes data/tools/ with its own card.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    for script in ("make_data.py", "make_preference_data.py", "make_tool_data.py"):
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--out", str(out)],
                       check=True, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return pd.read_csv(DATA / "tickets" / "tickets.csv")


@pytest.fixture(scope="module")
def prompts() -> dict:
    return json.loads((DATA / "tickets" / "prompts.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Determinism


def test_generator_rewrites_the_committed_files_byte_for_byte(tmp_path):
    # Two runs with different string-hash seeds (set iteration order differs between them) must
    # both reproduce exactly what is committed -- no file more, none less.
    committed = _files(DATA)
    assert len(committed) >= 13
    for hash_seed in ("0", "4242"):
        out = tmp_path / f"run{hash_seed}"
        _generate(out, hash_seed)
        produced = _files(out)
        assert sorted(produced) == sorted(committed)
        different = [name for name in committed if produced[name] != committed[name]]
        assert different == []


# ---------------------------------------------------------------------------------------------
# Tickets


def test_tickets_table_shape_and_labels(tickets):
    assert list(tickets.columns) == ["id", "subject", "body", "category", "urgency", "product", "split"]
    assert len(tickets) == 400
    assert tickets["id"].is_unique
    assert tickets["id"].iloc[0] == "T0001" and tickets["id"].iloc[-1] == "T0400"
    for column, values in LABELS.items():
        assert set(tickets[column]) == set(values), column
    assert tickets[["subject", "body"]].notna().all().all()
    # balanced by design: 80 per category; shipping is always about hardware
    assert tickets["category"].value_counts().to_dict() == {c: 80 for c in LABELS["category"]}
    assert set(tickets.loc[tickets["category"] == "shipping", "product"]) == {"hardware"}


def test_split_sizes_and_every_label_in_every_split(tickets):
    sizes = tickets["split"].value_counts().to_dict()
    assert sizes == {"train": 259, "validation": 40, "test": 101}
    for name in SPLITS:
        part = tickets[tickets["split"] == name]
        for column, values in LABELS.items():
            assert set(part[column]) == set(values), (name, column)


def test_splits_are_stratified_by_category_and_product(tickets):
    for (category, product), group in tickets.groupby(["category", "product"]):
        n = len(group)
        counts = group["split"].value_counts()
        # ftkit.data.split rounds each group's share: test 25%, validation 10%
        assert counts.get("test", 0) == round(n * 0.25), (category, product)
        assert counts.get("validation", 0) == round(n * 0.10), (category, product)


def test_tickets_are_short_and_varied(tickets):
    counter = TokenCounter(MODEL)
    tokens = [counter.count(f"Subject: {s}\n\n{b}") for s, b in zip(tickets["subject"], tickets["body"])]
    in_range = sum(25 <= t <= 80 for t in tokens) / len(tokens)
    assert in_range >= 0.9
    assert max(tokens) <= 100
    # many different openings, subjects and bodies -- not a handful of templates repeated
    assert tickets["body"].str.split().str[:4].str.join(" ").nunique() >= 250
    assert tickets["subject"].nunique() >= 150
    assert tickets["body"].str.contains("LH-", case=False).sum() >= 30  # order numbers


def test_tricky_tickets_are_about_five_percent(tickets):
    tricky = json.loads((DATA / "tickets" / "tricky.json").read_text(encoding="utf-8"))
    assert len(tricky) == 20  # 5% of 400
    by_id = tickets.set_index("id")
    for t in tricky:
        assert t["why"]
        assert by_id.loc[t["id"], "split"] == t["split"]
    assert {t["split"] for t in tricky} == set(SPLITS)  # evaluation meets some of them


def test_jsonl_matches_the_table(tickets, prompts):
    for name in SPLITS:
        examples = list(ftd.read_jsonl(DATA / "tickets" / f"{name}.jsonl"))
        rows = tickets[tickets["split"] == name]
        assert len(examples) == len(rows)
        for ex, (_, row) in zip(examples, rows.iterrows()):
            system, user, assistant = ex["messages"]
            assert system == {"role": "system", "content": prompts["short_system"]}
            assert user == {"role": "user", "content": f"Subject: {row['subject']}\n\n{row['body']}"}
            expected = {"category": row["category"], "urgency": row["urgency"], "product": row["product"]}
            assert assistant == {"role": "assistant", "content": json.dumps(expected)}


def test_no_duplicates_and_no_leakage_across_splits():
    splits = {name: list(ftd.read_jsonl(DATA / "tickets" / f"{name}.jsonl")) for name in SPLITS}
    leaks = ftd.check_leakage(splits)
    assert len(leaks) == 0
    dupes = ftd.find_duplicates([ex for part in splits.values() for ex in part])
    assert len(dupes) == 0


def test_leakage_check_catches_a_planted_leak():
    # The check the generator relies on does fire: copy one test ticket into train, lightly edited.
    splits = {name: list(ftd.read_jsonl(DATA / "tickets" / f"{name}.jsonl")) for name in SPLITS}
    leaked = json.loads(json.dumps(splits["test"][5]))
    leaked["messages"][1]["content"] = leaked["messages"][1]["content"].replace("Subject:", "Subject: Re:")
    splits["train"].append(leaked)
    leaks = ftd.check_leakage(splits)
    assert len(leaks) == 1
    row = leaks.iloc[0]
    assert {row["split_a"], row["split_b"]} == {"train", "test"}
    assert row["kind"] == "near" and row["similarity"] >= 0.8


def test_prompts_json(prompts, tickets):
    assert set(prompts) == {"short_system", "long_system", "user_template", "labels", "few_shot_ids"}
    assert prompts["labels"] == LABELS
    assert len(prompts["short_system"]) < 100 < len(prompts["long_system"])
    for values in LABELS.values():
        for value in values:
            assert value in prompts["long_system"]
    assert prompts["user_template"] == "Subject: {subject}\n\n{body}"
    few = tickets.set_index("id").loc[prompts["few_shot_ids"]]
    assert 4 <= len(few) <= 5
    assert set(few["split"]) == {"train"}  # never a validation or test ticket
    assert few["category"].is_unique


# ---------------------------------------------------------------------------------------------
# The out-of-distribution test set: same labels and format, none of the training wording


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _ngrams(text: str, n: int) -> set[str]:
    words = _words(text)
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _user_texts(name: str) -> list[str]:
    return [ex["messages"][1]["content"] for ex in ftd.read_jsonl(DATA / "tickets" / f"{name}.jsonl")]


@pytest.fixture(scope="module")
def ood() -> pd.DataFrame:
    return pd.read_csv(DATA / "tickets" / "test_ood.csv")


def test_ood_table_shape_and_balanced_labels(ood, tickets):
    assert list(ood.columns) == list(tickets.columns)
    assert list(ood["id"]) == [f"OOD{i:03d}" for i in range(1, 101)]
    assert set(ood["split"]) == {"test_ood"}
    assert not set(ood["id"]) & set(tickets["id"])
    for column, values in LABELS.items():
        assert set(ood[column]) == set(values), column
    assert ood["category"].value_counts().to_dict() == {c: 20 for c in LABELS["category"]}
    assert set(ood.loc[ood["category"] == "shipping", "product"]) == {"hardware"}  # as in training
    assert ood["urgency"].value_counts().min() >= 30  # low, medium and high about a third each
    assert ood[["subject", "body"]].notna().all().all()


def test_ood_jsonl_matches_its_table(ood, prompts):
    examples = list(ftd.read_jsonl(DATA / "tickets" / "test_ood.jsonl"))
    assert len(examples) == len(ood)
    for ex, (_, row) in zip(examples, ood.iterrows()):
        system, user, assistant = ex["messages"]
        assert system == {"role": "system", "content": prompts["short_system"]}
        assert user["content"] == prompts["user_template"].format(subject=row["subject"], body=row["body"])
        expected = {"category": row["category"], "urgency": row["urgency"], "product": row["product"]}
        assert assistant == {"role": "assistant", "content": json.dumps(expected)}


def test_ood_is_reachable_through_data_path():
    from ftkit.course import data_path

    assert data_path("tickets", "test_ood.jsonl") == DATA / "tickets" / "test_ood.jsonl"
    assert len(list(ftd.read_jsonl(data_path("tickets", "test_ood.jsonl")))) == 100


def test_ood_does_not_leak_into_any_split():
    every = {name: list(ftd.read_jsonl(DATA / "tickets" / f"{name}.jsonl")) for name in (*SPLITS, "test_ood")}
    assert len(ftd.check_leakage(every)) == 0
    assert len(ftd.find_duplicates([ex for part in every.values() for ex in part])) == 0
    # At a much looser threshold the same check flags many in-distribution test tickets as close
    # to a training ticket (they share its template) -- and still no out-of-distribution one.
    loose = ftd.check_leakage({"train": every["train"], "test": every["test"], "test_ood": every["test_ood"]},
                              threshold=0.3)
    pairs = {frozenset((row.split_a, row.split_b)) for row in loose.itertuples()}
    assert frozenset(("train", "test")) in pairs
    assert len(loose[(loose["split_a"] == "test_ood") | (loose["split_b"] == "test_ood")]) == 0
    assert (loose["split_a"].eq("test") | loose["split_b"].eq("test")).sum() >= 20


def test_ood_shares_far_less_wording_with_training_than_the_test_split():
    train = _user_texts("train")
    train_trigrams = set().union(*(_ngrams(t, 3) for t in train))
    train_fivegrams = set().union(*(_ngrams(t, 5) for t in train))

    def shared(texts):  # per ticket: share of its word 3-grams that occur in some training ticket
        return [len(_ngrams(t, 3) & train_trigrams) / len(_ngrams(t, 3)) for t in texts]

    test, ood = _user_texts("test"), _user_texts("test_ood")
    test_shared, ood_shared = sum(shared(test)) / len(test), sum(shared(ood)) / len(ood)
    assert test_shared > 0.5  # the in-distribution test reuses the training templates ...
    assert ood_shared < 0.05  # ... the out-of-distribution set does not
    assert ood_shared < test_shared / 10
    # No out-of-distribution ticket repeats a run of five words from training; nearly every
    # in-distribution test ticket does.
    assert sum(bool(_ngrams(t, 5) & train_fivegrams) for t in ood) == 0
    assert sum(bool(_ngrams(t, 5) & train_fivegrams) for t in test) > 0.8 * len(test)
    # The nearest training ticket of an out-of-distribution ticket is far away.
    train_sets = [_ngrams(t, 3) for t in train]
    nearest = [max(len(_ngrams(t, 3) & s) / len(_ngrams(t, 3) | s) for s in train_sets) for t in ood]
    assert max(nearest) < 0.3


def test_ood_names_products_in_words_training_never_uses():
    train, ood = " ".join(_user_texts("train")).lower(), " ".join(_user_texts("test_ood")).lower()
    # how the training tickets name the products ...
    for phrase in ("the app", "the web dashboard", "the api", "sdk", "webhook"):
        assert re.search(rf"\b{phrase}\b", train), phrase
        assert not re.search(rf"\b{phrase}\b", ood), phrase
    # ... and how the out-of-distribution tickets name them instead
    for phrase in ("ios application", "android application", "web portal", "rest interface", "smoke alarm"):
        assert phrase in ood and phrase not in train, phrase


def test_data_card_reports_both_test_sets():
    card = (DATA / "README.md").read_text(encoding="utf-8")
    assert "## Two test sets" in card
    assert "`test_ood`" in card and "in-distribution" in card and "out-of-distribution" in card
    assert "Why both are reported" in card


# ---------------------------------------------------------------------------------------------
# Every file validates (except the broken one, which fails exactly as documented)


@pytest.mark.parametrize("rel", ["tickets/train.jsonl", "tickets/validation.jsonl", "tickets/test.jsonl",
                                 "tickets/test_ood.jsonl"])
def test_ticket_files_validate_cleanly(rel):
    report = ftd.validate(DATA / rel, model=MODEL)
    assert report.ok
    assert report.problems == []
    assert report.kind == "chat"


def test_tone_set():
    report = ftd.validate(DATA / "tone" / "train.jsonl", model=MODEL)
    assert report.ok and report.problems == []
    examples = list(ftd.read_jsonl(DATA / "tone" / "train.jsonl"))
    assert len(examples) >= 30
    multi = [ex for ex in examples if len(ex["messages"]) == 5]
    assert len(multi) == 12
    for ex in multi:
        weights = [m.get("weight") for m in ex["messages"] if m["role"] == "assistant"]
        assert weights == [0, 1]
    for ex in examples:
        assert ex["messages"][-1]["content"].endswith("— The Lumenhive team")


def test_dpo_set(prompts):
    report = ftd.validate(DATA / "dpo" / "train.jsonl", model=MODEL)
    assert report.ok and report.problems == []
    assert report.kind == "preference"
    examples = list(ftd.read_jsonl(DATA / "dpo" / "train.jsonl"))
    assert len(examples) >= 30
    for ex in examples:
        assert ex["input"]["messages"][0]["content"] == prompts["short_system"]
        good = json.loads(ex["preferred_output"][0]["content"])
        assert list(good) == ["category", "urgency", "product"]
        assert ex["non_preferred_output"][0]["content"] != ex["preferred_output"][0]["content"]


def test_broken_file_has_exactly_the_planted_problems():
    planted = json.loads((DATA / "broken" / "EXPECTED.json").read_text(encoding="utf-8"))
    assert len(planted) == 13
    expected = {p["line"]: sorted(p["codes"]) for p in planted}
    assert expected[1] == ["utf8_bom"]
    assert expected[15] == ["invalid_utf8"]
    assert expected[14] == ["legacy_prompt_completion"]
    report = ftd.validate(DATA / "broken" / "tickets_broken.jsonl", model=MODEL)
    assert not report.ok
    found: dict[int, list[str]] = {}
    for p in report.problems:
        found.setdefault(p.line, []).append(p.code)
    assert {line: sorted(codes) for line, codes in found.items()} == expected
    assert report.n_lines == 22
    raw = (DATA / "broken" / "tickets_broken.jsonl").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")


def test_broken_file_through_the_cli():
    proc = subprocess.run([sys.executable, "-m", "ftkit", "validate", str(DATA / "broken" / "tickets_broken.jsonl"),
                           "--model", MODEL], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "INVALID" in proc.stdout and "invalid_utf8" in proc.stdout
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Fix in ftkit.data found while making the data


def test_write_jsonl_creates_files_with_normal_permissions(tmp_path):
    # write_jsonl writes through tempfile.mkstemp, which creates 0600 files; the result must have
    # the mode open() would give (0666 minus the umask), like any other file the learner writes.
    umask = os.umask(0o022)
    try:
        target = tmp_path / "out.jsonl"
        assert ftd.write_jsonl([{"a": 1}], target) == 1
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


# ---------------------------------------------------------------------------------------------
# The general-ability set (the forgetting check of notebooks/05_evaluation.ipynb)


def test_general_ability_set():
    from ftkit.evaluate import ability_scorer

    examples = list(ftd.read_jsonl(DATA / "general" / "ability.jsonl"))
    assert 20 <= len(examples) <= 40
    assert [ex["id"] for ex in examples] == [f"G{i:02d}" for i in range(1, len(examples) + 1)]
    kinds = {ex["kind"] for ex in examples}
    assert kinds == {"arithmetic", "capital", "opposite", "spelling"}
    questions = [ex["messages"][0]["content"] for ex in examples]
    assert len(set(questions)) == len(questions)
    for ex in examples:
        user, answer = ex["messages"]
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert answer["content"] in ex["accept"]
        assert ex["match"] in ("number", "word")
        # the reference answer scores as right, each rejected word (the misspelling) as wrong
        assert ability_scorer(answer["content"], answer["content"], ex) == {"correct": True}
        for wrong in ex["reject"]:
            assert ability_scorer(wrong, answer["content"], ex) == {"correct": False}
        if ex["kind"] == "arithmetic":
            a, op, b = re.match(r"What is (\d+) (\+|-|times) (\d+)\?", user["content"]).groups()
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "times": int(a) * int(b)}[op]
            assert answer["content"] == str(value), user["content"]
    # a valid chat file; its extra keys (id, kind, accept ...) and the missing system message are
    # only warned about -- it is an evaluation set, not a training file
    report = ftd.validate(DATA / "general" / "ability.jsonl", model=MODEL)
    assert report.ok
    assert {p.code for p in report.problems} == {"example_unrecognized_key", "missing_system_message"}


@pytest.mark.parametrize("quick", [True, False])
def test_overfit_settings_make_a_turn_the_kept_checkpoints_can_show(quick):
    from ftkit.course import OVERFIT_SETTINGS, overfit_settings
    from ftkit.local.jobs.training.loop import KEEP_CHECKPOINTS
    from ftkit.local.jobs.training.sft import Supervised

    s = overfit_settings(quick)
    assert s is OVERFIT_SETTINGS["quick" if quick else "full"]
    train, valid = s.training_examples(), s.validation_set()
    assert len(train) == s.train_examples >= 10  # the API's minimum training file
    # every validation point of the results file covers the whole validation file
    assert len(Supervised().valid_sample(valid, {"batch_size": s.batch_size})) == len(valid) == s.validation_examples
    assert s.n_epochs > KEEP_CHECKPOINTS  # some checkpoints are deleted: the settings must put the turn in the kept ones
    assert s.learning_rate_multiplier > 1  # a high learning rate
    assert s.metadata["lesson"] == "04" and s.mode.endswith("overfit") and s.suffix == "overfit"
    assert str(s.n_epochs) in s.why and f"{s.train_examples} training tickets" in s.why

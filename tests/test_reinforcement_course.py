"""ftkit.reinforcement (notebook 07): the ticket graders as data, graded for real by ftkit.graders;
the lesson's RFT settings and data; cost arithmetic against the catalog; a finished RFT job reused
by its metadata. Fast: no model is loaded (the python grader runs in its real sandbox)."""

from __future__ import annotations

import json
import types

import pytest

from ftkit import catalog, graders, lifecycle
from ftkit import reinforcement as rl
from ftkit.local.jobs import hyperparameters
from ftkit.validation import validate

ITEM = {"category": "billing", "urgency": "high", "product": "api"}


def _reward(grader: dict, answer: str, item: dict = ITEM) -> dict:
    return graders.run_grader({"grader": grader, "model_sample": answer, "item": item})


def test_the_graders_are_valid_and_read_the_three_fields():
    for grader in (rl.partial_credit_grader(), rl.exact_match_grader(), rl.field_grader("urgency"),
                   rl.judge_grader("SmolLM2-135M-Instruct")):
        assert graders.validate_grader_request({"grader": grader})["grader"]["type"] == grader["type"]
        assert graders.compile_grader(grader).item_fields() == ({"urgency"} if grader["name"] == "urgency"
                                                                else set(rl.FIELDS))
    assert rl.partial_credit_grader()["calculate_output"] == "(category + urgency + product) / 3"
    assert set(rl.labels()) == set(rl.FIELDS) and "feature_request" in rl.labels()["category"]


def test_partial_credit_and_exact_match_on_the_sample_answers():
    answers = rl.sample_answers(ITEM)
    multi = {what: _reward(rl.partial_credit_grader(), a) for what, a in answers.items()}
    exact = {what: _reward(rl.exact_match_grader(), a)["reward"] for what, a in answers.items()}
    assert {what: round(r["reward"], 3) for what, r in multi.items()} == {
        "right": 1.0, "urgency wrong": 0.667, "urgency and product wrong": 0.333, "keys in another order": 1.0,
        "a label that does not exist": 0.667, "prose": 0.0, "cut-off JSON": 0.0}
    assert multi["urgency wrong"]["sub_rewards"] == {"category": 1.0, "urgency": 0.0, "product": 1.0}
    assert exact == {"right": 1.0, "urgency wrong": 0.0, "urgency and product wrong": 0.0,
                     "keys in another order": 0.0, "a label that does not exist": 0.0, "prose": 0.0,
                     "cut-off JSON": 0.0}
    # every wrong answer really is wrong, and uses labels that exist (except the one meant not to)
    allowed = rl.labels()
    for what in ("urgency wrong", "urgency and product wrong"):
        value = json.loads(answers[what])
        assert value != ITEM and all(value[f] in allowed[f] for f in rl.FIELDS)


def test_a_misspelt_formula_is_refused_naming_the_field():
    broken = {**rl.partial_credit_grader(), "calculate_output": "(category + urgency + prodcut) / 3"}
    with pytest.raises(graders.GraderError) as err:
        graders.validate_grader_request({"grader": broken})
    assert err.value.param == "grader.calculate_output"


def test_settings_data_is_small_in_quick_mode_and_validates_with_the_grader():
    quick, full = rl.rft_settings(True), rl.rft_settings(False)
    lines = quick.training_examples()
    assert 10 <= len(lines) <= 12  # the server's minimum training file, and CI-small
    assert len(full.training_examples()) > 200 and len(full.validation_examples()) == 40
    assert len(quick.test_examples()) <= 24 and len(full.test_examples()) == 101
    assert len({ex["id"] for ex in quick.test_examples()}) == len(quick.test_examples())
    report = validate(lines, method="reinforcement", grader_fields=rl.FIELDS, min_examples=10)
    assert report.ok and report.kind == "reinforcement", report.summary()
    assert all(line["messages"][-1]["role"] == "user" and set(rl.FIELDS) <= set(line) for line in lines)
    # the grader's fields are the ticket's own labels
    first = json.loads(next(iter(open(_train_jsonl(), encoding="utf-8"))))
    assert json.loads(first["messages"][-1]["content"]) == {f: lines[0][f] for f in rl.FIELDS}
    assert first["messages"][:-1] == lines[0]["messages"]


def _train_jsonl():
    from ftkit.course import data_path

    return data_path("tickets", "train.jsonl")


def test_quick_hyperparameters_resolve_to_a_tiny_job():
    quick = rl.rft_settings(True)
    hp = hyperparameters.resolve(lifecycle.REINFORCEMENT, quick.hyperparameters, len(quick.training_examples()))
    steps = -(-len(quick.training_examples()) // hp["batch_size"]) * hp["n_epochs"]
    # the smallest group with a spread to learn from: 2 samples per prompt (4 x compute_multiplier 0.5)
    assert steps <= 3 and hyperparameters.samples_per_prompt(hp["compute_multiplier"]) == 2
    assert hp["eval_samples"] <= 2 and hp["eval_interval"] >= steps  # validation only at the end
    method = quick.method()
    assert method["type"] == "reinforcement" and method["reinforcement"]["grader"] == rl.partial_credit_grader()


def test_the_recipe_changes_with_the_model_the_grader_and_the_settings():
    quick = rl.rft_settings(True)
    base = quick.metadata("ft:a")
    assert base["lesson"] == "07" and base["stage"] == "reinforcement" and base["mode"] == "quick"
    assert quick.metadata("ft:a") == base
    assert quick.metadata("ft:b")["recipe"] != base["recipe"]
    assert quick.metadata("ft:a", rl.exact_match_grader())["recipe"] != base["recipe"]
    import dataclasses

    assert dataclasses.replace(quick, compute_multiplier=2.0).metadata("ft:a")["recipe"] != base["recipe"]


def test_costs_follow_the_catalog():
    hosted = rl.hosted_rft_cost(1800)
    assert hosted["usd_per_hour"] == 100.0 and hosted["usd"] == pytest.approx(50.0)
    assert hosted["model"].startswith("o4-mini")
    usage = {"SmolLM2-135M-Instruct": {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}}
    entry = catalog.lookup("gpt-4.1-mini")
    priced = rl.judge_cost(usage, "gpt-4.1-mini")
    assert priced["usd"] == pytest.approx(entry.base_input_usd_per_1m + 0.5 * entry.base_output_usd_per_1m)
    with pytest.raises(ValueError, match="per training hour"):
        rl.hosted_rft_cost(60, "gpt-4.1-mini")


def test_rft_job_reuses_a_finished_job_with_the_same_recipe():
    from openai.types.fine_tuning import FineTuningJob

    quick = rl.rft_settings(True)
    metadata = quick.metadata("ft:sft")
    asked = {}

    def job(status, model_name, meta):
        return FineTuningJob.construct(id=f"ftjob-{status}", status=status, model=model_name, finished_at=100,
                                       fine_tuned_model="ft:rft" if status == "succeeded" else None, metadata=meta)

    listed = [job("succeeded", "ft:other", metadata), job("succeeded", "ft:sft", {**metadata, "recipe": "x"}),
              job("succeeded", "ft:sft", metadata)]

    def create(**kwargs):
        raise AssertionError("a matching job exists: nothing may be created")

    def list_jobs(**kwargs):
        asked.update(kwargs)
        return listed

    client = types.SimpleNamespace(
        fine_tuning=types.SimpleNamespace(jobs=types.SimpleNamespace(list=list_jobs, create=create)),
        models=types.SimpleNamespace(retrieve=lambda name: name))
    found = rl.rft_job(client, "ft:sft", settings=quick, verbose=False)
    assert found is listed[2] and asked["metadata"] == metadata

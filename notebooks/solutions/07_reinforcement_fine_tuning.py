"""Solutions to the exercises of notebooks/07_reinforcement_fine_tuning.ipynb.

Run from the repository root (the local backend starts by itself; no key needed):

    .venv/bin/python notebooks/solutions/07_reinforcement_fine_tuning.py          # the course's full-mode jobs
    .venv/bin/python notebooks/solutions/07_reinforcement_fine_tuning.py --quick  # quick mode: small jobs
    .venv/bin/python notebooks/solutions/07_reinforcement_fine_tuning.py --only 1 2   # some exercises only

Exercises 1 and 2 only grade (no model needed); 3 samples the SFT model of notebook 04
(``ftkit.course.triage_job``: the one the notebooks trained, or it trains it); 4 and 5 train RFT
jobs of their own on it (``ftkit.reinforcement.rft_job``, reused when run again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pandas as pd

import ftkit
from ftkit import cost, graders, jobs
from ftkit import evaluate as ev
from ftkit import reinforcement as rl
from ftkit.course import data_path, triage_job
from ftkit.local.jobs.hyperparameters import samples_per_prompt


def first_item(settings) -> dict:
    return settings.training_examples()[0]


def grade_all(client, grader: dict, answers: dict[str, str], item: dict) -> pd.Series:
    """The reward of each answer, through the server's graders endpoint (validated first)."""
    client.fine_tuning.alpha.graders.validate(grader=grader)
    return pd.Series({what: client.fine_tuning.alpha.graders.run(grader=grader, model_sample=answer, item=item).reward
                      for what, answer in answers.items()})


def exercise_1(client, settings) -> pd.DataFrame:
    """★ Category worth half the reward, urgency and product a quarter each."""
    weighted = {**rl.partial_credit_grader(), "name": "weighted_fields",
                "calculate_output": "0.5 * category + 0.25 * urgency + 0.25 * product"}
    item = first_item(settings)
    answers = rl.sample_answers(item)
    table = pd.DataFrame({"equal thirds": grade_all(client, rl.partial_credit_grader(), answers, item),
                          "category 1/2": grade_all(client, weighted, answers, item)})
    table["rank before"] = table["equal thirds"].rank(ascending=False, method="min")
    table["rank after"] = table["category 1/2"].rank(ascending=False, method="min")
    print(table.round(3).to_string())
    # Right answer: "a label that does not exist" (category wrong) drops from 0.67 to 0.5, below
    # "urgency wrong" (0.75); "urgency and product wrong" rises from 0.33 to 0.5. A wrong category
    # now costs as much as two other fields: the model is pushed hardest where it matters most.
    assert table.loc["urgency wrong", "category 1/2"] == 0.75
    assert table.loc["a label that does not exist", "category 1/2"] == 0.5
    return table


def exercise_2(client, settings) -> pd.DataFrame:
    """★ Answers the multi grader scores 1.0 that a person would not accept."""
    item = first_item(settings)
    right = {f: item[f] for f in rl.FIELDS}
    gamed = {
        "extra keys": json.dumps({**right, "note": "refund issued, ticket closed"}),
        "keys in another order": json.dumps(dict(reversed(list(right.items())))),
        "pretty-printed over lines": json.dumps(right, indent=4),
    }
    table = pd.DataFrame({"multi": grade_all(client, rl.partial_credit_grader(), gamed, item),
                          "python (exact)": grade_all(client, rl.exact_match_grader(), gamed, item)})
    print(table.to_string())
    # Right answer: output_json only looks up the three fields, so extra keys (here a made-up
    # promise to the customer) and another key order still score 1.0; the python grader demands
    # exactly the three keys in order and gives 0. A pretty-printed answer is the same JSON, and both
    # graders accept it (json.loads ignores whitespace) -- whether that is acceptable depends on who
    # reads the answer. What the grader does not check, RFT does not teach.
    assert (table["multi"] == 1.0).all()
    assert table.loc["extra keys", "python (exact)"] == 0.0
    return table


STRICT_PARTIAL_SOURCE = '''\
import json


def grade(sample, item):
    text = sample["output_text"].strip()
    try:
        answer = json.loads(text)
    except ValueError:
        return 0.0
    if not isinstance(answer, dict) or list(answer) != ["category", "urgency", "product"]:
        return 0.0
    if text != json.dumps(answer):
        return 0.0  # not the trained single-line format
    right = [answer["category"] == item["category"], answer["urgency"] == item["urgency"],
             answer["product"] == item["product"]]
    return sum(right) / 3
'''


def exercise_3(client, settings, sft_model: str) -> pd.DataFrame:
    """★★ A python grader with partial credit and a format rule; a pre-flight with it."""
    strict = {"type": "python", "name": "strict_partial", "source": STRICT_PARTIAL_SOURCE}
    item = first_item(settings)
    answers = rl.sample_answers(item)
    print(pd.DataFrame({"multi": grade_all(client, rl.partial_credit_grader(), answers, item),
                        "strict partial (python)": grade_all(client, strict, answers, item)}).round(3).to_string())
    group = samples_per_prompt(settings.compute_multiplier or 1.0)
    rows = []
    for line in settings.training_examples():
        reply = client.chat.completions.create(model=sft_model, messages=line["messages"], n=group, temperature=1.0,
                                               max_tokens=40, seed=len(rows))
        texts = [c.message.content or "" for c in reply.choices]
        rewards = {name: [graders.run_grader({"grader": g, "model_sample": t, "item": line})["reward"] for t in texts]
                   for name, g in (("multi", rl.partial_credit_grader()), ("strict", strict))}
        rows.append({f"{name} spread": max(r) - min(r) for name, r in rewards.items()}
                    | {f"{name} mean": sum(r) / len(r) for name, r in rewards.items()})
    table = pd.DataFrame(rows)
    print(f"prompts with a spread: multi {(table['multi spread'] > 0).sum()}, strict {(table['strict spread'] > 0).sum()} "
          f"of {len(table)}")
    # Right answer (it depends on the run): the SFT model nearly always writes the trained format,
    # so the strict grader's rewards match the multi grader's on most samples and the spreads are
    # about the same; where a sample breaks the format, the strict grader adds a spread (the model
    # learns the format too) -- at the price of never rewarding a right answer in another format.
    return table


def exercise_4(client, settings, sft_model: str, first_job) -> pd.DataFrame:
    """★★ compute_multiplier 2.0: 8 samples per prompt."""
    more = dataclasses.replace(settings, compute_multiplier=2.0)  # another recipe: rft_job trains (or reuses) it
    job = rl.rft_job(client, sft_model, settings=more, verbose=False)
    rows = {}
    for name, j in (("4 samples", first_job), ("8 samples", job)):
        res = jobs.results(client, j)
        spent = cost.local_run_cost_from_job(client, j.id)
        rows[name] = {"steps": len(res), "first reward": res["train_reward_mean"].iloc[0],
                      "last reward": res["train_reward_mean"].iloc[-1],
                      "steps with a spread": int((res["train_reward_std"] > 0).sum()),
                      "cpu_s": round(spent.cpu_seconds), "wall_s": round(spent.wall_seconds)}
    table = pd.DataFrame(rows).T
    print(table.to_string())
    # Right answer: the same number of steps, each sampling and grading twice as many answers, so
    # the job takes roughly twice the sampling time (the update also sees twice the tokens). More
    # samples make a spread more likely (a rare right answer gets found) and the mean reward of a
    # step less noisy; whether the model learns more per CPU-second is what the curves and the
    # test tickets have to show.
    return table


def exercise_5(client, settings, sft_model: str, first_job) -> pd.DataFrame:
    """★★★ Train with the exact-match python grader; compare with the multi grader's job."""
    sparse = rl.rft_job(client, sft_model, settings=settings, grader=rl.exact_match_grader(), verbose=False)
    prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
    configs = [ev.Config("RFT, multi grader", first_job.fine_tuned_model, system=prompts["short_system"]),
               ev.Config("RFT, exact match", sparse.fine_tuned_model, system=prompts["short_system"])]
    examples = settings.test_examples()
    evaluation = ev.evaluate(client, examples, configs, labels=rl.labels(), concurrency=len(examples), progress=False)
    a, b = evaluation.of("RFT, multi grader"), evaluation.of("RFT, exact match")
    table = pd.DataFrame({name: ev.paired_shift(a[col], b[col]) for name, col in
                          {"exact match": "exact", **{f: f"{f}_ok" for f in rl.FIELDS}}.items()}).T
    steps = {"multi": jobs.results(client, first_job), "exact": jobs.results(client, sparse)}
    print(table[["n", "before", "after", "gained", "lost", "mcnemar_p"]].round(3).to_string())
    print("steps with a reward spread:", {k: int((v["train_reward_std"] > 0).sum()) for k, v in steps.items()},
          "of", len(steps["multi"]))
    # Right answer: the exact-match reward is 0 or 1, so a group of samples has a spread only when
    # some samples get *everything* right and others do not; partial credit also separates "two
    # fields right" from "one" -- more steps with a spread, more signal per step. With short runs the
    # test-ticket difference is usually within the noise (read the McNemar p-value).
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="quick-mode settings (small jobs)")
    parser.add_argument("--only", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    settings = rl.rft_settings(args.quick)
    client = ftkit.client()
    if 1 in args.only:
        exercise_1(client, settings)
    if 2 in args.only:
        exercise_2(client, settings)
    if not {3, 4, 5} & set(args.only):
        return 0
    sft_model = triage_job(client, quick=args.quick, verbose=False).fine_tuned_model
    if 3 in args.only:
        exercise_3(client, settings, sft_model)
    if {4, 5} & set(args.only):
        first = rl.rft_job(client, sft_model, settings=settings, verbose=False)
        if 4 in args.only:
            exercise_4(client, settings, sft_model, first)
        if 5 in args.only:
            exercise_5(client, settings, sft_model, first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

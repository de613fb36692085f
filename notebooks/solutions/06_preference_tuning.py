"""Solutions to the exercises of notebooks/06_preference_tuning.ipynb.

Run from the repository root (the local backend starts by itself; no key needed):

    .venv/bin/python notebooks/solutions/06_preference_tuning.py          # the course's full-mode jobs
    .venv/bin/python notebooks/solutions/06_preference_tuning.py --quick  # quick mode: small jobs
    .venv/bin/python notebooks/solutions/06_preference_tuning.py --only 1 2   # some exercises only

Every exercise starts from the course's SFT and DPO jobs (``ftkit.preference.tone_job``: the ones
the notebook trained, or it trains them). Exercises 3, 4 and 5 train DPO jobs of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import random

import pandas as pd

import ftkit
from ftkit import data as ftd
from ftkit import evaluate as ev
from ftkit import jobs, lifecycle
from ftkit import preference as pref

SFT, DPO = lifecycle.SUPERVISED, lifecycle.DPO


def course_models(client, settings) -> tuple[str, str]:
    sft = pref.tone_job(client, SFT, settings=settings, verbose=False).fine_tuned_model
    dpo = pref.tone_job(client, DPO, model=sft, settings=settings, verbose=False).fine_tuned_model
    return sft, dpo


def evaluate_models(client, settings, models: dict[str, str], examples=None) -> ev.Evaluation:
    """Greedy answers of each model on the held-out drafts, scored with the house-style rule."""
    configs = [ev.Config(name, model, max_tokens=settings.max_tokens) for name, model in models.items()]
    return ev.evaluate(client, examples or settings.test_examples(), configs, scorers=[pref.house_style_scorer],
                       progress=False)


def named_ids(examples) -> list:
    return [ex["id"] for ex in examples if ex.get("customer")]


def exercise_1(client, settings, sft_model: str) -> pd.Series:
    """★ Which check fails most often for the SFT model; three answers failing only that check."""
    evaluation = evaluate_models(client, settings, {"SFT": sft_model})
    rows = evaluation.of("SFT").loc[named_ids(settings.test_examples())]
    checks = ["greets_by_name", "signs_off", "under_80_words", "plain_words"]
    failures = (~rows[checks].astype(bool)).sum().sort_values(ascending=False)
    print("failures per check (named drafts):\n", failures.to_string())
    worst = failures.index[0]
    only = rows[(~rows[worst].astype(bool)) & rows[[c for c in checks if c != worst]].astype(bool).all(axis=1)]
    for answer in only["prediction"].head(3):
        print(f"--- fails only {worst}:\n{answer}")
    # Right answer (it depends on the run): for SmolLM2 after 36 examples the usual failure is the
    # greeting -- it greets a name it saw in training instead of the one in the prompt -- or the
    # sign-off cut short by max_tokens. The rule is strict on purpose (exact sign-off line); it is
    # lenient on tone and facts, which it does not look at.
    return failures


def _one_step_logprobs():
    """The notebook's section 7 set-up: log-probabilities of two pairs under the model after one
    SFT step (adapter on) and under the reference (adapter off)."""
    import torch

    from ftkit.local.inference.weights import load_base_model
    from ftkit.local.jobs.training import dpo, steps
    from ftkit.local.jobs.training.recipe import RECIPE

    settings = pref.tone_settings()
    torch.manual_seed(0)
    base, tokenizer = load_base_model(progress=None)
    model = RECIPE.apply(base)
    model.train()
    batch = [steps.encode_example(tokenizer, ex, 2048) for ex in settings.sft_training_examples()[:4]]
    ids, labels, attention = steps.collate(batch, tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(params, 4e-4)
    loss, _, _ = steps.token_loss_and_accuracy(model, ids, labels, attention)
    steps.optimizer_step(loss, params, optimizer, steps.make_scheduler(optimizer, total_steps=10))
    pairs = [dpo.encode_pair(tokenizer, p) for p in settings.preference_pairs()[:2]]
    model.eval()
    with torch.no_grad():
        chosen, rejected = dpo.sequence_logprobs(model, pairs, tokenizer.pad_token_id)
        with model.disable_adapter():
            ref_chosen, ref_rejected = dpo.sequence_logprobs(model, pairs, tokenizer.pad_token_id)
    return chosen, rejected, ref_chosen, ref_rejected


def exercise_2() -> pd.DataFrame:
    """★ The same log-probabilities at three betas: rewards, margin and loss."""
    from ftkit.local.jobs.training import dpo

    chosen, rejected, ref_chosen, ref_rejected = _one_step_logprobs()
    rows = []
    for beta in (0.02, 0.1, 0.5):
        loss, r_plus, r_minus = dpo.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
        rows.append({"beta": beta, "reward y+": r_plus.mean().item(), "reward y-": r_minus.mean().item(),
                     "margin": (r_plus - r_minus).mean().item(), "loss": loss.item()})
    table = pd.DataFrame(rows)
    print(table.round(5).to_string(index=False))
    # Right answer: rewards and margin scale linearly with beta (beta x the same log-ratios); the loss
    # -log sigmoid(margin) moves away from log 2 faster with a larger beta. So for the same change of
    # the model, a larger beta gives a larger loss signal -- it saturates sooner, and the model needs to
    # move less from the reference to satisfy the pairs: beta keeps the trained model close to the
    # reference (the DPO paper's KL-constraint strength). A small beta lets it drift further.
    assert table["margin"].abs().is_monotonic_increasing
    return table


def exercise_3(client, settings, sft_model: str, dpo_model: str) -> pd.DataFrame:
    """★★ A second DPO job with beta 0.5 on the same SFT model, compared with the first."""
    strong = dataclasses.replace(settings, beta=0.5)  # another recipe: tone_job trains (or reuses) it
    job = pref.tone_job(client, DPO, model=sft_model, settings=strong, verbose=False)
    evaluation = evaluate_models(client, settings, {"beta 0.1": dpo_model, "beta 0.5": job.fine_tuned_model})
    named = named_ids(settings.test_examples())
    a, b = evaluation.of("beta 0.1").loc[named], evaluation.of("beta 0.5").loc[named]
    table = pd.DataFrame({c: ev.paired_shift(a[c], b[c]) for c in ("house_style", "signs_off", "greets_by_name")}).T
    table["mean words before"], table["mean words after"] = a["words"].mean(), b["words"].mean()
    last = jobs.checkpoints(client, job).iloc[-1]
    print(table.round(3).to_string())
    print(f"validation preference accuracy with beta 0.5: {last['full_valid_preference_accuracy']:.2f}")
    # Right answer: with beta 0.5 the model is held closer to the SFT model, so the shift is usually
    # smaller; the validation preference accuracy can still be high (ranking is easy on these pairs).
    return table


def nameless_pairs() -> list[dict]:
    """12 pairs on the training situations where the prompt names nobody: "Hi," preferred over an
    invented name."""
    pairs = pref.tone_settings(False).preference_pairs()
    rng = random.Random(6)
    out = []
    for p in pairs[::4][:12]:
        draft = p["input"]["messages"][-1]["content"].split("\n\n")[-1]
        if p["input"]["messages"][-1]["content"].startswith("Now rewrite"):
            draft = p["input"]["messages"][-2]["content"]
        good = p["preferred_output"][0]["content"]
        name = pref.greeted_name(good)
        plain = good.replace(f"Hi {name},", "Hi,", 1)
        invented = good.replace(f"Hi {name},", f"Hi {rng.choice(['Chloe', 'Pedro', 'Dmitri', 'Grace'])},", 1)
        messages = [{"role": "system", "content": pref.HOUSE_STYLE_SYSTEM},
                    {"role": "user", "content": f"Rewrite this reply in our house style:\n\n{draft}"}]
        out.append({"input": {"messages": messages}, "preferred_output": [{"role": "assistant", "content": plain}],
                    "non_preferred_output": [{"role": "assistant", "content": invented}]})
    return out


def _train_dpo_on(client, settings, sft_model: str, pairs: list[dict], suffix: str):
    train = jobs.upload(client, pairs, filename=f"tone-pairs-{suffix}.jsonl", verbose=False)
    valid = jobs.upload(client, settings.validation_pairs(), filename="tone-pairs-validation.jsonl",
                        min_examples=1, verbose=False)
    job = jobs.create_job(client, train, model=sft_model, validation_file=valid, method=DPO, suffix=suffix,
                          seed=settings.seed, verbose=False, **settings.hyperparameters(DPO))
    job = jobs.watch(client, job, print_events=False)
    if job.status != "succeeded":
        raise RuntimeError(f"{job.id} ended {job.status}: {job.error}")
    return job


def exercise_4(client, settings, sft_model: str, dpo_model: str) -> dict:
    """★★ Add name-less pairs; measure invented names on the name-less held-out drafts."""
    extra = nameless_pairs()
    assert ftd.validate(extra, min_examples=1).ok
    job = _train_dpo_on(client, settings, sft_model, settings.preference_pairs() + extra, "tone-dpo-names")
    examples = [ex for ex in pref.tone_settings(False).test_examples() if not ex.get("customer")]
    evaluation = evaluate_models(client, settings, {"DPO": dpo_model, "DPO + name-less pairs": job.fine_tuned_model},
                                 examples)
    shift = ev.paired_shift(evaluation.of("DPO")["invents_name"], evaluation.of("DPO + name-less pairs")["invents_name"])
    print(f"invents a name: {shift['before']:.0%} -> {shift['after']:.0%} "
          f"({shift['gained']} more, {shift['lost']} fewer; McNemar p = {shift['mcnemar_p']:.3f})")
    # Right answer: the new pairs contrast exactly this case, so the share of invented names drops --
    # DPO fixes what its pairs show, and only that.
    return shift


def exercise_5(client, settings, sft_model: str, dpo_model: str) -> dict:
    """★★★ On-policy pairs: two sampled SFT answers per training prompt, one passing the rule and one not."""
    prompts = [p["input"]["messages"] for p in settings.preference_pairs()]
    pairs = []
    for messages in prompts:
        reply = client.chat.completions.create(model=sft_model, messages=messages, n=2, temperature=1.0,
                                               max_tokens=settings.max_tokens, seed=len(pairs))
        answers = [c.message.content or "" for c in reply.choices]
        name = pref.prompt_customer(messages)
        verdicts = [pref.check_house_style(a, name).ok for a in answers]
        if verdicts.count(True) == 1:
            good, bad = (answers[0], answers[1]) if verdicts[0] else (answers[1], answers[0])
            pairs.append({"input": {"messages": messages}, "preferred_output": [{"role": "assistant", "content": good}],
                          "non_preferred_output": [{"role": "assistant", "content": bad}]})
    print(f"{len(pairs)} on-policy pairs from {len(prompts)} prompts")
    if len(pairs) < 8:
        print("too few prompts split the two samples: sample more per prompt (n=4) or use more prompts")
        return {"pairs": len(pairs)}
    job = _train_dpo_on(client, settings, sft_model, pairs, "tone-dpo-onpolicy")
    evaluation = evaluate_models(client, settings, {"SFT": sft_model, "synthetic pairs": dpo_model,
                                                    "on-policy pairs": job.fine_tuned_model})
    named = named_ids(settings.test_examples())
    out = {"pairs": len(pairs)}
    for name in ("synthetic pairs", "on-policy pairs"):
        shift = ev.paired_shift(evaluation.of("SFT").loc[named, "house_style"], evaluation.of(name).loc[named, "house_style"])
        out[name] = shift
        print(f"{name}: house style {shift['before']:.0%} -> {shift['after']:.0%} (McNemar p = {shift['mcnemar_p']:.3f})")
    # Right answer (it depends on the run): on-policy pairs contrast the mistakes this model really
    # makes, so each pair carries more signal; with few pairs the estimate is noisy -- compare the
    # intervals before concluding.
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="quick-mode settings (small jobs)")
    parser.add_argument("--only", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    settings = pref.tone_settings(args.quick)
    client = ftkit.client()
    sft_model, dpo_model = course_models(client, settings)
    if 1 in args.only:
        exercise_1(client, settings, sft_model)
    if 2 in args.only:
        exercise_2()
    if 3 in args.only:
        exercise_3(client, settings, sft_model, dpo_model)
    if 4 in args.only:
        exercise_4(client, settings, sft_model, dpo_model)
    if 5 in args.only:
        exercise_5(client, settings, sft_model, dpo_model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

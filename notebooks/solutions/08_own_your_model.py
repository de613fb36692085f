"""Solutions to the exercises of notebooks/08_own_your_model.ipynb.

Run from the repository root:

    .venv/bin/python notebooks/solutions/08_own_your_model.py [--quick] [--tickets 6]

It uses the course's fine-tuned triage model (``ftkit.course.triage_job``: the one notebook 04
trained, or it trains it once) on the local backend, writes its exports and snapshots to a scratch
folder it deletes at the end, and for exercises 3 and 5 starts a second local server that plays
the hosted platform (and stops it again); exercise 6 stores the course model's answers with
``store=True`` (tagged by a fresh run id) and distils some of them. ``--tickets``: test tickets compared in exercise 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

import httpx
import openai
import pandas as pd

import ftkit
from ftkit import evaluate as ev
from ftkit import jobs, migrate
from ftkit.course import data_path, triage_job
from ftkit.data import read_jsonl
from ftkit.distill import distill_file
from ftkit.local import control, export


def exercise_1(client, job, work: Path) -> pd.DataFrame:
    """★ The first checkpoint as an adapter: its card's metrics next to the final model's."""
    first = min(client.fine_tuning.jobs.checkpoints.list(job.id), key=lambda c: c.step_number)
    early = export.export_model(first.id, "adapter", work / "checkpoint", progress=None)
    final = export.export_model(job.fine_tuned_model, "adapter", work / "final-adapter", progress=None)
    table = pd.DataFrame({f"checkpoint (step {first.step_number})": export.read_export(early)["metrics"]["values"],
                          "final model": export.read_export(final)["metrics"]["values"]})
    print(table.to_string())
    return table


def exercise_2(client, job, work: Path, n_tickets: int) -> dict:
    """★ The merged model in bfloat16: half the size; how many answers stay identical?"""
    folder = export.export_model(job.fine_tuned_model, "merged", work / "merged-bf16", dtype="bfloat16", progress=None)
    weights = folder / "model.safetensors"
    tickets = sorted(random.Random(8).sample(ev.load_examples(data_path("tickets", "test.jsonl")), n_tickets),
                     key=lambda ex: ex["id"])
    conversations = [ev.prompt_messages(ex) for ex in tickets]
    server = [client.chat.completions.create(model=job.fine_tuned_model, messages=m, temperature=0, max_tokens=40)
              .choices[0].message.content for m in conversations]
    answers = export.answers_without_ftkit(folder, conversations, max_tokens=40)["answers"]
    same = sum(a == s for a, s in zip(answers, server))
    print(f"   bfloat16 weights: {weights.stat().st_size / 1e6:,.0f} MB (float32: about twice that); "
          f"{same} of {len(server)} answers identical to the server's")
    return {"mb": weights.stat().st_size / 1e6, "identical": same, "of": len(server)}


def _hosted_platform(work: Path, n_train: int, n_valid: int):
    """A second local server playing the hosted platform, with one finished job on it."""
    home = work / "hosted"
    info = control.start_server(home, port=0)
    hosted = openai.OpenAI(base_url=info.base_url, api_key=control.api_key(home))
    train = list(read_jsonl(data_path("tickets", "train.jsonl")))[:n_train]
    valid = list(read_jsonl(data_path("tickets", "validation.jsonl")))[:n_valid]
    job = jobs.create_job(hosted, jobs.upload(hosted, train, verbose=False),
                          validation_file=jobs.upload(hosted, valid, min_examples=1, verbose=False),
                          n_epochs=2, batch_size=4, learning_rate_multiplier=2.0, suffix="support-bot", seed=7,
                          verbose=False)
    job = jobs.watch(hosted, job, print_events=False)
    assert job.status == "succeeded", job.error
    return home, info, job


def _counting_client(info, home: Path, counts: collections.Counter):
    def hook(request: httpx.Request) -> None:
        path = request.url.path
        counts["download" if path.endswith("/content") else "chat" if path.endswith("/chat/completions") else "other"] += 1

    return openai.OpenAI(base_url=info.base_url, api_key=control.api_key(home),
                         http_client=httpx.Client(event_hooks={"request": [hook]}, timeout=600))


def exercise_3(work: Path, quick: bool) -> collections.Counter:
    """★★ Cut a snapshot back by hand and resume it with a client that counts its requests."""
    home, info, job = _hosted_platform(work, 20 if quick else 60, 6 if quick else 20)
    try:
        snap = work / "snapshot-3"
        manifest = migrate.snapshot(_counting_client(info, home, collections.Counter()), snap, golden=6,
                                    max_tokens=40, progress=False, say=lambda _m: None)
        record = manifest["jobs"][job.id]
        golden = snap / record["golden"]["path"]
        golden.write_text("".join(golden.read_text().splitlines(keepends=True)[:-2]))  # the last two answers
        results = manifest["files"][job.result_files[0]]
        (snap / results["path"]).unlink()  # and the results file
        counts: collections.Counter = collections.Counter()
        migrate.snapshot(_counting_client(info, home, counts), snap, golden=6, max_tokens=40, progress=False,
                         say=print)
        print(f"   resumed: {counts['download']} download(s) (the results file only), {counts['chat']} golden "
              f"request(s) (the two deleted answers), {counts['other']} other request(s) (listing, metadata)")
        assert (counts["download"], counts["chat"]) == (1, 2)
        return counts
    finally:
        control.stop_server(home)


def exercise_4() -> migrate.GoldenEstimate:
    """★★ What a 299-prompt golden set would cost on a gpt-4.1-mini fine-tune, and the budget."""
    records = []
    for name in ("train.jsonl", "validation.jsonl"):
        for i, example in enumerate(read_jsonl(data_path("tickets", name))):
            prompt, reference = migrate._prompt_of(example)
            records.append({"index": i, "messages": prompt, "reference": reference})
    estimate = migrate.estimate_golden_cost({"ft:gpt-4.1-mini-2025-04-14:acme:support-bot:AbC123": records},
                                            max_tokens=100)
    print(estimate)
    budget = math.ceil(estimate.worst_usd * 100) / 100
    print(f"   --max-cost-usd {budget:.2f}: the worst case is what could be billed if every answer ran to "
          f"max_tokens; checking the expected ${estimate.expected_usd:.4f} instead could be exceeded.")
    return estimate


def exercise_5(client, work: Path, quick: bool) -> dict:
    """★★★ No training file: distil a replacement from the golden set and test it on held-out prompts."""
    n_golden = 24 if quick else 40
    home, info, job = _hosted_platform(work, 20 if quick else 80, n_golden)
    try:
        snap = work / "snapshot-5"
        manifest = migrate.snapshot(openai.OpenAI(base_url=info.base_url, api_key=control.api_key(home)), snap,
                                    golden=n_golden, max_tokens=40, progress=False, say=lambda _m: None)
        golden = [json.loads(line) for line in
                  (snap / manifest["jobs"][job.id]["golden"]["path"]).read_text().splitlines()]
    finally:
        control.stop_server(home)
    random.Random(1).shuffle(golden)
    train, held_out = golden[: len(golden) // 2], golden[len(golden) // 2:]
    examples = [{"messages": [*g["messages"], {"role": "assistant", "content": g["answer"] or ""}]} for g in train]
    student = jobs.create_job(client, jobs.upload(client, examples, filename="distilled.jsonl", verbose=False),
                              n_epochs=3, batch_size=4, learning_rate_multiplier=2.0, suffix="distilled", seed=7,
                              verbose=False)
    student = jobs.watch(client, student, print_events=False)
    assert student.status == "succeeded", student.error
    answers = [client.chat.completions.create(model=student.fine_tuned_model, messages=g["messages"], temperature=0,
                                              max_tokens=40).choices[0].message.content for g in held_out]
    _, rates = migrate.agreement([g["answer"] for g in held_out], answers)
    print(f"   trained on {len(train)} golden answers, tested on {len(held_out)} others: "
          + ", ".join(f"{k} {v:.0%}" for k, v in rates.items() if not math.isnan(v)))
    return rates


def exercise_6(client, job) -> dict:
    """★★ Tags decide what you distil: store the teacher's answers tagged by run and team, list
    them by each filter, and distil the billing team's."""
    run = f"exercise-6-{random.Random().getrandbits(32):08x}"  # a fresh tag: earlier runs' answers stay out
    teacher = job.fine_tuned_model
    prompts = [ev.prompt_messages(ex) for ex in ev.load_examples(data_path("tickets", "validation.jsonl"))[:10]]
    teams = collections.Counter()
    for messages in prompts:
        first = client.chat.completions.create(model=teacher, messages=messages, temperature=0, max_tokens=40)
        answer = ev.parse_json(first.choices[0].message.content) or {}
        team = "billing" if answer.get("category") == "billing" else "other"
        teams[team] += 1
        client.chat.completions.create(model=teacher, messages=messages, temperature=0, max_tokens=40, store=True,
                                       metadata={"purpose": "distill", "run": run, "team": team})
    listed = {name: len(list(client.chat.completions.list(model=teacher, metadata=tags, limit=100)))
              for name, tags in (("run", {"run": run}), ("run + billing", {"run": run, "team": "billing"}),
                                 ("run + other", {"run": run, "team": "other"}))}
    work = Path(tempfile.mkdtemp(prefix="ftkit-08-ex6-"))
    try:
        path, report = distill_file(client, teacher, {"run": run, "team": "billing"}, work / "billing.jsonl")
        lines = len(path.read_text(encoding="utf-8").splitlines())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"   stored {len(prompts)} answers ({dict(teams)}); listed: {listed}; distilled for billing: {lines} lines "
          f"({'valid' if report.ok else 'invalid: fewer than 10 examples' if lines < 10 else 'invalid'})")
    print("   every filter names the run: without it, earlier runs' answers with the same team tag would be "
          "distilled too (metadata filters match every stored completion that has the pairs)")
    assert listed["run"] == len(prompts) and listed["run + billing"] == teams["billing"] == lines
    assert listed["run + billing"] + listed["run + other"] == listed["run"]
    return {"listed": listed, "billing_lines": lines}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the quick-mode triage model and small jobs")
    parser.add_argument("--tickets", type=int, default=6)
    args = parser.parse_args(argv)

    client = ftkit.client()
    job = triage_job(client, quick=args.quick or None)
    work = Path(tempfile.mkdtemp(prefix="ftkit-08-solutions-"))
    try:
        print("★ 1.")
        exercise_1(client, job, work)
        print("★ 2.")
        exercise_2(client, job, work, args.tickets)
        print("★★ 3.")
        exercise_3(work, args.quick)
        print("★★ 4.")
        exercise_4()
        print("★★★ 5.")
        exercise_5(client, work, args.quick)
        print("★★ 6.")
        exercise_6(client, job)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Solutions to the exercises of notebooks/04_job_lifecycle.ipynb.

Run from the repository root (the local backend starts by itself; no key needed):

    .venv/bin/python notebooks/solutions/04_job_lifecycle.py          # the course's full-mode job
    .venv/bin/python notebooks/solutions/04_job_lifecycle.py --quick  # quick mode: small jobs

Exercises 2, 5 and 6 read the course's ticket-triage job (``ftkit.course.triage_job``: the one
notebook 04 trained, or it trains one). Exercises 3 and 4 train small jobs of their own; 7 loads
the base model's tokenizer; 8 and 9 run notebook 04's overfitting settings
(``ftkit.course.overfit_settings``) and variants of them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import threading
import time

import pandas as pd

import ftkit
from ftkit import jobs
from ftkit.course import data_path, overfit_settings, triage_format_ok, triage_job, triage_settings
from ftkit.data import read_jsonl

PROMPTS = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))


def held_out(n: int) -> list[dict]:
    return list(read_jsonl(data_path("tickets", "test.jsonl")))[:n]


def exercise_1(client, settings) -> tuple[bool, bool]:
    """★ A DataFrame of the same examples is the same bytes (reused); reordered keys are not."""
    examples = settings.validation_set()
    first = jobs.upload(client, examples, min_examples=1)
    as_frame = jobs.upload(client, pd.DataFrame(examples), min_examples=1)
    assert as_frame.id == first.id and as_frame.reused
    reordered = copy.deepcopy(examples)
    reordered[0]["messages"][0] = dict(reversed(list(reordered[0]["messages"][0].items())))  # content, then role
    other = jobs.upload(client, reordered, min_examples=1)
    assert other.id != first.id and not other.reused
    # Right answer: the API trains on bytes, and ftkit cannot know which differences matter to you.
    # A hash of the bytes never reuses a file that differs; the cost of a false "different" is one
    # extra upload, the cost of a false "same" would be training on the wrong data.
    client.files.delete(other.id)  # tidy up the extra file
    return as_frame.reused, other.reused


def exercise_2(client, job) -> dict:
    """★ Time before the first step, per step, and after the last step, from the events."""
    ev = jobs.events(client, job)
    steps = ev[ev["type"] == "metrics"].dropna(subset=["step"])
    steps = steps[steps["data"].map(lambda d: "train_loss" in d)]
    created = pd.Timestamp(ev["created_at"].iloc[0])
    first_step, last_step = steps["created_at"].iloc[0], steps["created_at"].iloc[-1]
    done = ev.loc[ev["message"] == jobs.COMPLETED_MESSAGE, "created_at"].iloc[-1]
    n = len(steps)
    out = {
        "before the first step (s)": (first_step - created).total_seconds(),
        "mean per step (s)": (last_step - first_step).total_seconds() / max(1, n - 1),
        "after the last step (s)": (done - last_step).total_seconds(),
        "steps": n,
    }
    # Event times are whole seconds, so short intervals are rounded; the shares are what matter.
    print("  ", {k: round(v, 1) for k, v in out.items()})
    return out


def _when_step(client, job_id: str, step: int, action) -> threading.Thread:
    """Call ``action(client, job_id)`` once the job has reported training step ``step``."""

    def run():
        while True:
            data = [e.data for e in client.fine_tuning.jobs.list_events(job_id, limit=10).data if e.type == "metrics"]
            if max((d.get("step", 0) for d in data), default=0) >= step:
                action(client, job_id)
                return
            if client.fine_tuning.jobs.retrieve(job_id).status in jobs.TERMINAL_STATUSES:
                return
            time.sleep(0.3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def exercise_3(client, quick: bool) -> list[int]:
    """★★ Pause after step 5, watch returns the paused job, resume, and every step runs once."""
    n, epochs, pause_at = (12, 1, 2) if quick else (20, 2, 5)
    tickets = list(read_jsonl(data_path("tickets", "train.jsonl")))[:n]
    f = jobs.upload(client, tickets)
    job = jobs.create_job(client, f, n_epochs=epochs, batch_size=2, suffix="pause-demo")
    _when_step(client, job.id, pause_at, jobs.pause)
    paused = jobs.watch(client, job, print_events=False)
    assert paused.status == "paused", paused.status
    while not any(m.startswith("Job paused at step") for m in jobs.events(client, job)["message"]):
        time.sleep(0.5)  # the trainer finishes its step and saves its state before it stops
    jobs.resume(client, job)
    finished = jobs.watch(client, job, print_events=False)
    assert finished.status == "succeeded", finished.error
    ev = jobs.events(client, job)
    steps = sorted(int(d["step"]) for d in ev["data"] if "train_loss" in d)
    total = n // 2 * epochs
    assert steps == list(range(1, total + 1)), steps  # each step exactly once across the pause
    print(f"   {total} steps, each once; paused at:",
          ev.loc[ev["message"].str.startswith("Job paused"), "message"].iloc[0])
    return steps


def exercise_4(client, settings, job) -> pd.DataFrame:
    """★★ The same subset at half the learning rate: loss curves, and the format it learned."""
    train = jobs.upload(client, settings.training_examples())
    slow = jobs.create_job(client, train, n_epochs=settings.n_epochs, batch_size=settings.batch_size,
                           learning_rate_multiplier=(settings.learning_rate_multiplier or 1.0) * 0.5,
                           seed=settings.seed, suffix="half-lr")
    slow = jobs.watch(client, slow, print_events=False)
    assert slow.status == "succeeded", slow.error
    ours, theirs = jobs.results(client, job), jobs.results(client, slow)
    fig = jobs.plot_metrics(ours, title="course recipe (left: loss)")
    ax = fig.axes[0]
    ax.plot(theirs["step"], theirs["train_loss"], color="C2", label="train loss, half the learning rate")
    ax.legend(fontsize=8)
    fig.savefig("/tmp/ftkit-04-exercise-4.png")
    tickets = held_out(8)
    side = jobs.ask_models(client, {"course": job.fine_tuned_model, "half lr": slow.fine_tuned_model}, tickets,
                           system=PROMPTS["short_system"])
    rates = side[["course", "half lr"]].map(triage_format_ok).mean()
    print(f"   final training loss: course {ours['train_loss'].iloc[-1]:.3f}, half lr {theirs['train_loss'].iloc[-1]:.3f}"
          f"; valid format on 8 tickets: {rates.to_dict()} (plot: /tmp/ftkit-04-exercise-4.png)")
    return side


def pick_checkpoint(client, job, tickets) -> pd.DataFrame:
    """Score every checkpoint (and the final model) on held-out tickets: format first, then exact."""
    ck = jobs.checkpoints(client, job)
    models = {f"step {row.step}": row.checkpoint for row in ck.itertuples()}
    side = jobs.ask_models(client, models, tickets, system=PROMPTS["short_system"])
    rows = []
    for (name, model), row in zip(models.items(), ck.itertuples()):
        fmt = side[name].map(triage_format_ok).mean()
        exact = (side[name].str.strip() == side["expected"]).mean()
        rows.append((name, model, fmt, exact, row.full_valid_loss))
    table = pd.DataFrame(rows, columns=["checkpoint", "model", "valid_format", "exact", "full_valid_loss"])
    return table.sort_values(["valid_format", "exact"], ascending=False).reset_index(drop=True)


def exercise_5(client, job, quick: bool) -> pd.DataFrame:
    """★★★ Choose by behaviour, compare with the lowest full validation loss."""
    table = pick_checkpoint(client, job, held_out(8 if quick else 30))
    by_loss = jobs.best_checkpoint(jobs.checkpoints(client, job))
    print(table.to_string(index=False))
    agree = table["model"].iloc[0] == by_loss["checkpoint"]
    print(f"   by behaviour: {table['checkpoint'].iloc[0]}; by full validation loss: step {by_loss['step']}; "
          f"agree: {agree} (on few tickets, ties and noise decide more than you would like)")
    return table


def exercise_6(client) -> pd.DataFrame:
    """★★★ Keep the newest succeeded model per suffix; list every other fine-tuned model (dry run)."""
    recent = jobs.recent_jobs(client, 100)
    done = recent[(recent["status"] == "succeeded") & recent["fine_tuned_model"].notna()]
    keep = set(done.sort_values("finished_at").groupby("suffix", dropna=False)["fine_tuned_model"].last())
    existing = {m.id for m in client.models.list()}
    drop = sorted(m for m in done["fine_tuned_model"] if m not in keep and m in existing)
    print(f"   keeping {len(keep)} model(s): {sorted(keep)}")
    if not drop:
        print("   nothing to delete: every suffix has only its newest model")
        return pd.DataFrame()
    return jobs.cleanup(client, files=False, models=drop, dry_run=True)


def exercise_7() -> float:
    """★ A two-turn example: only the second answer (weight 1) and its end-of-turn are learned."""
    from ftkit.local.inference.weights import load_base_model
    from ftkit.under_the_hood import label_mask_table

    first, second = list(read_jsonl(data_path("tickets", "train.jsonl")))[:2]
    system, ticket_1, answer_1 = first["messages"]
    _, ticket_2, answer_2 = second["messages"]
    example = {"messages": [system, ticket_1, {**answer_1, "weight": 0}, ticket_2, answer_2]}
    _, tokenizer = load_base_model(progress=None)
    mask = label_mask_table(tokenizer, example)
    learned = "".join(mask.loc[mask["learned"], "token"])
    assert learned == answer_2["content"] + "<|im_end|>", learned
    share = mask["learned"].mean()
    print(f"   learned: {learned!r}; {int(mask['learned'].sum())} of {len(mask)} tokens ({share:.0%}) carry the loss")
    return share


def _valid_by_epoch(client, job, settings) -> pd.Series:
    """The results file's validation loss (the whole validation file, with these settings) at each
    epoch's last measurement, by epoch."""
    per_epoch = -(-settings.train_examples // settings.batch_size)
    res = jobs.results(client, job).dropna(subset=["valid_loss"])
    res = res.assign(epoch=-(-res["step"] // per_epoch))
    return res.groupby("epoch")["valid_loss"].last()


def exercise_8(client) -> pd.DataFrame:
    """★★ A quarter of the learning rate, or twice the tickets: which cures the overfit more?"""
    base = overfit_settings()
    runs = {
        "notebook 04's run": base,
        "1/4 learning rate": dataclasses.replace(base, mode=f"{base.mode}-lr-quarter",
                                                 learning_rate_multiplier=base.learning_rate_multiplier / 4,
                                                 why="the overfitting run at a quarter of its learning rate"),
        "2x tickets": dataclasses.replace(base, mode=f"{base.mode}-2x-tickets", train_examples=2 * base.train_examples,
                                          why="the overfitting run on twice as many training tickets"),
    }
    curves, rows = {}, []
    for name, settings in runs.items():
        job = triage_job(client, settings=settings, verbose=False)  # reuses notebook 04's job for the first
        curves[name] = _valid_by_epoch(client, job, settings)
        best = jobs.best_checkpoint(jobs.checkpoints(client, job))
        per_epoch = -(-settings.train_examples // settings.batch_size)
        rows.append({"run": name, "lowest validation loss": curves[name].min(),
                     "at epoch": int(curves[name].idxmin()), "last epoch's": curves[name].iloc[-1],
                     "best kept checkpoint: epoch": best["step"] // per_epoch})
    table = pd.DataFrame(rows)
    ax = pd.DataFrame(curves).plot(marker="o", xlabel="epoch", ylabel="validation loss (whole file)",
                                   title="Curing an overfit")
    ax.figure.savefig("/tmp/ftkit-04-exercise-8.png")
    print(table.round(4).to_string(index=False), "\n   (plot: /tmp/ftkit-04-exercise-8.png)")
    return table


def stop_when_overfitting(client, job, patience: int = 2, *, poll: float = 1.0) -> int | None:
    """Follow a running job; cancel it once its validation loss has not improved for ``patience``
    measurements after its lowest point. Returns the step of that lowest point (None: no
    validation measured)."""
    job_id = job if isinstance(job, str) else job.id
    while True:
        curve = jobs.step_metrics_from_events(jobs.events(client, job_id)).dropna(subset=["valid_loss"])
        lowest = int(curve["step"].iloc[curve["valid_loss"].to_numpy().argmin()]) if len(curve) else None
        since = int((curve["step"] > lowest).sum()) if lowest is not None else 0
        status = client.fine_tuning.jobs.retrieve(job_id).status
        if status in jobs.TERMINAL_STATUSES:
            return lowest
        if since >= patience:
            jobs.cancel(client, job_id)
            return lowest
        time.sleep(poll)


def exercise_9(client) -> dict:
    """★★★ Early stopping on the overfitting settings: what is left after the cancel?"""
    settings = dataclasses.replace(overfit_settings(), mode=f"{overfit_settings().mode}-early-stop",
                                   why="the overfitting run, stopped early")
    train = jobs.upload(client, settings.training_examples())
    valid = jobs.upload(client, settings.validation_set(), min_examples=1)
    job = jobs.create_job(client, train, validation_file=valid, **settings.job_kwargs())
    lowest = stop_when_overfitting(client, job)
    job = jobs.watch(client, job, print_events=False)
    kept = jobs.checkpoints(client, job)
    print(f"   lowest validation loss at step {lowest}; the job ended {job.status} "
          f"(final model: {job.fine_tuned_model}); checkpoints still listed: {kept['step'].tolist()}")
    # Gained: the steps after the turn were not trained (CPU time, or money on a hosted API).
    # Lost: a cancelled job has no final model -- only the checkpoints of the epochs it finished,
    # and the lowest point may lie between two of them; a validation batch is also noisier than
    # the full validation file, so a small patience stops on noise.
    return {"lowest_step": lowest, "status": job.status, "checkpoints": kept["step"].tolist()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="quick-mode settings and smaller jobs")
    args = parser.parse_args(argv)
    client = ftkit.client()
    settings = triage_settings(args.quick)
    print("★ 1: what makes a file the same?")
    exercise_1(client, settings)
    job = triage_job(client, quick=args.quick)
    print("★ 2: where did the time go?")
    exercise_2(client, job)
    print("★★ 3: pause and resume")
    exercise_3(client, args.quick)
    print("★★ 4: half the learning rate")
    exercise_4(client, settings, job)
    print("★★★ 5: choose a checkpoint by behaviour")
    exercise_5(client, job, args.quick)
    print("★★★ 6: a retention policy (dry run)")
    plan = exercise_6(client)
    if len(plan):
        print(plan.to_string(index=False))
    print("★ 7: read the label mask")
    exercise_7()
    print("★★ 8: cure the overfit")
    exercise_8(client)
    print("★★★ 9: early stopping")
    exercise_9(client)


if __name__ == "__main__":
    main()

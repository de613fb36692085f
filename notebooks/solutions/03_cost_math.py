"""Solutions to the exercises of notebooks/03_cost_math.ipynb.

Run from the repository root:

    .venv/bin/python notebooks/solutions/03_cost_math.py

Exercise 6 needs the numbers of your own local run (the notebook's section 7); pass them with
``--cpu-seconds`` and ``--trained-tokens`` (and ``--examples``). Without them it uses a run
measured once on the course machine (2 CPU cores), clearly labelled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import tempfile
from pathlib import Path

from ftkit import catalog, cost
from ftkit.course import data_path


def exercise_1() -> float:
    """★ 100,000 tokens x 3 epochs on gpt-4o-mini-2024-07-18 after its free period."""
    job = cost.training_cost("gpt-4o-mini-2024-07-18", 100_000, n_epochs=3, on="2024-11-01")
    print(" ", job)
    assert f"{job.usd:.2f}" == "0.90"
    return job.usd


def exercise_2() -> dict[int, int]:
    """★ The API's default epochs for 259, 12 and 9,000 examples, and the clamp that applies."""
    table = cost.epochs_table((259, 12, 9_000))
    print(table.to_string(index=False))
    # 259 x 3 = 777 passes: within 100..25,000, so 3 epochs.
    # 12 x 3 = 36 < 100: raised to 100 // 12 = 8 epochs.
    # 9,000 x 3 = 27,000 > 25,000: lowered to 25,000 // 9,000 = 2 epochs.
    return dict(zip(table["examples"], table["epochs"]))


def _triage_scenario(on):
    """The notebook's ticket-triage scenario: measured prompt lengths and the course file."""
    prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
    import pandas as pd

    tickets = pd.read_csv(data_path("tickets", "tickets.csv")).set_index("id")
    few_shot = []
    for ticket_id in prompts["few_shot_ids"]:
        t = tickets.loc[ticket_id]
        few_shot.append({"role": "user", "content": prompts["user_template"].format(subject=t["subject"], body=t["body"])})
        labels = {key: t[key] for key in ("category", "urgency", "product")}
        few_shot.append({"role": "assistant", "content": json.dumps(labels)})
    val = data_path("tickets", "validation.jsonl")
    base = cost.request_tokens(val, "gpt-4.1-mini", system=prompts["long_system"], few_shot=few_shot)
    ft = cost.request_tokens(val, "gpt-4.1-mini", system=prompts["short_system"])
    tokens = cost.training_tokens(data_path("tickets", "train.jsonl"), "gpt-4.1-mini", on=on)
    return {
        "base_prompt_tokens": round(base.prompt_tokens),
        "ft_prompt_tokens": round(ft.prompt_tokens),
        "output_tokens": round(ft.output_tokens),
        "training_tokens": tokens,
    }


def exercise_3(on=dt.date(2026, 11, 21)) -> int:
    """★★ The smallest monthly volume at which training pays for itself within one month."""
    s = _triage_scenario(on)
    job = cost.training_cost("gpt-4.1-mini", s["training_tokens"], on=on)
    be = cost.break_even(
        "gpt-4.1-mini", base_prompt_tokens=s["base_prompt_tokens"], ft_prompt_tokens=s["ft_prompt_tokens"],
        output_tokens=s["output_tokens"], requests_per_month=1, training=job, on=on,
    )
    volume = math.ceil(job.usd / be.saving_per_request_usd)
    check = cost.break_even(
        "gpt-4.1-mini", base_prompt_tokens=s["base_prompt_tokens"], ft_prompt_tokens=s["ft_prompt_tokens"],
        output_tokens=s["output_tokens"], requests_per_month=volume, training=job, on=on,
    )
    print(f"  training {job.usd:.4f} USD / saving {be.saving_per_request_usd:.7f} USD per request "
          f"= {volume:,} requests a month (payback {check.payback_months:.3f} months)")
    assert check.payback_months <= 1
    return volume


def exercise_4() -> dict[int, float | None]:
    """★★ Launch prices: the prompt reduction needed for parity against the output length."""
    from matplotlib.figure import Figure

    outputs = [0, 20, 50, 100, 150]
    needed = {}
    for out in outputs:
        be = cost.break_even("gpt-3.5-turbo", base_prompt_tokens=1_000, ft_prompt_tokens=100,
                             output_tokens=out, on="2023-08-22")
        needed[out] = be.parity_reduction
        shown = "impossible" if be.parity_reduction is None else f"{be.parity_reduction:.1%}"
        print(f"  {out:>4} output tokens: reduction needed {shown}")
    # Why it passes 100%: the fine-tuned output costs 16/1M against the base model's 2/1M, so
    # each output token adds 14/1M more to the fine-tuned request. Past 1,000 x 1.5 / 14 = 107
    # output tokens the fine-tuned output alone costs more than the whole base request: even an
    # empty prompt cannot reach parity (the "reduction" would have to exceed 100%).
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    xs = [o for o in outputs if needed[o] is not None]
    ax.plot(xs, [100 * needed[o] for o in xs], marker="o")
    ax.axhline(100, color="grey", ls=":")
    ax.set(xlabel="output tokens per request", ylabel="prompt reduction needed (%)",
           title="GPT-3.5 Turbo at launch prices, 1,000-token base prompt")
    path = Path(tempfile.gettempdir()) / "ftkit_03_exercise_4.png"
    fig.savefig(path)
    print(f"  plot: {path}")
    assert needed[0] == 0.875 and needed[150] is None
    return needed


def cheapest_trainable(on, scenario: dict, months: int = 12):
    """★★★ The model with the lowest first-year cost (training + ``months`` of fine-tuned
    inference) among those whose status on ``on`` is available or restricted; None if none."""
    best = None
    for name in catalog.models(priced=True):
        status = catalog.availability(name, on).status
        entry = catalog.lookup(name, on)
        if status not in ("available", "restricted") or entry.training_usd_per_1m is None:
            continue
        tokens = cost.training_tokens(data_path("tickets", "train.jsonl"), name, on=on)
        train = cost.training_cost(name, tokens, on=on)
        use = cost.inference_cost(name, scenario["ft_prompt_tokens"], scenario["output_tokens"],
                                  requests_per_month=scenario["requests_per_month"], on=on)
        total = train.usd + months * use.per_month_usd
        if best is None or total < best[1]:
            # the fine-tuned model only answers until its base model shuts down
            life = (entry.shutdown - catalog._as_date(on)).days / (365.25 / 12) if entry.shutdown else math.inf
            best = (entry.snapshot, total, status, life)
    return best


def exercise_5() -> dict[str, object]:
    scenario = {"ft_prompt_tokens": 68, "output_tokens": 20, "requests_per_month": 100_000}
    results = {}
    for day in ("2025-06-01", "2026-11-21", "2027-01-10"):
        results[day] = cheapest_trainable(day, scenario)
        best = results[day]
        print(f"  {day}: " + ("nothing can be fine-tuned any more" if best is None
                              else f"{best[0]} ({best[2]}), first year {best[1]:.2f} USD; it shuts down "
                                   f"{best[3]:.1f} months later"))
    assert results["2025-06-01"][0] == "gpt-4.1-nano-2025-04-14"
    assert results["2026-11-21"][0] == "gpt-4o-mini-2024-07-18"  # nano shut down on 2026-10-23
    assert results["2027-01-10"] is None  # no new jobs after 2027-01-06
    return results


def exercise_6(cpu_seconds: float | None, trained_tokens: int | None, examples: int | None) -> float:
    """★★★ Project the CPU time of the full file x 3 epochs, and the CPU-hour price at which it
    would cost as much as the same job on gpt-4.1-mini."""
    if cpu_seconds is None or trained_tokens is None:
        # Measured once on the course machine (2 CPU cores), quick mode: 12 examples, 1 epoch.
        # Replace with your own run: --cpu-seconds ... --trained-tokens ... --examples ...
        cpu_seconds, trained_tokens, examples = 83.5, 1_161, 12
        print("  (using the course machine's run; pass your own numbers to use yours)")
    run = cost.local_run_cost(cpu_seconds, cpu_seconds, trained_tokens)
    n_train = sum(1 for _ in data_path("tickets", "train.jsonl").open(encoding="utf-8") if _.strip())
    # the local tokenizer differs from tiktoken: scale by examples, measured with the local one
    full_tokens = trained_tokens / (examples or 1) * n_train * 3
    full_cpu_hours = run.cpu_seconds_per_1k_tokens * full_tokens / 1000 / 3600
    hosted = cost.training_cost("gpt-4.1-mini", cost.training_tokens(data_path("tickets", "train.jsonl"),
                                                                    "gpt-4.1-mini", n_epochs=3))
    parity_price = hosted.usd / full_cpu_hours
    print(f"  {run.cpu_seconds_per_1k_tokens:.1f} CPU s per 1K tokens -> full file x 3 epochs "
          f"~{full_tokens:,.0f} tokens, ~{full_cpu_hours:.2f} CPU hours")
    print(f"  gpt-4.1-mini would charge {hosted.usd:.2f} USD: the same as CPU at {parity_price:.3f} USD per CPU-hour")
    return parity_price


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seconds", type=float)
    parser.add_argument("--trained-tokens", type=int)
    parser.add_argument("--examples", type=int)
    args = parser.parse_args(argv)
    for number, run in enumerate(
        (exercise_1, exercise_2, exercise_3, exercise_4, exercise_5,
         lambda: exercise_6(args.cpu_seconds, args.trained_tokens, args.examples)),
        start=1,
    ):
        print(f"Exercise {number}")
        run()
    print("all solutions ran")


if __name__ == "__main__":
    main()

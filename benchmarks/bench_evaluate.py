"""Evaluate 100 held-out tickets on the local backend: batched (concurrent) vs one at a time.

    python benchmarks/bench_evaluate.py                      # own server in a temporary home
    python benchmarks/bench_evaluate.py --home DIR           # a home to reuse (its triage model too)
    python benchmarks/bench_evaluate.py --home DIR --model ft:...   # a model already served there

Goal (issue 6): ``ftkit.evaluate.evaluate`` on 100 test tickets with the fine-tuned model takes at
most 60 s on 2 cores, thanks to batched generation. Measured in the same run as the same
evaluation one request at a time (``concurrency=1``, so the engine never batches), which gives the
ratio. The model is the course's quick-mode triage model (``ftkit.course.triage_job``: trained in
the benchmark's home first, about a minute on 2 idle cores; reused when ``--home`` already has it)
unless ``--model`` names another; prompts are the fine-tuned configuration of notebook 05 (short
system prompt, greedy, ``max_tokens`` 40). Both runs must give the same answers -- reported.

The machine's load average is recorded: on a shared machine, other processes' CPU use slows
both runs (and multi-threaded matrix products suffer most), so compare the ratio, not only the
seconds.

Writes benchmarks/results/evaluate.json (gitignored) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

from _common import save


def _health(info) -> dict:
    import httpx

    return httpx.get(f"http://{info.host}:{info.port}/health", timeout=10).json()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="server home (default: a new temporary one)")
    parser.add_argument("--model", help="model to evaluate (default: the course's quick triage model)")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=128, help="requests in flight in the batched run")
    parser.add_argument("--skip-sequential", action="store_true", help="only the batched run (no ratio)")
    parser.add_argument("--out", default="benchmarks/results/evaluate.json")
    args = parser.parse_args(argv)

    import openai

    from ftkit import evaluate as ev
    from ftkit.course import data_path, triage_job
    from ftkit.local.control import api_key, running_server, start_server, stop_server

    home = args.home or Path(tempfile.mkdtemp(prefix="ftkit-bench-evaluate-"))
    info = running_server(home)
    started = info is None
    if started:
        with socket.socket() as s:  # any free port: leave the course's default (8765) alone
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        info = start_server(home, port=port)
    print(f"server pid {info.pid} at {info.base_url} (home {home}{', started here' if started else ''})", flush=True)
    load_start = os.getloadavg()[0]
    try:
        client = openai.OpenAI(base_url=info.base_url, api_key=api_key(home), timeout=1800)
        model = args.model or triage_job(client, quick=True, verbose=False).fine_tuned_model
        prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
        examples = ev.load_examples(data_path("tickets", "test.jsonl"))[: args.examples]
        config = ev.Config("fine-tuned", model, system=prompts["short_system"], max_tokens=args.max_tokens)

        # Warm-up: load the model and adapter so neither run pays for it.
        ev.evaluate(client, examples[:2], [config], concurrency=2, progress=False)

        before = _health(info)["engine"]
        start = time.perf_counter()
        batched = ev.evaluate(client, examples, [config], concurrency=args.concurrency, progress=False)
        batched_s = time.perf_counter() - start
        after = _health(info)["engine"]
        engine = {"batches": after["batches"] - before["batches"], "rows": after["rows"] - before["rows"]}
        row = batched.summary().loc["fine-tuned"]
        print(f"batched:        {batched_s:6.1f} s for {len(examples)} requests "
              f"({engine['rows']} rows in {engine['batches']} engine batches; "
              f"server CPU {row['cpu_s']:.0f} s; exact {row['exact']:.1%})", flush=True)

        sequential_s = agreement = None
        if not args.skip_sequential:
            start = time.perf_counter()
            sequential = ev.evaluate(client, examples, [config], concurrency=1, progress=False)
            sequential_s = time.perf_counter() - start
            same = (batched.of("fine-tuned")["prediction"] == sequential.of("fine-tuned")["prediction"])
            agreement = float(same.mean())
            print(f"one at a time:  {sequential_s:6.1f} s  -> batched is {sequential_s / batched_s:.1f}x faster; "
                  f"identical answers: {agreement:.0%}", flush=True)

        result = {
            "examples": len(examples), "model": model, "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "seconds": {"batched": round(batched_s, 1),
                        "one_at_a_time": None if sequential_s is None else round(sequential_s, 1)},
            "speedup": None if sequential_s is None else round(sequential_s / batched_s, 2),
            "goal_s": 60, "goal_met": batched_s <= 60,
            "engine": engine,
            "tokens_per_request": {"prompt": round(float(row["prompt_tokens"]), 1),
                                   "completion": round(float(row["completion_tokens"]), 1)},
            "server_cpu_s_batched": None if row["cpu_s"] != row["cpu_s"] else round(float(row["cpu_s"]), 1),
            "exact_match": round(float(row["exact"]), 4),
            "identical_answers": agreement,
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}},
        }
        save(result, args.out)
        verdict = "met" if result["goal_met"] else "MISSED"
        print(f"goal (<= 60 s for {len(examples)} examples, batched): {verdict}; wrote {args.out}")
        return result
    finally:
        if started:
            stop_server(home)


if __name__ == "__main__":
    main()

"""Few-shot evaluation of the test tickets with and without the prompt cache (issue 19).

    python benchmarks/bench_prompt_cache.py                  # the 101 test tickets
    python benchmarks/bench_prompt_cache.py --examples 16    # a shorter run

Notebook 05's "base, few-shot" configuration (long system prompt, the 5 worked examples of
``prompts.json`` ``few_shot_ids``, greedy, ``max_tokens`` 40) on SmolLM2-135M-Instruct, decoded by
the serving engine's batched decoder (:meth:`ftkit.local.inference.engine.Engine.decode_requests`, the path
every chat request takes) twice in the same process: with the prompt cache off
(``prompt_cache_bytes=0``) and on (the default budget). Both runs must give the same answers
(reported). Goal: >= 3x faster with the cache. The CPU model and flags and the load average are
recorded with the figures: on a shared machine, compare the ratio, not the seconds.

Writes benchmarks/results/prompt_cache.json (gitignored) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _common import cpu_info, fresh_model, save


def few_shot_messages() -> list[dict]:
    """Notebook 05's five worked examples, as user/assistant messages."""
    import pandas as pd

    from ftkit.course import data_path

    prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
    by_id = pd.read_csv(data_path("tickets", "tickets.csv")).set_index("id")
    messages = []
    for ticket_id in prompts["few_shot_ids"]:
        t = by_id.loc[ticket_id]
        messages.append({"role": "user", "content": prompts["user_template"].format(subject=t["subject"], body=t["body"])})
        messages.append({"role": "assistant", "content": json.dumps({f: t[f] for f in prompts["labels"]})})
    return messages


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=101)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/prompt_cache.json")
    args = parser.parse_args(argv)

    import torch

    from ftkit import evaluate as ev
    from ftkit.course import data_path
    from ftkit.local.inference.engine import Engine, GenerationRequest, eos_ids
    from ftkit.local.inference.render import render_prompt

    torch.set_grad_enabled(False)
    model, tok = fresh_model(0)
    prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
    config = ev.Config("base, few-shot", "base", system=prompts["long_system"], few_shot=few_shot_messages(),
                       max_tokens=args.max_tokens)
    examples = ev.load_examples(data_path("tickets", "test.jsonl"))[: args.examples]
    ids = [tok(render_prompt(tok, config.messages(e)), add_special_tokens=False)["input_ids"] for e in examples]

    def run(budget: int):
        engine = Engine(None, log=lambda message: None, prompt_cache_bytes=budget)
        engine.precision = "fp32"
        requests = [GenerationRequest("base", [], max_tokens=args.max_tokens, temperature=0, prompt_ids=list(p))
                    for p in ids]
        start = time.perf_counter()
        engine.decode_requests(model, tok, eos_ids(model, tok), requests, scope="base")
        seconds = time.perf_counter() - start
        return seconds, [r.future.result()[0].text for r in requests], sum(r.cached_tokens for r in requests), engine

    load_start = os.getloadavg()
    off_s, off_answers, _, _ = run(0)
    on_s, on_answers, cached, engine = run(512 * 2**20)
    same = sum(a == b for a, b in zip(off_answers, on_answers)) / len(ids)
    result = {
        "examples": len(ids), "max_tokens": args.max_tokens,
        "prompt_tokens": {"total": sum(map(len, ids)), "cached": cached},
        "seconds": {"without_cache": round(off_s, 1), "with_cache": round(on_s, 1)},
        "speedup": round(off_s / on_s, 2), "goal": ">= 3x", "identical_answers": same,
        "cache": engine.prompt_cache.stats(),
        "machine": {**cpu_info(), "load_avg": {"start": [round(x, 2) for x in load_start],
                                               "end": [round(x, 2) for x in os.getloadavg()]},
                    "torch_threads": torch.get_num_threads()},
    }
    print(f"{len(ids)} few-shot prompts ({result['prompt_tokens']['total']:,} tokens, {cached:,} reused): "
          f"{off_s:.1f} s without the cache, {on_s:.1f} s with it -> {off_s / on_s:.2f}x; identical answers {same:.0%}; "
          f"load {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}; {result['machine']['cpu']}", flush=True)
    save(result, args.out)
    return result


if __name__ == "__main__":
    main()

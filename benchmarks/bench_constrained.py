"""Constrained decoding cost: the 101 test tickets answered with and without the course's schema.

    python benchmarks/bench_constrained.py [--max-tokens 32] [--rounds 2]

Runs the engine directly (its batching, KV cache and grammar masks; no HTTP) on the base model
SmolLM2-135M-Instruct, greedy, all 101 tickets of data/tickets/test.jsonl submitted at once,
with the same max_tokens both ways: once free, once with ``response_format`` = the course's
strict ticket schema. Reports completion tokens/s of each (best of ``--rounds``: the machine may be
shared), the time spent computing and applying grammar masks, the share of answers that validate
against the schema, and the grammar compile time for the schema. Goal (issue 11): constrained
decoding costs under 15% more per token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import cpu_info, save
from compare_grammar_libs import TICKET_SCHEMA

SPEC = {"type": "json_schema", "schema": TICKET_SCHEMA, "strict": True, "name": "ticket"}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default="benchmarks/results/constrained.json")
    args = parser.parse_args(argv)

    import jsonschema

    from ftkit.course import data_path
    from ftkit.local.inference import grammar
    from ftkit.local.inference.engine import Engine, GenerationRequest
    from ftkit.local.inference.weights import DEFAULT_BASE_MODEL
    from ftkit.local.store import Store

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    tickets = [json.loads(line)["messages"][:-1]
               for line in data_path("tickets", "test.jsonl").read_text().splitlines() if line.strip()]
    store = Store(Path(tempfile.mkdtemp(prefix="ftkit-bench-")))
    store.add_model(DEFAULT_BASE_MODEL, kind="base", owned_by="system", source=DEFAULT_BASE_MODEL)
    engine = Engine(store, log=lambda *a: None)
    engine.start()

    mask_seconds = [0.0]

    def timed(fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                mask_seconds[0] += time.perf_counter() - start
        return wrapper

    grammar.fill_masks, grammar.apply_masks = timed(grammar.fill_masks), timed(grammar.apply_masks)

    def answer_all(constraint: dict | None) -> tuple[float, list]:
        requests = [GenerationRequest(DEFAULT_BASE_MODEL, messages, max_tokens=args.max_tokens, temperature=0,
                                      constraint=constraint) for messages in tickets]
        start = time.perf_counter()
        for req in requests:
            engine.submit(req)
        choices = [req.future.result()[0] for req in requests]
        return time.perf_counter() - start, choices

    try:
        answer_all(None)  # warm up: model loaded, first batches run
        start = time.perf_counter()
        engine.check_constraint(DEFAULT_BASE_MODEL, {"type": "json_object"})  # the tokenizer's grammar set-up
        tokenizer_setup = time.perf_counter() - start
        compiles = []
        for i in range(5):  # a new spec each time (a different name), so nothing comes from the cache
            start = time.perf_counter()
            engine.check_constraint(DEFAULT_BASE_MODEL, {**SPEC, "name": f"ticket{i}"})
            compiles.append(time.perf_counter() - start)
        runs: dict[str, list] = {"free": [], "constrained": []}
        for _ in range(args.rounds):
            for mode, constraint in (("free", None), ("constrained", SPEC)):
                mask_seconds[0] = 0.0
                seconds, choices = answer_all(constraint)
                runs[mode].append((seconds, choices, mask_seconds[0]))
    finally:
        engine.stop()

    def best(mode: str) -> tuple[float, list, float]:
        return min(runs[mode], key=lambda r: r[0] / max(1, sum(c.completion_tokens for c in r[1])))

    def valid(choice) -> bool:
        try:
            jsonschema.validate(json.loads(choice.text), TICKET_SCHEMA)
            return True
        except (ValueError, jsonschema.ValidationError):
            return False

    result: dict = {"cpu": cpu_info()["cpu"], "avx512_bf16": cpu_info()["avx512_bf16"], "tickets": len(tickets),
                    "max_tokens": args.max_tokens, "precision": engine.precision, "torch_threads": _threads(),
                    "grammar_compile_ms": {"tokenizer_setup_once": round(tokenizer_setup * 1000, 1),
                                           "ticket_schema_median": round(statistics.median(compiles) * 1000, 2)}}
    for mode in runs:
        seconds, choices, masks = best(mode)
        tokens = sum(c.completion_tokens for c in choices)
        result[mode] = {"seconds": round(seconds, 2), "completion_tokens": tokens,
                        "tokens_per_s": round(tokens / seconds, 1), "mask_seconds": round(masks, 3),
                        "valid_answers": sum(valid(c) for c in choices),
                        "finish_stop": sum(c.finish_reason == "stop" for c in choices)}
    free, constrained = result["free"]["tokens_per_s"], result["constrained"]["tokens_per_s"]
    result["time_per_token_ratio"] = round(free / constrained, 3)  # 1.10: constrained takes 10% longer per token
    result["cost_per_token"] = round(free / constrained - 1, 3)
    print(f"CPU {result['cpu']} (AVX512-BF16: {result['avx512_bf16']}), {engine.precision}, "
          f"{result['torch_threads']} torch threads, "
          f"{len(tickets)} tickets, max_tokens {args.max_tokens}")
    print(f"grammar: tokenizer set-up {result['grammar_compile_ms']['tokenizer_setup_once']} ms once, "
          f"ticket schema compile {result['grammar_compile_ms']['ticket_schema_median']} ms")
    for mode in ("free", "constrained"):
        r = result[mode]
        print(f"{mode:12} {r['seconds']:7.1f} s  {r['completion_tokens']:5} tokens  {r['tokens_per_s']:6.1f} tokens/s  "
              f"masks {r['mask_seconds']:.2f} s  valid {r['valid_answers']}/{len(tickets)}")
    print(f"constrained costs {result['cost_per_token']:+.1%} per token (goal < +15%)")
    return save(result, args.out)


if __name__ == "__main__":
    main()

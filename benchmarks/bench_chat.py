"""Chat throughput of the local server: 100 concurrent short requests vs the same 100 one at a time.

    python benchmarks/bench_chat.py [--requests 100]

Starts a real server in a temporary home and drives it with the ``openai`` SDK. Concurrent
requests are batched by the engine into shared forward passes; one-at-a-time requests each get
their own. Greedy decoding, so both runs must give the same answers -- checked. Goal (issue 3):
batched >= 5x one at a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import save


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/chat.json")
    args = parser.parse_args(argv)

    import openai

    from ftkit.local.control import api_key, start_server, stop_server

    home = Path(tempfile.mkdtemp(prefix="ftkit-bench-"))
    server = start_server(home, port=0)
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=api_key(home), max_retries=0, timeout=600)
        prompts = [f"Write one short sentence about the number {i}." for i in range(args.requests)]

        def ask(prompt: str) -> tuple[str, int]:
            r = client.chat.completions.create(model="SmolLM2-135M-Instruct", temperature=0,
                                               max_tokens=args.max_tokens,
                                               messages=[{"role": "user", "content": prompt}])
            return r.choices[0].message.content, r.usage.completion_tokens

        ask("warm up")
        start = time.perf_counter()
        sequential = [ask(p) for p in prompts]
        t_seq = time.perf_counter() - start
        start = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            batched = list(pool.map(ask, prompts))
        t_batch = time.perf_counter() - start
    finally:
        stop_server(home)

    same = sum(a[0] == b[0] for a, b in zip(sequential, batched))
    tokens = sum(n for _, n in batched)
    result = {"requests": args.requests, "completion_tokens": tokens,
              "seconds": {"one_at_a_time": round(t_seq, 2), "batched": round(t_batch, 2)},
              "requests_per_s": {"one_at_a_time": round(args.requests / t_seq, 2),
                                 "batched": round(args.requests / t_batch, 2)},
              "speedup": round(t_seq / t_batch, 2), "identical_answers": same}
    print(f"{args.requests} requests, {tokens} completion tokens")
    print(f"one at a time: {t_seq:6.1f} s  ({args.requests / t_seq:5.2f} req/s)")
    print(f"batched:       {t_batch:6.1f} s  ({args.requests / t_batch:5.2f} req/s)")
    print(f"speed-up {result['speedup']}x (goal >= 5x); identical answers: {same}/{args.requests}")
    return save(result, args.out)


if __name__ == "__main__":
    main()

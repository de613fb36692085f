"""Validate + count a generated 100k-example (~50 MB) training file, three ways, in one run.

    python benchmarks/bench_validate.py [--examples 100000]

(a) the OpenAI cookbook's data-prep recipe, re-implemented as the baseline: load the file into a
    list, then separate passes for format checks, token counts (``encoding.encode`` per value)
    and assistant tokens;
(b) ftkit: ``ftkit.data.validate(path, model=...)`` -- one streaming pass, every check, counts;
(c) raw tiktoken ``encode_ordinary`` over the same message texts, already in memory: the limit.

Goals (issue 2): (b) at least 4x (a), at least 50% of (c); peak memory of (b) flat in file size
(measured in fresh processes on a quarter-size and a full-size file).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import save

MODEL = "gpt-4o-mini-2024-07-18"
WORDS = ("order refund invoice delivery password account login crash error broken charged twice late parcel "
         "warehouse screen update payment card subscription cancel upgrade device sensor hub camera doorbell").split()


def make_file(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 55)))
            ex = {"messages": [
                {"role": "system", "content": "You triage support tickets. Reply with JSON: category, urgency."},
                {"role": "user", "content": f"Ticket {i}: {body}"},
                {"role": "assistant", "content": json.dumps({"category": rng.choice(WORDS), "urgency": "low",
                                                             "summary": " ".join(rng.choice(WORDS) for _ in range(8))})},
            ]}
            fh.write(json.dumps(ex) + "\n")


# -- (a) the cookbook recipe ("Data preparation and analysis for chat model fine-tuning") ----------


def cookbook_recipe(path: Path, encoding) -> dict:
    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]
    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        return num_tokens + 3

    def num_assistant_tokens_from_messages(messages):
        return sum(len(encoding.encode(m["content"])) for m in messages if m["role"] == "assistant")

    convo_lens, assistant_lens = [], []
    for ex in dataset:
        convo_lens.append(num_tokens_from_messages(ex["messages"]))
        assistant_lens.append(num_assistant_tokens_from_messages(ex["messages"]))
    return {"examples": len(dataset), "tokens": sum(convo_lens), "errors": dict(format_errors)}


# -- (b) ftkit ----------------------------------------------------------------------------------


def ftkit_validate(path: Path) -> dict:
    from ftkit.data import validate

    report = validate(path, model=MODEL)
    return {"examples": report.n_examples, "tokens": report.total_token_count, "errors": len(report.errors)}


# -- (c) raw tiktoken ----------------------------------------------------------------------------


def raw_texts(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.extend(m["content"] for m in json.loads(line)["messages"])
    return texts


def timed(fn, *args, repeat: int = 2):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_rss_mb(path: Path) -> float:
    """Peak resident memory of a fresh process that imports ftkit and validates ``path``."""
    code = ("import resource, sys; from ftkit.data import validate; "
            f"validate(sys.argv[1], model={MODEL!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/results/validate.json")
    args = parser.parse_args(argv)

    from ftkit.tokens import get_encoding

    encoding = get_encoding("o200k_base")  # the model's encoding, for all three
    with tempfile.TemporaryDirectory() as tmp:
        path, quarter = Path(tmp) / "train.jsonl", Path(tmp) / "quarter.jsonl"
        make_file(path, args.examples)
        make_file(quarter, args.examples // 4)
        mb = path.stat().st_size / 1e6
        print(f"file: {args.examples:,} examples, {mb:.1f} MB")

        t_cook, cook = timed(cookbook_recipe, path, encoding)
        t_ours, ours = timed(ftkit_validate, path)
        texts = raw_texts(path)
        t_raw, _ = timed(lambda: [len(encoding.encode_ordinary(t)) for t in texts])
        assert ours["errors"] == 0 and cook["errors"] == {}
        rss_quarter, rss_full = peak_rss_mb(quarter), peak_rss_mb(path)

    rows = [("cookbook recipe (baseline)", t_cook), ("ftkit validate", t_ours), ("raw tiktoken encode_ordinary", t_raw)]
    print(f"\n{'method':32} {'seconds':>8} {'examples/s':>11} {'MB/s':>7}")
    for name, t in rows:
        print(f"{name:32} {t:8.2f} {args.examples / t:11,.0f} {mb / t:7.1f}")
    result = {
        "examples": args.examples, "megabytes": round(mb, 1),
        "seconds": {"cookbook": round(t_cook, 2), "ftkit": round(t_ours, 2), "raw_tiktoken": round(t_raw, 2)},
        "speedup_vs_cookbook": round(t_cook / t_ours, 2),
        "share_of_raw_tiktoken": round(t_raw / t_ours, 2),
        "peak_rss_mb": {"quarter_file": round(rss_quarter), "full_file": round(rss_full)},
        "tokens_ftkit": ours["tokens"], "tokens_cookbook": cook["tokens"],
    }
    print(f"\nftkit vs cookbook: {result['speedup_vs_cookbook']}x (goal >= 4x)")
    print(f"ftkit vs raw tiktoken: {result['share_of_raw_tiktoken']:.0%} of the limit (goal >= 50%)")
    print(f"peak memory: {rss_quarter:.0f} MB on {args.examples // 4:,} examples, {rss_full:.0f} MB on "
          f"{args.examples:,} (goal: flat)")
    print(f"token totals agree: ftkit {ours['tokens']:,} vs cookbook {cook['tokens']:,} "
          "(cookbook also encodes the role strings; ftkit counts them too)")
    return save(result, args.out)


if __name__ == "__main__":
    main()

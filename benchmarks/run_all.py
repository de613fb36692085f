"""Run every benchmark in turn and print a summary of the ratios (``make bench``).

Each benchmark measures ftkit and its baseline side by side in the same run, so the ratios hold
on whatever machine runs them; results also land in benchmarks/results/*.json.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = [
    ("validate + count 100k examples", "bench_validate", "speedup_vs_cookbook", ">= 4x the cookbook recipe"),
    ("LoRA training tokens/s", "bench_train", "speedup", ">= 2x a naive padded loop"),
    ("SFT tokens/s vs TRL (fp32)", "bench_train", "speedup_vs_trl", ">= 1.5x TRL's SFTTrainer at equal loss"),
    ("DPO pairs/s vs TRL", "bench_dpo", "speedup", ">= 1x TRL's DPOTrainer at equal loss"),
    ("RFT step vs TRL GRPOTrainer", "bench_rft", "speedup", ">= 1x TRL's GRPOTrainer step time"),
    ("100 concurrent chat requests", "bench_chat", "speedup", ">= 5x one at a time"),
    ("evaluate 100 held-out tickets", "bench_evaluate", "speedup", "<= 60 s, batched vs one at a time"),
    ("few-shot eval, prompt cache", "bench_prompt_cache", "speedup", ">= 3x without the cache"),
    ("constrained vs free decoding", "bench_constrained", "time_per_token_ratio", "< 1.15x free decoding's time/token"),
]


def main() -> int:
    summary, done = [], {}  # a benchmark with several goals runs once
    for title, module, key, goal in BENCHMARKS:
        if module in done:
            result, seconds = done[module]
            summary.append((title, result.get(key), goal, seconds))
            continue
        print(f"\n=== {title} ({module}) ===", flush=True)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            print("not present")
            continue
        start = time.perf_counter()
        result = mod.main([])
        done[module] = result, time.perf_counter() - start
        summary.append((title, result.get(key), goal, done[module][1]))
    print("\n=== summary ===")
    for title, value, goal, seconds in summary:
        print(f"{title:34} {value!s:>8}x   goal {goal}   ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

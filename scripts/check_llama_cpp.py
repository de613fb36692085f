"""Run GGUF exports with llama.cpp and compare its greedy answers with the float32 model's.

    python scripts/check_llama_cpp.py GGUF_EXPORT_DIR --against MERGED_EXPORT_DIR [--tickets 8]

``GGUF_EXPORT_DIR`` comes from ``python -m ftkit.local export MODEL --format gguf --out DIR``,
``MERGED_EXPORT_DIR`` from ``--format merged`` of the same model (its answers, computed with plain
transformers in a process without ftkit, are the reference: the server's own answers, see
notebook 08). Every ``.gguf`` file in the folder is loaded with llama.cpp through
``llama-cpp-python`` (chat template from the file, ``temperature=0``) and asked the same course
test tickets. Prints, per file, how many answers are identical to the reference, right (all three
labels) and well-formed, and the load time and generation speed.

Not part of CI: ``pip install llama-cpp-python`` compiles llama.cpp (several minutes on 2 cores;
``CMAKE_ARGS="-DGGML_NATIVE=ON"`` for a CPU build). tests/test_export.py runs a smaller check of
the same kind and skips, saying so, when llama_cpp is not installed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gguf_dir", type=Path)
    parser.add_argument("--against", type=Path, required=True, help="the merged export of the same model")
    parser.add_argument("--tickets", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: pip install llama-cpp-python (compiles llama.cpp)", file=sys.stderr)
        return 2
    from ftkit import evaluate as ev
    from ftkit.course import data_path, triage_format_ok
    from ftkit.local.export import answers_without_ftkit

    files = sorted(args.gguf_dir.glob("*.gguf"))
    if not files:
        print(f"no .gguf file in {args.gguf_dir}", file=sys.stderr)
        return 2
    tickets = sorted(random.Random(8).sample(ev.load_examples(data_path("tickets", "test.jsonl")), args.tickets),
                     key=lambda ex: ex["id"])
    conversations = [ev.prompt_messages(ex) for ex in tickets]
    references = [ev.reference_of(ex) for ex in tickets]
    reference = answers_without_ftkit(args.against, conversations, max_tokens=args.max_tokens)["answers"]
    print(f"llama-cpp-python {llama_cpp.__version__}; {len(tickets)} test tickets; reference: {args.against} "
          f"(float32, plain transformers)")
    print(f"{'file':52} {'identical':>9} {'right':>6} {'format':>6} {'load s':>7} {'tok/s':>7}")
    for path in files:
        started = time.perf_counter()
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=os.cpu_count(), seed=0, verbose=False)
        loaded = time.perf_counter()
        answers, tokens = [], 0
        for messages in conversations:
            out = llm.create_chat_completion(messages=messages, temperature=0, max_tokens=args.max_tokens)
            answers.append(out["choices"][0]["message"]["content"])
            tokens += out["usage"]["completion_tokens"]
        seconds = time.perf_counter() - loaded
        same = sum(a == r for a, r in zip(answers, reference))
        right = sum(map(ev.exact_match, answers, references))
        ok = sum(map(triage_format_ok, answers))
        print(f"{path.name:52} {same:>5}/{len(tickets):<3} {right:>6} {ok:>6} {loaded - started:>7.1f} "
              f"{tokens / seconds:>7.1f}")
        for answer, ref in zip(answers, reference):
            if answer != ref:
                print(f"    llama.cpp: {answer!r}\n    reference: {ref!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

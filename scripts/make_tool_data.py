"""Make notebook 09's tool-calling conversations in data/tools/ -- seeded, so every run writes the
same bytes.

    python scripts/make_tool_data.py            # rewrite data/tools/
    python scripts/make_tool_data.py --out DIR  # write DIR/tools/ instead (the tests compare the two)

The generator is ftkit.toolcalls.make_conversations (the tools, templates and plan live there);
this script writes the split files and the data card, and checks that every file passes
ftkit.data.validate and that no ticket text is in two splits. Synthetic, CC0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftkit import data as ftd
from ftkit import toolcalls as tc

CHECK_MODEL = "gpt-4o-mini-2024-07-18"

CARD = """# Tool-calling conversations (notebook 09)

Synthetic, written by the ftkit project for the course (CC0 1.0), made by
`scripts/make_tool_data.py` from `ftkit.toolcalls.make_conversations` with seed {seed}; running the
script rewrites these files byte for byte. Names, order numbers and email addresses (at
example.com/.org/.net) are random.

Each line is one support conversation in OpenAI's fine-tuning format for function calling:
`messages` (the system prompt of notebook 02's tool example, the customer's ticket, the
assistant's reply), `tools` (the course's four tools, `ftkit.toolcalls.TOOLS`) and
`parallel_tool_calls: false`. The assistant's reply is **one tool call** whose arguments are read
exactly off the ticket (an order number, an email address, a refund reason, a team, a priority
given by an explicit urgency cue), or a **plain answer** for tickets that need no tool -- some of
those mention an order number on purpose -- so whether to call is part of the task.

| kind | train | validation | test | all |
|---|---:|---:|---:|---:|
{rows}

Split: `ftkit.data.split(validation=0.07, test=0.25, seed={seed})`, stratified by kind. The test
tickets are new fillings of the same templates (in-distribution): they test reading the arguments
off unseen tickets, not unseen phrasings.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args(argv)
    folder = args.out / "tools"
    counts = tc.write_tool_data(folder)
    parts = {name: list(ftd.read_jsonl(folder / f"{name}.jsonl")) for name in counts}
    for name, rows in parts.items():
        report = ftd.validate(rows, model=CHECK_MODEL, min_examples=1)
        if not report.ok or report.problems:
            print(f"{name}.jsonl does not pass the validator:\n{report.summary()}", file=sys.stderr)
            return 1
    texts = {name: {ftd.example_input_text(ex) for ex in rows} for name, rows in parts.items()}
    names = list(texts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if texts[a] & texts[b]:
                print(f"{len(texts[a] & texts[b])} tickets are in both {a} and {b}", file=sys.stderr)
                return 1
    table = tc.kinds_table(parts)
    rows = "\n".join(f"| {kind} | " + " | ".join(str(v) for v in table.loc[kind]) + " |" for kind in table.index)
    (folder / "README.md").write_text(CARD.format(seed=tc.SEED, rows=rows), encoding="utf-8")
    print(f"wrote {folder}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

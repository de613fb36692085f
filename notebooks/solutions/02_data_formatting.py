"""Solutions to the exercises of notebooks/02_data_formatting.ipynb.  Run: python notebooks/solutions/02_data_formatting.py"""

import copy
import json
import tempfile
from pathlib import Path

import pandas as pd

from ftkit import data as ftd
from ftkit.course import data_path
from ftkit.tokens import count_examples

MODEL = "gpt-4o-mini-2024-07-18"
tickets = pd.read_csv(data_path("tickets", "tickets.csv"))
prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))


def triage_answer(row):
    return {"category": row["category"], "urgency": row["urgency"], "product": row["product"]}


# ★ The long system prompt on the validation examples: how many more tokens?
rows = tickets[tickets["split"] == "validation"]
short = ftd.build_chat_examples(rows, system=prompts["short_system"], user=prompts["user_template"], assistant=triage_answer)
long = ftd.build_chat_examples(rows, system=prompts["long_system"], user=prompts["user_template"], assistant=triage_answer)
extra = count_examples(long, model=MODEL)["total"] - count_examples(short, model=MODEL)["total"]
assert extra.nunique() == 1  # only the system prompt differs, by the same amount in every example
print(f"★ the long prompt adds {extra.iloc[0]} tokens per example, {extra.sum():,} per epoch for {len(rows)} examples")

# ★★ A broken file of my own: three new mistakes after ten good examples.
good = list(ftd.read_jsonl(data_path("tickets", "train.jsonl")))[:10]
call = ftd.tool_call("lookup_order", {"order_id": "LH-123456"})
tools = [ftd.function_tool("lookup_order", "Look up an order.", {"type": "object", "properties": {"order_id": {"type": "string"}}})]
no_call_id = ftd.chat_example([
    ftd.system("Use the tools."), ftd.user("Where is LH-123456?"), ftd.assistant(None, tool_calls=[call]),
    {"role": "tool", "content": '{"status": "in_transit"}'},  # tool_call_id forgotten
    ftd.assistant("It is on its way."),
], tools=tools)
yes_string = {**copy.deepcopy(good[0]), "tools": tools, "parallel_tool_calls": "yes"}
nothing_trained = copy.deepcopy(good[1])
nothing_trained["messages"][2]["weight"] = 0
path = Path(tempfile.mkdtemp()) / "my_broken.jsonl"
ftd.write_jsonl([*good, no_call_id, yes_string, nothing_trained], path)
report = ftd.validate(path, model=MODEL)
found = sorted((p.line, p.code) for p in report.problems)
assert found == [(11, "message_missing_key"), (12, "invalid_tools"), (13, "no_trained_messages")], found
print("★★", found)

# ★★★ How robust is the leakage check?
splits = {name: list(ftd.read_jsonl(data_path("tickets", f"{name}.jsonl"))) for name in ("train", "validation", "test")}


def paraphrase(example, level):
    """Edits of increasing size to the ticket text (the user message)."""
    ex = copy.deepcopy(example)
    text = ex["messages"][1]["content"]
    subject, _, body = text.partition("\n\n")
    if level >= 1:
        body = "Hello again, " + body
    if level >= 2:
        body = body.rsplit("\n", 1)[0] + "\nKind regards, a customer"
    if level >= 3:
        subject = "Subject: (no subject)"
    if level >= 4:
        sentences = body.split(". ")
        sentences[0] = "I have a problem I wrote about before"
        body = ". ".join(sentences)
    ex["messages"][1]["content"] = f"{subject}\n\n{body}"
    return ex


rows = []
for threshold in (0.9, 0.8, 0.6):
    for level in (1, 2, 3, 4):
        leaky = {**splits, "train": splits["train"] + [paraphrase(ex, level) for ex in splits["test"][:20]]}
        caught = ftd.check_leakage(leaky, threshold=threshold)
        rows.append({"threshold": threshold, "edit level": level, "caught of 20": len(caught)})
    false_alarms = len(ftd.check_leakage(splits, threshold=threshold))
    rows.append({"threshold": threshold, "edit level": "clean splits (false alarms)", "caught of 20": false_alarms})
print("★★★\n" + pd.DataFrame(rows).pivot(index="edit level", columns="threshold", values="caught of 20").to_string())

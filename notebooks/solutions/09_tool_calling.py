"""Solutions to the exercises of notebooks/09_tool_calling.ipynb (run from the repository root or
notebooks/; uses the same settings, so the job the notebook trained is reused)."""

import pandas as pd

import ftkit
from ftkit import evaluate as ev
from ftkit import toolcalls as tc
from ftkit.course import tool_job, tool_settings

client = ftkit.client()
settings = tool_settings()
test = settings.test_set()
TUNED = tool_job(client, settings=settings).fine_tuned_model

# ★ One ticket by hand, then reworded with the same order number.
example = next(ex for ex in test if tc.tool_of(ex) == "lookup_order")
order = tc.expected_call(example)["arguments"]["order_id"]
for text in (example["messages"][1]["content"], f"hey, {order} -- no sign of it yet, can you see where it is?"):
    reply = client.chat.completions.create(model=TUNED, tools=tc.TOOLS, temperature=0, max_tokens=settings.max_tokens,
                                           messages=[{"role": "system", "content": tc.SUPPORT_SYSTEM},
                                                     {"role": "user", "content": text}])
    calls = [(c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls or []]
    print(repr(text[:70]), "->", calls or reply.choices[0].message.content)

# ★★ Forcing a call on the fine-tuned model.
auto = tc.score_tool_calls(client, TUNED, test, max_tokens=settings.max_tokens, progress=False)
required = tc.score_tool_calls(client, TUNED, test, tool_choice="required", max_tokens=settings.max_tokens,
                               progress=False)
changed = auto["called"] != required["called"]
print(f"forcing a call changed {int(changed.sum())} of {len(test)} answers:")
print(pd.DataFrame({"expected": auto["expected"], "auto": auto["called"], "required": required["called"]})[changed])
print(tc.compare(auto, required, "right_call"))

# ★★★ Per-tool accuracy with Wilson intervals.
rows = []
for tool, part in auto.groupby("expected"):
    right, n = int(part["right_call"].sum()), len(part)
    low, high = ev.wilson_interval(right, n)
    rows.append({"tool": tool, "right": right, "n": n, "rate": right / n, "low": low, "high": high})
per_tool = pd.DataFrame(rows).set_index("tool").sort_values("rate")
print(per_tool)
worst, best = per_tool.iloc[0], per_tool.iloc[-1]
overlap = worst["high"] >= best["low"]
print(f"hardest: {per_tool.index[0]}; the best and worst intervals {'overlap' if overlap else 'do not overlap'}: "
      f"{'this many conversations cannot rank them' if overlap else 'a real difference'}")

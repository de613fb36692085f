"""Tool calling: the course's support tools, a seeded set of support conversations that call them,
and scoring a model's tool choice and arguments through the API.

Taught in notebooks/09_tool_calling.ipynb.

* **The tools** (:data:`TOOLS`): ``lookup_order`` (the one notebook 02 builds), ``request_refund``,
  ``send_password_reset`` and ``escalate_ticket``, as ``tools`` entries of OpenAI's chat format.
* **The data** (:func:`make_conversations`, :func:`write_tool_data`): Lumenhive support tickets,
  each a line of OpenAI's fine-tuning format for function calling -- ``messages`` (system, the
  customer's ticket, the assistant's reply), ``tools`` and ``parallel_tool_calls`` -- whose
  assistant turn is either one tool call with exact JSON arguments taken from the ticket's text
  (an order number, an email address, an enum such as the refund reason), or a plain answer for
  tickets that need no tool, so choosing *whether* to call is part of the task. Seeded: the same
  seed writes the same bytes (``scripts/make_tool_data.py`` writes ``data/tools/``).
* **Scoring** (:func:`score_tool_calls`, :func:`compare`): send each held-out conversation's
  prompt with its ``tools`` and a ``tool_choice`` through ``client.chat.completions.create`` and
  check the reply: the right tool, or rightly none (``right_tool``); the right tool with exactly the
  right arguments, compared as parsed JSON (``right_call``). Rates get Wilson intervals, the
  difference of two models on the same conversations a paired interval and a verdict
  (:mod:`ftkit.evaluate.stats`).
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .data import (
    assistant,
    chat_example,
    function_tool,
    split,
    system,
    tool_call,
    user,
    write_jsonl,
)

__all__ = [
    "ESCALATE_TICKET", "LOOKUP_ORDER", "NO_TOOL", "REFUND_REASONS", "REQUEST_REFUND", "SEED", "SEND_PASSWORD_RESET",
    "SUPPORT_SYSTEM", "TEAMS", "PRIORITIES", "TOOLS", "compare", "expected_call", "expected_tool_choice",
    "make_conversations", "rates", "score_tool_calls", "split_conversations", "tool_of", "write_tool_data",
]

SEED = 20261205

#: The system prompt of notebook 02's tool-calling example, and of every conversation here.
SUPPORT_SYSTEM = "You are Lumenhive's support assistant. Use the tools; never guess order details."

_ORDER_ID = {"type": "string", "description": "Order number such as LH-123456"}

REFUND_REASONS = ("damaged", "not_delivered", "wrong_item", "changed_mind")
TEAMS = ("billing", "technical", "shipping")
PRIORITIES = ("normal", "urgent")

#: The course's tools. ``lookup_order`` is the tool notebook 02 builds, unchanged.
LOOKUP_ORDER = function_tool("lookup_order", "Status and tracking of a hardware order.", {
    "type": "object", "properties": {"order_id": _ORDER_ID}, "required": ["order_id"]})
REQUEST_REFUND = function_tool("request_refund", "Refund a hardware order.", {
    "type": "object",
    "properties": {"order_id": _ORDER_ID, "reason": {"type": "string", "enum": list(REFUND_REASONS)}},
    "required": ["order_id", "reason"]})
SEND_PASSWORD_RESET = function_tool("send_password_reset", "Email a password-reset link.", {
    "type": "object", "properties": {"email": {"type": "string", "description": "The account's email address"}},
    "required": ["email"]})
ESCALATE_TICKET = function_tool("escalate_ticket", "Hand the ticket to a human team.", {
    "type": "object",
    "properties": {"team": {"type": "string", "enum": list(TEAMS)},
                   "priority": {"type": "string", "enum": list(PRIORITIES)}},
    "required": ["team", "priority"]})
TOOLS = [LOOKUP_ORDER, REQUEST_REFUND, SEND_PASSWORD_RESET, ESCALATE_TICKET]

#: What tables show as the "tool" of a conversation that needs none (or a reply that calls none).
NO_TOOL = "(none)"

# ---------------------------------------------------------------------------------------------
# Ticket texts. Each template names the tool's arguments in its own text, so they can be read
# off it exactly: an order number, an email address, and the enums (refund reason, team) by what
# the customer describes; the escalation's priority by an explicit urgency cue or none.

FIRST = ["Ana", "Ben", "Chloe", "Dmitri", "Esther", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
         "Maya", "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yusuf", "Zoe"]
LAST = ["Okafor", "Schmidt", "Nguyen", "Garcia", "Kowalski", "Haddad", "Tanaka", "Silva", "Murphy", "Larsen",
        "Rossi", "Dubois", "Patel", "Kim", "Novak", "Mensah", "Costa", "Yilmaz", "Brown", "Fischer"]
DEVICES = ["Hub Mini", "Hub Pro", "door sensor", "motion sensor", "indoor camera", "outdoor camera", "smart plug",
           "thermostat", "video doorbell", "leak sensor"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend"]
COUNTRIES = ["Norway", "Portugal", "Canada", "Ireland", "Austria", "Japan", "Mexico", "Poland", "Chile", "Greece"]
ASSISTANTS = ["Alexa", "Google Home", "Apple Home", "SmartThings"]
PLANS = ["Basic", "Plus", "Pro", "Family"]
DOMAINS = ["example.com", "example.org", "example.net"]

LOOKUP = [
    "Where is my order {order}? It was supposed to arrive on {day}.",
    "Can you tell me the status of order {order}? I ordered a {device}.",
    "I ordered a {device} last week (order {order}) and the tracking page has not changed since {day}.",
    "Has order {order} shipped yet?",
    "Any news on {order}? Still waiting for my {device}.",
    "Tracking for order number {order}, please.",
    "My {device} order {order} has said 'processing' for five days. What is going on?",
    "When will {order} be delivered?",
    "Could you check where my parcel is? Order ref {order}.",
    "I need to know whether {order} arrives before {day}, I am travelling after that.",
]
REFUND = {
    "damaged": [
        "The {device} from order {order} arrived with a cracked case. I want a refund.",
        "Order {order}: the box was crushed and the {device} does not turn on. Please refund me.",
        "My {device} ({order}) came damaged. Refund please, I do not want a replacement.",
    ],
    "not_delivered": [
        "Order {order} never arrived and the courier says it was lost. Please refund it.",
        "I gave up waiting for {order}, it is three weeks late and never came. Refund me please.",
        "The tracking for {order} says delivered but nothing came. I would like my money back.",
    ],
    "wrong_item": [
        "I ordered a {device} but order {order} contained a {other}. Please refund it.",
        "Wrong item in {order}: I got a {other} instead of the {device}. I want a refund, not an exchange.",
        "You sent me a {other} in order {order}, I paid for a {device}. Money back, please.",
    ],
    "changed_mind": [
        "I changed my mind about the {device} (order {order}), it is still unopened. Please refund it.",
        "Please refund order {order}, we no longer need the {device}.",
        "I do not need the {device} from {order} any more. Refund please.",
    ],
}
RESET = [
    "I forgot my password. My account email is {email}.",
    "I cannot sign in to the app, please send a reset link to {email}.",
    "Locked out of my Lumenhive account ({email}). Please help me reset my password.",
    "Password reset please, the account is under {email}.",
    "The reset email never arrived. Could you send another one to {email}?",
    "I changed phones and cannot log in any more. Email on the account: {email}.",
]
ESCALATE = {
    "technical": [
        "My {device} has been offline for days and nothing in the troubleshooting guide helps. I want a technician.",
        "The {device} keeps rebooting every few minutes since the last update. Please pass this to your engineers.",
        "The {device} stopped working and the chat bot could not fix it. I need a real person to look at it.",
    ],
    "billing": [
        "I was charged twice for my {plan} plan this month and the chat bot just loops. Please get me a human from billing.",
        "My invoice is higher than my {plan} plan costs. I have written three times, escalate this to billing.",
        "Someone charged my card for a {plan} plan I never bought. I need a person to look into this charge.",
    ],
    "shipping": [
        "The courier left my parcels with the wrong neighbour twice now. I need someone from your shipping team.",
        "Your warehouse keeps sending my orders to my old address although I changed it. Escalate to shipping, please.",
        "Every delivery from you arrives a week late in my area. Please pass this to your shipping team.",
    ],
}
URGENT_CUES = ["This is urgent.", "I need this sorted today.", "URGENT, please.",
               "Please treat this as urgent, my home alarm depends on it."]
NO_TOOL_TOPICS = [  # (question templates, the answer): no tool needed, some mention an order on purpose
    (["Do you ship to {country}?", "Can I order a {device} from {country}?"],
     "Yes, we ship to {country}. Delivery takes 3 to 7 working days."),
    (["How long do I have to return a {device}?", "What is your return window for a {device}?"],
     "You can return any device within 30 days of delivery for a full refund."),
    (["Does the {device} work with {assistant}?", "Can I control the {device} from {assistant}?"],
     "Yes, the {device} works with {assistant} once it is added to your Hub."),
    (["What is the difference between the {plan} plan and the others?", "What do I get with the {plan} plan?"],
     "All plans are compared on the Plans page of the app; you can switch at any time under Billing."),
    (["Thanks, order {order} arrived this morning, all good!", "Just to say {order} came today. Thank you!"],
     "Great to hear it arrived. Enjoy your new devices!"),
    (["How do I change my password once I am logged in?", "Where do I change my password in the app?"],
     "Open Settings, then Account, then Change password."),
    (["Is there a fee for returning order {order}?", "Do I pay the postage to send back order {order}?"],
     "Returns are free within 30 days: print the label from Orders in the app."),
]

#: How many conversations of each kind :func:`make_conversations` writes (300 in all).
PLAN = {"lookup_order": 66, "request_refund": 72, "send_password_reset": 42, "escalate_ticket": 60, NO_TOOL: 60}


def _fill(rng: random.Random, template: str, first: str, last: str) -> tuple[str, dict]:
    """The template with its slots filled, and the slot values."""
    device, other = rng.sample(DEVICES, 2)
    slots = {
        "order": f"LH-{rng.randrange(100000, 1000000)}",
        "email": f"{first.lower()}.{last.lower()}{rng.choice(['', str(rng.randrange(1, 100))])}@{rng.choice(DOMAINS)}",
        "device": device, "other": other, "day": rng.choice(DAYS), "country": rng.choice(COUNTRIES),
        "assistant": rng.choice(ASSISTANTS), "plan": rng.choice(PLANS),
    }
    return template.format(**slots), slots


def _rotate(table: Mapping[str, list[str]], keys, made: int) -> tuple[str, str]:
    """The ``made``-th (key, template) pair: keys in turn, and each key's templates in turn."""
    key = keys[made % len(keys)]
    templates = table[key]
    return key, templates[(made // len(keys)) % len(templates)]


def _dress(rng: random.Random, text: str, first: str, last: str) -> str:
    """An optional greeting and sign-off around the ticket's text, as customers write them."""
    greeting = rng.choice(["", "", "Hi,\n\n", "Hello,\n\n", "Hi Lumenhive team,\n\n"])
    sign_off = rng.choice(["", "", f"\n\nThanks, {first}", f"\n\n{first} {last}", f"\n\nBest,\n{first}"])
    return greeting + text + sign_off


def make_conversations(seed: int = SEED, plan: Mapping[str, int] | None = None) -> list[dict]:
    """The course's tool-calling conversations, in a fixed order: ``plan[tool]`` of each kind
    (default :data:`PLAN`: 300 in all), each ``{"messages": [system, user, assistant], "tools":
    TOOLS, "parallel_tool_calls": False}``. The assistant turn is one tool call whose arguments come
    from the ticket's text, or (``NO_TOOL``) a plain answer. The same seed gives the same list; no
    two tickets have the same text. Taught in notebooks/09_tool_calling.ipynb.
    """
    rng = random.Random(seed)
    plan = dict(PLAN if plan is None else plan)
    unknown = set(plan) - {t["function"]["name"] for t in TOOLS} - {NO_TOOL}
    if unknown:
        raise ValueError(f"no such tool: {', '.join(sorted(unknown))}")
    seen: set[str] = set()
    out = []
    for kind, count in plan.items():
        made = 0
        while made < count:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            call = answer = None
            if kind == "lookup_order":
                text, s = _fill(rng, LOOKUP[made % len(LOOKUP)], first, last)
                call = tool_call("lookup_order", {"order_id": s["order"]})
            elif kind == "request_refund":
                reason, template = _rotate(REFUND, REFUND_REASONS, made)
                text, s = _fill(rng, template, first, last)
                call = tool_call("request_refund", {"order_id": s["order"], "reason": reason})
            elif kind == "send_password_reset":
                text, s = _fill(rng, RESET[made % len(RESET)], first, last)
                call = tool_call("send_password_reset", {"email": s["email"]})
            elif kind == "escalate_ticket":
                team, template = _rotate(ESCALATE, TEAMS, made)
                text, s = _fill(rng, template, first, last)
                priority = PRIORITIES[rng.random() < 0.45]
                if priority == "urgent":
                    text = f"{text} {rng.choice(URGENT_CUES)}"
                call = tool_call("escalate_ticket", {"team": team, "priority": priority})
            else:
                questions, reply = NO_TOOL_TOPICS[made % len(NO_TOOL_TOPICS)]
                template = questions[(made // len(NO_TOOL_TOPICS)) % len(questions)]
                text, s = _fill(rng, template, first, last)
                answer = reply.format(**s)
            text = _dress(rng, text, first, last)
            if text in seen:  # a repeated ticket would count twice (or leak into the test split)
                continue
            seen.add(text)
            reply_message = assistant(answer) if call is None else assistant(None, tool_calls=[call])
            out.append(chat_example([system(SUPPORT_SYSTEM), user(text), reply_message], tools=TOOLS,
                                    parallel_tool_calls=False))
            made += 1
    return out


def split_conversations(conversations: Sequence[dict], seed: int = SEED):
    """The seeded train / validation / test split of the conversations, stratified by the tool
    each one calls (every kind keeps its share in every split): about 68% / 7% / 25%."""
    return split(list(conversations), validation=0.07, test=0.25, seed=seed, stratify=tool_of)


def write_tool_data(folder: str | Path, seed: int = SEED) -> dict[str, int]:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (the course's conversations,
    split) into ``folder``; return each file's line count. ``scripts/make_tool_data.py`` calls it
    for ``data/tools/``."""
    folder = Path(folder)
    parts = split_conversations(make_conversations(seed), seed)._asdict()
    return {name: write_jsonl(rows, folder / f"{name}.jsonl") for name, rows in parts.items()}


# ---------------------------------------------------------------------------------------------
# What a conversation expects


def expected_call(example: Mapping) -> dict | None:
    """``{"name": ..., "arguments": {...}}`` of the call the example's last assistant turn makes,
    or None when it answers without a tool."""
    last = [m for m in example["messages"] if m.get("role") == "assistant"][-1]
    calls = last.get("tool_calls") or []
    if not calls:
        return None
    fn = calls[0]["function"]
    return {"name": fn["name"], "arguments": json.loads(fn["arguments"])}


def tool_of(example: Mapping) -> str:
    """The name of the tool the example calls, or :data:`NO_TOOL`."""
    call = expected_call(example)
    return NO_TOOL if call is None else call["name"]


def expected_tool_choice(example: Mapping) -> str | dict:
    """The ``tool_choice`` that forces the example's own tool (``"none"`` when it needs none): an
    oracle for the choice, so what is left to measure is the arguments."""
    call = expected_call(example)
    return "none" if call is None else {"type": "function", "function": {"name": call["name"]}}


# ---------------------------------------------------------------------------------------------
# Scoring


def _prompt(example: Mapping) -> list[dict]:
    messages = list(example["messages"])
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return messages[:last]


def _arguments(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return _UNPARSEABLE


_UNPARSEABLE = object()


def _judge(expected: dict | None, calls: list[dict]) -> dict:
    names = [c["name"] for c in calls]
    if expected is None:
        right_tool = not calls
        return {"right_tool": right_tool, "right_call": right_tool}
    right_tool = names == [expected["name"]]
    args = _arguments(calls[0]["arguments"]) if right_tool else _UNPARSEABLE
    return {"right_tool": right_tool, "right_call": right_tool and args == expected["arguments"]}


def score_tool_calls(
    client,
    model: str,
    examples: Sequence[Mapping],
    *,
    tool_choice: str | dict | Callable[[Mapping], str | dict] = "auto",
    max_tokens: int = 64,
    concurrency: int = 8,
    ids: Sequence | None = None,
    progress: bool | str = True,
):
    """Ask ``model`` every example's prompt with the example's ``tools`` and score the reply.

    Each request is ``client.chat.completions.create(model, messages=<the example up to its last
    assistant turn>, tools=..., tool_choice=..., parallel_tool_calls=..., temperature=0)``;
    ``tool_choice`` is ``"auto"`` (the model decides), ``"required"`` (it must call some tool),
    ``"none"``, ``{"type": "function", "function": {"name": ...}}``, or a function of the example
    giving one of those (:func:`expected_tool_choice`: each example's own tool). Up to
    ``concurrency`` requests are in flight at once (the local server batches them); rate limits and
    transient errors are retried (:class:`ftkit.evaluate.RetryPolicy`), other errors are recorded.

    Returns a DataFrame, one row per example (index: ``ids``, default the position): ``expected``
    and ``called`` (tool names, :data:`NO_TOOL` for none), ``expected_arguments`` and ``arguments``
    (JSON text), ``right_tool`` (the right tool, or rightly none), ``right_call`` (the right tool
    with arguments equal to the expected ones as parsed JSON -- key order and spacing do not
    matter; for a ticket that needs no tool, rightly none), ``content``, ``finish_reason`` and
    ``error``. A reply cut off at ``max_tokens`` (``finish_reason == "length"``) may hold a call the
    server could not read, even under a forcing ``tool_choice``: it counts as no call.

    Taught in notebooks/09_tool_calling.ipynb.
    """
    import pandas as pd

    from .evaluate.running import RetryPolicy, _with_retries

    examples = list(examples)
    ids = list(range(len(examples))) if ids is None else list(ids)
    if len(ids) != len(examples):
        raise ValueError(f"{len(ids)} ids for {len(examples)} examples")
    api = client.with_options(max_retries=0)
    policy, rng, lock = RetryPolicy(), random.Random(0), threading.Lock()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples), desc=progress if isinstance(progress, str) else model, leave=False)

    def one(example: Mapping) -> dict:
        expected = expected_call(example)
        choice = tool_choice(example) if callable(tool_choice) else tool_choice
        body = {"model": model, "messages": _prompt(example), "tools": example["tools"], "tool_choice": choice,
                "temperature": 0, "max_tokens": max_tokens}
        if "parallel_tool_calls" in example:
            body["parallel_tool_calls"] = example["parallel_tool_calls"]
        row = {"expected": NO_TOOL if expected is None else expected["name"],
               "expected_arguments": None if expected is None else json.dumps(expected["arguments"]),
               "called": None, "arguments": None, "content": None, "finish_reason": None, "error": None}
        with lock:
            own_rng = random.Random(rng.random())
        try:
            response, _, _ = _with_retries(lambda: api.chat.completions.create(**body), policy, own_rng)
        except Exception as e:  # recorded, counted as wrong
            row["error"] = f"{type(e).__name__}: {getattr(e, 'message', None) or e}"[:300]
            row.update(right_tool=False, right_call=False)
        else:
            message = response.choices[0].message
            row["finish_reason"] = response.choices[0].finish_reason
            calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or []]
            row.update(called=", ".join(c["name"] for c in calls) or NO_TOOL,
                       arguments=calls[0]["arguments"] if calls else None, content=message.content,
                       **_judge(expected, calls))
        if bar is not None:
            bar.update(1)
        return row

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            rows = list(pool.map(one, examples))
    finally:
        if bar is not None:
            bar.close()
    columns = ["expected", "called", "expected_arguments", "arguments", "right_tool", "right_call", "content",
               "finish_reason", "error"]
    return pd.DataFrame(rows, index=pd.Index(ids, name="id"))[columns]


def rates(scores: Mapping[str, Any], metrics: Iterable[str] = ("right_tool", "right_call"), *,
          confidence: float = 0.95):
    """Each configuration's rate of each metric with its Wilson interval: one row per
    (configuration, metric) with ``right``, ``n``, ``rate``, ``low``, ``high``. ``scores``:
    ``{name: score_tool_calls(...)}``. Taught in notebooks/09_tool_calling.ipynb."""
    import pandas as pd

    from .evaluate.stats import wilson_interval

    rows = []
    for name, table in scores.items():
        for metric in metrics:
            right, n = int(table[metric].astype(bool).sum()), len(table)
            low, high = wilson_interval(right, n, confidence)
            rows.append({"config": name, "metric": metric, "right": right, "n": n,
                         "rate": right / n if n else float("nan"), "low": low, "high": high})
    return pd.DataFrame(rows).set_index(["config", "metric"])


def compare(before, after, metric: str = "right_call", *, margin: float = 0.05, confidence: float = 0.95) -> dict:
    """How ``after`` differs from ``before`` on the same conversations (two
    :func:`score_tool_calls` tables): the counts that agree and flip, each rate, the difference
    ``after - before`` with its paired interval (:func:`ftkit.evaluate.paired_difference`) and what
    the interval lets you say (:func:`ftkit.evaluate.paired_verdict`, against ``margin``).
    Taught in notebooks/09_tool_calling.ipynb."""
    from .evaluate.stats import paired_difference, paired_verdict

    if list(before.index) != list(after.index):
        raise ValueError("the two score tables must hold the same conversations in the same order")
    a, b = before[metric].astype(bool), after[metric].astype(bool)
    counts = {"both_right": int((a & b).sum()), "gained": int((~a & b).sum()), "lost": int((a & ~b).sum()),
              "both_wrong": int((~a & ~b).sum())}
    diff = paired_difference(**counts, confidence=confidence)
    return {"metric": metric, **counts, "n": diff["n"], "before": diff["before"], "after": diff["after"],
            "difference": diff["difference"], "low": diff["low"], "high": diff["high"],
            "verdict": paired_verdict(diff["low"], diff["high"], margin=margin, n=diff["n"])}


def kinds_table(parts: Mapping[str, Sequence[Mapping]]):
    """How many conversations of each kind (tool, or none) each split holds, as a DataFrame."""
    import pandas as pd

    counts = {name: Counter(tool_of(ex) for ex in rows) for name, rows in parts.items()}
    table = pd.DataFrame(counts).fillna(0).astype(int)
    table["all"] = table.sum(axis=1)
    return table.loc[[k for k in PLAN if k in table.index]]


__all__ += ["PLAN", "kinds_table"]

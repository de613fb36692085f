"""Chat-JSONL fine-tuning data: build it, read and write it, split it, de-duplicate and validate it.

Taught in notebooks/02_data_formatting.ipynb.

The shapes are the ones OpenAI's fine-tuning API accepts:

* supervised (SFT): ``{"messages": [...], "tools": [...], "parallel_tool_calls": bool}``, with
  ``weight`` 0/1 on assistant messages to choose which turns are learned;
* preference (DPO): ``{"input": {"messages": [...]}, "preferred_output": [assistant message],
  "non_preferred_output": [assistant message]}``.

Why one module of ~630 lines: it is notebook 02's data half, read beside it in the lesson's order
(message builders, examples from a table, JSONL in and out, the split, duplicates and leakage),
every part used by the next; the checks themselves are :mod:`ftkit.validation`, the token counts
:mod:`ftkit.tokens`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .validation import (
    CODES,
    InvalidTrainingFile,
    Problem,
    UnusableInputError,
    ValidationReport,
    validate,
)

__all__ = [
    "CODES",
    "InvalidTrainingFile",
    "JsonlError",
    "Problem",
    "Split",
    "UnusableInputError",
    "ValidationReport",
    "assistant",
    "build_chat_examples",
    "build_preference_pairs",
    "build_reinforcement_examples",
    "chat_example",
    "check_leakage",
    "example_input_text",
    "find_duplicates",
    "from_prompt_completion",
    "function_tool",
    "preference_pair",
    "read_jsonl",
    "reinforcement_example",
    "split",
    "system",
    "tool",
    "tool_call",
    "user",
    "validate",
    "write_jsonl",
]

Example = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Messages and examples


def system(content: str) -> dict:
    """A system message."""
    return {"role": "system", "content": content}


def user(content: str | list, name: str | None = None) -> dict:
    """A user message (``content`` may be a list of text/image parts)."""
    m: dict[str, Any] = {"role": "user", "content": content}
    if name:
        m["name"] = name
    return m


def assistant(
    content: str | None = None,
    *,
    tool_calls: Sequence[dict] | None = None,
    weight: int | None = None,
    refusal: str | None = None,
) -> dict:
    """An assistant message. ``weight=0`` keeps it in the context but does not train on it."""
    if weight not in (None, 0, 1):
        raise ValueError(f"weight must be 0 or 1, got {weight!r}")
    m: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        m["tool_calls"] = list(tool_calls)
    if refusal is not None:
        m["refusal"] = refusal
    if weight is not None:
        m["weight"] = weight
    return m


def tool(content: str | Mapping, tool_call_id: str) -> dict:
    """A tool result answering the assistant's tool call ``tool_call_id``."""
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


def tool_call(name: str, arguments: Mapping | str, id: str | None = None) -> dict:
    """One assistant tool call; ``arguments`` (a dict) is JSON-encoded as the API requires."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        # a stable id (the same call gets the same id in every run) unless one is given
        "id": id or "call_" + hashlib.sha1(f"{name}\0{arguments}".encode()).hexdigest()[:24],
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def function_tool(name: str, description: str, parameters: Mapping | None = None) -> dict:
    """A tool definition for the ``tools`` list (JSON schema ``parameters``)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": dict(parameters or {"type": "object", "properties": {}}),
        },
    }


def chat_example(
    messages: Sequence[dict],
    *,
    tools: Sequence[dict] | None = None,
    parallel_tool_calls: bool | None = None,
) -> Example:
    """A supervised (SFT) training example."""
    ex: Example = {"messages": list(messages)}
    if tools:
        ex["tools"] = list(tools)
    if parallel_tool_calls is not None:
        ex["parallel_tool_calls"] = parallel_tool_calls
    return ex


def preference_pair(
    prompt: str | Sequence[dict],
    preferred: str | dict,
    non_preferred: str | dict,
    *,
    system_prompt: str | None = None,
    tools: Sequence[dict] | None = None,
) -> Example:
    """A preference (DPO) example: the prompt, a better answer and a worse one."""
    messages = [user(prompt)] if isinstance(prompt, str) else list(prompt)
    if system_prompt:
        messages.insert(0, system(system_prompt))
    inp: dict[str, Any] = {"messages": messages}
    if tools:
        inp["tools"] = list(tools)

    def as_message(answer) -> dict:
        return assistant(answer) if isinstance(answer, str) else dict(answer)

    return {
        "input": inp,
        "preferred_output": [as_message(preferred)],
        "non_preferred_output": [as_message(non_preferred)],
    }


def reinforcement_example(
    prompt: str | Sequence[dict],
    *,
    system_prompt: str | None = None,
    tools: Sequence[dict] | None = None,
    **fields: Any,
) -> Example:
    """A reinforcement fine-tuning (RFT) example: the conversation to answer, ending with a user
    turn, plus the fields the grader reads (``{{ item.category }}``): no answer is given -- the
    model samples its own and the grader scores them.

    >>> reinforcement_example("2+2?", system_prompt="Be brief.", answer="4")
    {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2+2?'}], 'answer': '4'}

    Taught in notebooks/02_data_formatting.ipynb and notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    messages = [user(prompt)] if isinstance(prompt, str) else list(prompt)
    if system_prompt:
        messages.insert(0, system(system_prompt))
    example: dict[str, Any] = {"messages": messages}
    if tools:
        example["tools"] = list(tools)
    reserved = {"messages", "tools", "parallel_tool_calls"} & fields.keys()
    if reserved:
        raise ValueError(f"grader fields cannot be named {', '.join(sorted(reserved))}")
    example.update(fields)
    return example


# ---------------------------------------------------------------------------------------------
# From tables


Field = str | Sequence[str] | Callable[[Mapping], Any]


def _rows(table) -> list[tuple[Any, Mapping]]:
    """(row label, row as a mapping) for a DataFrame or an iterable of records."""
    if hasattr(table, "iterrows") and hasattr(table, "columns"):
        return [(label, row.to_dict()) for label, row in table.iterrows()]
    return list(enumerate(table))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _resolver(spec: Field | None, role: str) -> Callable[[Any, Mapping], Any] | None:
    """Turn a column name, list of columns, template or function into row -> text."""
    if spec is None:
        return None
    if callable(spec):
        return lambda label, row: spec(row)
    if isinstance(spec, str):
        column, template = spec, spec

        def from_str(label, row):
            if column in row:
                value = row[column]
                if _missing(value):
                    raise ValueError(f"row {label!r}: column {column!r} ({role}) is empty")
                return value
            if "{" in template:
                try:
                    return template.format_map(row)
                except KeyError as e:
                    raise ValueError(f"row {label!r}: the {role} template uses {e}, which the row lacks") from None
            raise ValueError(
                f"{role}={spec!r} is neither a column (columns: {', '.join(map(str, row))}) "
                f"nor a template with {{placeholders}}"
            )

        return from_str
    columns = list(spec)

    def from_columns(label, row):
        parts = []
        for c in columns:
            if c not in row:
                raise ValueError(f"row {label!r}: no column {c!r} for the {role} message")
            if not _missing(row[c]):
                parts.append(str(row[c]))
        return "\n\n".join(parts)

    return from_columns


def _text(value) -> str:
    """Dicts and lists become JSON (the usual structured-output target); others str()."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def build_chat_examples(
    table,
    *,
    user: Field,
    assistant: Field,
    system: str | Callable[[Mapping], str] | None = None,
    tools: Sequence[dict] | None = None,
) -> list[Example]:
    """One SFT example per row of a DataFrame (or list of dicts).

    ``user`` and ``assistant`` are each a column name, a list of columns (joined by blank
    lines), a template such as ``"Subject: {subject}\\n\\n{body}"``, or a function of the row.
    A function may return a dict, which becomes compact JSON -- the usual target for structured
    output. ``system`` is a fixed prompt or a function of the row.

    >>> build_chat_examples([{"q": "2+2?", "a": "4"}], user="q", assistant="a", system="Be brief.")
    [{'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]}]
    """
    get_user = _resolver(user, "user")
    get_assistant = _resolver(assistant, "assistant")
    examples = []
    for label, row in _rows(table):
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system(row) if callable(system) else system})
        messages.append({"role": "user", "content": _text(get_user(label, row))})
        messages.append({"role": "assistant", "content": _text(get_assistant(label, row))})
        examples.append(chat_example(messages, tools=tools))
    return examples


def build_preference_pairs(
    table,
    *,
    user: Field,
    preferred: Field,
    non_preferred: Field,
    system: str | None = None,
) -> list[Example]:
    """One DPO example per row: the prompt, the preferred and the non-preferred answer."""
    get_user = _resolver(user, "user")
    get_good = _resolver(preferred, "preferred")
    get_bad = _resolver(non_preferred, "non_preferred")
    return [
        preference_pair(
            _text(get_user(label, row)),
            _text(get_good(label, row)),
            _text(get_bad(label, row)),
            system_prompt=system,
        )
        for label, row in _rows(table)
    ]


def build_reinforcement_examples(
    table,
    *,
    user: Field,
    fields: Sequence[str],
    system: str | None = None,
    tools: Sequence[dict] | None = None,
) -> list[Example]:
    """One RFT example per row: the prompt, and the row's ``fields`` for the grader to read.

    Taught in notebooks/02_data_formatting.ipynb and notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    get_user = _resolver(user, "user")
    return [
        reinforcement_example(_text(get_user(label, row)), system_prompt=system, tools=tools,
                              **{name: _plain(row[name]) for name in fields})
        for label, row in _rows(table)
    ]


def _plain(value):
    """A table cell as a JSON value (numpy scalars to Python numbers)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def from_prompt_completion(
    records: Iterable[Mapping],
    *,
    system_prompt: str | None = None,
    prompt_separator: str | None = "\n\n###\n\n",
    stop: str | None = " END",
) -> Iterator[Example]:
    """Convert legacy ``{"prompt", "completion"}`` records to chat examples (lazily).

    The legacy recipe ended prompts with a separator (``"\\n\\n###\\n\\n"``) and completions
    with a leading space and a stop sequence (``" END"``); chat models need neither, so both
    are stripped. Stream a file through it::

        write_jsonl(from_prompt_completion(read_jsonl("old.jsonl")), "chat.jsonl")
    """
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, Mapping) or "prompt" not in rec or "completion" not in rec:
            raise ValueError(f"record {i}: expected an object with 'prompt' and 'completion'")
        prompt, completion = str(rec["prompt"]), str(rec["completion"])
        if prompt_separator and prompt.endswith(prompt_separator):
            prompt = prompt[: -len(prompt_separator)]
        if stop and completion.endswith(stop):
            completion = completion[: -len(stop)]
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [
            {"role": "user", "content": prompt.strip()},
            {"role": "assistant", "content": completion.strip()},
        ]
        yield {"messages": messages}


# ---------------------------------------------------------------------------------------------
# JSONL


class JsonlError(ValueError):
    """A line of a JSONL file could not be read; names the file and line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path}, line {line}: {message}")


def read_jsonl(path: str | os.PathLike, *, on_error: str = "raise") -> Iterator[Any]:
    """Yield the records of a JSONL file one at a time (files larger than memory work).

    A leading BOM and blank lines are skipped. A line that is not UTF-8 JSON raises
    :class:`JsonlError` naming the file and line, or is skipped with ``on_error="skip"``.
    Use :func:`validate` to see every problem at once.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    path = Path(path)
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if on_error == "raise":
                    reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"invalid JSON ({e.msg})"
                    raise JsonlError(str(path), line_no, reason) from None


def write_jsonl(records: Iterable[Any], path: str | os.PathLike) -> int:
    """Write records as JSONL (UTF-8, no BOM, one compact object per line); return the count.

    Streams, and writes atomically: the target appears only when every record was written, so an
    error half-way (say, a value that is not JSON-serialisable) never leaves a truncated file
    where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: it creates the file private (0600). os.open applies the umask, so the
    # result gets the mode any other new file gets.
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for n, rec in enumerate(records, start=1):  # noqa: B007 -- n is the count
                try:
                    line = json.dumps(rec, ensure_ascii=False, separators=(", ", ": "))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"record {n} cannot be written as JSON: {e}") from None
                fh.write(line + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


# ---------------------------------------------------------------------------------------------
# Splits


class Split(NamedTuple):
    train: Any
    validation: Any
    test: Any


def split(
    data,
    *,
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify: str | Callable[[Any], Any] | None = None,
) -> Split:
    """Seeded train / validation / test split of a list of examples or a DataFrame.

    ``stratify`` (a column name or a function of the item) keeps each label's share the same in
    every split. The same ``seed`` always gives the same split.
    """
    import numpy as np

    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError("validation and test must be >= 0 and leave something to train on")
    is_frame = hasattr(data, "iloc")
    items = data if is_frame else list(data)
    n = len(items)
    if stratify is None:
        labels = [0] * n
    elif is_frame:
        labels = list(items[stratify]) if isinstance(stratify, str) else [stratify(r) for _, r in items.iterrows()]
    else:
        labels = [stratify(x) if callable(stratify) else x[stratify] for x in items]
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for label in sorted(groups, key=repr):
        idx = groups[label]
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test))
        n_val = int(round(len(idx) * validation))
        parts["test"] += idx[:n_test]
        parts["validation"] += idx[n_test : n_test + n_val]
        parts["train"] += idx[n_test + n_val :]
    for key in parts:  # mix the labels again, reproducibly
        order = parts[key]
        rng.shuffle(order)
    if is_frame:
        return Split(*(items.iloc[parts[k]] for k in ("train", "validation", "test")))
    return Split(*([items[i] for i in parts[k]] for k in ("train", "validation", "test")))


# ---------------------------------------------------------------------------------------------
# Duplicates and leakage


def example_input_text(example: Mapping) -> str:
    """The text an example is *asked* (user and tool turns; a DPO example's input).

    Two examples with the same question are duplicates even if their answers differ, and a test
    question seen in training is leakage -- so comparisons use this text, not the answer.
    """
    if not isinstance(example, Mapping):
        return str(example)
    messages = example.get("messages")
    if messages is None and isinstance(example.get("input"), Mapping):
        messages = example["input"].get("messages")
    parts = []
    for m in messages or []:
        if isinstance(m, Mapping) and m.get("role") in ("user", "tool"):
            c = m.get("content")
            parts.append(c if isinstance(c, str) else json.dumps(c, ensure_ascii=False))
    return "\n".join(parts)


_WORD = re.compile(r"\w+", re.UNICODE)


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _shingles(text: str, k: int = 3) -> set[str]:
    words = text.split()
    if len(words) < k:
        return {text} if text else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def _near_pairs(texts: list[str], threshold: float, num_perm: int = 128) -> list[tuple[int, int, float]]:
    """Pairs (i < j) whose word-3-gram Jaccard similarity is at least ``threshold``.

    MinHash LSH (datasketch) proposes candidates in roughly linear time; each candidate's exact
    Jaccard similarity is then computed, so no pair is reported on the sketch's say-so alone.
    """
    from datasketch import MinHash, MinHashLSH

    shingles = [_shingles(t) for t in texts]
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm)
    hashes = MinHash.bulk([[s.encode() for s in sh] for sh in shingles], num_perm=num_perm)
    pairs = []
    for i, mh in enumerate(hashes):
        if not shingles[i]:
            continue
        for j in lsh.query(mh):
            a, b = shingles[i], shingles[j]
            sim = len(a & b) / len(a | b)
            if sim >= threshold:
                pairs.append((j, i, sim))
        lsh.insert(i, mh)
    return pairs


def find_duplicates(
    examples: Sequence[Mapping],
    *,
    near: bool = True,
    threshold: float = 0.8,
    key: Callable[[Mapping], str] = example_input_text,
):
    """Exact and near-duplicate pairs among examples, as a DataFrame.

    Columns: ``first, second`` (positions), ``kind`` (``exact`` after lower-casing and
    collapsing punctuation/whitespace, or ``near``), ``similarity`` (word-3-gram Jaccard).
    """
    import pandas as pd

    texts = [_normalise(key(ex)) for ex in examples]
    rows: list[tuple[int, int, str, float]] = []
    first_seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        if t in first_seen:
            rows.append((first_seen[t], i, "exact", 1.0))
        else:
            first_seen[t] = i
    if near:
        exact = {(a, b) for a, b, _, _ in rows}
        for a, b, sim in _near_pairs(texts, threshold):
            if (a, b) not in exact and texts[a] != texts[b]:
                rows.append((a, b, "near", round(sim, 3)))
    return pd.DataFrame(sorted(rows), columns=["first", "second", "kind", "similarity"])


def check_leakage(
    splits: Mapping[str, Sequence[Mapping]] | Split,
    *,
    near: bool = True,
    threshold: float = 0.8,
    key: Callable[[Mapping], str] = example_input_text,
):
    """Examples whose input appears in two different splits (exactly or nearly), as a DataFrame.

    A test question that is also in the training data inflates every accuracy you measure on it.
    Columns: ``split_a, index_a, split_b, index_b, kind, similarity, text``.
    """
    import pandas as pd

    if isinstance(splits, Split):
        splits = splits._asdict()
    names, texts, owner = [], [], []
    for name, items in splits.items():
        names.append(name)
        for i, ex in enumerate(items if not hasattr(items, "to_dict") else items.to_dict("records")):
            texts.append(_normalise(key(ex)))
            owner.append((name, i))
    rows = []
    by_text: dict[str, list[int]] = {}
    for k, t in enumerate(texts):
        by_text.setdefault(t, []).append(k)
    seen_pairs: set[tuple[int, int]] = set()
    for ks in by_text.values():
        for x in range(len(ks)):
            for y in range(x + 1, len(ks)):
                a, b = ks[x], ks[y]
                if owner[a][0] != owner[b][0]:
                    rows.append((*owner[a], *owner[b], "exact", 1.0, texts[a][:80]))
                    seen_pairs.add((a, b))
    if near:
        for a, b, sim in _near_pairs(texts, threshold):
            if owner[a][0] != owner[b][0] and (a, b) not in seen_pairs and texts[a] != texts[b]:
                rows.append((*owner[a], *owner[b], "near", round(sim, 3), texts[a][:80]))
    return pd.DataFrame(rows, columns=["split_a", "index_a", "split_b", "index_b", "kind", "similarity", "text"])

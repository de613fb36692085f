"""Offline, per-model token counting for fine-tuning data.

Taught in notebooks/02_data_formatting.ipynb (token statistics) and used by
notebooks/03_cost_math.ipynb (billed tokens).

Two things the usual recipes get wrong, and this module gets right:

* **The encoding depends on the model.** gpt-4o, gpt-4.1, o1/o3/o4 use ``o200k_base``;
  gpt-3.5-turbo, gpt-4, babbage-002 and davinci-002 use ``cl100k_base``. A fine-tuned name
  (``ft:gpt-4.1-mini-2025-04-14:org::abc``) resolves through its base model. An unknown model is
  an error unless you name a fallback -- never a silent guess.
* **It works offline.** Both BPE files ship inside ftkit and go through tiktoken's own loader,
  which verifies their SHA-256.

Chat token counts are an *estimate* of what the API bills: each message costs its content and
role plus 3 tokens of framing (+1 when it has a ``name``), and every example 3 more for the
reply priming -- the accounting OpenAI's cookbook documents. The exact framing is not published.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "ENCODING_SHA256",
    "ExampleTokens",
    "TokenCounter",
    "UnknownModelError",
    "base_model_of",
    "count_examples",
    "count_tokens",
    "describe",
    "encoding_for_model",
    "get_encoding",
]

#: SHA-256 of the BPE files as tiktoken pins them (tiktoken_ext/openai_public.py).
ENCODING_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

# Longest prefix wins, so "gpt-4o" is checked before "gpt-4". tiktoken's own prefix table maps
# "ft:gpt-4" to cl100k_base, which is wrong for ft:gpt-4o / ft:gpt-4.1 -- we resolve ft: names
# through their base model instead.
_PREFIX_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4-mini", "o200k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-35-turbo", "cl100k_base"),  # Azure spells it without the dot
    ("gpt-4", "cl100k_base"),  # gpt-4, gpt-4-0613, gpt-4-turbo, gpt-4-32k
    ("babbage-002", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)

# Per-message framing, per the cookbook's accounting (an estimate, not a published figure).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


class UnknownModelError(ValueError):
    """The model has no known tiktoken encoding; pass ``fallback=`` or ``encoding=``."""


def base_model_of(model: str) -> str:
    """The base model of a fine-tuned model or checkpoint name.

    ``ft:gpt-4o-mini-2024-07-18:acme:triage:9abc`` -> ``gpt-4o-mini-2024-07-18``;
    a name that is not fine-tuned comes back unchanged.
    """
    if model.startswith("ft:"):
        parts = model.split(":")
        if len(parts) >= 2 and parts[1]:
            return parts[1]
    return model


def encoding_for_model(model: str, *, fallback: str | None = None) -> str:
    """Name of the tiktoken encoding the model uses.

    Raises :class:`UnknownModelError` for a model with no known OpenAI encoding (for example an
    Azure deployment name or the local SmolLM2 model) unless ``fallback`` names one to use.
    """
    base = base_model_of(model.strip())
    for prefix, encoding in _PREFIX_ENCODINGS:
        if base == prefix or base.startswith(prefix + "-") or base.startswith(prefix + "."):
            return encoding
        # "o1", "o3" have snapshot suffixes like "o1-2024-12-17" or variants like "o3-mini"
    if fallback is not None:
        if fallback not in ENCODING_SHA256:
            raise ValueError(f"fallback must be one of {sorted(ENCODING_SHA256)}, not {fallback!r}")
        return fallback
    raise UnknownModelError(
        f"no known tiktoken encoding for model {model!r}. Pass encoding='o200k_base' or "
        f"'cl100k_base' (or fallback=...) if you know which one it uses; local models such as "
        f"SmolLM2 use their own tokenizer, which the local server counts with."
    )


_encodings: dict[str, object] = {}
_lock = threading.Lock()


def get_encoding(name: str):
    """A ``tiktoken.Encoding`` loaded from the files shipped inside ftkit -- no network.

    The rank file goes through tiktoken's own ``load_tiktoken_bpe``, which checks its SHA-256;
    pattern and special tokens come from tiktoken's own definition of the encoding.
    """
    if name not in ENCODING_SHA256:
        raise ValueError(f"unknown encoding {name!r}; ftkit ships {sorted(ENCODING_SHA256)}")
    with _lock:
        if name not in _encodings:
            _encodings[name] = _load_encoding(name)
        return _encodings[name]


def _load_encoding(name: str):
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    path = resources.files("ftkit") / "encodings" / f"{name}.tiktoken"
    # tiktoken checks the hash only on its caching path (not when TIKTOKEN_CACHE_DIR=""), so
    # verify the shipped file here too before handing it over.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != ENCODING_SHA256[name]:
        raise ValueError(f"hash mismatch for the shipped {name} file {path}: {digest} != {ENCODING_SHA256[name]}; "
                         "reinstall ftkit")
    real_loader = tiktoken.load.load_tiktoken_bpe

    def load_shipped_file(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        # Same loader, same hash check -- only the location differs from tiktoken's URL.
        return real_loader(str(path), expected_hash=expected_hash or ENCODING_SHA256[name])

    # openai_public builds the constructor (pattern, special tokens) and calls its module-level
    # load_tiktoken_bpe; point that name at the shipped file for the duration of the call.
    saved = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = load_shipped_file
    try:
        constructor = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = saved
    return tiktoken.Encoding(**constructor)


@dataclass(frozen=True)
class ExampleTokens:
    """Token counts of one training example (estimates; see the module docstring).

    ``total``: every token of the example as billed for training (per epoch).
    ``trained``: tokens of assistant messages the model learns from (``weight`` != 0).
    ``tools``: tokens of the tool/function schemas included in ``total``.
    """

    total: int
    trained: int
    tools: int = 0


class TokenCounter:
    """Counts tokens of texts and training examples for one model or encoding.

    >>> counter = TokenCounter("gpt-4o-mini-2024-07-18")
    >>> counter.encoding_name
    'o200k_base'
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        encoding: str | None = None,
        fallback: str | None = None,
        num_threads: int = 2,
    ) -> None:
        if encoding is None:
            if model is None:
                raise ValueError("pass a model name or an encoding name")
            encoding = encoding_for_model(model, fallback=fallback)
        self.model = model
        self.encoding_name = encoding
        self.encoding = get_encoding(encoding)
        self.num_threads = num_threads
        self._short: dict[str, int] = {}  # roles: few distinct values, counted once
        self._cache: dict[str, int] = {}  # recent texts -> counts, cleared when it grows past cache_size
        self.cache_size = 10_000
        self._pool = None

    def count(self, text: str) -> int:
        """Tokens in ``text``; special-token strings such as ``<|endoftext|>`` count as text."""
        return len(self.encoding.encode_ordinary(text))

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        """Token counts of many texts at once, encoded on ``num_threads`` threads.

        tiktoken releases the GIL while encoding. Its own ``encode_ordinary_batch`` submits one
        thread-pool task per text, which costs more than encoding a short message; here each
        thread gets one contiguous slice instead. Texts counted recently (a file's system prompt,
        usually) are looked up, not encoded again.
        """
        encode = self.encoding.encode_ordinary
        cache = self._cache
        if len(cache) > self.cache_size:
            cache.clear()
        counts: list[int | None] = [cache.get(t) for t in texts]
        todo = [t for t, n in zip(texts, counts) if n is None]
        if len(todo) < 512 or self.num_threads <= 1:
            fresh = [len(encode(t)) for t in todo]
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="ftkit-tokens")
            size = -(-len(todo) // self.num_threads)
            slices = [todo[i : i + size] for i in range(0, len(todo), size)]
            fresh = []
            for part in self._pool.map(lambda chunk: [len(encode(t)) for t in chunk], slices):
                fresh.extend(part)
        it = iter(fresh)
        out: list[int] = []
        for t, n in zip(texts, counts):
            if n is None:
                n = next(it)
                if len(t) <= 4096:  # bounded memory: at most cache_size short texts
                    cache[t] = n
            out.append(n)
        return out

    def count_example(self, example: dict) -> ExampleTokens:
        """Token counts of one chat or preference (DPO) example."""
        return self.count_examples([example])[0]

    def count_examples(self, examples: Sequence[dict]) -> list[ExampleTokens]:
        """Token counts of many examples, encoding all their texts in one batch."""
        texts: list[str] = []
        kinds: list[int] = []
        bounds: list[tuple[int, int]] = []  # (first text, fixed tokens) per example
        short = self._short
        for ex in examples:
            start = len(texts)
            bounds.append((start, _collect(ex, texts, kinds, short, self.count)))
        counts = self.count_batch(texts)
        out = []
        ends = [b[0] for b in bounds[1:]] + [len(texts)]
        for (start, fixed), end in zip(bounds, ends):
            total, trained, tools = fixed, 0, 0
            for k in range(start, end):
                n = counts[k]
                total += n
                if kinds[k] == _TRAINED:
                    trained += n
                elif kinds[k] == _TOOLS:
                    tools += n
            out.append(ExampleTokens(total=total, trained=trained, tools=tools))
        return out


_OTHER, _TRAINED, _TOOLS = 0, 1, 2


def _content_text(content) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _tool_call_text(message: dict) -> str:
    """Text standing for an assistant's tool or function calls (name + JSON arguments)."""
    pieces = []
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            fn = call.get("function") or {}
            if isinstance(fn, dict):
                pieces.append(f"{fn.get('name', '')}{fn.get('arguments', '')}")
    fc = message.get("function_call")
    if isinstance(fc, dict):
        pieces.append(f"{fc.get('name', '')}{fc.get('arguments', '')}")
    return "".join(pieces)


def _collect(example, texts: list[str], kinds: list[int], short: dict[str, int], count) -> int:
    """Append the example's texts (with their kind) to ``texts``/``kinds``; return its fixed tokens.

    Fixed tokens are the framing (per message, per name, reply priming) and the roles, which
    are few distinct strings counted once. Malformed parts are skipped: validation reports them.
    """
    if not isinstance(example, dict):
        return REPLY_PRIMING
    fixed = REPLY_PRIMING
    if "messages" in example:
        fixed += _collect_messages(example.get("messages"), True, texts, kinds, short, count)
        _collect_tools(example, texts, kinds)
    elif "input" in example:  # preference (DPO) example
        inp = example.get("input")
        if isinstance(inp, dict):
            fixed += _collect_messages(inp.get("messages"), False, texts, kinds, short, count)
            _collect_tools(inp, texts, kinds)
        fixed += _collect_messages(example.get("preferred_output"), True, texts, kinds, short, count)
        fixed += _collect_messages(example.get("non_preferred_output"), True, texts, kinds, short, count)
    return fixed


def _collect_messages(messages, learn_assistant: bool, texts, kinds, short, count) -> int:
    if not isinstance(messages, list):
        return 0
    fixed = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        fixed += TOKENS_PER_MESSAGE
        role = m.get("role")
        if isinstance(role, str):
            n = short.get(role)
            if n is None:
                n = short[role] = count(role)
            fixed += n
        name = m.get("name")
        if isinstance(name, str) and name:
            texts.append(name)
            kinds.append(_OTHER)
            fixed += TOKENS_PER_NAME
        kind = _TRAINED if (learn_assistant and role == "assistant" and m.get("weight", 1) != 0) else _OTHER
        content = m.get("content")
        text = content if isinstance(content, str) else _content_text(content)
        if text:
            texts.append(text)
            kinds.append(kind)
        if "tool_calls" in m or "function_call" in m:
            calls = _tool_call_text(m)
            if calls:
                texts.append(calls)
                kinds.append(kind)
    return fixed


def _collect_tools(container: dict, texts, kinds) -> None:
    for key in ("tools", "functions"):
        schema = container.get(key)
        if schema:
            texts.append(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
            kinds.append(_TOOLS)


def count_tokens(text: str, model: str | None = None, *, encoding: str | None = None) -> int:
    """Tokens in one text for a model (or an encoding name)."""
    return TokenCounter(model, encoding=encoding).count(text)


def count_examples(
    examples: Iterable[dict],
    model: str | None = None,
    *,
    encoding: str | None = None,
    fallback: str | None = None,
    chunk_size: int = 2000,
):
    """Per-example token counts as a DataFrame with columns ``total, trained, tools``.

    Streams: ``examples`` may be a generator over a file larger than memory
    (see :func:`ftkit.data.read_jsonl`).
    """
    import pandas as pd

    counter = TokenCounter(model, encoding=encoding, fallback=fallback)
    rows: list[tuple[int, int, int]] = []
    chunk: list[dict] = []
    for ex in examples:
        chunk.append(ex)
        if len(chunk) >= chunk_size:
            rows.extend((c.total, c.trained, c.tools) for c in counter.count_examples(chunk))
            chunk = []
    if chunk:
        rows.extend((c.total, c.trained, c.tools) for c in counter.count_examples(chunk))
    return pd.DataFrame(rows, columns=["total", "trained", "tools"])


#: Percentiles reported by :func:`describe`, labelled by what they are (p10 is the 10th).
PERCENTILES = (10, 25, 50, 75, 90)


def describe(values) -> dict[str, float]:
    """Distribution statistics with correct labels: count, mean, min, p10 … p90, max.

    (The cookbook prints its 10th and 90th percentiles as "p5" and "p95"; these are labelled by
    the percentile they are.)
    """
    arr = np.asarray(list(values) if not hasattr(values, "__len__") else values, dtype=float)
    if arr.size == 0:
        return {"count": 0}
    stats: dict[str, float] = {"count": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES)):
        stats[f"p{p}"] = float(v)
    stats["max"] = float(arr.max())
    return stats

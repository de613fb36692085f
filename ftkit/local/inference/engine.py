"""The inference engine: one thread owns the models and answers chat requests in batches.

Requests from many HTTP calls queue up; the engine takes everything waiting, groups it by
model (base, fine-tuned, checkpoint), and decodes each group as one batch: the prompts are
left-padded and prefilled together, then one token per row per step with a shared KV cache.
Each row keeps its own ``max_tokens``, ``temperature``, ``top_p``, ``stop`` and ``seed``; rows that
finish leave the batch so the rest run faster. Streaming rows get their text as it is decoded.

A row may carry a constraint (``response_format`` JSON mode or schema, a forced tool call; see
:mod:`.grammar`): at every step its grammar masks the tokens that would break it, so its answer
can end only where the grammar is complete (``max_tokens`` still cuts it short: "length", as on
the hosted API). Constrained and free rows share batches. With ``logprobs``, every token's log
probability is the model's own (log-softmax of its logits before temperature, top_p and the
grammar's mask: what the model thinks, whatever the sampler was allowed to pick).

Fine-tuned models and checkpoints are LoRA adapters over their base model (peft), loaded on
first use and kept (least recently used first out) up to ``max_adapters``.

Prompts are prefilled through :mod:`.prefix_cache`: the keys and values of prompt prefixes are kept
across requests (per model and adapter, within a memory budget, least recently used first out) and
reused, and a prefix that several rows of a batch share is computed once; each request's
``cached_tokens`` says how many of its prompt tokens were reused.
"""

from __future__ import annotations

import collections
import hashlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from .weights import DEFAULT_BASE_MODEL, precision


class ModelNotFound(LookupError):
    pass


@dataclass
class TokenLogprob:
    """One generated token with its log probability and the most likely alternatives (hosted shape).

    ``logprob`` is the model's own log-softmax at that step: before temperature and top_p, and
    before a response_format / tool_choice grammar masks tokens out -- what the model thinks,
    whatever the sampler was allowed to pick. ``token`` is the token's text; a token that is only
    part of a UTF-8 character reads ``bytes:\\xe2\\x80`` and ``bytes`` has its exact bytes."""

    token: str
    bytes: list[int] | None
    logprob: float
    top_logprobs: list[tuple[str, list[int] | None, float]] = field(default_factory=list)


@dataclass
class Choice:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # when the request asked for logprobs
    token_ids: list[int] | None = None  # the generated tokens (for the trainer: no end-of-sequence)
    end_token: int | None = None  # the end-of-sequence token that ended it, if one did (the trainer's)


@dataclass
class GenerationRequest:
    model: str
    messages: list[dict]
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    tools: list | None = None
    functions: list | None = None
    on_delta: Callable[[int, str], None] | None = None  # (choice index, new text) while decoding
    future: Future = field(default_factory=Future)
    prompt_tokens: int = 0
    #: None: free text; else a plain-data spec (see ftkit.local.inference.grammar): {"type": "json_object"},
    #: {"type": "json_schema", "schema": {...}, "strict": bool}, {"type": "tool_call", "tools": [...], "name": ...}
    constraint: dict | None = None
    logprobs: bool = False
    top_logprobs: int = 0  # 0..20 alternatives per token
    #: (choice index, [TokenLogprob]) for the tokens whose text on_delta has just sent
    on_logprobs: Callable[[int, list[TokenLogprob]], None] | None = None
    #: the rendered, tokenised prompt (Engine.encode_prompt), when the caller has it already
    prompt_ids: list[int] | None = None
    #: prompt tokens whose keys and values came from the prompt cache (set by the engine)
    cached_tokens: int = 0
    #: the request's prompt_cache_key: its cache entries are kept before others' (see .prefix_cache)
    prompt_cache_key: str | None = None
    #: OpenAI's repetition penalties and logit bias (token id -> bias), see :func:`adjust_logits`
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)


def adjust_logits(logits, generated: list[int], *, presence: float = 0.0, frequency: float = 0.0,
                  bias: dict[int, float] | None = None) -> None:
    """One row's logits (a 1-D tensor, changed in place) with OpenAI's penalties and bias, as its
    API reference (the "Parameter details" of the text-generation guide) defines them: for every
    token ``j`` already in the answer ``c[j]`` times,
    ``logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty``; then
    ``logit[j] += logit_bias[j]``. Penalties count only the generated tokens, not the prompt."""
    import torch

    if (presence or frequency) and generated:
        ids, counts = torch.tensor(generated, dtype=torch.long).unique(return_counts=True)
        logits[ids] -= counts.to(logits.dtype) * frequency + presence
    if bias:
        logits[torch.tensor(list(bias), dtype=torch.long)] += torch.tensor(list(bias.values()), dtype=logits.dtype)


@dataclass
class _Row:
    request: GenerationRequest
    index: int  # choice index within its request
    prompt_ids: list[int]
    generator: object | None
    state: object | None = None  # grammar.ConstraintState when the request has a constraint
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters already streamed
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    ends: list[int | None] = field(default_factory=list)  # text length after each token (None: mid-character)
    logprobs_sent: int = 0  # tokens whose logprobs were streamed
    end_token: int | None = None  # the end-of-sequence token sampled, if any


@dataclass
class _Slot:
    """A loaded base model with the adapters loaded on top of it."""

    model: object
    tokenizer: object
    eos: frozenset  # token ids that end an answer
    adapters: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # adapter name -> path
    peft: object | None = None


#: The answer length a sub-batch is planned for when a request's ``max_tokens`` is larger (a request
#: without one may run to the end of the context, 8k tokens for SmolLM2, but answers are short):
#: the key/value cache grows with the answers actually decoded, and finished rows leave the batch.
PLANNED_ANSWER_TOKENS = 512


def _planned(request: GenerationRequest) -> int:
    return min(request.max_tokens, PLANNED_ANSWER_TOKENS)


def eos_ids(model, tokenizer) -> frozenset:
    """Every token id that ends an answer: the tokenizer's and the model's generation config's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    eos.discard(None)
    return frozenset(eos)


def generate(model, tokenizer, requests: list[GenerationRequest], *, precision: str = "fp32",
             max_batch: int = 64, max_batch_tokens: int = 24_000) -> list[list[Choice]]:
    """Decode ``requests`` on an already loaded ``model`` with the serving engine's batched decoder
    (shared prefill and KV cache, per-row sampling, constraints, logprobs), outside the serving
    loop: the choices of each request, in order. The caller holds no gradients (``torch.no_grad``)."""
    engine = Engine(None, max_batch=max_batch, max_batch_tokens=max_batch_tokens, log=lambda message: None)
    engine.precision = precision
    # the prompt cache lives as long as this call: the trainer's weights change between calls
    engine.decode_requests(model, tokenizer, eos_ids(model, tokenizer), requests)
    return [req.future.result() for req in requests]


class Engine:
    def __init__(self, store, *, max_batch: int = 64, max_batch_tokens: int = 24_000, max_adapters: int = 8,
                 log=print, prompt_cache_bytes: int | None = None) -> None:
        from .prefix_cache import PrefixCache

        self.store = store
        #: kept key/value blocks of prompt prefixes; budget ``prompt_cache_bytes`` (default
        #: FTKIT_PROMPT_CACHE_MB, 512 MB; 0 turns caching off)
        self.prompt_cache = PrefixCache(prompt_cache_bytes)
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_adapters = max_adapters
        self.log = log
        self._queue: queue.Queue[GenerationRequest | None] = queue.Queue()
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()  # loading models (tokenizer access from HTTP threads)
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.rows_run = 0
        self.precision: str | None = None  # "bf16" or "fp32", chosen when the engine thread starts

    # -- public ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ftkit-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread:
            self._thread.join(timeout=30)

    def submit(self, request: GenerationRequest) -> Future:
        self._queue.put(request)
        return request.future

    def resolve(self, model_id: str) -> tuple[str, str | None, str | None]:
        """(base model id, base source, adapter path or None) for a servable model id."""
        row = self.store.get_model(model_id)
        if row is None:
            raise ModelNotFound(model_id)
        if row["kind"] == "base":
            return row["id"], row["source"], None
        base = self.store.get_model(row["base"])
        return row["base"], (base or {}).get("source") or DEFAULT_BASE_MODEL, row["adapter_path"]

    def tokenizer_for(self, model_id: str):
        base, source, _ = self.resolve(model_id)
        return self._slot(base, source).tokenizer

    def encode_prompt(self, model_id: str, messages: list[dict], tools=None, functions=None) -> list[int]:
        """The prompt's token ids: the messages (and tools) rendered with the model's chat template and
        tokenised, once; pass them on as ``GenerationRequest.prompt_ids``."""
        from .render import render_prompt

        tok = self.tokenizer_for(model_id)
        return list(tok(render_prompt(tok, messages, tools, functions), add_special_tokens=False)["input_ids"])

    def context_length(self, model_id: str) -> int:
        base, source, _ = self.resolve(model_id)
        return int(getattr(self._slot(base, source).model.config, "max_position_embeddings", 2048))

    def vocab_size(self, model_id: str) -> int:
        """The width of the model's logits: token ids ``logit_bias`` may name are below it."""
        base, source, _ = self.resolve(model_id)
        return int(self._slot(base, source).model.config.vocab_size)

    def encode_text(self, model_id: str, text: str) -> list[int]:
        """Plain text's token ids, as the model's tokenizer frames a document (a BOS token where the
        tokenizer adds one; no chat template): the prompt of a legacy completion. An empty text is
        the document start alone (the tokenizer's BOS, else its end-of-text token), as the spec's
        default prompt ``<|endoftext|>`` is."""
        tok = self.tokenizer_for(model_id)
        ids = list(tok(text)["input_ids"])
        if not ids:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ids = [start] if start is not None else []
        return ids

    def decode_tokens(self, model_id: str, ids: list[int]) -> str:
        """The text of token ids (a legacy completion's token-array prompt, for ``echo``)."""
        return self.tokenizer_for(model_id).decode(ids)

    def check_constraint(self, model_id: str, spec: dict) -> None:
        """Compile (and cache) the grammar of a constraint spec for this model's tokenizer; raises
        :class:`ftkit.local.inference.grammar.UnsupportedSchema` (message, param) for what cannot be enforced,
        so the caller can answer 400 before anything is generated."""
        from .grammar import compile_constraint

        base, source, _ = self.resolve(model_id)
        slot = self._slot(base, source)
        compile_constraint(slot.tokenizer, spec, slot.eos)

    # -- models ---------------------------------------------------------------------------------

    def _slot(self, base: str, source: str | None) -> _Slot:
        with self._lock:
            slot = self._slots.get(base)
            if slot is None:
                import torch  # noqa: F401 -- loaded lazily: the HTTP layer never imports torch

                from .weights import load_base_model

                model, tokenizer = load_base_model(source or base, progress=self.log)
                slot = self._slots[base] = _Slot(model, tokenizer, eos_ids(model, tokenizer))
            return slot

    def _activate(self, slot: _Slot, adapter_path: str | None):
        """The module to run for this group: the base (adapters off) or one adapter."""
        import contextlib

        if adapter_path is None:
            if slot.peft is None:
                return slot.model, contextlib.nullcontext()
            return slot.peft, slot.peft.disable_adapter()
        from peft import PeftModel

        name = "a" + hashlib.sha1(adapter_path.encode()).hexdigest()[:12]
        if name not in slot.adapters:
            if slot.peft is None:
                slot.peft = PeftModel.from_pretrained(slot.model, adapter_path, adapter_name=name)
                slot.peft.eval()
            else:
                slot.peft.load_adapter(adapter_path, adapter_name=name)
            slot.adapters[name] = adapter_path
            while len(slot.adapters) > self.max_adapters:
                old, _ = slot.adapters.popitem(last=False)
                if old != slot.peft.active_adapter:
                    slot.peft.delete_adapter(old)
        slot.adapters.move_to_end(name)
        slot.peft.set_adapter(name)
        return slot.peft, contextlib.nullcontext()

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        # fp32 by default: greedy answers then do not depend on which requests share a batch. bf16
        # (FTKIT_INFER_PRECISION=bf16 or auto) makes long prompts about 2x faster on CPUs with
        # native bf16, but batched and single answers then differ now and then (measured: 20 of
        # 100 short answers in benchmarks/bench_chat.py).
        self.precision = precision("FTKIT_INFER_PRECISION", default="fp32")
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            deadline = time.monotonic() + 0.01  # let concurrent requests arrive and join the batch
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                pending.append(item)
                if len(pending) >= self.max_batch:
                    break
            groups: dict[str, list[GenerationRequest]] = collections.defaultdict(list)
            for req in pending:
                groups[req.model].append(req)
            for model_id, requests in groups.items():
                try:
                    self._run_group(model_id, requests)
                except Exception as e:  # fail these requests, keep serving
                    for req in requests:
                        if not req.future.done():
                            req.future.set_exception(e)

    def _run_group(self, model_id: str, requests: list[GenerationRequest]) -> None:
        base, source, adapter = self.resolve(model_id)
        slot = self._slot(base, source)
        module, context = self._activate(slot, adapter)
        with context:
            self.decode_requests(module, slot.tokenizer, slot.eos, requests, scope=(base, adapter, self.precision))

    def decode_requests(self, module, tok, eos: frozenset, requests: list[GenerationRequest], *,
                        scope=None) -> None:
        """Answer ``requests`` with ``module`` (a loaded model, with its adapter active): every
        choice of every request decoded together, in sub-batches within the token budget; each
        request's future gets its list of :class:`Choice`. Used by the serving loop and, through
        :func:`generate`, by the trainer (reinforcement fine-tuning samples its own answers).
        ``scope`` names the model and adapter for the prompt cache (default: this module)."""
        import torch

        from .grammar import compile_constraint
        from .render import render_prompt

        rows: list[_Row] = []
        ready = []
        for req in requests:
            try:
                ids = req.prompt_ids
                if ids is None:
                    ids = tok(render_prompt(tok, req.messages, req.tools, req.functions),
                              add_special_tokens=False)["input_ids"]
                grammar = compile_constraint(tok, req.constraint, eos) if req.constraint else None
            except Exception as e:  # e.g. an unsupported schema the caller did not check: fail this one only
                req.future.set_exception(e)
                continue
            ready.append(req)
            req.prompt_tokens = len(ids)
            req.cached_tokens = 0
            for i in range(req.n):
                gen = None
                if req.temperature > 0 and req.seed is not None:
                    gen = torch.Generator().manual_seed(int(req.seed) + i)
                rows.append(_Row(req, i, list(ids), gen, grammar.new_state() if grammar else None))
        if not rows:
            return
        rows.sort(key=lambda r: len(r.prompt_ids))
        bf16 = self.precision == "bf16"
        with torch.autocast(torch.device(module.device).type, dtype=torch.bfloat16, enabled=bf16):
            start = 0
            while start < len(rows):  # sub-batches within the token budget
                end = start + 1
                while end < len(rows) and end - start < self.max_batch:
                    width = len(rows[end].prompt_ids) + max(_planned(r.request) for r in rows[start : end + 1])
                    if (end + 1 - start) * width > self.max_batch_tokens:
                        break
                    end += 1
                self._decode(module, tok, eos, rows[start:end], scope if scope is not None else id(module))
                start = end
        by_request: dict[int, list[_Row]] = collections.defaultdict(list)
        for row in rows:
            by_request[id(row.request)].append(row)
        for req in ready:
            choices = sorted(by_request[id(req)], key=lambda r: r.index)
            req.future.set_result([
                Choice(r.text, r.finish_reason or "length", len(r.generated),
                       r.logprobs[: self._kept_tokens(r)] if req.logprobs else None, list(r.generated), r.end_token)
                for r in choices])

    def _decode(self, model, tok, eos: frozenset, rows: list[_Row], scope=None) -> None:
        """Decode one batch: prefill every prompt (cached prefixes reused, the rest left-padded;
        :func:`.prefix_cache.prefill`), then one token per row per step, each row leaving the batch
        as soon as it is finished."""
        import torch

        from .prefix_cache import prefill

        self.batches_run += 1
        self.rows_run += len(rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos)
        pre = prefill(model, [r.prompt_ids for r in rows], pad, self.prompt_cache, scope,
                      [r.request.prompt_cache_key for r in rows])
        for r, cached in zip(rows, pre.cached):
            if r.index == 0:  # a request's prompt is counted once, as prompt_tokens is
                r.request.cached_tokens = cached
        cache, mask, positions, logits = pre.cache, pre.mask, pre.positions, pre.logits
        active = list(range(len(rows)))  # row index for each batch position
        max_steps = max(r.request.max_tokens for r in rows)
        for _ in range(max_steps):
            next_tokens = self._step(logits, tok, [rows[i] for i in active])
            keep = []
            for pos, i in enumerate(active):
                row = rows[i]
                token = int(next_tokens[pos])
                if token in eos:
                    row.finish_reason = "stop"
                    row.end_token = token
                else:
                    row.generated.append(token)
                    self._update_text(tok, row)
                    if row.state is not None and row.finish_reason is None:
                        if not row.state.advance(token):  # cannot happen: the mask allowed only valid tokens
                            row.finish_reason = "stop"
                        elif row.state.finished(row.text):  # whole (only end-of-sequence could follow),
                            row.finish_reason = "stop"  # or a tool call was just repeated
                    if row.finish_reason is None and len(row.generated) >= row.request.max_tokens:
                        row.finish_reason = "length"
                if row.finish_reason is None:
                    keep.append(pos)
                else:
                    self._flush(row)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, positions, next_tokens = mask[index], positions[index], next_tokens[index]
                active = [active[p] for p in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True)
            logits = out.logits[:, -1, :]
        for i in active:
            rows[i].finish_reason = rows[i].finish_reason or "length"
            self._flush(rows[i])

    def _step(self, logits, tok, rows: list[_Row]):
        """The next token of every row: logprobs from the model's own distribution, then penalties and
        logit bias (:func:`adjust_logits`), the grammar masks of constrained rows, then greedy or
        temperature + nucleus (top_p) sampling."""
        import torch

        from . import grammar

        logits = logits.float()
        wants = [pos for pos, row in enumerate(rows) if row.request.logprobs]
        logprobs = torch.log_softmax(logits[wants], dim=-1) if wants else None  # before masks and temperature
        for pos, row in enumerate(rows):  # penalties and bias before the grammar: a mask still wins
            req = row.request
            if req.presence_penalty or req.frequency_penalty or req.logit_bias:
                adjust_logits(logits[pos], row.generated, presence=req.presence_penalty,
                              frequency=req.frequency_penalty, bias=req.logit_bias)
        constrained = [pos for pos, row in enumerate(rows) if row.state is not None]
        if constrained:
            masks = grammar.allocate_masks(len(constrained), logits.shape[-1])
            grammar.fill_masks([rows[pos].state for pos in constrained], masks)
            grammar.apply_masks(logits, masks, constrained)
        chosen = logits.argmax(-1)
        for pos, row in enumerate(rows):
            t, p = row.request.temperature, row.request.top_p
            if t <= 0:
                continue
            probs = torch.softmax(logits[pos] / t, dim=-1)
            if p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                cut = (sorted_probs.cumsum(0) - sorted_probs) >= p  # keep the smallest set reaching p
                sorted_probs[cut] = 0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
            chosen[pos] = torch.multinomial(probs / probs.sum(), 1, generator=row.generator)[0]
        for k, pos in enumerate(wants):
            rows[pos].logprobs.append(self._token_logprob(tok, logprobs[k], int(chosen[pos]),
                                                          rows[pos].request.top_logprobs))
        return chosen

    @staticmethod
    def _token_logprob(tok, logprobs, token: int, top: int) -> TokenLogprob:
        def entry(token_id: int) -> tuple[str, list[int], float]:
            from .grammar import token_bytes

            raw = token_bytes(tok, token_id)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # part of a character: spelled out, as the hosted API does
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            return text, list(raw), float(logprobs[token_id])

        text, raw, value = entry(token)
        alternatives = []
        if top > 0:
            values, ids = logprobs.topk(min(top, logprobs.shape[-1]))
            alternatives = [entry(int(i)) for i in ids]
        return TokenLogprob(text, raw, value, alternatives)

    @staticmethod
    def _update_text(tok, row: _Row) -> None:
        full = tok.decode(row.generated, skip_special_tokens=True)
        row.ends.append(None if full.endswith("\ufffd") else len(full))
        text = full
        for stop in row.request.stop:
            cut = text.find(stop)
            if stop and cut >= 0:
                text = text[:cut]
                row.finish_reason = "stop"
        row.text = text
        if row.request.on_delta and row.finish_reason is None:
            # hold back an incomplete character and anything that may be the start of a stop
            hold = max((len(s) - 1 for s in row.request.stop), default=0)
            ready = len(text) - hold
            while ready > row.sent and text[ready - 1] == "\ufffd":
                ready -= 1
            if ready > row.sent:
                row.request.on_delta(row.index, text[row.sent : ready])
                row.sent = ready
                Engine._send_logprobs(row, Engine._tokens_within(row, ready))

    @staticmethod
    def _tokens_within(row: _Row, chars: int) -> int:
        """How many leading tokens have all their text within the first ``chars`` characters."""
        count = row.logprobs_sent
        for j in range(row.logprobs_sent, len(row.ends)):
            end = row.ends[j]
            if end is None:
                continue  # mid-character: sent together with the token that completes the character
            if end > chars:
                break
            count = j + 1
        return count

    @staticmethod
    def _kept_tokens(row: _Row) -> int:
        """How many leading tokens belong to the answer: those starting inside its text (a stop
        sequence cuts the text; the tokens wholly inside the stop sequence are not part of it)."""
        start = 0
        for j, end in enumerate(row.ends):
            if start >= len(row.text):
                return j
            if end is not None:
                start = end
        return len(row.ends)

    @staticmethod
    def _send_logprobs(row: _Row, upto: int) -> None:
        if row.request.logprobs and row.request.on_logprobs and upto > row.logprobs_sent:
            row.request.on_logprobs(row.index, row.logprobs[row.logprobs_sent : upto])
        row.logprobs_sent = max(row.logprobs_sent, upto)

    @staticmethod
    def _flush(row: _Row) -> None:
        if row.request.on_delta and len(row.text) > row.sent:
            row.request.on_delta(row.index, row.text[row.sent :])
            row.sent = len(row.text)
        if row.request.on_delta:
            Engine._send_logprobs(row, Engine._kept_tokens(row))

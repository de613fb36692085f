"""Prompt caching: the key/value cache of token prefixes, kept across requests and reused.

A prompt's keys and values depend only on its tokens (and the model): two prompts that start with
the same tokens have the same keys and values for that start. The engine keeps them, in blocks of
``block`` tokens, in a tree per model: a block's entry is found by the exact tokens of every block
before it and of its own (no hashing of the tokens), and each entry belongs to one *scope* (base
model, adapter or none, precision), so an adapter's entry never serves another model. A prompt
reuses the longest run of cached blocks it starts with, leaving at least one token to compute
(the next token's logits come from it); whole prompts are stored block by block (up to their last
full block), so a later prompt that extends an earlier one -- the next turn of a conversation, a
few-shot prefix with another question -- reuses it.

Memory is bounded: ``budget_bytes`` counts every stored key and value tensor; when an insert goes
over it, the least recently used entries go first (a lookup or insert makes its whole path recent,
its start most, so the tree is pruned from its leaves). ``prompt_cache_key`` is a hint, as on the
hosted API: the entries last used under one of the ``max_keys`` most recent keys are kept while
other entries can go (they still go when nothing else is left: the budget always holds).

:func:`prefill` is the engine's prefill with the cache: a batch's prompts that share uncached
blocks get them computed once (batch of one, shortest shared prefix first), then every row's
cached prefix is put in place and only the rest of each prompt is computed, in one batched
forward pass, its new blocks stored. It reports per row how many prompt tokens came from the
cache without being computed for that row: ``usage.prompt_tokens_details.cached_tokens``. A block
computed in this very batch for several rows counts as computed for the first of them and cached
for the others, so the uncached counts add up to the tokens the engine actually computed.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

DEFAULT_BUDGET_MB = 512  # SmolLM2-135M in fp32 keeps 45 KiB per token: about 11,000 tokens
DEFAULT_BLOCK = 32
DEFAULT_MAX_KEYS = 64


def budget_from_env() -> int:
    """The budget in bytes: ``FTKIT_PROMPT_CACHE_MB`` (0 turns prompt caching off), default 512."""
    raw = os.environ.get("FTKIT_PROMPT_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_BUDGET_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"FTKIT_PROMPT_CACHE_MB: expected a number of megabytes (0 = off), got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"FTKIT_PROMPT_CACHE_MB: expected >= 0 megabytes, got {raw!r}")
    return int(mb * 2**20)


class _Block:
    """One cached block: its tokens, keys and values [layers, 2, kv heads, block, head dim]."""

    __slots__ = ("parent", "tokens", "children", "kv", "nbytes", "pins")

    def __init__(self, parent, tokens: tuple, kv) -> None:
        self.parent = parent
        self.tokens = tokens
        self.children: dict[tuple, _Block] = {}
        self.kv = kv
        self.nbytes = 0 if kv is None else kv.numel() * kv.element_size()
        self.pins = 0  # prompt_cache_keys whose last path runs through this block


class PrefixCache:
    """Cached key/value blocks of token prefixes, per scope, within ``budget_bytes`` (LRU)."""

    def __init__(self, budget_bytes: int | None = None, *, block: int = DEFAULT_BLOCK,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if block < 1:
            raise ValueError(f"block: expected >= 1 tokens, got {block}")
        self.budget = budget_from_env() if budget_bytes is None else int(budget_bytes)
        self.block = block
        self.max_keys = max_keys
        self.bytes = 0
        self._roots: dict[Hashable, _Block] = {}
        self._lru: collections.OrderedDict[_Block, None] = collections.OrderedDict()  # oldest first
        self._keys: collections.OrderedDict[str, list[_Block]] = collections.OrderedDict()
        self.hits = self.lookups = self.evictions = 0
        self.tokens_reused = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def blocks(self) -> int:
        return len(self._lru)

    def stats(self) -> dict:
        return {"bytes": self.bytes, "budget_bytes": self.budget, "blocks": self.blocks, "block_tokens": self.block,
                "lookups": self.lookups, "hits": self.hits, "tokens_reused": self.tokens_reused,
                "evictions": self.evictions, "keys": len(self._keys)}

    def stored_bytes(self) -> int:
        """The bytes of every tensor held, counted afresh (tests check ``bytes`` against it)."""
        return sum(b.kv.numel() * b.kv.element_size() for b in self._lru)

    # -- lookup and insert ----------------------------------------------------------------------

    def lookup(self, scope: Hashable, ids: Sequence[int], limit: int) -> list[_Block]:
        """The longest run of cached blocks that ``ids`` starts with, covering at most ``limit`` tokens."""
        path = self._walk(scope, ids, limit)
        self.lookups += 1
        if path:
            self.hits += 1
            self._touch(path)
        return path

    def _walk(self, scope: Hashable, ids: Sequence[int], limit: int) -> list[_Block]:
        node = self._roots.get(scope)
        path: list[_Block] = []
        b = self.block
        for k in range(min(limit, len(ids)) // b):
            if node is None:
                break
            node = node.children.get(tuple(ids[k * b : (k + 1) * b]))
            if node is None:
                break
            path.append(node)
        return path

    def insert(self, scope: Hashable, ids: Sequence[int], path: list[_Block], kv_of) -> list[_Block]:
        """Store the full blocks of ``ids`` after ``path`` (its cached start): ``kv_of(start, end)``
        gives their keys and values, [layers, 2, kv heads, end - start, head dim]. Returns the path."""
        b = self.block
        start, end = len(path) * b, len(ids) // b * b
        if not self.enabled or end <= start or any(block not in self._lru for block in path):
            return [block for block in path if block in self._lru]  # evicted meanwhile: not extended
        node = path[-1] if path else self._roots.setdefault(scope, _Block(None, (), None))
        kv = None
        path = list(path)
        for s in range(start, end, b):
            tokens = tuple(ids[s : s + b])
            child = node.children.get(tokens)
            if child is None:
                if kv is None:
                    kv = kv_of(s, end)  # the rest in one go, cut into blocks below
                child = _Block(node, tokens, kv[:, :, :, s - start : s - start + b].clone())
                if child.nbytes > self.budget:
                    break
                node.children[tokens] = child
                self._lru[child] = None
                self.bytes += child.nbytes
            node = child
            path.append(node)
        self._touch(path)
        self._evict(keep=path)
        return [block for block in path if block.kv is not None and block in self._lru]

    def gather(self, path: list[_Block]):
        """The keys and values of a path, [layers, 2, kv heads, tokens, head dim]."""
        import torch

        return torch.cat([block.kv for block in path], dim=3)

    # -- prompt_cache_key -----------------------------------------------------------------------

    def remember(self, key: str, path: list[_Block]) -> None:
        """``key``'s latest path: kept while entries of no key can be evicted instead."""
        old = self._keys.pop(key, None)
        for block in old or ():
            block.pins -= 1
        for block in path:
            block.pins += 1
        self._keys[key] = list(path)
        while len(self._keys) > self.max_keys:
            _, dropped = self._keys.popitem(last=False)
            for block in dropped:
                block.pins -= 1

    # -- eviction -------------------------------------------------------------------------------

    def _touch(self, path: list[_Block]) -> None:
        # deepest first, so a block is always more recent than its children: the least recently
        # used block is then a leaf, and eviction never strands a subtree
        for block in reversed(path):
            if block in self._lru:
                self._lru.move_to_end(block)

    def _evict(self, keep: list[_Block] = ()) -> None:
        keep_ids = {id(block) for block in keep}
        while self.bytes > self.budget and self._lru:
            victim = None
            for candidate in self._lru:  # oldest first: an unpinned leaf
                if not candidate.children and not candidate.pins and id(candidate) not in keep_ids:
                    victim = candidate
                    break
            if victim is None:  # everything left is pinned or in use: the budget wins, oldest leaf goes
                victim = next(c for c in self._lru if not c.children)
            self._drop(victim)

    def _drop(self, block: _Block) -> None:
        del block.parent.children[block.tokens]
        del self._lru[block]
        self.bytes -= block.nbytes
        self.evictions += 1
        block.kv = None
        for path in self._keys.values():
            if path and path[-1] is block:
                path.pop()
                block.pins -= 1


# -- prefill ------------------------------------------------------------------------------------


@dataclass
class Prefilled:
    """The state after a batch's prefill, as the decoding loop continues from it."""

    cache: object  # transformers DynamicCache, one row per prompt
    mask: object  # attention mask [rows, cache length]
    positions: object  # position ids of the last prefilled tokens [rows, k]
    logits: object  # next-token logits [rows, vocabulary]
    cached: list[int]  # prompt tokens each row reused without computing them


def prefill(model, prompts: list[list[int]], pad: int, store: PrefixCache | None = None, scope: Hashable = None,
            keys: Sequence[str | None] | None = None) -> Prefilled:
    """Prefill ``prompts`` (one row each), with ``store``'s cached prefixes when it is given and
    enabled, storing what it computes there; ``keys``: each row's ``prompt_cache_key`` or None."""
    if store is None or not store.enabled:
        return _forward(model, prompts, [[] for _ in prompts], None, pad)
    b = store.block
    limits = [(len(ids) - 1) // b * b for ids in prompts]  # at least one token is computed: its logits
    charged = _warm(model, prompts, limits, store, scope, pad)
    paths = [store.lookup(scope, ids, limit) for ids, limit in zip(prompts, limits)]
    out = _forward(model, prompts, paths, store, pad)
    for i, (ids, path) in enumerate(zip(prompts, paths)):
        stored = store.insert(scope, ids, path, out.kv_of(i))
        if keys is not None and keys[i]:
            store.remember(keys[i], stored)
    out.cached = [max(0, len(path) * b - charged.get(i, 0)) for i, path in enumerate(paths)]
    store.tokens_reused += sum(out.cached)
    return out


def _warm(model, prompts, limits, store: PrefixCache, scope, pad) -> dict[int, int]:
    """Compute once the uncached blocks that several rows start with; returns, per row, the tokens
    computed here on its behalf (the first row that needed each shared prefix)."""
    b = store.block
    counts: collections.Counter = collections.Counter()
    chains = []
    for ids, limit in zip(prompts, limits):
        chain, h = [], 0
        for k in range(limit // b):
            h = hash((h, tuple(ids[k * b : (k + 1) * b])))
            chain.append(h)
            counts[(k, h)] += 1
        chains.append(chain)
    targets: dict[tuple[int, int], int] = {}  # (blocks, chain hash) -> first row
    for i, chain in enumerate(chains):
        shared = max((k + 1 for k, h in enumerate(chain) if counts[(k, h)] >= 2), default=0)
        if shared:
            targets.setdefault((shared, chain[shared - 1]), i)
    charged: dict[int, int] = {}
    for (blocks, _), i in sorted(targets.items(), key=lambda item: item[0][0]):  # shortest first: reused by longer
        ids = prompts[i][: blocks * b]
        path = store._walk(scope, ids, len(ids))
        if len(path) == blocks:
            continue
        out = _forward(model, [ids], [path], store, pad, logits=False)
        store.insert(scope, ids, path, out.kv_of(0))
        charged[i] = charged.get(i, 0) + len(ids) - len(path) * b
    return charged


def _forward(model, prompts, paths, store: PrefixCache | None, pad: int, *, logits: bool = True) -> Prefilled:
    """One batched forward pass over what each row's cached ``path`` does not cover.

    Row i's cached tokens sit at the start of the cache, padding (masked) up to the longest cached
    prefix, then its remaining tokens, left-padded to the longest remainder: every prompt ends at
    the same position, as the decoding loop expects, and position ids count real tokens only."""
    import torch
    from transformers import DynamicCache

    n = len(prompts)
    cached = [len(path) * (store.block if store else 0) for path in paths]
    rest = [len(ids) - c for ids, c in zip(prompts, cached)]
    width_c, width = max(cached), max(rest)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width_c + width), dtype=torch.long)
    for i, (prompt, c, r) in enumerate(zip(prompts, cached, rest)):
        ids[i, width - r :] = torch.tensor(prompt[c:])
        mask[i, :c] = 1
        mask[i, width_c + width - r :] = 1
    # The cache object is passed as ``cache=`` and filled in place (transformers >= 5.24; the old
    # ``past_key_values=`` keyword is deprecated there and goes in 5.40).
    cache = DynamicCache(config=model.config)
    if width_c:
        gathered: dict[tuple, object] = {}
        past = None
        for i, path in enumerate(paths):
            if not path:
                continue
            key = tuple(id(block) for block in path)
            if key not in gathered:  # rows with the same cached prefix share one gather
                gathered[key] = store.gather(path)
            kv = gathered[key]
            if past is None:
                layers, _, heads, _, dim = kv.shape
                past = torch.zeros((layers, 2, n, heads, width_c, dim), dtype=kv.dtype)
            past[:, :, i, :, : kv.shape[3]] = kv
        for layer in range(past.shape[0]):
            cache.update(past[layer, 0], past[layer, 1], layer)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, width_c:]
    # logits_to_keep=1: the prefill needs the next-token logits of the last position only (all
    # positions' logits would be rows x prompt length x 49k vocabulary floats).
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1)
    result = Prefilled(cache, mask, positions, out.logits[:, -1, :] if logits else None, [0] * n)

    def kv_of(i: int):
        offset = width_c + width - rest[i] - cached[i]  # cache column of row i's token position 0 beyond its prefix

        def get(start: int, end: int):
            a, z = offset + start, offset + end
            return torch.stack([torch.stack([layer.keys[i, :, a:z], layer.values[i, :, a:z]])
                                for layer in cache.layers])
        return get

    result.kv_of = kv_of
    return result

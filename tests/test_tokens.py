"""ftkit.tokens: known counts for both encodings, per-model encodings, offline loading."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
import tiktoken

from ftkit import data, tokens

# The OpenAI cookbook's "How to count tokens" example conversation, with its published counts:
# 129 prompt tokens for gpt-3.5-turbo / gpt-4 (cl100k_base) and 124 for gpt-4o (o200k_base).
COOKBOOK_EXAMPLE = {"messages": [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
                                  "into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]}


def test_cookbook_counts_for_both_encodings():
    assert tokens.TokenCounter("gpt-3.5-turbo-0613").count_example(COOKBOOK_EXAMPLE).total == 129
    assert tokens.TokenCounter("gpt-4-0613").count_example(COOKBOOK_EXAMPLE).total == 129
    assert tokens.TokenCounter("gpt-4o").count_example(COOKBOOK_EXAMPLE).total == 124


def test_known_text_counts():
    assert tokens.count_tokens("tiktoken is great!", encoding="cl100k_base") == 6
    assert tokens.count_tokens("tiktoken is great!", encoding="o200k_base") == 6
    # the shipped files give exactly tiktoken's ids
    assert tokens.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert tokens.get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


@pytest.mark.parametrize("model, encoding", [
    ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"), ("gpt-4.1-2025-04-14", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("o4-mini-2025-04-16", "o200k_base"), ("o1", "o200k_base"), ("o3-mini", "o200k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base"), ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
    ("babbage-002", "cl100k_base"), ("davinci-002", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
    ("ft:gpt-4.1-mini-2025-04-14:acme:triage:abc123", "o200k_base"),
    ("ft:gpt-4o-mini-2024-07-18:acme::9xyz:ckpt-step-88", "o200k_base"),
    ("ft:gpt-3.5-turbo-0125:acme::id", "cl100k_base"),
])
def test_encoding_for_model(model, encoding):
    assert tokens.encoding_for_model(model) == encoding


def test_tiktokens_own_table_gets_fine_tuned_gpt41_wrong_and_we_do_not():
    name = "ft:gpt-4.1-mini-2025-04-14:acme:triage:abc123"
    assert tiktoken.encoding_name_for_model(name) == "cl100k_base"  # the bug this module avoids
    assert tokens.encoding_for_model(name) == "o200k_base"


def test_unknown_model_is_an_error_or_an_explicit_fallback():
    with pytest.raises(tokens.UnknownModelError, match="my-azure-deployment"):
        tokens.encoding_for_model("my-azure-deployment")
    assert tokens.encoding_for_model("my-azure-deployment", fallback="cl100k_base") == "cl100k_base"
    with pytest.raises(ValueError):
        tokens.encoding_for_model("x", fallback="p50k_base")


def test_special_token_text_is_counted_not_crashed_on():
    counter = tokens.TokenCounter(encoding="cl100k_base")
    assert counter.count("<|endoftext|>") == 7  # as plain text, never as the special token
    assert counter.count_batch(["<|endoftext|>"] * 100) == [7] * 100


def test_trained_tokens_honour_weight_and_tools_are_counted():
    counter = tokens.TokenCounter(encoding="o200k_base")
    plain = data.chat_example([data.system("s"), data.user("u"), data.assistant("draft answer"), data.user("again"),
                               data.assistant("final answer")])
    weighted = data.chat_example([data.system("s"), data.user("u"), data.assistant("draft answer", weight=0),
                                  data.user("again"), data.assistant("final answer")])
    a, b = counter.count_example(plain), counter.count_example(weighted)
    assert a.total == b.total and a.trained == 4 and b.trained == 2  # "draft answer" = 2 tokens
    tool = data.function_tool("lookup", "Look something up", {"type": "object", "properties": {}})
    with_tools = data.chat_example(weighted["messages"], tools=[tool])
    c = counter.count_example(with_tools)
    assert c.tools > 10 and c.total == b.total + c.tools


def test_preference_examples_are_counted():
    counter = tokens.TokenCounter(encoding="o200k_base")
    pair = data.preference_pair("Question?", "Good answer.", "Bad.")
    counted = counter.count_example(pair)
    assert counted.trained == counter.count("Good answer.") + counter.count("Bad.")
    assert counted.total > counted.trained


def test_count_examples_streams_into_a_frame():
    frame = tokens.count_examples((data.chat_example([data.user(f"q {i}"), data.assistant("a")]) for i in range(5000)),
                                  "gpt-4o", chunk_size=1000)
    assert len(frame) == 5000 and list(frame.columns) == ["total", "trained", "tools"]
    assert (frame["trained"] == 1).all()


def test_describe_labels_percentiles_correctly():
    stats = tokens.describe(range(1, 101))
    assert stats["p10"] == pytest.approx(10.9) and stats["p90"] == pytest.approx(90.1)
    assert stats["p50"] == 50.5 and stats["min"] == 1 and stats["max"] == 100 and "p5" not in stats


def test_loading_needs_no_network_and_checks_the_hash(tmp_path):
    # A fresh interpreter where every socket connection fails and tiktoken's cache is empty.
    script = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise OSError("network disabled for this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from ftkit import tokens
        print(tokens.count_tokens("offline works", encoding="o200k_base"),
              tokens.count_tokens("offline works", encoding="cl100k_base"))
    """)
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


def test_a_tampered_file_is_refused(tmp_path, monkeypatch):
    from importlib import resources

    fake_pkg = tmp_path / "ftkit_copy"
    shutil.copytree(resources.files("ftkit") / "encodings", fake_pkg / "encodings")
    (fake_pkg / "encodings" / "cl100k_base.tiktoken").write_bytes(b"dG9rZW4= 0\n")
    monkeypatch.setattr(tokens.resources, "files", lambda pkg: fake_pkg)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(ValueError, match="[Hh]ash"):
        tokens._load_encoding("cl100k_base")


def test_count_batch_cache_gives_the_same_counts_and_stays_bounded():
    from ftkit.tokens import TokenCounter

    counter = TokenCounter(encoding="o200k_base")
    counter.cache_size = 50
    texts = [f"system prompt {i % 7} " * (i % 5 + 1) for i in range(2000)] + ["long " * 2000]
    expected = [len(counter.encoding.encode_ordinary(t)) for t in texts]
    assert counter.count_batch(texts) == expected
    assert counter.count_batch(texts) == expected  # now from the cache
    assert "long " * 2000 not in counter._cache  # long texts are never kept
    for i in range(5):
        counter.count_batch([f"unique {i} {j}" for j in range(100)])
    assert len(counter._cache) <= counter.cache_size + 100

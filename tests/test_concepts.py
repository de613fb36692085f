"""ftkit.concepts: parameter counts, LoRA, training memory (notebooks/01_concepts.ipynb)."""

from __future__ import annotations

import pytest

from ftkit import concepts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer Llama with random weights: hidden 64, MLP 128, 4 heads, 2 key/value heads of 16."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                      tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(config)


class FakeTokenizer:
    def __call__(self, text, return_tensors="pt"):
        return transformers.BatchEncoding({"input_ids": torch.tensor([[1, 5, 7, 9, 11, 2]])})


def test_count_parameters_counts_tied_weights_once(tiny):
    counted = concepts.count_parameters(tiny)
    # embeddings 256*64 (shared with the output layer) + per layer: q 64*64, k 32*64, v 32*64, o 64*64,
    # gate/up 128*64 each, down 64*128, two RMSNorms of 64 -- plus the final norm
    per_layer = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + 3 * 128 * 64 + 2 * 64
    assert counted.total == 256 * 64 + 2 * per_layer + 64 == 90_432
    assert counted.trainable == counted.total


def test_lora_formula_matches_peft(tiny):
    # r * (in + out) per adapted Linear: q 128, k 96, v 96, o 128, gate 192, up 192, down 192 -> 1024 r per layer
    assert concepts.lora_parameter_count(tiny, 8) == 8 * 1024 * 2 == 16_384
    assert concepts.lora_parameter_count(tiny, 16, ["q_proj", "v_proj"]) == 16 * (128 + 96) * 2
    wrapped = concepts.add_lora(tiny, 8)
    counted = concepts.count_parameters(wrapped)
    assert counted.trainable == 16_384
    assert counted.total == 90_432 + 16_384
    # the original model is untouched (add_lora works on a copy)
    assert concepts.count_parameters(tiny).trainable == 90_432
    assert not any("lora" in name for name, _ in tiny.named_modules())


def test_estimate_training_memory_arithmetic():
    mem = concepts.estimate_training_memory(1_000, 10, method="LoRA")
    assert (mem.weights, mem.gradients, mem.optimizer, mem.total) == (4_000, 40, 80, 4_120)
    full = concepts.estimate_training_memory(1_000, 1_000)
    assert full.total == 16_000  # weights + gradients + 2 Adam values, 4 bytes each: 16 bytes a parameter


def test_compare_fine_tuning_measures_what_it_estimates(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    measured = concepts.compare_fine_tuning(tiny, FakeTokenizer(), ranks=(8, 16))
    estimated = concepts.compare_fine_tuning(tiny, ranks=(8, 16), measure=False)
    assert list(measured["method"]) == ["full fine-tuning", "LoRA r=8", "LoRA r=16"]
    assert list(measured["trainable_params"]) == [90_432, 16_384, 32_768]
    assert measured["measured"].all() and not estimated["measured"].any()
    # bytes read from the tensors after a real AdamW step equal the arithmetic
    columns = ["weights_mb", "gradients_mb", "adam_state_mb", "total_mb"]
    assert measured[columns].equals(estimated[columns])
    full = measured.iloc[0]
    assert full["total_mb"] == round(16 * 90_432 / 1024 / 1024, 1)
    # the model passed in was not trained
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_measure_needs_a_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer"):
        concepts.compare_fine_tuning(tiny)


@pytest.mark.slow
def test_real_smollm2_counts():
    from ftkit.local.inference.weights import load_base_model

    model, _ = load_base_model(progress=None)
    assert concepts.count_parameters(model).total == 134_515_008
    # 30 layers x (q 9216 + k 6144 + v 6144 + o 9216 + gate/up/down 3 x 16896) x r/8
    assert concepts.lora_parameter_count(model, 8) == 2_442_240
    assert concepts.lora_parameter_count(model, 16) == 4_884_480
    table = concepts.compare_fine_tuning(model, measure=False)
    assert list(table["trainable_share_pct"]) == [100.0, 1.816, 3.631]
    assert list(table["total_mb"]) == [2052.5, 550.4, 587.7]


def test_timeline_is_dated_sourced_and_honest():
    frame = concepts.timeline()
    assert frame["date"].is_monotonic_increasing
    assert frame["date"].iloc[0].strftime("%Y-%m-%d") == "2023-08-22"
    assert "2027-01-06" in set(frame["date"].dt.strftime("%Y-%m-%d"))
    assert frame["source"].str.startswith("https://").all()
    assert set(frame["confirmed"]) <= {"yes", "partly", "secondary", "no"}
    # anything not fully confirmed says why
    assert (frame.loc[frame["confirmed"] != "yes", "note"].str.len() > 10).all()


def test_case_figures_name_who_said_what_and_where():
    figures = concepts.case_figures()
    assert figures["source"].str.startswith("https://openai.com/").all()
    # the 90% is OpenAI's early testers' figure, from the 2023 launch post
    testers = figures[figures["figure"].str.contains("90%")].iloc[0]
    assert "early testers" in testers["who"] and testers["source"] == concepts.LAUNCH_POST
    # Indeed's two figures measure different things and come from different posts
    indeed = figures[figures["who"] == "Indeed"].set_index("date")
    assert indeed.loc["2024-04-04", "figure"].startswith("prompt tokens reduced by 80%")
    assert indeed.loc["2024-04-04", "source"] == concepts.APRIL_2024_POST
    assert indeed.loc["2024-08-12", "figure"].startswith("60% fewer tokens")
    assert set(figures["confirmed"]) == {"yes"}


def test_timeline_has_the_gpt3_shutdown_and_the_2026_2027_dates():
    dates = concepts.timeline().set_index(concepts.timeline()["date"].dt.strftime("%Y-%m-%d"))["event"]
    assert "GPT-3" in dates["2024-01-04"]
    assert {"2026-10-23", "2027-01-06", "2027-01-14"} <= set(dates.index)


def test_approaches_table_has_the_analogy_thread():
    table = concepts.approaches()
    assert list(table["approach"]) == ["prompt engineering", "retrieval / embeddings", "fine-tuning", "agents / tools"]
    assert table["analogy"].str.contains("helper").all()

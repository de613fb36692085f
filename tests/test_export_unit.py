"""ftkit.local.export without training: refusals with clear messages, names, and the Q/K row order
llama.cpp expects (checked against the GGUF file SmolLM2 ships in, written by llama.cpp's converter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture
def home(tmp_path):
    pytest.importorskip("torch")  # ftkit.local needs the 'local' extra
    from ftkit.local.store import Store

    store = Store(tmp_path / "home")
    store.add_model(MODEL, kind="base", owned_by="system", source=MODEL)
    return store.home


def _export(*args: str):
    return subprocess.run([sys.executable, "-m", "ftkit.local", "export", *args], capture_output=True, text=True,
                          timeout=120)


def test_refusals_name_the_problem(home, tmp_path):
    r = _export("ft:nope", "--format", "merged", "--out", str(tmp_path / "x"), "--home", str(home))
    assert r.returncode == 2 and "no model 'ft:nope'" in r.stderr and "none yet" in r.stderr and "Traceback" not in r.stderr
    r = _export(MODEL, "--format", "adapter", "--out", str(tmp_path / "x"), "--home", str(home))
    assert r.returncode == 2 and "is a base model: it has no adapter" in r.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    r = _export(MODEL, "--format", "merged", "--out", str(busy), "--home", str(home))
    assert r.returncode == 2 and "exists and is not empty" in r.stderr
    assert (busy / "keep.txt").read_text() == "mine"  # nothing lost
    r = _export(MODEL, "--format", "gguf", "--gguf-types", "q2_k", "--out", str(tmp_path / "y"), "--home", str(home))
    assert r.returncode == 2 and "GGUF types must be among f32, f16, bf16, q8_0" in r.stderr
    r = _export("ftckpt_abc", "--format", "adapter", "--out", str(tmp_path / "z"), "--home", str(home))
    assert r.returncode == 2 and "no checkpoint ftckpt_abc" in r.stderr
    r = _export(MODEL, "--format", "merged", "--out", str(tmp_path / "x"), "--home", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "holds no ftkit data" in r.stderr
    assert not (tmp_path / "nothing").exists()  # a wrong --home is not created
    r = _export(MODEL, "--format", "onnx", "--out", str(tmp_path / "x"), "--home", str(home))
    assert r.returncode == 2 and "invalid choice: 'onnx'" in r.stderr


def test_gguf_file_names_come_from_the_model_id():
    pytest.importorskip("torch")
    from ftkit.local.export import _gguf_name

    assert _gguf_name("ft:SmolLM2-135M-Instruct:local:ticket-triage:z9gnzdmo") == \
        "SmolLM2-135M-Instruct-ticket-triage-z9gnzdmo"
    assert _gguf_name("ft:SmolLM2-135M-Instruct:local::ab12cd34:ckpt-step-20") == \
        "SmolLM2-135M-Instruct-ab12cd34-ckpt-step-20"
    assert _gguf_name("SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"


def test_qk_rows_are_reordered_as_llama_cpp_does_and_transformers_undoes():
    """Our q/k permutation, applied to the Hugging Face weights ftkit serves, gives back the
    tensors of the GGUF file llama.cpp's own converter wrote (up to its 4-bit rounding), and
    transformers' GGUF loader turns it back into the Hugging Face order exactly."""
    pytest.importorskip("torch")
    import gguf
    import numpy as np
    from safetensors import safe_open
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from ftkit.local.export import _hf_to_gguf_qk
    from ftkit.local.inference import weights

    if weights.find_gguf() is None or not weights.is_cached():
        pytest.skip("the SmolLM2 weights are not installed and dequantised here")
    config = {"num_attention_heads": 9, "num_key_value_heads": 3}
    source = {t.name: t for t in gguf.GGUFReader(str(weights.find_gguf())).tensors}
    with safe_open(str(weights.cached_dir() / "model.safetensors"), "np") as f:
        for layer in (0, 17):
            for hf, gg, heads in (("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3)):
                ours = _hf_to_gguf_qk(f.get_tensor(f"model.layers.{layer}.self_attn.{hf}.weight"), heads)
                t = source[f"blk.{layer}.{gg}.weight"]
                theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
                back = LlamaTensorProcessor(config).process(ours, f"blk.{layer}.{gg}.weight").weights
                np.testing.assert_array_equal(back, f.get_tensor(f"model.layers.{layer}.self_attn.{hf}.weight"))


def _adapter(folder, config: dict, tensors: dict):
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file({k: np.zeros(shape, dtype=np.float32) for k, shape in tensors.items()},
              str(folder / "adapter_model.safetensors"))
    return folder


def test_vllm_lora_format_problems_are_named(tmp_path):
    """vLLM's LoRA loader refuses what these adapters carry; each refusal is said before serving."""
    pytest.importorskip("safetensors")
    from ftkit.local.export import vllm_lora_problems

    good = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"], "bias": "none"}
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    ok = _adapter(tmp_path / "ok", good, {f"{q}.lora_A.weight": (4, 32), f"{q}.lora_B.weight": (32, 4)})
    assert vllm_lora_problems(ok) == []

    bad = {**good, "r": 32, "lora_alpha": 64, "bias": "all", "modules_to_save": ["lm_head"],
           "target_modules": ["q_proj", "embed_tokens"]}
    wrong = _adapter(tmp_path / "wrong", bad, {
        f"{q}.lora_A.default.weight": (32, 32),  # the adapter's name left in: vLLM cannot parse it
        "base_model.model.model.embed_tokens.lora_A.weight": (32, 32),
        f"{q}.lora_B.weight": (32, 8),  # not rank 32
    })
    problems = "\n".join(vllm_lora_problems(wrong))
    for expected in ("serve with --max-lora-rank 32", "--enable-lora-bias", "modules_to_save must be empty",
                     "['embed_tokens'] are not layers vLLM serves LoRA on", "lora_A.default.weight",
                     "adapts 'embed_tokens'", "not rank 32"):
        assert expected in problems
    assert vllm_lora_problems(tmp_path / "nothing")[0].endswith("not readable JSON ([Errno 2] No such file or "
                                                                 f"directory: '{tmp_path / 'nothing' / 'adapter_config.json'}')")


def test_the_export_card_records_the_hyperparameters_and_metrics_of_its_jobs_own_method(home, tmp_path):
    from ftkit import lifecycle as lc
    from ftkit.local.export import ExportSource, _describe
    from ftkit.local.store import Store

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q"]}))
    hp = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "beta": 0.1}
    job = {"id": "ftjob-" + "a" * 24, "method": {"type": lc.DPO, lc.DPO: {"hyperparameters": hp}}, "seed": 1,
           "suffix": "s", "training_file": None, "validation_file": None, "trained_tokens": 10, "metadata": None,
           "created_at": 0, "finished_at": 1, "result_files": []}
    store = Store(home)
    results = lc.encode_results("step,train_loss,train_reward_margin,valid_loss\n3,0.41,0.8,\n")
    store.file_path("file-" + "r" * 24).write_bytes(results)
    store.add_file("file-" + "r" * 24, filename=lc.RESULTS_FILENAME, purpose=lc.RESULTS_PURPOSE, size=len(results),
                   sha256="x")
    job["result_files"] = ["file-" + "r" * 24]
    src = ExportSource("ft:x", "ft:x", "fine-tuned", MODEL, MODEL, adapter, job, None)
    facts = _describe(store, src, "peft")
    assert facts["training"]["method"] == lc.DPO and facts["training"]["hyperparameters"] == hp  # not None
    # the method's own results columns, not the supervised names (train_reward_margin was left out)
    assert facts["metrics"]["values"] == {"step": 3, "train_loss": 0.41, "train_reward_margin": 0.8}

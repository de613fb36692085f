"""A job as a TRL recipe (ftkit/local/recipes.py): the config carries the job's resolved
hyperparameters, the written train.py trains with TRL on the CPU, its adapter imports back and
answers through the local server, and the RFT reward function scores as the local trainer grades.

The tiny random Llama (tests/tiny.py) stands in for the model: TRL steps take milliseconds, so the
recipe's own code runs end to end; no GPU is needed (bf16 and accelerate's GPU configs are not run).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from conftest import register_tiny_model, tiny_chat_file, tiny_preference_file, wait_for_job  # noqa: E402

from ftkit import graders, lifecycle, reinforcement  # noqa: E402
from ftkit.local import recipes  # noqa: E402
from ftkit.local.export import vllm_lora_problems  # noqa: E402
from ftkit.local.jobs import hyperparameters  # noqa: E402


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    """A home with the tiny model registered (no server: recipes and imports read the store)."""
    root = tmp_path_factory.mktemp("recipes")
    register_tiny_model(root / "home", root / "tiny-llama")
    return root


def _spec(folder: Path, method: dict, *, seed: int = 5, validation: bool = False, **extra) -> Path:
    kind = method["type"]
    if kind == lifecycle.SUPERVISED:
        tiny_chat_file(folder / "train.jsonl", n=12)
        if validation:
            tiny_chat_file(folder / "valid.jsonl", n=4, seed=1)
    elif kind == lifecycle.DPO:
        tiny_preference_file(folder / "train.jsonl", n=12)
    else:
        from ftkit import data

        data.write_jsonl(reinforcement.rft_settings(quick=True).training_examples(), folder / "train.jsonl")
    spec = {"model": "tiny-llama", "training_file": "train.jsonl", "seed": seed, "method": method, **extra}
    if validation:
        spec["validation_file"] = "valid.jsonl"
    (folder / "job.json").write_text(json.dumps(spec))
    return folder / "job.json"


METHODS = {
    "supervised": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    "dpo": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "learning_rate_multiplier": 2}}},
    "reinforcement": reinforcement.rft_settings(quick=True).method(reinforcement.partial_credit_grader()),
}


@pytest.mark.parametrize("kind", list(METHODS))
def test_the_trl_config_carries_the_resolved_hyperparameters(tiny_home, tmp_path, kind):
    spec = _spec(tmp_path, METHODS[kind], validation=kind == "supervised")
    job = recipes.recipe_from_spec(spec, tiny_home / "home")
    written = recipes.load_recipe(recipes.write_recipe(job, tmp_path / "recipe"))
    requested = METHODS[kind][kind]["hyperparameters"]
    expected = hyperparameters.resolve(kind, requested, 12 if kind != "reinforcement" else 10)
    assert written["hyperparameters"] == expected
    assert written["seed"] == 5 and written["base_model"]["id"] == "tiny-llama"
    args = written["trl"]["args"]
    assert args["num_train_epochs"] == expected["n_epochs"]
    assert args["learning_rate"] == pytest.approx(hyperparameters.BASE_LEARNING_RATE[kind]
                                                  * expected["learning_rate_multiplier"])
    assert args["seed"] == args["data_seed"] == 5
    if kind == "reinforcement":  # TRL counts completions per batch, the job prompts
        group = hyperparameters.samples_per_prompt(expected["compute_multiplier"])
        assert args["num_generations"] == group
        assert args["per_device_train_batch_size"] == expected["batch_size"] * group
        assert written["grader"] == METHODS[kind][kind]["grader"]
    else:
        assert args["per_device_train_batch_size"] == expected["batch_size"]
    if kind == "dpo":
        assert args["beta"] == 0.25
    assert written["lora"]["r"] == 16 and "down_proj" in written["lora"]["target_modules"]
    # TRL's own config class takes every argument (a renamed field would fail here)
    config = getattr(trl, written["trl"]["class"])(output_dir=str(tmp_path / "out"), **args)
    assert config.num_train_epochs == expected["n_epochs"] and config.seed == 5
    files = {p.relative_to(tmp_path / "recipe").as_posix() for p in (tmp_path / "recipe").rglob("*") if p.is_file()}
    assert {"recipe.json", "train.py", "train.jsonl", "README.md", "accelerate/single_gpu.yaml",
            "accelerate/multi_gpu_zero2.yaml"} <= files
    assert (tmp_path / "recipe" / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()
    zero2 = (tmp_path / "recipe" / "accelerate" / "multi_gpu_zero2.yaml").read_text()
    assert "distributed_type: \"DEEPSPEED\"" in zero2 and "zero_stage: 2" in zero2
    assert ("vllm_server" in written["commands"]) == (kind == "reinforcement")


def test_a_bad_spec_is_refused_with_the_field(tiny_home, tmp_path):
    spec = _spec(tmp_path, {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}})
    with pytest.raises(recipes.RecipeError, match=r"method.supervised.hyperparameters: n_epochs must be >= 1"):
        recipes.recipe_from_spec(spec, tiny_home / "home")
    data = json.loads(spec.read_text())
    del data["seed"]
    spec.write_text(json.dumps(data))
    with pytest.raises(recipes.RecipeError, match="'seed' must be an integer"):
        recipes.recipe_from_spec(spec, tiny_home / "home")


def test_the_supervised_labels_are_the_local_trainers(tiny_home, tmp_path):
    """SFTTrainer gets ftkit's own labels: what the local trainer learns, token for token."""
    from tiny import tiny_tokenizer

    from ftkit.data import read_jsonl
    from ftkit.local.jobs.training.steps import encode_example

    path = tiny_chat_file(tmp_path / "train.jsonl", n=3)
    tok = tiny_tokenizer()
    rows = recipes.sft_dataset(path, tok)
    for row, line in zip(rows, read_jsonl(path)):
        encoded = encode_example(tok, line, 2048)
        assert row["input_ids"] == encoded.ids and row["labels"] == encoded.labels
        assert -100 in row["labels"] and any(label != -100 for label in row["labels"])


@pytest.mark.parametrize("grader", [reinforcement.partial_credit_grader(), reinforcement.exact_match_grader()],
                         ids=["multi", "python"])
def test_the_rft_reward_function_scores_as_the_local_trainer(grader):
    """Answers as TRL hands them over (token ids, ending with end-of-sequence or cut off) get the
    rewards the local trainer's grading (Reinforcement.grade) gives the same answers."""
    from tiny import tiny_tokenizer

    from ftkit.local.jobs.training import rft

    tok = tiny_tokenizer()
    lines = reinforcement.rft_settings(quick=True).training_examples()[:3]
    texts, ids, items, finished = [], [], [], []
    for line in lines:
        for k, answer in enumerate(reinforcement.sample_answers(line).values()):
            stopped = k % 3 != 2  # every third answer was cut off (no end-of-sequence token)
            texts.append(answer)
            ids.append(tok(answer, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stopped else []))
            items.append(line)
            finished.append("stop" if stopped else "length")
    reward = recipes.grader_reward(grader, tok)
    try:
        ours = reward(prompts=[None] * len(ids), completions=[None] * len(ids), completion_ids=ids,
                      ftkit_item=[json.dumps(i) for i in items])
    finally:
        reward.close()

    method = rft.Reinforcement()
    method.grader = graders.compile_grader(grader)
    method.sandbox = graders.PythonSandbox() if method.grader.uses_python() else None
    try:
        samples = [rft.Sampled(rft.Prompt([], line["messages"], line), i, text, fin)
                   for line, i, text, fin in zip(items, ids, texts, finished)]
        method.grade(samples)
    finally:
        method.close()
    assert ours == [s.reward for s in samples]
    assert 1.0 in ours and 0.0 in ours and len(set(ours)) >= 2  # the answers were told apart
    right = [r for r, line, text in zip(ours, items, texts) if text == reinforcement.sample_answers(line)["right"]]
    assert right == [1.0] * len(lines)


def test_gpu_run_cost_needs_a_measured_speed_and_a_price():
    assert recipes.gpu_run_cost(7200, tokens_per_second=None, usd_per_hour=2.0) == {"hours": None, "usd": None}
    cost = recipes.gpu_run_cost(7200, tokens_per_second=4.0, usd_per_hour=None, startup_seconds=1800)
    assert cost == {"hours": pytest.approx(1.0), "usd": None}  # 1,800 s training + 1,800 s start-up
    cost = recipes.gpu_run_cost(7200, tokens_per_second=4.0, usd_per_hour=3.0, gpus=2, startup_seconds=1800)
    assert cost["usd"] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="usd_per_hour must be > 0"):
        recipes.gpu_run_cost(10, tokens_per_second=1.0, usd_per_hour=0)


def _run_train_py(folder: Path, monkeypatch, *args: str) -> None:
    """train.py of a recipe, run in this process (TRL and torch already imported: seconds, not tens)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.chdir(folder)
    runpy.run_path(str(folder / "train.py"), run_name="__main__")


@pytest.mark.parametrize("kind", ["dpo", "reinforcement"])
def test_dpo_and_grpo_recipes_train_with_trl(tiny_home, tmp_path, monkeypatch, kind):
    spec = _spec(tmp_path, METHODS[kind])
    folder = recipes.write_recipe(recipes.recipe_from_spec(spec, tiny_home / "home"), tmp_path / "recipe")
    if kind == "reinforcement":  # short answers and a small group: the step in a second on the tiny model
        recipe = recipes.load_recipe(folder)
        recipe["trl"]["args"].update(max_completion_length=8, per_device_train_batch_size=4, num_generations=2)
        (folder / recipes.RECIPE_FILE).write_text(json.dumps(recipe))
    _run_train_py(folder, monkeypatch, "--model", str(tiny_home / "tiny-llama"), "--max-steps", "1")
    adapter = folder / "output" / "adapter"
    config = recipes.check_adapter(adapter, str(tiny_home / "tiny-llama"))
    assert config["r"] == 16 and sorted(config["target_modules"]) == sorted(recipes.lora_arguments()["target_modules"])
    assert vllm_lora_problems(adapter) == []  # TRL's adapter is a LoRA module vLLM loads, as ftkit's export


def test_an_adapter_of_another_base_is_refused(tiny_home, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(wider, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "wider")
    with pytest.raises(recipes.ImportError_, match="an adapter of another base model"):
        recipes.import_adapter(tmp_path / "wider", "tiny-llama", home=tiny_home / "home")
    with pytest.raises(recipes.ImportError_, match="no base model 'nope'"):
        recipes.import_adapter(tmp_path / "wider", "nope", home=tiny_home / "home")
    with pytest.raises(recipes.ImportError_, match="holds no PEFT adapter"):
        recipes.import_adapter(tmp_path, "tiny-llama", home=tiny_home / "home")


@pytest.mark.slow
def test_a_jobs_recipe_trains_with_trl_and_its_adapter_answers_through_the_server(client, local_server, tiny_model,
                                                                                   tmp_path):
    """The whole bridge: a job on the local server -> `recipe JOB_ID` -> train.py (TRL, CPU, 2 steps) ->
    `import-adapter` -> a fine-tuned model the server serves."""
    train = tiny_chat_file(tmp_path / "train.jsonl", n=10)
    valid = tiny_chat_file(tmp_path / "valid.jsonl", n=4, seed=1)
    job = client.fine_tuning.jobs.create(
        model=tiny_model, training_file=client.files.create(file=train.open("rb"), purpose="fine-tune").id,
        validation_file=client.files.create(file=valid.open("rb"), purpose="fine-tune").id, seed=11, suffix="local",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}})
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    cli = [sys.executable, "-m", "ftkit.local", "--home", str(local_server.home)]
    out = subprocess.run([*cli, "recipe", job.id, "--out", str(tmp_path / "recipe")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    recipe = recipes.load_recipe(tmp_path / "recipe")
    resolved = job.method.supervised.hyperparameters.model_dump()
    assert recipe["hyperparameters"] == {k: v for k, v in resolved.items() if k in recipe["hyperparameters"]}
    assert recipe["hyperparameters"]["batch_size"] == resolved["batch_size"] == 1  # "auto" for 10 examples
    assert recipe["job_id"] == job.id and recipe["seed"] == 11

    from ftkit.local.store import Store

    source = Store(local_server.home).get_model(tiny_model)["source"]  # the tiny model's folder, as registered
    trained = subprocess.run([sys.executable, "train.py", "--model", source, "--max-steps", "2"],
                             cwd=tmp_path / "recipe", capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    imported = subprocess.run([*cli, "import-adapter", str(tmp_path / "recipe" / "output" / "adapter"),
                               "--base", tiny_model, "--suffix", "trl"], capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    model = imported.stdout.strip().rsplit(" ", 1)[-1]
    assert model.startswith(f"ft:{tiny_model}:local:trl:")
    assert model in {m.id for m in client.models.list()}
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Ticket 3: billing"}],
                                            max_tokens=5, temperature=0)
    assert answer.model == model and answer.choices[0].message.content is not None
    assert answer.usage.completion_tokens > 0

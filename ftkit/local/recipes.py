"""A fine-tuning job as a TRL recipe: the same job on a GPU, or many, with TRL and accelerate.

ftkit trains a 135M model on a CPU. Past that it does not grow its own distributed trainer: it
hands the job to the engines people use at scale -- TRL (``SFTTrainer``, ``DPOTrainer``,
``GRPOTrainer``) launched by ``accelerate`` (one GPU, several with DeepSpeed ZeRO-2), vLLM for
GRPO's rollouts -- and takes the trained adapter back, so the course's evaluation runs on it.

    python -m ftkit.local recipe JOB_ID --out DIR        # a job of the local server (run or not)
    python -m ftkit.local recipe --spec job.json --out DIR  # a job spec not run yet
    python -m ftkit.local import-adapter DIR/output/adapter --base MODEL --suffix NAME

:func:`write_recipe` writes, into one folder:

* ``train.jsonl`` / ``validation.jsonl``: the job's files, unchanged (the data format does not change);
* ``recipe.json``: the job (method, base model, seed, suffix, its *resolved* hyperparameters as
  :func:`ftkit.local.jobs.hyperparameters.resolve` gives them), the TRL config's arguments
  (``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig``: :func:`trl_arguments`), the LoRA config
  (:data:`ftkit.local.jobs.training.recipe.RECIPE`), and for RFT the job's grader;
* ``train.py``: a short script -- tokenizer, model, TRL config, trainer, ``train()``, the adapter;
* ``accelerate/single_gpu.yaml`` and ``accelerate/multi_gpu_zero2.yaml`` (DeepSpeed ZeRO-2, in
  the shape of TRL's own ``trl/accelerate_configs``);
* ``README.md``: the command lines (``accelerate launch ...``, ``trl vllm-serve`` for GRPO's
  rollouts, the import back).

What stays ftkit's, so the run is the *same* job: the supervised examples are tokenised by
:func:`ftkit.local.inference.render.encode_for_training` (assistant-only loss: the assistant turns whose
``weight`` is not 0, with their end-of-turn token; TRL's own ``assistant_only_loss`` needs a chat
template with ``{% generation %}`` markers, which SmolLM2's lacks, and knows no ``weight``), and
RFT's reward is the job's grader run by :mod:`ftkit.graders` (:func:`grader_reward`), on the same
sample and item the local trainer grades. What changes on a GPU is said in the README and in
notebooks/10_outgrowing_the_laptop.ipynb: bf16, batch size per device, packing, flash attention.

:func:`import_adapter` registers a PEFT LoRA adapter trained elsewhere as a fine-tuned model of
the local server (``ft:<base>:local:<suffix>:<id>``), after checking it fits the base model.

Why one module of ~790 lines: the recipe is one round trip -- the job resolved as the local
trainer resolves it, TRL's arguments, the datasets and reward the generated ``train.py`` imports
from this module on the GPU machine, the commands, then the adapter imported back. It is per
method by nature (``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig``): a method registered without a
TRL counterpart is refused here with a :class:`RecipeError`, and nowhere else.

Taught in notebooks/10_outgrowing_the_laptop.ipynb.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import lifecycle as lc
from .jobs import hyperparameters

__all__ = [
    "RECIPE_FILE",
    "TRL_CONFIG_CLASSES",
    "ImportError_",
    "JobRecipe",
    "RecipeError",
    "commands",
    "gpu_run_cost",
    "grader_reward",
    "import_adapter",
    "load_recipe",
    "recipe_from_job",
    "recipe_from_spec",
    "sft_dataset",
    "dpo_dataset",
    "grpo_dataset",
    "trl_arguments",
    "write_recipe",
]

RECIPE_FILE = "recipe.json"
TRL_CONFIG_CLASSES = {lc.SUPERVISED: "SFTConfig", lc.DPO: "DPOConfig", lc.REINFORCEMENT: "GRPOConfig"}
TRL_TRAINER_CLASSES = {lc.SUPERVISED: "SFTTrainer", lc.DPO: "DPOTrainer", lc.REINFORCEMENT: "GRPOTrainer"}
#: The folder train.py writes the trained adapter to (under its ``--output-dir``, default ``output``).
ADAPTER_SUBDIR = "adapter"


class RecipeError(ValueError):
    """A recipe that cannot be written (unknown job, missing file, bad spec), with the reason."""


class ImportError_(ValueError):  # noqa: N801 -- not the builtin ImportError
    """An adapter that cannot be imported (missing files, another base, wrong shapes), with the reason."""


@dataclass
class JobRecipe:
    """What a recipe needs to know about a job, resolved."""

    method: str
    model: str  # the job's model: a base model id or a fine-tuned model (ft:...)
    base_id: str  # the local server's base model id the result is an adapter of
    base_source: str  # where the local server loads that base from
    training_file: Path
    validation_file: Path | None
    hyperparameters: dict  # resolved: no "auto" left
    seed: int
    suffix: str | None = None
    grader: dict | None = None
    job_id: str | None = None
    start_adapter: Path | None = None  # the job started from a fine-tuned model: its adapter
    n_examples: int = 0


# ---------------------------------------------------------------------------------------------
# Reading a job


def _count_examples(method: str, path: Path) -> int:
    """Examples the trainer counts when it resolves "auto": supervised lines with an assistant turn
    to learn (``weight`` not 0), every preference pair, every RFT prompt."""
    from ..data import read_jsonl

    n = 0
    for line in read_jsonl(path):
        if method == lc.SUPERVISED:
            messages = line.get("messages") or [] if isinstance(line, dict) else []
            n += any(isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight", 1) != 0
                     for m in messages)
        else:
            n += 1
    return n


def _is_resolved(method: str, hp: dict | None) -> bool:
    return bool(hp) and all(name in hp and hp[name] not in ("auto", None)
                            for name in hyperparameters.RULES[method] if name != "reasoning_effort")


def _method_parts(method: dict | None, legacy_hp: dict | None) -> tuple[str, dict, dict | None]:
    method = method or {"type": lc.SUPERVISED}
    kind = method.get("type", lc.SUPERVISED)
    if kind not in TRL_CONFIG_CLASSES:
        raise RecipeError(f"method.type must be one of {', '.join(TRL_CONFIG_CLASSES)}, not {kind!r}")
    inner = method.get(kind) or {}
    hp = inner.get("hyperparameters") or legacy_hp or {}
    return kind, hp, inner.get("grader")


def _resolve_model(store, model: str) -> tuple[str, str, Path | None]:
    """(base id, base source, starting adapter) of a job's model."""
    from .inference import weights

    if store is not None and store.get_model(model) is not None:
        from .jobs.training.starting import resolve_start

        return resolve_start(store, model)
    if model in weights.SOURCES:
        return model, model, None
    if model.startswith("ft:"):
        raise RecipeError(f"no fine-tuned model {model!r} in the local server's home: pass --home")
    return model, model, None  # a Hugging Face hub id or a model folder, trained as it is


def recipe_from_job(job_id: str, home: str | os.PathLike | None = None) -> JobRecipe:
    """The recipe of a job of the local server in ``home``: its files, its model and its
    hyperparameters as the run resolved them (resolved here the same way when it has not run yet)."""
    from .export import _open_store

    try:
        store = _open_store(home)
    except Exception as e:  # ExportError: no ftkit.db there
        raise RecipeError(str(e)) from None
    job = store.get_job(job_id)
    if job is None:
        known = ", ".join(j["id"] for j in store.list_jobs()[-5:]) or "none"
        raise RecipeError(f"no fine-tuning job {job_id} in {store.home} (latest: {known})")
    kind, hp, grader = _method_parts(job.get("method"), None)
    train = store.file_path(job["training_file"])
    if not train.is_file():
        raise RecipeError(f"the training file {job['training_file']} of {job_id} is gone from {store.home}")
    valid = store.file_path(job["validation_file"]) if job.get("validation_file") else None
    if valid is not None and not valid.is_file():
        raise RecipeError(f"the validation file {job['validation_file']} of {job_id} is gone from {store.home}")
    n = _count_examples(kind, train)
    resolved = dict(hp) if _is_resolved(kind, hp) else hyperparameters.resolve(kind, hp, n)
    base_id, source, start = _resolve_model(store, job["model"])
    return JobRecipe(kind, job["model"], base_id, source, train, valid, resolved, int(job["seed"]),
                     job.get("suffix"), grader, job_id, start, n)


def recipe_from_spec(spec_path: str | os.PathLike, home: str | os.PathLike | None = None) -> JobRecipe:
    """The recipe of a job spec not run yet: a JSON file in the shape of ``POST /v1/fine_tuning/jobs``
    (``model``, ``training_file``, ``validation_file``, ``method``, ``seed``, ``suffix``) whose files
    are paths (relative to the spec) or file ids of the local server in ``home``. The
    hyperparameters are checked and resolved as the server will (:mod:`ftkit.local.jobs.hyperparameters`);
    a missing seed is an error here (the server would draw one at random: a recipe must be repeatable)."""
    spec_path = Path(spec_path)
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"cannot read the job spec {spec_path}: {e}") from None
    except ValueError as e:
        raise RecipeError(f"{spec_path} is not JSON: {e}") from None
    if not isinstance(spec, dict):
        raise RecipeError(f"{spec_path}: a job spec is a JSON object")
    for field in ("model", "training_file"):
        if not isinstance(spec.get(field), str) or not spec[field]:
            raise RecipeError(f"{spec_path}: '{field}' is required (a string)")
    seed = spec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise RecipeError(f"{spec_path}: 'seed' must be an integer between 0 and 2147483647 (a recipe must be "
                          "repeatable)")
    store = None
    from .control import home_dir

    if (home_dir(home) / "ftkit.db").is_file():
        from .store import Store

        store = Store(home_dir(home))

    def file(field: str) -> Path | None:
        value = spec.get(field)
        if value is None:
            return None
        if value.startswith("file-") and store is not None and store.get_file(value) is not None:
            return store.file_path(value)
        path = (spec_path.parent / value).resolve()
        if not path.is_file():
            raise RecipeError(f"{spec_path}: '{field}' {value!r} is neither a file (relative to the spec) nor a file "
                              "id of the local server")
        return path

    kind, hp, grader = _method_parts(spec.get("method"), spec.get("hyperparameters"))
    try:
        checked = hyperparameters.check(kind, hp)
    except hyperparameters.InvalidHyperparameter as e:
        raise RecipeError(f"{spec_path}: method.{kind}.hyperparameters: {e}") from None
    if kind == lc.REINFORCEMENT:
        from .. import graders

        try:
            graders.compile_grader(grader)
        except graders.GraderError as e:
            raise RecipeError(f"{spec_path}: method.reinforcement.grader: {e.message}") from None
    train, valid = file("training_file"), file("validation_file")
    n = _count_examples(kind, train)
    base_id, source, start = _resolve_model(store, spec["model"])
    return JobRecipe(kind, spec["model"], base_id, source, train, valid,
                     hyperparameters.resolve(kind, checked, n), seed, spec.get("suffix"), grader, None, start, n)


# ---------------------------------------------------------------------------------------------
# The TRL config


def total_steps(job: JobRecipe) -> int:
    """Optimiser steps of the run: ceil(examples / batch size) x epochs, as the local trainer."""
    return math.ceil(job.n_examples / job.hyperparameters["batch_size"]) * job.hyperparameters["n_epochs"]


def trl_arguments(job: JobRecipe) -> dict:
    """The keyword arguments of the job's TRL config class (:data:`TRL_CONFIG_CLASSES`), for one
    GPU: the resolved hyperparameters and the local trainer's optimisation, spelled as TRL's.

    * ``n_epochs`` -> ``num_train_epochs``; ``batch_size`` -> ``per_device_train_batch_size`` (one
      process; train.py divides it by the number of processes so the global batch stays the job's);
      RFT's batch is prompts, TRL's is completions: ``batch_size`` x samples per prompt, with
      ``num_generations`` = samples per prompt (:func:`ftkit.local.jobs.hyperparameters.samples_per_prompt`);
    * learning rate = the method's LoRA base rate x ``learning_rate_multiplier``; AdamW without weight
      decay; linear warm-up over :func:`ftkit.local.jobs.training.steps.warmup_steps` steps, then linear
      decay to 0; gradients clipped at norm 1; the job's seed for the model, the data order and sampling;
    * DPO: ``beta``, the sigmoid loss, reference log-probabilities computed once (as the local
      trainer); RFT: TRL's ``loss_type="grpo"`` with rewards normalised per group, one update per
      batch, answers of at most 128 tokens sampled at temperature 1, no KL term (as the local trainer).
    """
    from .inference.weights import MAX_EXAMPLE_TOKENS
    from .jobs.training.steps import MAX_GRAD_NORM, warmup_steps

    hp, kind = job.hyperparameters, job.method
    steps = total_steps(job)
    args: dict = {
        "num_train_epochs": hp["n_epochs"],
        "per_device_train_batch_size": hp["batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": hyperparameters.learning_rate(kind, hp),
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup_steps(steps),
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "max_grad_norm": MAX_GRAD_NORM,
        "seed": job.seed,
        "data_seed": job.seed,
        "logging_steps": 1,
        "save_strategy": "epoch",
        "report_to": "none",
        "bf16": False,  # train.py turns it on where the GPU computes in bf16
    }
    if kind in (lc.SUPERVISED, lc.DPO):
        args["max_length"] = MAX_EXAMPLE_TOKENS
        if job.validation_file is not None:
            args.update(eval_strategy="steps", eval_steps=max(1, steps // 10),
                        per_device_eval_batch_size=hp["batch_size"])
    if kind == lc.SUPERVISED:
        # labels come from ftkit's encoder (assistant-only, weights): TRL keeps a "labels" column as it is
        args.update(packing=False, assistant_only_loss=False, completion_only_loss=None)
    elif kind == lc.DPO:
        args.update(beta=hp["beta"], loss_type=["sigmoid"], precompute_ref_log_probs=True)
    else:
        from .jobs.training import rft

        group = hyperparameters.samples_per_prompt(hp["compute_multiplier"])
        args.update(per_device_train_batch_size=hp["batch_size"] * group, num_generations=group,
                    max_completion_length=rft.MAX_COMPLETION_TOKENS, temperature=rft.SAMPLING_TEMPERATURE,
                    top_p=1.0, top_k=0, beta=rft.kl_beta(), epsilon=rft.CLIP_EPSILON, loss_type="grpo",
                    scale_rewards="group", num_iterations=1, use_vllm=False, eval_strategy="no")
    return args


def lora_arguments() -> dict:
    """``peft.LoraConfig`` keyword arguments of the local server's LoRA recipe."""
    from .jobs.training.recipe import RECIPE

    return {"r": RECIPE.rank, "lora_alpha": RECIPE.alpha, "lora_dropout": RECIPE.dropout,
            "target_modules": list(RECIPE.target_modules), "task_type": "CAUSAL_LM"}


def _hub_id(base_id: str) -> str | None:
    from .export import BASE_MODEL_CARDS

    card = BASE_MODEL_CARDS.get(base_id)
    return card.hub_id if card else None


# ---------------------------------------------------------------------------------------------
# Data for TRL (used by train.py, on the GPU machine, and by the tests)


def sft_dataset(path: str | os.PathLike, tokenizer):
    """A ``datasets.Dataset`` of ``input_ids`` and ``labels``: each supervised line tokenised by
    the local trainer's own encoder (:func:`ftkit.local.jobs.training.steps.encode_example`: the chat
    template, tools in the system message, labels on assistant turns whose ``weight`` is not 0).
    SFTTrainer trains on a ``labels`` column as given."""
    from datasets import Dataset

    from ..data import read_jsonl
    from .inference.weights import MAX_EXAMPLE_TOKENS
    from .jobs.training.steps import encode_example

    rows = []
    for line in read_jsonl(path):
        e = encode_example(tokenizer, line, MAX_EXAMPLE_TOKENS)
        if e.learned_tokens:
            rows.append({"input_ids": e.ids, "labels": e.labels})
    return Dataset.from_list(rows)


def dpo_dataset(path: str | os.PathLike):
    """A ``datasets.Dataset`` in TRL's conversational preference format (``prompt``, ``chosen``,
    ``rejected``), the messages mapped to plain role/content as the local trainer renders them
    (:func:`ftkit.local.inference.render.template_messages`: tools in the system message, tool calls as text)."""
    from datasets import Dataset

    from ..data import read_jsonl
    from .inference.render import template_messages

    rows = []
    for line in read_jsonl(path):
        source = line["input"]
        prompt = template_messages(source["messages"], source.get("tools"), source.get("functions"))
        rows.append({"prompt": prompt,
                     "chosen": template_messages(line["preferred_output"][-1:]),
                     "rejected": template_messages(line["non_preferred_output"][-1:])})
    return Dataset.from_list(rows)


def grpo_dataset(path: str | os.PathLike):
    """A ``datasets.Dataset`` for GRPOTrainer: ``prompt`` (the line's messages as the local trainer
    renders them) and ``ftkit_item`` (the whole line as JSON: the grader's ``item``, as the local
    trainer grades it, kept as a string so lines of different shapes fit one table)."""
    from datasets import Dataset

    from ..data import read_jsonl
    from .inference.render import template_messages

    rows = [{"prompt": template_messages(line["messages"], line.get("tools")),
             "ftkit_item": json.dumps(line, ensure_ascii=False)} for line in read_jsonl(path)]
    return Dataset.from_list(rows)


def grader_reward(grader: dict, tokenizer, *, judge=None) -> Callable[..., list[float]]:
    """The job's grader as a TRL reward function (``reward_funcs=[...]`` of ``GRPOTrainer``).

    TRL calls it with ``completion_ids`` (each answer's tokens, ending with the end-of-sequence token
    when the answer ended by itself) and the dataset's ``ftkit_item`` column (:func:`grpo_dataset`).
    Each answer becomes the chat completions choice the local trainer grades -- the text decoded
    without special tokens, ``finish_reason`` "stop" or "length", tool calls parsed when the line
    has tools -- and :func:`ftkit.graders.grade_many` scores it against the line. ``judge``: for
    ``score_model`` / ``label_model`` graders, e.g. ``ftkit.graders.client_judge(openai.OpenAI())``
    pointed at a server that serves the judge model (train.py does this when the grader needs one).
    """
    from .. import graders
    from .jobs.training.rft import Prompt, Sampled, _choice

    compiled = graders.compile_grader(grader)
    if compiled.uses_judge() and judge is None:
        raise RecipeError(f"the grader {compiled.name!r} asks a model: pass judge= (ftkit.graders.client_judge)")
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    sandbox = graders.PythonSandbox() if compiled.uses_python() else None

    def ftkit_grader(prompts=None, completions=None, completion_ids=None, ftkit_item=None, **_) -> list[float]:
        if completion_ids is None or ftkit_item is None:
            raise ValueError("the ftkit grader reward needs TRL's completion_ids and the dataset's ftkit_item column")
        samples, items = [], []
        for ids, raw in zip(completion_ids, ftkit_item):
            ids = [int(t) for t in ids]
            item = json.loads(raw) if isinstance(raw, str) else dict(raw)
            ended = bool(ids) and ids[-1] in stops
            text = tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=True)
            prompt = Prompt([], item.get("messages") or [], item, item.get("tools"))
            samples.append(_choice(Sampled(prompt, ids, text, "stop" if ended else "length")))
            items.append(item)
        results = graders.grade_many(compiled, samples, items, judge=judge, sandbox=sandbox)
        return [float(r.reward) for r in results]

    ftkit_grader.__name__ = f"grader_{compiled.name or compiled.type}".replace(" ", "_")
    ftkit_grader.close = sandbox.close if sandbox is not None else (lambda: None)  # type: ignore[attr-defined]
    return ftkit_grader


# ---------------------------------------------------------------------------------------------
# Writing the recipe


def _yaml(mapping: dict, indent: int = 0) -> str:
    """A flat YAML rendering of a small mapping (strings, numbers, booleans, one level of nesting)."""
    lines = []
    for key, value in mapping.items():
        pad = " " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(_yaml(value, indent + 2).rstrip("\n"))
        elif isinstance(value, bool):
            lines.append(f"{pad}{key}: {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{pad}{key}: {value}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(json.dumps(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def accelerate_configs(gpus: int = 8) -> dict[str, str]:
    """``accelerate`` configs (file name -> YAML), in the shape of TRL's ``trl/accelerate_configs``
    (``single_gpu.yaml``, ``zero2.yaml``): one GPU, and ``gpus`` GPUs with DeepSpeed ZeRO-2
    (optimizer states and gradients sharded across GPUs; the model replicated, fine for LoRA on up to
    ~8B parameters). Mixed precision bf16 (Ampere or newer); ``--num_processes`` overrides ``gpus``."""
    common = {"compute_environment": "LOCAL_MACHINE", "debug": False, "machine_rank": 0,
              "main_training_function": "main", "mixed_precision": "bf16", "num_machines": 1,
              "rdzv_backend": "static", "same_network": True, "use_cpu": False}
    single = {**common, "distributed_type": "NO", "num_processes": 1, "gpu_ids": "all", "downcast_bf16": "no"}
    zero2 = {**common, "distributed_type": "DEEPSPEED", "num_processes": gpus, "downcast_bf16": "no",
             "deepspeed_config": {"deepspeed_multinode_launcher": "standard", "offload_optimizer_device": "none",
                                  "offload_param_device": "none", "zero3_init_flag": False, "zero_stage": 2}}
    return {"single_gpu.yaml": _yaml(single), "multi_gpu_zero2.yaml": _yaml(zero2)}


def commands(job: JobRecipe, *, gpus: int = 8) -> dict[str, str]:
    """The command lines of a recipe, run in its folder: train on one GPU, on ``gpus`` GPUs, (RFT)
    with vLLM serving the rollouts on one more GPU, and, back on the laptop with the ``output``
    folder copied there, import the adapter."""
    suffix = job.suffix or "trl"
    cmds = {
        "one_gpu": "accelerate launch --config_file accelerate/single_gpu.yaml train.py",
        "many_gpus": f"accelerate launch --config_file accelerate/multi_gpu_zero2.yaml --num_processes {gpus} train.py",
    }
    if job.method == lc.REINFORCEMENT:
        model = _hub_id(job.base_id) or job.base_source
        cmds["vllm_server"] = f"CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model {model}"
        gpu_list = ",".join(str(i) for i in range(1, gpus + 1))
        cmds["many_gpus_with_vllm"] = (f"CUDA_VISIBLE_DEVICES={gpu_list} accelerate launch --config_file "
                                       f"accelerate/multi_gpu_zero2.yaml --num_processes {gpus} train.py --vllm-server")
    cmds["import"] = f"python -m ftkit.local import-adapter output/{ADAPTER_SUBDIR} --base {job.base_id} --suffix {suffix}"
    return cmds


_TRAIN_PY = '''\
"""Train {what} with TRL: written by `python -m ftkit.local recipe` (ftkit {version}).

    accelerate launch --config_file accelerate/single_gpu.yaml train.py        # one GPU
    accelerate launch --config_file accelerate/multi_gpu_zero2.yaml train.py   # several (DeepSpeed ZeRO-2)

Everything about the job is in recipe.json; README.md has the commands and the import back.
Needs: pip install ftkit trl peft accelerate datasets (+ deepspeed for ZeRO-2, vllm for --vllm-server).
"""

import argparse
import json
import os
from pathlib import Path

import torch
import trl
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftkit.local import recipes

HERE = Path(__file__).resolve().parent
recipe = json.loads((HERE / "recipe.json").read_text())
method = recipe["method"]

parser = argparse.ArgumentParser()
parser.add_argument("--model", default=recipe["base_model"]["load_from"], help="base model: hub id or folder")
parser.add_argument("--output-dir", default=str(HERE / "output"))
parser.add_argument("--max-steps", type=int, default=-1, help="stop early (a smoke test)")
parser.add_argument("--vllm-server", action="store_true", help="GRPO: rollouts from `trl vllm-serve`")
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
if recipe["start_adapter"]:  # the job started from a fine-tuned model: train on top of it, merged
    model = PeftModel.from_pretrained(model, str(HERE / recipe["start_adapter"])).merge_and_unload()

config = dict(recipe["trl"]["args"])
world = int(os.environ.get("WORLD_SIZE", "1"))  # keep the job's global batch on any number of GPUs
if config["per_device_train_batch_size"] % world:
    raise SystemExit(f"the batch of {{config['per_device_train_batch_size']}} does not split over {{world}} processes")
config["per_device_train_batch_size"] //= world
config["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
if args.vllm_server:
    config.update(use_vllm=True, vllm_mode="server")
config = getattr(trl, recipe["trl"]["class"])(output_dir=args.output_dir, max_steps=args.max_steps, **config)
peft_config = LoraConfig(**recipe["lora"])
valid = HERE / "validation.jsonl" if (HERE / "validation.jsonl").exists() else None

if method == "supervised":
    trainer = trl.SFTTrainer(model=model, args=config, processing_class=tokenizer, peft_config=peft_config,
                             train_dataset=recipes.sft_dataset(HERE / "train.jsonl", tokenizer),
                             eval_dataset=recipes.sft_dataset(valid, tokenizer) if valid else None)
elif method == "dpo":
    trainer = trl.DPOTrainer(model=model, args=config, processing_class=tokenizer, peft_config=peft_config,
                             train_dataset=recipes.dpo_dataset(HERE / "train.jsonl"),
                             eval_dataset=recipes.dpo_dataset(valid) if valid else None)
else:  # reinforcement: the job's grader, run by ftkit.graders, is the reward
    judge = None
    if recipe["grader_needs_judge"]:  # a model grader: OPENAI_BASE_URL / OPENAI_API_KEY name its server
        import openai

        from ftkit.graders import client_judge

        judge = client_judge(openai.OpenAI())
    reward = recipes.grader_reward(recipe["grader"], tokenizer, judge=judge)
    trainer = trl.GRPOTrainer(model=model, args=config, processing_class=tokenizer, peft_config=peft_config,
                              reward_funcs=[reward], train_dataset=recipes.grpo_dataset(HERE / "train.jsonl"))
trainer.train()

adapter = Path(args.output_dir) / "{adapter}"
trainer.save_model(str(adapter))
if trainer.accelerator.is_main_process:
    if recipe["start_adapter"]:  # one adapter over the base, as the local server saves it
        from ftkit.local.jobs.training.starting import combine_adapters

        combine_adapters([HERE / recipe["start_adapter"], adapter], adapter)
    print(f"adapter: {{adapter}}")
    print("import it where the local server runs, with this folder copied there:")
    print(recipe["commands"]["import"].replace("output/{adapter}", str(adapter)))
'''


def _readme(job: JobRecipe, facts: dict, cmds: dict[str, str]) -> str:
    hp = ", ".join(f"{k} = {v}" for k, v in job.hyperparameters.items())
    lines = [f"# TRL recipe: {facts['source']}", "",
             f"Method **{job.method}** ({facts['trl']['class']} + {TRL_TRAINER_CLASSES[job.method]}) on "
             f"`{facts['base_model']['load_from']}`, seed {job.seed}. Hyperparameters as the job resolves them: {hp}. "
             f"LoRA: r = {facts['lora']['r']}, alpha = {facts['lora']['lora_alpha']}, modules "
             f"{', '.join(facts['lora']['target_modules'])}.", "",
             "Install on the GPU machine: `pip install ftkit trl peft accelerate datasets` "
             "(+ `deepspeed` for several GPUs, `vllm` for GRPO's vLLM rollouts).", "",
             "## Commands", "", "In this folder:", "", "```console"]
    lines += [f"# {name.replace('_', ' ')}\n{cmd}" for name, cmd in cmds.items()]
    lines += ["```", ""]
    if facts["base_model"].get("exact_weights"):
        lines += ["The local server trained on " + facts["base_model"]["exact_weights"], ""]
    lines += ["## What changes on a GPU, what does not", "",
              "* train.py turns bf16 on where the GPU computes in it; the global batch stays the job's "
              "(divided over the processes).",
              "* For speed on bigger data: `packing=True` (with `padding_free` and flash attention, "
              "`attn_implementation=\"flash_attention_2\"`) in SFTConfig, a larger batch with a "
              "proportionally scaled learning rate, `gradient_checkpointing=True` for 7-8B models. Each "
              "makes it a *different* run than the job: compare it with the course's evaluation.",
              "* The data files, the grader and the evaluation do not change: import the adapter back and run "
              "notebook 05's evaluation on it.", ""]
    return "\n".join(lines)


def write_recipe(job: JobRecipe, out: str | os.PathLike, *, overwrite: bool = False, gpus: int = 8) -> Path:
    """Write the recipe folder of ``job`` (see the module docstring) to ``out``; returns ``out``.
    An existing non-empty folder is replaced only with ``overwrite=True``."""
    from .. import __version__
    from .export import _prepare_target

    out = Path(out).expanduser().resolve()
    try:
        tmp = _prepare_target(out, overwrite)
    except Exception as e:  # ExportError: a busy folder
        raise RecipeError(str(e)) from None
    try:
        shutil.copyfile(job.training_file, tmp / "train.jsonl")
        if job.validation_file is not None:
            shutil.copyfile(job.validation_file, tmp / "validation.jsonl")
        if job.start_adapter is not None:
            shutil.copytree(job.start_adapter, tmp / "start_adapter")
        (tmp / "accelerate").mkdir()
        for name, text in accelerate_configs(gpus).items():
            (tmp / "accelerate" / name).write_text(text, encoding="utf-8")
        cmds = commands(job, gpus=gpus)
        hub = _hub_id(job.base_id)
        base = {"id": job.base_id, "load_from": hub or job.base_source, "local_source": job.base_source}
        if hub:
            base["exact_weights"] = (
                f"the weights of `{job.base_id}` as ftkit loads them, which differ slightly from the hub's; for the "
                f"same start: `python -m ftkit.local export {job.base_id} --format merged --out base`, then "
                "`train.py --model base`.")
        grader_needs_judge = False
        if job.grader is not None:
            from .. import graders

            grader_needs_judge = graders.compile_grader(job.grader).uses_judge()
        facts = {
            "ftkit_recipe": 1,
            "ftkit_version": __version__,
            "source": job.job_id or "a job spec",
            "job_id": job.job_id,
            "method": job.method,
            "model": job.model,
            "base_model": base,
            "start_adapter": "start_adapter" if job.start_adapter is not None else None,
            "seed": job.seed,
            "suffix": job.suffix,
            "hyperparameters": job.hyperparameters,
            "examples": job.n_examples,
            "total_steps": total_steps(job),
            "trl": {"class": TRL_CONFIG_CLASSES[job.method], "trainer": TRL_TRAINER_CLASSES[job.method],
                    "args": trl_arguments(job)},
            "lora": lora_arguments(),
            "loss": ("assistant-only: labels from ftkit.local.inference.render.encode_for_training (assistant turns whose "
                     "weight is not 0, with their end-of-turn token)") if job.method == lc.SUPERVISED else
                    ("completion-only (TRL's preference format)" if job.method == lc.DPO else
                     "GRPO on the grader's rewards"),
            "grader": job.grader,
            "grader_needs_judge": grader_needs_judge,
            "files": {"training": "train.jsonl",
                      "validation": "validation.jsonl" if job.validation_file is not None else None},
            "commands": cmds,
        }
        (tmp / RECIPE_FILE).write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        what = f"job {job.job_id}" if job.job_id else "a job spec"
        (tmp / "train.py").write_text(_TRAIN_PY.format(what=what, version=__version__, adapter=ADAPTER_SUBDIR),
                                      encoding="utf-8")
        (tmp / "README.md").write_text(_readme(job, facts, cmds), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def gpu_run_cost(trained_tokens: int, *, tokens_per_second: float | None, usd_per_hour: float | None,
                 gpus: int = 1, startup_seconds: float = 0.0) -> dict:
    """What a run of ``trained_tokens`` costs on ``gpus`` GPUs rented at ``usd_per_hour`` each,
    training ``tokens_per_second`` in all (measure it: TRL logs ``train_samples_per_second`` and
    ``num_tokens``; a ``--max-steps`` smoke run of the recipe gives it), plus ``startup_seconds``
    of paid time before training (booting, installing, downloading the model).

    Returns ``{"hours", "usd"}``; each is None where the figure it needs is None -- ftkit has no GPU
    price or speed of its own to assume (prices move; use your provider's, with the date you read it).

    Taught in notebooks/10_outgrowing_the_laptop.ipynb.
    """
    if trained_tokens < 0 or gpus < 1 or startup_seconds < 0:
        raise ValueError("trained_tokens and startup_seconds must be >= 0 and gpus >= 1")
    for name, value in (("tokens_per_second", tokens_per_second), ("usd_per_hour", usd_per_hour)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 (or None when not known yet), got {value!r}")
    hours = None if tokens_per_second is None else (trained_tokens / tokens_per_second + startup_seconds) / 3600
    usd = None if hours is None or usd_per_hour is None else hours * usd_per_hour * gpus
    return {"hours": hours, "usd": usd}


def load_recipe(folder: str | os.PathLike) -> dict:
    """The ``recipe.json`` of a recipe folder."""
    return json.loads((Path(folder) / RECIPE_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Importing an adapter trained elsewhere


def _base_module_shapes(source: str) -> dict[str, tuple[int, int]]:
    """{module path: (out_features, in_features)} of the base model's linear layers, from its
    config alone (built on the meta device: no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .inference import weights

    if source in weights.SOURCES:
        config = AutoConfig.from_pretrained(weights.ensure_cached(source, progress=None))
    elif Path(source).suffix == ".gguf":
        config = AutoConfig.from_pretrained(Path(source).parent, gguf_file=Path(source).name)
    else:
        config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: (m.out_features, m.in_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def check_adapter(adapter: Path, base_source: str) -> dict:
    """The adapter's config, after checking that it is a PEFT LoRA adapter whose every module is a
    linear layer of the base with matching shapes; raises :class:`ImportError_` saying what does not fit."""
    from safetensors import safe_open

    config_path, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise ImportError_(f"{adapter} holds no PEFT adapter: adapter_config.json and adapter_model.safetensors "
                           "are both needed (trainer.save_model / PeftModel.save_pretrained write them)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise ImportError_(f"{config_path}: peft_type is {config.get('peft_type')!r}; only LoRA adapters can be served")
    if config.get("modules_to_save"):
        raise ImportError_(f"{config_path}: modules_to_save {config['modules_to_save']} holds full copies of base "
                           "layers, which the local server does not serve; train without them")
    shapes = _base_module_shapes(base_source)
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
        if not keys:
            raise ImportError_(f"{weights} holds no tensors")
        for key in keys:
            if ".lora_A." not in key and ".lora_B." not in key:
                raise ImportError_(f"{weights}: tensor {key!r} is not a LoRA A/B matrix")
            module = key.split(".lora_")[0].removeprefix("base_model.model.")
            if module not in shapes:
                raise ImportError_(f"{weights}: {key!r} adapts {module!r}, which the base model {base_source} does "
                                   "not have (an adapter of another architecture?)")
            out_f, in_f = shapes[module]
            shape = tuple(f.get_slice(key).get_shape())
            want = in_f if ".lora_A." in key else out_f
            got = shape[1] if ".lora_A." in key else shape[0]
            if len(shape) != 2 or got != want:
                raise ImportError_(f"{weights}: {key!r} has shape {list(shape)}, but {module} of {base_source} is "
                                   f"{out_f} x {in_f}: an adapter of another base model")
    return config


def import_adapter(adapter: str | os.PathLike, base: str, *, suffix: str | None = None,
                   home: str | os.PathLike | None = None) -> str:
    """Register the PEFT LoRA adapter in folder ``adapter`` (trained elsewhere: a recipe's
    ``output/adapter``) as a fine-tuned model of ``base``, a base model of the local server in
    ``home``; returns its id, ``ft:<base>:local:<suffix>:<id>``. The adapter is checked against the
    base (:func:`check_adapter`) and copied into the home, so the server -- running or not -- serves it
    and the course's evaluation runs on it."""
    from .control import home_dir
    from .services.platform import Platform
    from .store import Store, short_id

    adapter = Path(adapter).expanduser().resolve()
    home = home_dir(home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Store(home)
    Platform(store, max_upload_bytes=0)  # registers the default base model in a new home
    row = store.get_model(base)
    if row is None or row["kind"] != "base":
        bases = ", ".join(m["id"] for m in store.list_models() if m["kind"] == "base")
        raise ImportError_(f"no base model {base!r} in {home} (base models: {bases}); register one with "
                           "`python -m ftkit.local register-model NAME PATH`")
    source = row["source"] or base
    check_adapter(adapter, source)
    if suffix is not None and (not suffix or len(suffix) > 64 or any(c in suffix for c in ":/ ")):
        raise ImportError_(f"suffix must be 1-64 characters without ':', '/' or spaces, not {suffix!r}")
    model_id = f"ft:{base}:local:{suffix or 'imported'}:{short_id().lower()}"
    target = home / "models" / "imported" / model_id.rsplit(":", 1)[-1]
    target.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(adapter / "adapter_model.safetensors", target / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = source
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    store.add_model(model_id, kind="fine-tuned", owned_by="local", base=base, adapter_path=str(target))
    return model_id

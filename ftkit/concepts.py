"""Concepts behind fine-tuning, made concrete: parameters, LoRA, memory, and a dated history.

Taught in notebooks/01_concepts.ipynb.

* :func:`count_parameters`, :func:`lora_parameter_count`, :func:`add_lora` and
  :func:`compare_fine_tuning` count what full fine-tuning and LoRA train on a real model, and
  :func:`measure_training_memory` measures the bytes of weights, gradients and Adam states after a
  real training step.
* :func:`approaches`, :func:`timeline` and :func:`case_figures` are tables with their sources.

torch and peft are imported only inside the functions that need them; the tables need neither.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from .local.jobs.training import recipe as _recipe

__all__ = [
    "LORA_TARGETS",
    "RECIPE",
    "ParameterCount",
    "TrainingMemory",
    "add_lora",
    "approaches",
    "case_figures",
    "compare_fine_tuning",
    "count_parameters",
    "estimate_training_memory",
    "lora_parameter_count",
    "measure_training_memory",
    "timeline",
]

#: The recipe the local server trains with (rank, alpha, dropout, target modules): what this
#: lesson counts and measures is exactly what notebook 04's job trains.
RECIPE = _recipe.RECIPE
#: The projections LoRA adapts in the course: attention (q, k, v, o) and the MLP (gate, up, down).
LORA_TARGETS = RECIPE.target_modules

MB = 1024 * 1024


@dataclass(frozen=True)
class ParameterCount:
    total: int
    trainable: int

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model) -> ParameterCount:
    """Total and trainable (``requires_grad``) parameters. Tied weights (the input embedding
    shared with the output layer) count once, as ``model.parameters()`` yields them once."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(total, trainable)


def _targets(model, target_modules: Sequence[str]):
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules:
            yield name, module


def lora_parameter_count(model, r: int, target_modules: Sequence[str] = LORA_TARGETS) -> int:
    """Parameters LoRA of rank ``r`` adds (and trains), by the formula.

    Each adapted ``Linear(in, out)`` gets two small matrices, A (r × in) and B (out × r):
    ``r · (in + out)`` parameters instead of the ``in · out`` of the full weight.
    """
    return sum(r * (m.in_features + m.out_features) for _, m in _targets(model, target_modules))


def add_lora(model, r: int = RECIPE.rank, target_modules: Sequence[str] = LORA_TARGETS, *,
             alpha: int | None = None, dropout: float = RECIPE.dropout, copy_model: bool = True):
    """The model wrapped with peft LoRA adapters of rank ``r`` (on a copy unless ``copy_model=False``).

    With the defaults this is the server's own recipe (:data:`RECIPE`: rank 16, alpha 32, every
    projection); another ``r`` keeps the recipe's alpha / rank. peft freezes the original weights;
    only the adapters are trainable.
    """
    base = copy.deepcopy(model) if copy_model else model
    recipe = RECIPE.with_rank(r)
    recipe = _recipe.LoraRecipe(rank=recipe.rank, alpha=alpha or recipe.alpha, dropout=dropout,
                                target_modules=tuple(target_modules))
    return recipe.apply(base)


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes held for training, by kind. ``measured``: read from real tensors after a step."""

    method: str
    trainable: int
    weights: int
    gradients: int
    optimizer: int
    measured: bool

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def estimate_training_memory(total_params: int, trainable_params: int, *, method: str = "",
                             bytes_per_value: int = 4, optimizer_values: int = 2) -> TrainingMemory:
    """Weights + gradients + optimizer state, by arithmetic (float32: 4 bytes a value).

    Every weight is held; gradients exist only for trainable parameters; Adam keeps two values
    (the running mean and variance) per trainable parameter. Activations are left out: they
    depend on batch size and sequence length, not on the method.
    """
    return TrainingMemory(
        method=method,
        trainable=trainable_params,
        weights=total_params * bytes_per_value,
        gradients=trainable_params * bytes_per_value,
        optimizer=trainable_params * bytes_per_value * optimizer_values,
        measured=False,
    )


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_training_memory(model, tokenizer, *, method: str = "", text: str = "Subject: Hub offline\n\nHelp!",
                            lr: float = 1e-4) -> TrainingMemory:
    """One real AdamW step on ``model`` (changes it: pass a copy), then the bytes of its weights,
    gradients and optimizer state, read from the tensors themselves."""
    import torch

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    batch = tokenizer(text, return_tensors="pt").to(next(model.parameters()).device)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optimizer.step()
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    memory = TrainingMemory(
        method=method,
        trainable=sum(p.numel() for p in trainable),
        weights=_tensor_bytes(model.parameters()),
        gradients=_tensor_bytes(p.grad for p in trainable if p.grad is not None),
        optimizer=_tensor_bytes(state),
        measured=True,
    )
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return memory


def compare_fine_tuning(model, tokenizer=None, ranks: Sequence[int] = (8, 16),
                        target_modules: Sequence[str] = LORA_TARGETS, *, measure: bool = True,
                        progress: bool = False):
    """Full fine-tuning vs LoRA of each rank on ``model``, as a DataFrame.

    Columns: method, trainable parameters (counted by peft on the real model, and checked against
    :func:`lora_parameter_count`), their share, and weights / gradients / Adam state / total in MB --
    measured after one real training step when ``measure`` (needs ``tokenizer``), else estimated.
    The model itself is not changed: each method trains a copy. ``progress`` shows a tqdm bar
    (measuring takes about a minute on two CPU cores).
    """
    import pandas as pd

    if measure and tokenizer is None:
        raise ValueError("measuring needs the tokenizer")
    base = count_parameters(model)
    rows = []
    methods = [("full fine-tuning", None), *[(f"LoRA r={r}", r) for r in ranks]]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(methods, desc="measuring" if measure else "estimating", unit="method")
    for name, r in bar if bar is not None else methods:
        if bar is not None:
            bar.set_postfix_str(name)
        if r is None:
            candidate = copy.deepcopy(model)
            for p in candidate.parameters():
                p.requires_grad_(True)
        else:
            candidate = add_lora(model, r, target_modules)
        counted = count_parameters(candidate)
        if r is not None and counted.trainable != lora_parameter_count(model, r, target_modules):
            raise AssertionError(f"peft trains {counted.trainable:,} parameters, the formula says "
                                 f"{lora_parameter_count(model, r, target_modules):,}")
        if measure:
            mem = measure_training_memory(candidate, tokenizer, method=name)
        else:
            mem = estimate_training_memory(counted.total, counted.trainable, method=name)
        rows.append({
            "method": name,
            "trainable_params": counted.trainable,
            "trainable_share_pct": round(100 * counted.trainable / base.total, 3),
            "weights_mb": round(mem.weights / MB, 1),
            "gradients_mb": round(mem.gradients / MB, 1),
            "adam_state_mb": round(mem.optimizer / MB, 1),
            "total_mb": round(mem.total / MB, 1),
            "measured": mem.measured,
        })
        del candidate
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Tables: approaches, history, published figures


_APPROACHES = [
    {
        "approach": "prompt engineering",
        "analogy": "the instructions you give a new helper each time",
        "what changes": "the text you send",
        "good for": "trying ideas fast; small, changing tasks",
        "limits": "long prompts cost tokens on every call; the helper may drift from them",
        "cost": "none up front; more tokens per call",
    },
    {
        "approach": "retrieval / embeddings",
        "analogy": "notes you stick around the house for the helper to read",
        "what changes": "what the model is shown (documents found by similarity)",
        "good for": "facts that change or are private: manuals, policies, order data",
        "limits": "only as good as what is found; does not change behaviour or style",
        "cost": "an index to build and keep fresh; longer prompts",
    },
    {
        "approach": "fine-tuning",
        "analogy": "the hour you spend training the new helper",
        "what changes": "the model's weights",
        "good for": "a steady format (JSON), a house style, behaviour too long to spell out, a narrow new skill",
        "limits": "needs prepared data; does not add reliable facts or cure hallucination; can cost general ability",
        "cost": "data work and training up front; shorter prompts afterwards",
    },
    {
        "approach": "agents / tools",
        "analogy": "the helper calling the repair person",
        "what changes": "what the model can do: it calls functions and reads their results",
        "good for": "live data and actions: look up an order, open a return",
        "limits": "more moving parts; every tool call costs a round trip",
        "cost": "building and securing the tools",
    },
]


def approaches():
    """Prompting, retrieval, fine-tuning and agents side by side, with the helper analogy."""
    import pandas as pd

    return pd.DataFrame(_APPROACHES)


#: Dated events in OpenAI's fine-tuning offering. ``confirmed``: "yes" = checked against the
#: source (or a verbatim copy or translation of it) when this was written; "partly" = part of the
#: claim checked, see ``note``; "secondary" = only reports by others were found.
LAUNCH_POST = "https://openai.com/index/gpt-3-5-turbo-fine-tuning-and-api-updates/"
APRIL_2024_POST = ("https://openai.com/index/introducing-improvements-to-the-fine-tuning-api-and-expanding-our-"
                   "custom-models-program/")
DEPRECATIONS = "https://developers.openai.com/api/docs/deprecations"
TIMELINE = [
    {"date": "2023-08-22", "event": "GPT-3.5 Turbo fine-tuning launches",
     "detail": "supervised fine-tuning of gpt-3.5-turbo with 4K tokens per example ('double our previous "
               "fine-tuned models'); early testers cut prompt size by up to 90%; training data passes through "
               "the Moderation API and a GPT-4-powered moderation system; data sent in and out of the fine-tuning "
               "API stays the customer's and is not used to train other models; babbage-002 and davinci-002 "
               "offered as the new fine-tunable base models",
     "source": LAUNCH_POST, "confirmed": "yes",
     "note": "OpenAI, 'GPT-3.5 Turbo fine-tuning and API updates'; read in a summary and a translation of the post"},
    {"date": "2024-01-04", "event": "Original GPT-3 base models shut down",
     "detail": "ada, babbage, curie and davinci -- the models of the first fine-tuning API -- are turned off; "
               "babbage-002 and davinci-002 replace them as fine-tunable base models",
     "source": LAUNCH_POST, "confirmed": "yes",
     "note": "the date as announced in the launch post (read in a translation); also on the deprecations page"},
    {"date": "2024-04-04", "event": "Fine-tuning API improvements",
     "detail": "epoch-based checkpoints, full-validation-set metrics, a side-by-side comparative playground, "
               "third-party integrations (Weights & Biases first), hyperparameters configurable in the dashboard, "
               "dashboard improvements; in the Custom Models program, assisted fine-tuning (including PEFT methods) "
               "and custom-trained models",
     "source": APRIL_2024_POST, "confirmed": "yes",
     "note": "OpenAI, 'Introducing improvements to the fine-tuning API and expanding our custom models program'; "
             "read in a translation of the post; checkpoints with full_valid_loss and the wandb integration are "
             "also in the API reference"},
    {"date": "2024-08-12", "event": "Indeed case study",
     "detail": "a fine-tuned smaller GPT model matched their few-shot results 'with 60% fewer tokens'",
     "source": "https://openai.com/index/indeed/", "confirmed": "yes", "note": ""},
    {"date": "2024-08-20", "event": "GPT-4o fine-tuning",
     "detail": "gpt-4o-2024-08-06 can be fine-tuned; 1M free training tokens a day until 2024-09-23",
     "source": "https://openai.com/index/gpt-4o-fine-tuning/", "confirmed": "secondary",
     "note": "date and free-token offer from reports of the announcement; the post itself was not retrieved"},
    {"date": "2024-12-17", "event": "Preference fine-tuning (DPO)",
     "detail": "direct preference optimisation: pairs of a preferred and a non-preferred answer",
     "source": "https://openai.com/index/o1-and-new-tools-for-developers/", "confirmed": "yes",
     "note": "read in a translated copy of the post"},
    {"date": "2026-05-07", "event": "Self-serve fine-tuning wind-down announced",
     "detail": "developers notified; organisations that had never fine-tuned can no longer start jobs; "
               "inference on fine-tuned models continues until their base model is retired",
     "source": DEPRECATIONS, "confirmed": "partly",
     "note": "the notice and its date are on the deprecations page; the per-group rules from reports of it"},
    {"date": "2026-07-02", "event": "Inactive organisations lose new jobs",
     "detail": "no new jobs for organisations without fine-tuned-model inference in the previous 60 days",
     "source": DEPRECATIONS, "confirmed": "secondary",
     "note": "from reports citing the deprecations page"},
    {"date": "2026-10-23", "event": "o4-mini and gpt-4.1-nano shut down",
     "detail": "the base models and their fine-tunes stop answering; reinforcement fine-tuning (o4-mini) ends",
     "source": DEPRECATIONS, "confirmed": "partly",
     "note": "both dates as ftkit's catalog records them from the deprecations page (gpt-4.1-nano: notice of "
             "2026-04-22); not re-read for this table"},
    {"date": "2027-01-06", "event": "Last day for new fine-tuning jobs",
     "detail": "existing customers can no longer create fine-tuning jobs after this date",
     "source": DEPRECATIONS, "confirmed": "secondary",
     "note": "from several reports citing the deprecations page and OpenAI's email"},
    {"date": "2027-01-14", "event": "GPT-4o / 4o-mini / 4.1 / 4.1-mini snapshots shut down",
     "detail": "gpt-4o-2024-08-06, gpt-4o-2024-11-20, gpt-4o-mini-2024-07-18, gpt-4.1(-mini)-2025-04-14 and "
               "the fine-tuned models built on them",
     "source": DEPRECATIONS, "confirmed": "secondary",
     "note": "from a mirror of the deprecations page (announced 2026-10-14) and reports"},
]


def timeline():
    """OpenAI fine-tuning from the 2023 launch to the 2026-2027 wind-down, each row with its source."""
    import pandas as pd

    frame = pd.DataFrame(TIMELINE)
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


#: Published figures about shorter prompts, exactly as stated, with where they come from.
CASE_FIGURES = [
    {"who": "OpenAI's early testers (GPT-3.5 Turbo fine-tuning)", "figure": "prompt size reduced by up to 90%",
     "what": "fine-tuning instructions into the model instead of the prompt", "date": "2023-08-22",
     "source": LAUNCH_POST, "confirmed": "yes"},
    {"who": "Indeed", "figure": "prompt tokens reduced by 80%; from under 1 million to about 20 million messages a month",
     "what": "fine-tuned GPT-3.5 Turbo for the job recommendations it sends job seekers",
     "date": "2024-04-04",
     "source": APRIL_2024_POST, "confirmed": "yes"},
    {"who": "Indeed", "figure": "60% fewer tokens, similar results",
     "what": "a fine-tuned smaller GPT model replacing few-shot prompting for job-match explanations",
     "date": "2024-08-12", "source": "https://openai.com/index/indeed/", "confirmed": "yes"},
]


def case_figures():
    """Published case figures, with source and whether we could confirm them."""
    import pandas as pd

    return pd.DataFrame(CASE_FIGURES)

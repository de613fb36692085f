"""Hyperparameters at a glance: what each one does, its hosted range and "auto", the local
server's value, and what to try first when a run under- or overfits.

The hosted ranges are read from OpenAI's spec (the request schemas ftkit checks every job
against, ``ftkit/local/api/openapi_requests.json``) and the descriptions quote it; the local values
come from the method registry (:mod:`ftkit.methods`) and the LoRA recipe the trainer uses
(:data:`ftkit.local.jobs.training.recipe.RECIPE`), so the table cannot drift from what runs.

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from .. import lifecycle, methods

__all__ = ["hyperparameter_table"]

_SPEC_SCHEMAS = Path(__file__).resolve().parents[1] / "local" / "api" / "openapi_requests.json"

#: The spec's own description of each hyperparameter (``FineTuneSupervisedHyperparameters``).
SPEC_DESCRIPTIONS = {
    "n_epochs": "The number of epochs to train the model for. An epoch refers to one full cycle through the "
                "training dataset.",
    "batch_size": "Number of examples in each batch. A larger batch size means that model parameters are updated "
                  "less frequently, but with lower variance.",
    "learning_rate_multiplier": "Scaling factor for the learning rate. A smaller learning rate may be useful to "
                                "avoid overfitting.",
}

#: What to try first (this course's advice; the spec's own hints are quoted above).
_ADVICE = {
    "n_epochs": ("1-2 more epochs", "fewer epochs -- or keep the checkpoint with the lowest validation loss"),
    "batch_size": ("a smaller batch: more updates per epoch", "a larger batch: fewer, steadier updates"),
    "learning_rate_multiplier": ("raise it (x2)", "lower it (/2 to /4)"),
    "lora_rank": ("a higher rank (more trainable parameters)", "a lower rank; first the epochs and learning rate"),
    "lora_alpha": ("leave it: alpha / rank scales the update like the learning rate -- tune that instead",
                   "leave it: tune the learning rate instead"),
}


@cache
def _spec_schema(method: str) -> dict:
    defs = json.loads(_SPEC_SCHEMAS.read_text(encoding="utf-8"))["$defs"]
    name = {lifecycle.SUPERVISED: "FineTuneSupervisedHyperparameters", lifecycle.DPO: "FineTuneDPOHyperparameters",
            lifecycle.REINFORCEMENT: "FineTuneReinforcementHyperparameters"}[method]
    return defs[name]["properties"]


def spec_range(method: str, name: str) -> str:
    """A hyperparameter's range in OpenAI's spec, e.g. ``"1..50 or 'auto'"``, ``"> 0 or 'auto'"``."""
    for option in _spec_schema(method)[name].get("anyOf", []):
        if option.get("type") in ("integer", "number"):
            low = f"> {option['exclusiveMinimum']:g}" if "exclusiveMinimum" in option else None
            if low is None and "minimum" in option:
                low = f"{option['minimum']:g}"
            high = option.get("maximum")
            if high is not None:
                return f"{low}..{high:g} or 'auto'"
            return f"{low} (no maximum) or 'auto'" if low and low.startswith(">") else f">= {low} or 'auto'"
    raise ValueError(f"{name}: no numeric range in the spec's schema")


def hyperparameter_table(method: str = lifecycle.SUPERVISED):
    """One row per hyperparameter of a supervised job on the local server -- ``n_epochs``,
    ``batch_size``, ``learning_rate_multiplier`` (the API's) and ``lora_rank``, ``lora_alpha``
    (the local trainer's LoRA recipe; not an API parameter) -- with columns ``what it does``,
    ``hosted range`` (OpenAI's spec), ``hosted 'auto'``, ``local server`` (its "auto" rule or
    fixed value), ``if it underfits, try`` and ``if it overfits, try``.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    from ..local.jobs.training.recipe import RECIPE

    spec = methods.get(method)
    base_lr = spec.base_learning_rate
    rule = spec.rules
    rows = [
        {"hyperparameter": "n_epochs", "what it does": SPEC_DESCRIPTIONS["n_epochs"],
         "hosted range": spec_range(method, "n_epochs"),
         "hosted 'auto'": "picked from the file's size; the OpenAI cookbook's estimate (notebook 03): 3, "
                          f"raised for small files to about {methods.MIN_TARGET_EXAMPLES} example-passes",
         "local server": f"'auto' = the same estimate ({rule['n_epochs'].low:g}..{rule['n_epochs'].high:g} allowed)"},
        {"hyperparameter": "batch_size", "what it does": SPEC_DESCRIPTIONS["batch_size"],
         "hosted range": spec_range(method, "batch_size"),
         "hosted 'auto'": "picked by the platform; OpenAI does not publish how",
         "local server": f"'auto' = examples / 10, rounded up, within 1..{methods.MAX_BATCH_SIZE} (ftkit's rule)"},
        {"hyperparameter": "learning_rate_multiplier", "what it does": SPEC_DESCRIPTIONS["learning_rate_multiplier"],
         "hosted range": spec_range(method, "learning_rate_multiplier"),
         "hosted 'auto'": "picked by the platform; OpenAI does not publish how",
         "local server": f"'auto' = 1.0, times the LoRA base rate {base_lr:g}; warm-up, then linear decay to 0"},
        {"hyperparameter": "lora_rank", "what it does": "Rank of the LoRA adapter: how many directions each "
                                                        "adapted matrix may change in (trainable parameters grow "
                                                        "with it).",
         "hosted range": "not an API parameter", "hosted 'auto'": "not published",
         "local server": f"fixed: {RECIPE.rank}, on {len(RECIPE.target_modules)} projections per block"},
        {"hyperparameter": "lora_alpha", "what it does": "Scale of the adapter's update: the change is multiplied "
                                                         "by alpha / rank.",
         "hosted range": "not an API parameter", "hosted 'auto'": "not published",
         "local server": f"fixed: {RECIPE.alpha} (alpha / rank = {RECIPE.alpha / RECIPE.rank:g}), no dropout"},
    ]
    for row in rows:
        row["if it underfits, try"], row["if it overfits, try"] = _ADVICE[row["hyperparameter"]]
    return pd.DataFrame(rows).set_index("hyperparameter")

"""Preference tuning for a subjective goal: Lumenhive's house style, stated as a rule a program checks.

Taught in notebooks/06_preference_tuning.ipynb.

"Sounds like us" is a judgement; to measure whether preference tuning (DPO) moved a model toward
it, the course states the judgement as an **automatic rule** and applies it to answers on drafts
the model never saw. An answer follows the house style (:func:`check_house_style`) when

1. it **greets the customer by first name** -- its first line starts with "Hi", "Hello", "Hey"
   or "Dear" followed by the name given in the prompt;
2. it **signs off** with exactly ``— The Lumenhive team`` as its last line;
3. it is **under 80 words** in all (sign-off included; a word is a run of non-space characters);
4. it uses **plain words**: none of the support shorthand of the terse drafts (:data:`SHORTHAND`:
   "w/", "pls", "fw", "acct", "ETA", ...).

What the rule does *not* check, on purpose and by necessity: whether the facts are right, whether
there is exactly one clear next step, whether the tone is warm. The notebook shows where that
matters.

:func:`invented_details` finds numbers, amounts and order numbers in an answer that the prompt
never mentioned: the facts a style tuning does not fix. :data:`TONE_SETTINGS` and
:func:`tone_job` are the course's SFT-then-DPO run (reused when it exists with the same settings).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from . import lifecycle
from .under_the_hood import label_mask_html, label_mask_table  # noqa: F401 -- moved; re-exported for old imports

__all__ = [
    "HOUSE_STYLE_SYSTEM",
    "MAX_WORDS",
    "SHORTHAND",
    "SIGN_OFF",
    "TONE_SETTINGS",
    "StyleCheck",
    "ToneSettings",
    "check_house_style",
    "customer_of",
    "greeted_name",
    "house_style_scorer",
    "invented_details",
    "label_mask_html",
    "label_mask_table",
    "prompt_customer",
    "tone_job",
    "tone_settings",
]

SIGN_OFF = "— The Lumenhive team"
MAX_WORDS = 80
#: The system prompt of every house-style example (data/tone/): the style, in the model's words.
HOUSE_STYLE_SYSTEM = (
    "You are Lumenhive's support writer. Rewrite draft replies in the house style: greet the customer "
    "by first name, say what happened in plain words, give one clear next step, stay under 80 words, "
    "and sign off with '— The Lumenhive team'."
)
#: Support shorthand that the terse drafts use and the house style does not (case-insensitive,
#: whole words), besides a number glued to a unit ("3d", "1h", "2yr").
SHORTHAND = (
    "w/", "w/o", "pls", "plz", "fw", "acct", "addr", "req", "reqs", "eta", "sub", "dup", "approx", "asap",
    "fyi", "n/a", "btw", "thx", "msg", "notif", "notifs", "cfg", "repro", "atm", "avail", "diff", "prev",
    "btn", "batt", "regen", "dedupe", "cam", "cams", "sec", "rcpt", "adj", "yr", "yrs", "mo", "min", "mins", "hr", "hrs", "ack", "tbd", "rma", "fwd", "fwd'd",
)
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|dear)\s+([^\W\d_][\w'-]*)", re.IGNORECASE)
_WORD = re.compile(r"\S+")
_SHORTHAND = re.compile(
    r"(?<![\w'-])(?:" + "|".join(re.escape(s) for s in sorted(SHORTHAND, key=len, reverse=True)) + r")(?![\w/'-])"
    r"|\b\d+(?:d|h|hr|hrs|min|mins|mo|yr|yrs)\b",  # "3d", "1h", "2yr": a number glued to a unit
    re.IGNORECASE)
# Numbers as a reader sees them: amounts ($14.99), counts, dates, versions (2.8.1), order numbers.
_DETAIL = re.compile(r"\$?\d+(?:[.,:]\d+)*%?|LH-\d+")


@dataclass(frozen=True)
class StyleCheck:
    """One answer against the house-style rule: each check, and ``ok`` when all of them pass.

    ``greets_by_name`` is None when the prompt names no customer (then it cannot be checked and
    ``ok`` ignores it).
    """

    greets_by_name: bool | None
    signs_off: bool
    under_max_words: bool
    plain_words: bool
    words: int
    shorthand: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return (self.greets_by_name is not False) and self.signs_off and self.under_max_words and self.plain_words

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the checks this answer fails."""
        checks = {"greets_by_name": self.greets_by_name, "signs_off": self.signs_off,
                  "under_max_words": self.under_max_words, "plain_words": self.plain_words}
        return tuple(name for name, passed in checks.items() if passed is False)


def greeted_name(answer: str | None) -> str | None:
    """The name after the greeting on the answer's first line ("Hi Maya, ..." -> "Maya"), or None."""
    if not isinstance(answer, str):
        return None
    match = _GREETING.match(answer)
    return match.group(1) if match else None


def check_house_style(answer: str | None, first_name: str | None = None) -> StyleCheck:
    """Check ``answer`` against the house-style rule (module docstring). ``first_name``: the
    customer's first name as given in the prompt (None: the greeting is not checked).

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    text = answer if isinstance(answer, str) else ""
    words = len(_WORD.findall(text))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    greets = None
    if first_name:
        name = greeted_name(text)
        greets = name is not None and name.casefold() == first_name.casefold()
    shorthand = tuple(dict.fromkeys(m.group(0).lower() for m in _SHORTHAND.finditer(text)))
    return StyleCheck(
        greets_by_name=greets,
        signs_off=bool(lines) and lines[-1] == SIGN_OFF,
        under_max_words=0 < words < MAX_WORDS,
        plain_words=bool(text.strip()) and not shorthand,
        words=words,
        shorthand=shorthand,
    )


def customer_of(example: dict) -> str | None:
    """The customer's first name an example's prompt gives (its ``customer`` field), or None."""
    name = example.get("customer")
    return name if isinstance(name, str) and name else None


_NAMED_PROMPT = (re.compile(r"\breply to ([A-Z][\w'-]*)"),  # "Rewrite this reply to Maya in our house style"
                 re.compile(r"^([A-Z][\w'-]*) (?:asked|reported|received|was|wants|could|got|has|hit)\b"))


def prompt_customer(messages: list[dict]) -> str | None:
    """The customer's first name in a house-style prompt of the course's data ("Rewrite this reply
    to Maya ...", or "Maya asked ... Draft a reply."), or None when the prompt names nobody.

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    for m in messages:
        if m.get("role") != "user" or not isinstance(m.get("content"), str):
            continue
        for pattern in _NAMED_PROMPT:
            match = pattern.search(m["content"])
            if match:
                return match.group(1)
    return None


def house_style_scorer(prediction, reference, example: dict) -> dict:
    """An :func:`ftkit.evaluate.evaluate` scorer: the rule's checks as columns, ``house_style``
    (all pass), the ``words`` count, ``invents_name`` (greets someone the prompt does not name)
    and ``invented_details`` (numbers the prompt does not contain).

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    name = customer_of(example)
    check = check_house_style(prediction, name)
    greeted = greeted_name(prediction)
    prompt = " ".join(str(m.get("content") or "") for m in example.get("messages", [])
                      if m.get("role") in ("user", "assistant", "system") and m is not _last_assistant(example))
    return {
        "house_style": check.ok,
        "greets_by_name": check.greets_by_name,
        "signs_off": check.signs_off,
        "under_80_words": check.under_max_words,
        "plain_words": check.plain_words,
        "words": check.words,
        "invents_name": greeted is not None and (name is None or greeted.casefold() != name.casefold()),
        "invented_details": bool(invented_details(prediction, prompt)),
    }


def _last_assistant(example: dict):
    messages = example.get("messages") or []
    return next((m for m in reversed(messages) if m.get("role") == "assistant"), None)


def invented_details(answer: str | None, prompt: str) -> list[str]:
    """Numbers, amounts, times and order numbers in ``answer`` that do not occur in ``prompt``:
    details the model made up (a style is not a source of facts).

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    if not isinstance(answer, str):
        return []
    known = {m.group(0).lstrip("$").rstrip("%") for m in _DETAIL.finditer(prompt)}
    out = []
    for m in _DETAIL.finditer(answer):
        value = m.group(0).lstrip("$").rstrip("%").rstrip(".,:")
        if value and value not in known and m.group(0) not in out:
            out.append(m.group(0))
    return out


# ---------------------------------------------------------------------------------------------
# The course's SFT-then-DPO run on the house style (notebook 06)

SFT, DPO = lifecycle.SUPERVISED, lifecycle.DPO


@dataclass(frozen=True)
class ToneSettings:
    """How notebook 06 tunes the house style, in one place: supervised fine-tuning on
    ``data/tone/train.jsonl``, then DPO on ``data/tone/preference_train.jsonl`` (validated on
    ``preference_validation.jsonl``), measured on the held-out drafts of ``data/tone/test.jsonl``.

    ``*_examples`` / ``*_pairs`` / ``test_prompts``: how many of the first lines to use (None:
    all). Hyperparameters left at None are "auto". :func:`tone_job` runs (or reuses) a stage
    with these settings.
    """

    mode: str  # "quick" or "full"
    sft_examples: int | None = None
    sft_epochs: int | None = None
    sft_learning_rate_multiplier: float | None = None
    dpo_pairs: int | None = None
    dpo_validation_pairs: int | None = None
    dpo_epochs: int | None = None
    dpo_batch_size: int | None = None
    dpo_learning_rate_multiplier: float | None = None
    beta: float | None = None
    test_prompts: int | None = None
    max_tokens: int = 120  # room for a whole reply: a cut-off reply loses its sign-off
    seed: int = 42
    why: str = ""

    # -- data ----------------------------------------------------------------------------------

    @staticmethod
    def _read(name: str, n: int | None) -> list[dict]:
        from .course import data_path
        from .data import read_jsonl

        rows = list(read_jsonl(data_path("tone", name)))
        return rows if n is None else rows[:n]

    def sft_training_examples(self) -> list[dict]:
        return self._read("train.jsonl", self.sft_examples)

    def preference_pairs(self) -> list[dict]:
        return self._read("preference_train.jsonl", self.dpo_pairs)

    def validation_pairs(self) -> list[dict]:
        return self._read("preference_validation.jsonl", self.dpo_validation_pairs)

    def test_examples(self) -> list[dict]:
        """The held-out drafts (named customers first, then the name-less ones), ``test_prompts`` of
        them spread over every situation."""
        rows = self._read("test.jsonl", None)
        named = [r for r in rows if r.get("customer")]
        nameless = [r for r in rows if not r.get("customer")]
        if self.test_prompts is None:
            return named + nameless
        keep = max(1, round(self.test_prompts * len(named) / len(rows)))
        return _spread(named, keep) + _spread(nameless, self.test_prompts - keep)

    # -- jobs ----------------------------------------------------------------------------------

    def hyperparameters(self, stage: str) -> dict:
        """The hyperparameters that are set for ``stage`` ("supervised" or "dpo"); the others are "auto"."""
        if stage == SFT:
            hp = {"n_epochs": self.sft_epochs, "learning_rate_multiplier": self.sft_learning_rate_multiplier}
        else:
            hp = {"n_epochs": self.dpo_epochs, "batch_size": self.dpo_batch_size,
                  "learning_rate_multiplier": self.dpo_learning_rate_multiplier, "beta": self.beta}
        return {k: v for k, v in hp.items() if v is not None}

    def recipe(self, stage: str) -> str:
        """A short hash of the stage's settings and data: a job is reused only for the same recipe
        (the DPO recipe includes the SFT one: new SFT settings mean a new DPO job too)."""
        data = [self.sft_training_examples()]
        parts = [self.mode, SFT, self.hyperparameters(SFT), self.seed]
        if stage == DPO:
            data += [self.preference_pairs(), self.validation_pairs()]
            parts += [DPO, self.hyperparameters(DPO)]
        parts.append(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest())
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def metadata(self, stage: str) -> dict[str, str]:
        """The job's metadata: how :func:`tone_job` finds it again."""
        return {"course": "ftkit", "lesson": "06", "stage": stage, "mode": self.mode, "recipe": self.recipe(stage)}

    def suffix(self, stage: str) -> str:
        return "tone-sft" if stage == SFT else "tone-dpo"

    def job_recipe(self, stage: str, model: str | None = None):
        """The run of ``stage`` as a :class:`ftkit.jobs.Recipe` (what :func:`tone_job` ensures):
        SFT on the base model, or DPO on ``model`` (the supervised model) with the validation pairs."""
        from .jobs import Recipe

        meta = self.metadata(stage)
        files = ({"training": self.sft_training_examples(), "training_filename": f"tone-sft-{self.mode}.jsonl"}
                 if stage == SFT else
                 {"training": self.preference_pairs(), "training_filename": f"tone-pairs-{self.mode}.jsonl",
                  "validation": self.validation_pairs(), "validation_filename": "tone-pairs-validation.jsonl"})
        return Recipe(f"the house-style {stage} run ({self.mode} mode)", method=stage,
                      model=model if stage == DPO else None, hyperparameters=self.hyperparameters(stage),
                      suffix=self.suffix(stage), seed=self.seed,
                      labels={k: v for k, v in meta.items() if k != "recipe"}, fingerprint=meta["recipe"],
                      description=self.why, **files)


def _spread(rows: list, n: int) -> list:
    """``n`` of ``rows``, evenly spaced and shifted a little each time (so a small sample covers the
    situations and the prompt forms, which come in a fixed order)."""
    n = max(0, min(n, len(rows)))
    step = max(1, len(rows) // n) if n else 1
    return [rows[min(len(rows) - 1, i * len(rows) // n + i % step)] for i in range(n)] if n else []


#: Full: every example and pair, "auto" epochs (3 for 36 examples, 3 for 48 pairs), all 48
#: held-out drafts. Quick (CI, a first try): the same steps on less -- 10 SFT examples once and 10
#: DPO pairs once (each the API's smallest training file), both at twice the learning rate, 2
#: validation pairs, 4 held-out drafts (3 naming the customer, 1 naming nobody): every cell runs,
#: far too few drafts to measure a shift.
TONE_SETTINGS = {
    "full": ToneSettings("full", why="36 SFT examples, then 48 DPO pairs (auto epochs and batch size, beta 0.1); "
                                     "12 validation pairs; 48 held-out drafts"),
    "quick": ToneSettings("quick", sft_examples=10, sft_epochs=1, sft_learning_rate_multiplier=2.0, dpo_pairs=10,
                          dpo_validation_pairs=2, dpo_epochs=1, dpo_batch_size=5, dpo_learning_rate_multiplier=2.0,
                          test_prompts=4,
                          why="10 SFT examples x 1 epoch, then 10 DPO pairs x 1 epoch; 2 validation pairs; "
                              "4 held-out drafts"),
}


def tone_settings(quick: bool | None = None) -> ToneSettings:
    """The settings for quick mode (``quick=True``) or full mode; default: ``ftkit.course.QUICK``."""
    from .course import QUICK

    return TONE_SETTINGS["quick" if (QUICK if quick is None else quick) else "full"]


def tone_job(client, stage: str, *, model: str | None = None, settings: ToneSettings | None = None,
             timeout: float | None = 3 * 3600, verbose: bool = True):
    """A succeeded job of one stage of the course's house-style run: ``"supervised"`` (on the base
    model) or ``"dpo"`` (on ``model``, the supervised model). Reuses a finished job with the same
    settings (:meth:`ToneSettings.metadata`), waits for one under way, or runs it:
    :func:`ftkit.jobs.ensure_job` with :meth:`ToneSettings.job_recipe` (upload, create_job,
    watch). Returns the ``FineTuningJob``.

    Taught in notebooks/06_preference_tuning.ipynb (which runs the DPO stage step by step).
    """
    from .jobs import ensure_job

    settings = settings or tone_settings()
    if stage == DPO and not model:
        raise ValueError("a DPO stage starts from the supervised model: pass model=<its fine-tuned model>")
    return ensure_job(client, settings.job_recipe(stage, model), timeout=timeout, verbose=verbose)

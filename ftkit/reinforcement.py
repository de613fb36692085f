"""Reinforcement fine-tuning (RFT) of the course's ticket-triage model with OpenAI's graders.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

The triage answer is one line of JSON with three fields (``category``, ``urgency``,
``product``); each training line of an RFT file carries the right labels as extra fields for the
grader to read (``{{ item.category }}``). This module holds what the notebook and its solutions
share:

* the **graders as data** (plain dicts in the hosted API's shape): one ``string_check`` per field
  (:func:`field_grader`), their average as a ``multi`` grader (:func:`partial_credit_grader`, the
  job's reward), an exact-match ``python`` grader (:data:`EXACT_MATCH_SOURCE`) and a
  ``score_model`` judge (:func:`judge_grader`);
* a few **sample answers** to try the graders on (:func:`sample_answers`);
* :data:`RFT_SETTINGS` / :func:`rft_settings`: the lesson's RFT run in quick and full mode
  (which tickets, the hyperparameters, how many test tickets), and :func:`rft_job`, which runs
  it on the supervised model of notebook 04 -- or reuses a finished job with the same settings,
  found by its metadata (:func:`ftkit.jobs.find_job`);
* :func:`judge_cost`: what a model grader's tokens would cost on a hosted judge
  (``ftkit.catalog`` prices) and :func:`hosted_rft_cost`: what OpenAI billed for RFT ($ per
  training hour).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from . import lifecycle

__all__ = [
    "EXACT_MATCH_SOURCE",
    "FIELDS",
    "RFT_SETTINGS",
    "RftSettings",
    "eval_items",
    "exact_match_grader",
    "field_grader",
    "hosted_rft_cost",
    "judge_cost",
    "judge_grader",
    "labels",
    "partial_credit_grader",
    "rft_job",
    "rft_settings",
    "sample_answers",
]

RFT = lifecycle.REINFORCEMENT
#: The three fields of a triage answer, in the trained order.
FIELDS = ("category", "urgency", "product")


def labels() -> dict[str, list[str]]:
    """The allowed values of each field (``data/tickets/prompts.json``)."""
    from .course import data_path

    return json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))["labels"]


# ---------------------------------------------------------------------------------------------
# The graders, as the hosted API's JSON


def field_grader(field: str) -> dict:
    """A ``string_check`` grader: 1 when the answer's JSON ``field`` equals the line's, else 0.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    return {"type": "string_check", "name": field, "operation": "eq",
            "input": "{{ sample.output_json." + field + " }}", "reference": "{{ item." + field + " }}"}


def eval_items(examples: list[dict]) -> list[dict]:
    """The rows the field graders read, one per chat example: ``ticket`` (the user's message) and
    the right labels of :data:`FIELDS` (from the assistant's JSON answer). The data of notebook
    07's Evals API run (``{"item": row}`` each) and of its Promptfoo test cases
    (:func:`ftkit.promptfoo.test_cases`).

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    rows = []
    for ex in examples:
        answer = json.loads(ex["messages"][-1]["content"])
        rows.append({"ticket": ex["messages"][-2]["content"], **{f: answer[f] for f in FIELDS}})
    return rows


def partial_credit_grader(fields=FIELDS) -> dict:
    """A ``multi`` grader: one :func:`field_grader` per field, averaged by ``calculate_output``
    -- a third of the reward per right field, so an answer with two right fields beats one with
    none (the signal RFT learns from). ``graders`` is an object of named graders, as in OpenAI's
    graders guide; the names are the formula's variables.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    fields = list(fields)
    return {"type": "multi", "name": "triage_fields",
            "graders": {f: field_grader(f) for f in fields},
            "calculate_output": f"({' + '.join(fields)}) / {len(fields)}"}


#: A ``python`` grader's source: 1.0 only for the exact trained format -- one JSON object with
#: exactly the three keys, in order, every value right -- else 0.0. It runs in the graders'
#: sandbox (a separate process with a time and memory limit and no network). Each field is read as
#: ``item["category"]`` (a constant key), so the validator can tell which fields the lines need.
EXACT_MATCH_SOURCE = '''\
import json


def grade(sample, item):
    try:
        answer = json.loads(sample["output_text"])
    except ValueError:
        return 0.0
    if not isinstance(answer, dict) or list(answer) != ["category", "urgency", "product"]:
        return 0.0
    right = (answer["category"] == item["category"] and answer["urgency"] == item["urgency"]
             and answer["product"] == item["product"])
    return 1.0 if right else 0.0
'''


def exact_match_grader() -> dict:
    """The ``python`` grader with :data:`EXACT_MATCH_SOURCE`.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    return {"type": "python", "name": "exact_match", "source": EXACT_MATCH_SOURCE}


JUDGE_SYSTEM = (
    "You check the triage of a customer-support ticket. The correct triage is given. "
    "Score the answer from 0 to 1: 1 if its category, urgency and product all match the correct ones, "
    "a third for each field that matches, 0 if it is not a JSON triage at all."
)


def judge_grader(model: str, *, max_tokens: int = 16) -> dict:
    """A ``score_model`` grader: ``model`` (any model the server serves, e.g. the base model)
    reads the correct labels and the answer and gives a score from 0 to 1, greedily. The judge
    answers ``{"result": score, "steps": [...]}`` with the score first, so ``max_tokens`` can cut
    its reasoning short: a small judge's steps would cost time and say little.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    return {"type": "score_model", "name": "judge", "model": model, "range": [0, 1],
            "input": [{"role": "system", "content": JUDGE_SYSTEM},
                      {"role": "user", "content": "Correct triage: category={{ item.category }}, "
                                                  "urgency={{ item.urgency }}, product={{ item.product }}\n"
                                                  "Answer: {{ sample.output_text }}"}],
            "sampling_params": {"temperature": 0, "max_completions_tokens": max_tokens}}


def sample_answers(item: dict) -> dict[str, str]:
    """Answers a model might give for a ticket whose right labels are ``item``'s: right, one or
    two fields wrong, a label that does not exist, prose, cut-off JSON. ``{description: answer}``.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    allowed = labels()
    right = {f: item[f] for f in FIELDS}

    def other(field: str) -> str:
        return next(v for v in allowed[field] if v != item[field])

    one_wrong = {**right, "urgency": other("urgency")}
    two_wrong = {**right, "urgency": other("urgency"), "product": other("product")}
    return {
        "right": json.dumps(right),
        "urgency wrong": json.dumps(one_wrong),
        "urgency and product wrong": json.dumps(two_wrong),
        "keys in another order": json.dumps({"product": item["product"], "category": item["category"],
                                             "urgency": item["urgency"]}),
        "a label that does not exist": json.dumps({**right, "category": "complaint"}),
        "prose": f"This is a {item['category']} ticket about the {item['product']}, {item['urgency']} urgency.",
        "cut-off JSON": json.dumps(right)[:30],
    }


# ---------------------------------------------------------------------------------------------
# Cost


def judge_cost(usage_per_model: dict, priced_as: str = "gpt-4.1-mini", *, on=None) -> dict:
    """What a model grader's tokens (``model_grader_token_usage_per_model`` of a grader run, summed
    over runs) would cost on the hosted model ``priced_as``, at its base input and output prices
    in ftkit's catalog on date ``on`` (default today). ``{"prompt_tokens", "completion_tokens",
    "priced_as", "usd"}``.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    from . import catalog

    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usage_per_model.values())
    completion = sum(int(u.get("completion_tokens") or 0) for u in usage_per_model.values())
    entry = catalog.lookup(priced_as, on)
    usd = (prompt * entry.base_input_usd_per_1m + completion * entry.base_output_usd_per_1m) / 1e6
    return {"prompt_tokens": prompt, "completion_tokens": completion, "priced_as": entry.snapshot, "usd": usd}


def hosted_rft_cost(wall_seconds: float, model: str = "o4-mini", *, on=None) -> dict:
    """OpenAI's RFT billing rule applied to ``wall_seconds`` of training: the per-hour price of
    ``model`` in ftkit's catalog ($100 an hour for o4-mini, prorated to the second; model-grader
    tokens on top). ``{"model", "usd_per_hour", "hours", "usd", "source"}``. Price ``on`` a date
    the model was offered (default: the last day its training was open).

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    import datetime as dt

    from . import catalog

    if on is None:
        last = catalog.lookup(model).training_ends
        on = (last - dt.timedelta(days=1)) if last else None
    entry = catalog.lookup(model, on)
    if entry.training_usd_per_hour is None:
        raise ValueError(f"{entry.snapshot} is not billed per training hour in ftkit's catalog")
    hours = wall_seconds / 3600
    return {"model": entry.snapshot, "usd_per_hour": entry.training_usd_per_hour, "hours": hours,
            "usd": hours * entry.training_usd_per_hour, "source": entry.source.split(" ; ")[0]}


# ---------------------------------------------------------------------------------------------
# The lesson's RFT run


@dataclass(frozen=True)
class RftSettings:
    """How notebook 07 runs reinforcement fine-tuning on the triage model, in one place.

    ``train_prompts`` / ``validation_prompts``: how many training / validation tickets
    (``data/tickets/tickets.csv``, in file order) become RFT lines; ``test_tickets``: how many
    test tickets the before/after comparison answers (None: all). Hyperparameters left at None
    are "auto". ``compute_multiplier`` sets the samples per prompt (4 x multiplier on the local
    server). :func:`rft_job` runs (or reuses) the job with these settings.
    """

    mode: str  # "quick" or "full"
    train_prompts: int | None = None
    validation_prompts: int | None = None
    n_epochs: int | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    compute_multiplier: float | None = None
    eval_interval: int | None = None
    eval_samples: int | None = None
    test_tickets: int | None = None
    seed: int = 42
    why: str = ""

    # -- data ----------------------------------------------------------------------------------

    @staticmethod
    def _tickets(split: str):
        import pandas as pd

        from .course import data_path

        tickets = pd.read_csv(data_path("tickets", "tickets.csv"))
        return tickets[tickets["split"] == split]

    def _examples(self, split: str, n: int | None) -> list[dict]:
        from .course import data_path
        from .data import build_reinforcement_examples

        prompts = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))
        rows = self._tickets(split)
        rows = rows if n is None else rows.head(n)
        return build_reinforcement_examples(rows, system=prompts["short_system"], user=prompts["user_template"],
                                            fields=list(FIELDS))

    def training_examples(self) -> list[dict]:
        """The RFT training lines: the ticket as the prompt, its labels as grader fields."""
        return self._examples("train", self.train_prompts)

    def validation_examples(self) -> list[dict]:
        return self._examples("validation", self.validation_prompts)

    def test_examples(self) -> list[dict]:
        """Test tickets as chat examples (``data/tickets/test.jsonl``, with their ids) for
        :func:`ftkit.evaluate.evaluate`: ``test_tickets`` of them, spread over the file."""
        from .course import data_path
        from .evaluate import load_examples

        tickets = self._tickets("test")
        examples = load_examples(data_path("tickets", "test.jsonl"), ids=tickets["id"].tolist())
        if self.test_tickets is None or self.test_tickets >= len(examples):
            return examples
        step = len(examples) / self.test_tickets
        return [examples[int(i * step)] for i in range(self.test_tickets)]

    # -- the job -------------------------------------------------------------------------------

    @property
    def hyperparameters(self) -> dict:
        """The hyperparameters that are set (the others are "auto")."""
        hp = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
              "learning_rate_multiplier": self.learning_rate_multiplier,
              "compute_multiplier": self.compute_multiplier, "eval_interval": self.eval_interval,
              "eval_samples": self.eval_samples}
        return {k: v for k, v in hp.items() if v is not None}

    def method(self, grader: dict | None = None) -> dict:
        """The job's ``method``: ``{"type": "reinforcement", "reinforcement": {"grader": ...,
        "hyperparameters": ...}}`` (default grader: :func:`partial_credit_grader`)."""
        return {"type": RFT, RFT: {"grader": grader or partial_credit_grader(),
                                   "hyperparameters": self.hyperparameters}}

    def recipe(self, model: str, grader: dict | None = None) -> str:
        """A short hash of the settings, the data, the grader and the starting model: a job is
        reused only for the same recipe."""
        data = [self.training_examples(), self.validation_examples()]
        parts = [self.mode, model, self.method(grader), self.seed,
                 hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def metadata(self, model: str, grader: dict | None = None) -> dict[str, str]:
        """The job's metadata: how :func:`rft_job` finds it again."""
        return {"course": "ftkit", "lesson": "07", "stage": RFT, "mode": self.mode,
                "recipe": self.recipe(model, grader)}

    suffix = "triage-rft"

    def job_recipe(self, model: str, grader: dict | None = None):
        """The RFT run on ``model`` as a :class:`ftkit.jobs.Recipe` (what :func:`rft_job` ensures)."""
        from .jobs import Recipe

        meta = self.metadata(model, grader)
        return Recipe(f"the RFT run ({self.mode} mode)", self.training_examples(), f"tickets-rft-{self.mode}.jsonl",
                      validation=self.validation_examples(),
                      validation_filename=f"tickets-rft-validation-{self.mode}.jsonl", method=RFT, model=model,
                      hyperparameters=self.hyperparameters, grader=grader or partial_credit_grader(),
                      suffix=self.suffix, seed=self.seed,
                      labels={k: v for k, v in meta.items() if k != "recipe"}, fingerprint=meta["recipe"],
                      description=self.why)


#: Full: every training ticket once (259 prompts x 4 samples, batches of 4: 65 steps), the 40
#: validation tickets, 8 of them graded every 10 steps, all 101 test tickets. Quick (CI, a first
#: try): the same steps on 10 tickets (a training file needs at least 10 lines) -- 2 steps of 5
#: prompts x 2 samples (compute_multiplier 0.5: the smallest group with a spread), 2 validation
#: tickets -- and 8 test tickets: it shows every step and figure, too short to change the model
#: much. Measured on the course's 2-core machine (AMD EPYC, AVX2 without AVX512-BF16, so fp32;
#: idle, 2026-11-27) with 4 samples per prompt: the quick job took 88 s wall / 162 CPU-s (2 steps
#: of ~30 s: sampling 20 answers and one update each); 2 samples halve the sampling and the update.
#: The full run was not timed.
RFT_SETTINGS = {
    "full": RftSettings("full", n_epochs=1, batch_size=4, compute_multiplier=1.0, eval_interval=10,
                        eval_samples=8,
                        why="259 training tickets x 4 samples, 1 epoch, batches of 4; 40 validation tickets; "
                            "101 test tickets"),
    "quick": RftSettings("quick", train_prompts=10, validation_prompts=2, n_epochs=1, batch_size=5,
                         compute_multiplier=0.5, eval_interval=100, eval_samples=2, test_tickets=8,
                         why="10 training tickets x 2 samples, 1 epoch, batches of 5 (2 steps); 2 validation "
                             "tickets; 8 test tickets"),
}


def rft_settings(quick: bool | None = None) -> RftSettings:
    """The settings for quick mode (``quick=True``) or full mode; default: ``ftkit.course.QUICK``."""
    from .course import QUICK

    return RFT_SETTINGS["quick" if (QUICK if quick is None else quick) else "full"]


def rft_job(client, model: str, *, settings: RftSettings | None = None, grader: dict | None = None,
            timeout: float | None = 3 * 3600, verbose: bool = True):
    """A succeeded RFT job on ``model`` (the supervised triage model) with ``settings`` and
    ``grader`` (default :func:`partial_credit_grader`). Reuses a finished job with the same
    recipe (:meth:`RftSettings.metadata`), waits for one under way, or uploads the files with
    :func:`ftkit.jobs.upload` (validated with the grader's fields), creates the job with
    :func:`ftkit.jobs.create_job` and follows it with :func:`ftkit.jobs.watch` -- all through
    :func:`ftkit.jobs.ensure_job` with :meth:`RftSettings.job_recipe`.

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb (which runs the same steps one by one).
    """
    from .jobs import ensure_job

    settings = settings or rft_settings()
    return ensure_job(client, settings.job_recipe(model, grader), timeout=timeout, verbose=verbose)

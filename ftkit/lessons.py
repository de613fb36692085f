"""The course's lessons sized in one place: how each notebook's models are trained and measured.

Each notebook that trains or measures something large reads its sizes here, in a quick mode (CI,
a first try: the same code path on little data) and a full mode (``make course``), and each size
says why it is that size:

* notebooks 04, 05, 07, 08, 10 -- the ticket-triage job (:data:`TRIAGE_SETTINGS`,
  :func:`triage_job`), notebook 05's test-set size (:data:`EVAL_TEST_TICKETS`) and learning curve
  (:data:`LEARNING_CURVE_SIZES`), notebook 04's overfitting run (:data:`OVERFIT_SETTINGS`);
* notebook 08 -- the distillation section (:data:`DISTIL_SETTINGS`);
* notebook 09 -- the tool-calling job (:data:`TOOL_SETTINGS`, :func:`tool_job`).

The house-style (DPO) and RFT runs of notebooks 06 and 07 keep their sizes with their methods
(``ftkit.preference.TONE_SETTINGS``, ``ftkit.reinforcement.RFT_SETTINGS``). ``ftkit.course``
re-exports every name here, so ``from ftkit.course import triage_job`` keeps working;
``ftkit.course`` itself is the runner (``make course``) and the notebooks' plumbing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .course import data_path


def _quick(quick: bool | None) -> bool:
    """``quick``, or the course's mode (``ftkit.course.QUICK``, from ``FTKIT_QUICK``) when None."""
    from . import course

    return course.QUICK if quick is None else bool(quick)


# ---------------------------------------------------------------------------------------------
# The course's fine-tuning job (ticket triage), shared by notebooks 04 and 05

__all__ = ["EVAL_TEST_TICKETS", "LEARNING_CURVE_SIZES", "eval_test_tickets", "TRIAGE_SETTINGS", "TriageSettings", "learning_curve_settings", "triage_format_ok",
            "triage_job", "triage_settings"]


@dataclass(frozen=True)
class TriageSettings:
    """How the course fine-tunes the ticket-triage model, in one place.

    ``train_examples`` / ``validation_examples``: how many of the first examples of
    ``data/tickets/train.jsonl`` / ``validation.jsonl`` to use (None: all). Hyperparameters left
    at None are "auto" (the backend picks them). Notebook 04 walks through the steps with these
    settings; :func:`triage_job` runs (or reuses) the same job for later notebooks.
    """

    mode: str  # "quick" or "full"
    train_examples: int | None
    validation_examples: int | None
    n_epochs: int | None
    batch_size: int | None
    learning_rate_multiplier: float | None
    seed: int
    suffix: str = "ticket-triage"
    why: str = ""
    lesson: str = "04"  # the notebook that trains it (the learning curve's jobs are notebook 05's)

    def training_examples(self) -> list[dict]:
        from .data import read_jsonl

        rows = list(read_jsonl(data_path("tickets", "train.jsonl")))
        return rows if self.train_examples is None else rows[: self.train_examples]

    def validation_set(self) -> list[dict]:
        from .data import read_jsonl

        if self.validation_examples == 0:
            return []
        rows = list(read_jsonl(data_path("tickets", "validation.jsonl")))
        return rows if self.validation_examples is None else rows[: self.validation_examples]

    @property
    def hyperparameters(self) -> dict:
        """The hyperparameters that are set (the others are "auto")."""
        hp = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
              "learning_rate_multiplier": self.learning_rate_multiplier}
        return {k: v for k, v in hp.items() if v is not None}

    @property
    def recipe(self) -> str:
        """A short hash of these settings and the data: a job is reused only for the same recipe."""
        import hashlib

        from .jobs import file_sha256

        digest = hashlib.sha256(json.dumps(
            [self.mode, self.train_examples, self.validation_examples, self.hyperparameters, self.seed, self.suffix,
             file_sha256(data_path("tickets", "train.jsonl")), file_sha256(data_path("tickets", "validation.jsonl"))],
            sort_keys=True).encode())
        return digest.hexdigest()[:12]

    @property
    def metadata(self) -> dict[str, str]:
        """The job's metadata: how :func:`triage_job` finds it again."""
        return {"course": "ftkit", "lesson": self.lesson, "mode": self.mode, "recipe": self.recipe}

    def job_recipe(self):
        """This run as a :class:`ftkit.jobs.Recipe` (what :func:`triage_job` ensures)."""
        from .jobs import Recipe

        meta = self.metadata
        return Recipe("the ticket-triage model", self.training_examples(), f"tickets-train-{self.mode}.jsonl",
                      validation=self.validation_set() if self.validation_examples != 0 else None,
                      validation_filename=f"tickets-validation-{self.mode}.jsonl",
                      hyperparameters=self.hyperparameters, suffix=self.suffix, seed=self.seed,
                      labels={k: v for k, v in meta.items() if k != "recipe"}, fingerprint=meta["recipe"],
                      description=f"{self.mode} mode: {self.why}")

    def job_kwargs(self) -> dict:
        """Keyword arguments for :func:`ftkit.jobs.create_job` (besides the files)."""
        return {**self.hyperparameters, "suffix": self.suffix, "seed": self.seed, "metadata": self.metadata}


#: The course's two recipes. Full: the whole training file, the validation file, hyperparameters
#: on "auto" (3 epochs for 259 examples). Quick (CI, a first try): a subset small enough to train
#: in about a minute on a 2-core CPU -- 20 tickets x 2 epochs, 40 example-passes (it was 40 x 2
#: until 2026-12-06; CI's budget) -- the one quick SFT job that notebooks 04, 05, 07, 08 and 10
#: share (notebook 04 prints the measured time of each run; notebook 05 the accuracies, which in
#: quick mode are no evidence either way). Validation tickets are few in quick mode because the
#: trainer evaluates them every tenth of the run.
TRIAGE_SETTINGS = {
    "full": TriageSettings("full", None, None, None, None, None, seed=42,
                           why="all 259 training tickets, 40 validation tickets, auto hyperparameters"),
    "quick": TriageSettings("quick", 20, 4, 2, 4, 2.0, seed=42,
                            why="20 training tickets x 2 epochs, batches of 4, twice the learning rate; 4 validation "
                                "tickets"),
}


def triage_format_ok(answer) -> bool:
    """True when ``answer`` is exactly the trained format: one JSON object with the keys
    ``category``, ``urgency``, ``product`` in that order, each with one of the allowed values
    (``data/tickets/prompts.json``) -- whether or not the labels are *right*."""
    from .evaluate import parse_json

    value = parse_json(answer)
    if value is None:
        return False
    labels = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))["labels"]
    return list(value) == list(labels) and all(isinstance(value[k], str) and value[k] in labels[k] for k in labels)


def triage_settings(quick: bool | None = None) -> TriageSettings:
    """The settings for quick mode (``quick=True``) or full mode; default: :data:`QUICK`."""
    return TRIAGE_SETTINGS["quick" if (_quick(quick)) else "full"]


#: How many tickets of each test set notebook 05 evaluates: quick mode a seeded random 8 of each
#: (CI's budget: every configuration is one batch per set, so each ticket is a row of every batch),
#: full mode all of them (None).
EVAL_TEST_TICKETS = {"quick": 8, "full": None}


def eval_test_tickets(quick: bool | None = None) -> int | None:
    """Notebook 05's test-set size per set (:data:`EVAL_TEST_TICKETS`); None: every ticket."""
    return EVAL_TEST_TICKETS["quick" if (_quick(quick)) else "full"]


#: Notebook 05's learning curve: the same task trained on fewer tickets (the first N of the
#: training file, so each set holds the smaller ones). Full: 25, 50 and 100 tickets at the 3 epochs
#: the full job's "auto" gives its 259 (batch size and learning rate "auto" as there); the full job
#: itself is the last point. Quick: CI affords no extra training job (each is real CPU training,
#: about a second per example and step on a 2-core CPU without bf16), so the one smaller point is
#: notebook 04's quick overfitting run (:data:`OVERFIT_SETTINGS`: the first 10 tickets, reused, not
#: trained again), and the quick job (20 tickets, 2 epochs) is the last point. Its epochs and
#: learning rate are not the quick job's: quick mode proves the cells run, not the curve's shape.
LEARNING_CURVE_SIZES = {"full": (25, 50, 100), "quick": (10,)}


def learning_curve_settings(quick: bool | None = None) -> list[TriageSettings]:
    """The smaller jobs of notebook 05's learning curve (see :data:`LEARNING_CURVE_SIZES`; in quick
    mode notebook 04's overfitting run); run or reuse each with ``triage_job(client, settings=...)``.
    Taught in notebooks/05_evaluation.ipynb."""
    quick = _quick(quick)
    if quick:  # no job of its own: notebook 04's overfitting run, on the first 10 tickets
        return [OVERFIT_SETTINGS["quick"]]
    return [TriageSettings(f"curve-{n}", n, 0, 3, None, None, seed=42, lesson="05",
                           why=f"the first {n} training tickets x 3 epochs, auto batch size and "
                               "learning rate; no validation")
            for n in LEARNING_CURVE_SIZES["full"]]


def triage_job(client, *, quick: bool | None = None, settings: TriageSettings | None = None,
               timeout: float | None = 3 * 3600, verbose: bool = True):
    """A succeeded fine-tuning job for the course's ticket-triage task, on ``client``'s backend.

    Reuses the newest succeeded job whose metadata matches the course's settings
    (``{"course": "ftkit", "lesson": "04", "mode": "quick"|"full", "recipe": ...}``, the recipe
    being a hash of :data:`TRIAGE_SETTINGS` and the data) and whose fine-tuned model still exists;
    waits for a matching job that is still running; otherwise runs one: :func:`ftkit.jobs.ensure_job`
    with :meth:`TriageSettings.job_recipe` (upload, create_job, watch). Returns the
    ``FineTuningJob`` (``.fine_tuned_model`` is the model to call).

    ``settings`` runs or reuses another recipe of the same task instead (notebook 05's learning
    curve, :func:`learning_curve_settings`); a recipe with ``validation_examples=0`` trains without
    a validation file.

    Taught in notebooks/04_job_lifecycle.ipynb (which runs the same steps one by one).
    """
    from .jobs import ensure_job

    settings = settings or triage_settings(quick)
    return ensure_job(client, settings.job_recipe(), timeout=timeout, verbose=verbose)


# ---------------------------------------------------------------------------------------------
# Notebook 09: fine-tuning tool calls

__all__ += ["TOOL_SETTINGS", "ToolSettings", "tool_job", "tool_settings"]


@dataclass(frozen=True)
class ToolSettings:
    """How notebook 09 fine-tunes tool calling, in one place: the first ``train_examples`` of
    ``data/tools/train.jsonl`` (None: all), the first ``validation_examples`` of ``validation.jsonl``
    (0: none), ``test_examples`` held-out conversations of ``test.jsonl`` spread over every kind
    (None: all), hyperparameters (None: "auto"), and ``max_tokens`` per scored reply."""

    mode: str
    train_examples: int | None
    validation_examples: int | None
    test_examples: int | None
    n_epochs: int | None
    batch_size: int | None
    learning_rate_multiplier: float | None
    max_tokens: int = 48  # the longest call (an email address) takes about 35 tokens
    seed: int = 42
    why: str = ""

    @staticmethod
    def _read(name: str, n: int | None) -> list[dict]:
        from .data import read_jsonl

        rows = list(read_jsonl(data_path("tools", name)))
        return rows if n is None else rows[:n]

    def training_examples(self) -> list[dict]:
        return self._read("train.jsonl", self.train_examples)

    def validation_set(self) -> list[dict]:
        return [] if self.validation_examples == 0 else self._read("validation.jsonl", self.validation_examples)

    def test_set(self) -> list[dict]:
        """The held-out conversations scored: all of them, or ``test_examples`` taken in turn from
        each kind (tool, or none) so a small set still asks every decision."""
        from .toolcalls import tool_of

        rows = self._read("test.jsonl", None)
        if self.test_examples is None:
            return rows
        kinds: dict[str, list[dict]] = {}
        for row in rows:
            kinds.setdefault(tool_of(row), []).append(row)
        picked, queues = [], [list(q) for q in kinds.values()]
        while len(picked) < min(self.test_examples, len(rows)):
            for q in queues:
                if q and len(picked) < self.test_examples:
                    picked.append(q.pop(0))
        return picked

    @property
    def hyperparameters(self) -> dict:
        hp = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
              "learning_rate_multiplier": self.learning_rate_multiplier}
        return {k: v for k, v in hp.items() if v is not None}

    def job_recipe(self):
        """This run as a :class:`ftkit.jobs.Recipe` (what :func:`tool_job` ensures)."""
        from .jobs import Recipe

        validation = self.validation_set() or None
        return Recipe("the tool-calling model", self.training_examples(), f"tools-train-{self.mode}.jsonl",
                      validation=validation, validation_filename=f"tools-validation-{self.mode}.jsonl",
                      hyperparameters=self.hyperparameters, suffix="support-tools", seed=self.seed,
                      labels={"course": "ftkit", "lesson": "09", "mode": self.mode},
                      description=f"{self.mode} mode: {self.why}")


#: Full: every training conversation, the validation file, "auto" hyperparameters (3 epochs for
#: 205 examples), every held-out conversation. Quick (CI, a first try): 10 conversations (the API's
#: smallest training file) once at twice the learning rate, no validation, one held-out
#: conversation of each kind -- it runs every step, far too small to measure an effect. Each line
#: is about 430 tokens (the four tool schemas are most of it): a step of 4 lines took about 110 s
#: on a 2-core CPU shared at a load average of about 10 (measured 2026-12-05); an idle machine is
#: several times faster.
TOOL_SETTINGS = {
    "full": ToolSettings("full", None, None, None, None, None, None,
                         why="all training conversations, the validation file, auto hyperparameters"),
    "quick": ToolSettings("quick", 10, 0, 5, 1, 4, 2.0,
                          why="10 training conversations x 1 epoch, batches of 4, twice the learning rate; "
                              "no validation; one held-out conversation of each kind"),
}


def tool_settings(quick: bool | None = None) -> ToolSettings:
    """Notebook 09's settings for quick mode (``quick=True``) or full mode; default: :data:`QUICK`."""
    return TOOL_SETTINGS["quick" if (_quick(quick)) else "full"]


def tool_job(client, *, settings: ToolSettings | None = None, timeout: float | None = 3 * 3600,
             verbose: bool = True):
    """A succeeded fine-tuning job of notebook 09's tool-calling model: reused when one with the
    same recipe (settings and data) finished before, else run with :func:`ftkit.jobs.ensure_job`.
    Taught in notebooks/09_tool_calling.ipynb."""
    from .jobs import ensure_job

    return ensure_job(client, (settings or tool_settings()).job_recipe(), timeout=timeout, verbose=verbose)


# ---------------------------------------------------------------------------------------------
# Notebook 04's run that overfits

__all__ += ["OVERFIT_SETTINGS", "overfit_settings"]

#: Notebook 04's overfitting run: few tickets, many epochs, a high learning rate, and a validation
#: file no larger than two batches -- the size of the validation sample the local server measures
#: every tenth of the run -- so every validation point in the results file covers the whole file.
#: Measured through the local server's API (seed 42, bf16, 2026-12-05, 8 validation tickets): the
#: full validation loss is lowest at epoch 6 (0.158) and rises at epochs 7 and 8 (0.168, 0.172)
#: while the training loss goes to 0.002 -- the turn lies inside the last three epochs, the
#: checkpoints the server keeps. (At 16 times the learning rate it turned at epoch 4, before the
#: kept ones.) Full mode uses that run. Quick mode (CI) runs the same recipe for 4 epochs on 4
#: validation tickets -- half the training and a quarter of the validation passes -- enough to
#: show every step (a checkpoint deleted, the best one chosen) but not to promise the turn; the
#: notebook says which happened. Notebook 05's quick learning curve reuses this job as its
#: 10-ticket point.
OVERFIT_SETTINGS = {
    "quick": TriageSettings("quick-overfit", 10, 4, 4, 4, 6.0, seed=42, suffix="overfit",
                            why="the first 10 training tickets x 4 epochs, batches of 4, 6 times the learning rate; "
                                "4 validation tickets"),
    "full": TriageSettings("overfit", 10, 8, 8, 4, 6.0, seed=42, suffix="overfit",
                           why="the first 10 training tickets x 8 epochs, batches of 4, 6 times the learning rate; "
                               "8 validation tickets"),
}


def overfit_settings(quick: bool | None = None) -> TriageSettings:
    """Notebook 04's overfitting run (:data:`OVERFIT_SETTINGS`) for quick or full mode; default:
    :data:`QUICK`. Taught in notebooks/04_job_lifecycle.ipynb."""
    return OVERFIT_SETTINGS["quick" if (_quick(quick)) else "full"]


# ---------------------------------------------------------------------------------------------
# Notebook 08's distillation

__all__ += ["DISTIL_SETTINGS", "DistilSettings", "distil_settings"]


@dataclass(frozen=True)
class DistilSettings:
    """Notebook 08's distillation: ``traffic`` training tickets sent to the teacher with
    ``store=True`` (their stored answers become the student's training file), ``n_epochs`` of
    training, and ``held_out`` test tickets on which the student's answers are compared with the
    teacher's."""

    mode: str
    traffic: int
    n_epochs: int
    held_out: int
    why: str = ""


#: The question is one rate -- how often the student gives the teacher's answer -- so the held-out
#: set is sized for its precision: 60 tickets put the 95% interval within about +-13 points at
#: worst (a rate near 50%; ``ftkit.evaluate.power.proportion_sample_size(0.5, 0.13)`` = 57), and
#: 100 stored answers x 2 epochs is about a third of the course's own job (259 tickets x 3).
#: Quick mode (CI) shows the steps: 12 answers x 1 epoch (3 steps) and 6 held-out tickets, an
#: interval about +-40 points wide.
DISTIL_SETTINGS = {
    "full": DistilSettings("full", traffic=100, n_epochs=2, held_out=60,
                           why="100 stored answers x 2 epochs; 60 held-out tickets (+-13 points at worst)"),
    "quick": DistilSettings("quick", traffic=12, n_epochs=1, held_out=6,
                            why="12 stored answers x 1 epoch; 6 held-out tickets: the steps only"),
}


def distil_settings(quick: bool | None = None) -> DistilSettings:
    """Notebook 08's distillation sizes (:data:`DISTIL_SETTINGS`) for quick or full mode; default:
    ``ftkit.course.QUICK``. Taught in notebooks/08_own_your_model.ipynb."""
    return DISTIL_SETTINGS["quick" if _quick(quick) else "full"]

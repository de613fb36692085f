"""The vocabulary of a fine-tuning job, shared by the local server and its clients.

One home for the words both sides must agree on: job statuses, fine-tuning methods, the
metric keys of ``metrics`` events and checkpoints, the columns of the results file, and the
texts of the events clients read. The server (``ftkit.local``) writes them; ``ftkit.jobs``,
``ftkit.cost`` and ``ftkit.course`` read them. Plain constants: no dependencies.

Status names and event texts follow the hosted API's wording (OpenAI's fine-tuning job
object and its events), so code written against one backend reads the other.

Taught in notebooks/04_job_lifecycle.ipynb (statuses, events, results file) and
notebooks/06_preference_tuning.ipynb (the DPO metrics).
"""

from __future__ import annotations

import base64

# -- statuses -------------------------------------------------------------------------------------

VALIDATING_FILES = "validating_files"
QUEUED = "queued"
RUNNING = "running"
PAUSED = "paused"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

#: Statuses of a job that is still going (``paused`` waits for a resume).
ACTIVE_STATUSES = (VALIDATING_FILES, QUEUED, RUNNING, PAUSED)
#: Statuses after which a job never changes again.
TERMINAL_STATUSES = (SUCCEEDED, FAILED, CANCELLED)
KNOWN_STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES

# -- methods ----------------------------------------------------------------------------------------

SUPERVISED = "supervised"
DPO = "dpo"
REINFORCEMENT = "reinforcement"
#: The hosted API's three methods: the built-in entries of the method registry. Code that must
#: know every method a server trains reads ``ftkit.methods.names()`` (a registered one too).
METHODS = (SUPERVISED, DPO, REINFORCEMENT)

# -- metrics ----------------------------------------------------------------------------------------
# Supervised metrics carry the hosted API's names (its checkpoint ``metrics`` object and results
# file). The hosted API does not document DPO metric names; ftkit names them after the quantities
# of the DPO paper (Rafailov et al., 2023) as TRL's DPOTrainer logs them: TRL's
# ``rewards/chosen`` is our ``chosen_reward``, ``rewards/rejected`` -> ``rejected_reward``,
# ``rewards/margins`` -> ``reward_margin``, ``rewards/accuracies`` -> ``preference_accuracy``.

STEP = "step"
TOTAL_STEPS = "total_steps"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"  # results-file name of the token accuracy
TRAIN_MEAN_TOKEN_ACCURACY = "train_mean_token_accuracy"  # event / checkpoint name of the same
VALID_LOSS = "valid_loss"
VALID_MEAN_TOKEN_ACCURACY = "valid_mean_token_accuracy"
FULL_VALID_LOSS = "full_valid_loss"
FULL_VALID_MEAN_TOKEN_ACCURACY = "full_valid_mean_token_accuracy"

#: The four DPO quantities, without their ``train_`` / ``valid_`` / ``full_valid_`` prefix.
DPO_QUANTITIES = ("reward_margin", "preference_accuracy", "chosen_reward", "rejected_reward")

#: The reinforcement quantities (per step: sampled on the training prompts; ``valid_``: every
#: ``eval_interval`` steps on ``eval_samples`` validation prompts).
RFT_QUANTITIES = ("reward_mean", "reward_std", "grader_errors", "completion_tokens")


def dpo_metric(split: str, quantity: str) -> str:
    """``dpo_metric("train", "reward_margin")`` -> ``"train_reward_margin"``."""
    return f"{split}_{quantity}"


#: Columns of the results file (``step_metrics.csv``), per method. The supervised columns are the
#: hosted file's; the others follow the same pattern (``train_*`` then ``valid_*``).
RESULT_COLUMNS = {
    SUPERVISED: [STEP, TRAIN_LOSS, TRAIN_ACCURACY, VALID_LOSS, VALID_MEAN_TOKEN_ACCURACY],
    DPO: [STEP, TRAIN_LOSS, *(dpo_metric("train", q) for q in DPO_QUANTITIES),
          VALID_LOSS, *(dpo_metric("valid", q) for q in DPO_QUANTITIES)],
    REINFORCEMENT: [STEP, TRAIN_LOSS, *(f"train_{q}" for q in RFT_QUANTITIES),
                    *(f"valid_{q}" for q in RFT_QUANTITIES)],
}

#: Metric keys of a supervised checkpoint (the hosted checkpoint object's ``metrics``).
CHECKPOINT_METRICS = [
    TRAIN_LOSS, TRAIN_MEAN_TOKEN_ACCURACY, VALID_LOSS, VALID_MEAN_TOKEN_ACCURACY,
    FULL_VALID_LOSS, FULL_VALID_MEAN_TOKEN_ACCURACY,
]

RESULTS_FILENAME = "step_metrics.csv"
RESULTS_PURPOSE = "fine-tune-results"


def encode_results(csv_text: str) -> bytes:
    """The results file's bytes as the hosted API serves them: the CSV, base64-encoded (OpenAI's
    cookbook reads it with ``base64.b64decode(client.files.content(id).read())``)."""
    return base64.b64encode(csv_text.encode("utf-8"))


def results_csv(raw: bytes | str) -> str | None:
    """A results file's CSV text from its content, plain CSV or base64-encoded CSV (standard or
    URL-safe alphabet, line breaks and missing padding tolerated); ``None`` when it is neither."""
    raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    text = _utf8(raw)
    if text is not None and "," in text.lstrip().split("\n", 1)[0]:  # a CSV header has commas; base64 none
        return text
    compact = b"".join(raw.split())
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            text = _utf8(decoder(compact + b"=" * (-len(compact) % 4)))
        except (ValueError, TypeError):
            continue
        if text is not None and "," in text.lstrip().split("\n", 1)[0]:
            return text
    return None


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None

# -- events ---------------------------------------------------------------------------------------
# Texts of the events a job writes, in the hosted API's wording where it has one. Clients match
# on these (ftkit.jobs.watch, ftkit.cost.local_training_cost), so they live here, once.

EVENT_TYPE_MESSAGE = "message"
EVENT_TYPE_METRICS = "metrics"

JOB_CREATED = "Validating training file: {training_file}"
JOB_CREATED_WITH_VALIDATION = "Validating training file: {training_file} and validation file: {validation_file}"
FILES_VALIDATED = "Files validated, moving job to queued state"
JOB_STARTED = "Fine-tuning job started"
JOB_RESUMED_FROM = "Resuming from step {step}/{total_steps}"
CHECKPOINT_CREATED = "Checkpoint created at step {step}"
MODEL_CREATED = "New fine-tuned model created: {model}"
#: The last event of a successful local job; its ``data`` carries ``wall_seconds``,
#: ``cpu_seconds`` and ``trained_tokens`` (read by ftkit.cost.local_training_cost).
COMPLETED = "The job has successfully completed"
CANCELLED_MESSAGE = "Fine-tuning job cancelled"
PAUSED_MESSAGE = "Fine-tuning job paused"
RESUMED_MESSAGE = "Fine-tuning job resumed"
PAUSED_AT = "Job paused at step {step}/{total_steps}; resume it to continue"
REQUEUED_AFTER_CRASH = "The server stopped while this job was running; it will resume from {where}"
TRAINER_DIED = "The trainer stopped unexpectedly ({reason}); the job will resume from {where}"
RESTARTED = "Restarting from the beginning: no saved state to resume from"
INTERRUPTED_TOO_OFTEN = ("The job was interrupted {count} times (server stopped or crashed) "
                         "and was not restarted again.")

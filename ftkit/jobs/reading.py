"""Reading a job: events, checkpoints, the results file and step metrics as DataFrames, and
:func:`ask_models` (the fine-tuned model and its checkpoints side by side).

Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

from .. import lifecycle, methods
from .api import (
    JobsError,
    NotReady,
    _as_dict,
    _job_id,
    _local_time,
)


def events(client, job, *, limit: int | None = None):
    """Every event of a job as a DataFrame, oldest first: ``created_at`` (local time), ``level``,
    ``type``, ``message``, ``step`` (metrics events), ``data`` (dict) and ``id``. ``limit``: only
    the newest ``limit`` events.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    job_id = _job_id(job)
    rows = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=min(100, limit or 100)):
        data = _as_dict(getattr(event, "data", None))
        rows.append((_local_time(event.created_at), event.level, getattr(event, "type", None) or "message",
                     event.message, data.get("step"), data, event.id))
        if limit is not None and len(rows) >= limit:
            break
    rows.reverse()
    df = pd.DataFrame(rows, columns=["created_at", "level", "type", "message", "step", "data", "id"])
    df["step"] = df["step"].astype("Int64")
    return df


def method_of_metrics(keys: Iterable[str]) -> str:
    """Which fine-tuning method's metrics these are (``"supervised"``, ``"dpo"`` or
    ``"reinforcement"``), from metric keys or results-file columns: DPO jobs report
    ``train_reward_margin`` and the other quantities of :data:`ftkit.lifecycle.DPO_QUANTITIES`,
    reinforcement jobs ``train_reward_mean`` ..., supervised jobs neither.

    Taught in notebooks/06_preference_tuning.ipynb.
    """
    keys = set(keys)
    splits = ("train", "valid", "full_valid")
    for name in methods.names():  # each method's own quantities (ftkit.methods); supervised has none
        if any(f"{split}_{q}" in keys for split in splits for q in methods.get(name).quantities):
            return name
    return lifecycle.SUPERVISED


def step_metrics_from_events(events_df, method: str | None = None):
    """The step metrics carried by metrics events (available while a job runs, before its results
    file exists), with the results file's columns for the job's method: ``step, train_loss,
    train_accuracy, valid_loss, valid_mean_token_accuracy`` for supervised jobs; ``step,
    train_loss, train_reward_margin, train_preference_accuracy, train_chosen_reward,
    train_rejected_reward, valid_loss, valid_reward_margin ...`` for DPO jobs. ``method`` defaults
    to what the events carry (:func:`method_of_metrics`).

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb).
    """
    import pandas as pd

    found = [data for data in events_df["data"] if isinstance(data, dict) and "step" in data and "train_loss" in data]
    method = method or method_of_metrics(k for data in found for k in data)
    columns = methods.get(method).result_columns
    rows = []
    for data in found:
        if method == lifecycle.SUPERVISED:
            rows.append({
                "step": int(data["step"]), "train_loss": data.get("train_loss"),
                "train_accuracy": data.get("train_mean_token_accuracy", data.get("train_accuracy")),
                "valid_loss": data.get("valid_loss"),
                "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
            })
        else:  # the other methods' events carry the results file's own names
            rows.append({c: int(data["step"]) if c == lifecycle.STEP else data.get(c) for c in columns})
    df = pd.DataFrame(rows, columns=columns)
    if len(df):
        df = df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    for c in columns[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _method_of_job(job) -> str | None:
    """The method type of a job object (None for a bare id or a job without ``method``)."""
    kind = _as_dict(getattr(job, "method", None)).get("type") if not isinstance(job, str) else None
    return kind if kind in methods.names() else None


def checkpoints(client, job, method: str | None = None):
    """A job's checkpoints as a DataFrame, by step: ``step``, ``checkpoint`` (a model name you can
    call), the metrics at that step, ``created_at`` and ``id``. The API keeps the last three
    epochs' checkpoints.

    The metric columns follow the job's method: for supervised jobs the hosted checkpoint's
    (``train_loss`` ... ``full_valid_loss``, ``full_valid_mean_token_accuracy``); for DPO jobs
    :data:`DPO_CHECKPOINT_METRICS` (``train_loss``, ``train_reward_margin`` ...,
    ``full_valid_loss``, ``full_valid_reward_margin``, ``full_valid_preference_accuracy`` ...); for
    reinforcement jobs :data:`RFT_CHECKPOINT_METRICS` (``train_reward_mean`` ...,
    ``full_valid_reward_mean``, ``full_valid_reward_std`` ...).
    ``method`` defaults to the job object's, else to what the metrics carry.

    Taught in notebooks/04_job_lifecycle.ipynb (DPO: notebooks/06_preference_tuning.ipynb).
    """
    import pandas as pd

    found = []
    for ckpt in client.fine_tuning.jobs.checkpoints.list(_job_id(job), limit=100):
        found.append((ckpt, _as_dict(ckpt.metrics)))
    method = method or _method_of_job(job) or method_of_metrics(k for _, m in found for k in m)
    metric_columns = methods.get(method).checkpoint_metrics
    rows = [{"step": ckpt.step_number, "checkpoint": ckpt.fine_tuned_model_checkpoint,
             **{k: metrics.get(k) for k in metric_columns},
             "created_at": _local_time(ckpt.created_at), "id": ckpt.id} for ckpt, metrics in found]
    df = pd.DataFrame(rows, columns=["step", "checkpoint", *metric_columns, "created_at", "id"])
    for c in metric_columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.sort_values("step").reset_index(drop=True)


def _higher_is_better(metric: str) -> bool:
    """Accuracies, reward margins, chosen rewards and mean rewards (RFT) should rise; losses and
    rejected rewards fall."""
    return "accuracy" in metric or metric.endswith(("reward_margin", "chosen_reward", "reward_mean"))


def best_checkpoint(checkpoints_df, metric: str = "full_valid_loss"):
    """The checkpoint row with the lowest ``metric`` (a loss) -- or the highest, for an accuracy
    or a DPO reward margin, or an RFT mean reward (``full_valid_reward_mean``).

    Full validation loss (the whole validation file, computed at each checkpoint) is the fairest
    single number for choosing: the per-step ``valid_loss`` is measured on a small batch only.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    if checkpoints_df is None or not len(checkpoints_df):
        raise NotReady("no checkpoints to choose from (the job has not finished an epoch yet)")
    values = checkpoints_df[metric].dropna()
    if values.empty:
        raise NotReady(f"no checkpoint has {metric} (was a validation file given?)")
    best = values.idxmax() if _higher_is_better(metric) else values.idxmin()
    return checkpoints_df.loc[best]


def parse_results(content: bytes | str):
    """A results file's content as a DataFrame: plain CSV, or CSV encoded in base64 (as the hosted
    API sometimes returns it), with the file's own columns: for a supervised job ``step``,
    ``train_loss``, ``train_accuracy``, ``valid_loss``, ``valid_mean_token_accuracy``; for a DPO
    job ``step``, ``train_loss``, ``train_reward_margin``, ``train_preference_accuracy``,
    ``train_chosen_reward``, ``train_rejected_reward`` and the same with ``valid_``
    (:data:`ftkit.lifecycle.RESULT_COLUMNS`; :func:`method_of_metrics` tells them apart). Numbers
    as numbers, missing values as NaN.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    text = lifecycle.results_csv(content)
    if text is None:
        raw = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        raise JobsError("the results file is neither CSV nor base64-encoded CSV "
                        f"(it starts with {raw[:40]!r})")
    df = pd.read_csv(io.StringIO(text))
    df.columns = [str(c).strip() for c in df.columns]
    for c in df.columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if "step" in df.columns:
        df = df.dropna(subset=["step"]).astype({"step": int}).sort_values("step").reset_index(drop=True)
    return df


def results(client, job_or_file):
    """The step metrics of a finished job (its results file) as a DataFrame -- see
    :func:`parse_results`; plain and base64-encoded CSV both work. Pass the job (object or id)
    or the results file's id. A job that has not succeeded yet has no results file: its metrics
    events are in :func:`events` meanwhile.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    ref = job_or_file if isinstance(job_or_file, str) else getattr(job_or_file, "id", None)
    if isinstance(ref, str) and ref.startswith("file"):
        file_id = ref
    else:
        job = client.fine_tuning.jobs.retrieve(_job_id(job_or_file))
        if not job.result_files:
            raise NotReady(f"{job.id} is {job.status} and has no results file yet (it comes when the job succeeds); "
                           "meanwhile the step metrics are in ftkit.jobs.events(client, job)")
        file_id = job.result_files[0]
    return parse_results(client.files.content(file_id).content)


# ---------------------------------------------------------------------------------------------
# Using the model


def ask_models(
    client,
    models: Mapping[str, str],
    examples,
    *,
    system: str | None = None,
    max_tokens: int = 40,
    temperature: float = 0.0,
    concurrency: int = 8,
):
    """Ask several models the same held-out examples, side by side: a DataFrame with one row per
    example -- ``ticket`` (the first line of the last user message), ``expected`` (the example's
    last assistant message) and one column per entry of ``models`` (``{"column": model name}``)
    with that model's answer.

    Each example's messages up to its last assistant message are sent (``system`` replaces the
    system message). Requests run ``concurrency`` at a time (the local server answers them in one
    batch). A fine-tuned model or a checkpoint is called like any other model: by its name.

    Taught in notebooks/04_job_lifecycle.ipynb (notebook 05 measures models properly).
    """
    import concurrent.futures

    import pandas as pd

    examples = [dict(ex) for ex in examples]
    prompts, rows = [], []
    for ex in examples:
        messages = list(ex.get("messages") or [])
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        prompt = messages if last is None else messages[:last]
        if system is not None:
            prompt = [{"role": "system", "content": system}] + [m for m in prompt if m.get("role") != "system"]
        prompts.append(prompt)
        user = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), "") or ""
        rows.append({"ticket": str(user).splitlines()[0] if user else "",
                     "expected": None if last is None else messages[last].get("content")})

    def ask(args):
        model, messages = args
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                           temperature=temperature)
        return r.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(max(1, concurrency)) as pool:
        for column, model in models.items():
            answers = list(pool.map(ask, [(model, p) for p in prompts]))
            for row, answer in zip(rows, answers):
                row[column] = answer
    return pd.DataFrame(rows, columns=["ticket", "expected", *models])

"""Housekeeping: :func:`cleanup` deletes fine-tuning files and fine-tuned models (a dry run unless told otherwise).

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from .. import lifecycle
from .api import ACTIVE_STATUSES, _file_id, _local_time
from .uploads import _forget


def _age_limit(older_than) -> float | None:
    """A cut-off unix time from a timedelta, a number of days, "12h"/"7d"/"2w", or a date."""
    if older_than is None:
        return None
    now = time.time()
    if isinstance(older_than, dt.timedelta):
        return now - older_than.total_seconds()
    if isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        return now - float(older_than) * 86400
    if isinstance(older_than, dt.datetime):
        return older_than.timestamp()
    if isinstance(older_than, dt.date):
        return dt.datetime.combine(older_than, dt.time()).timestamp()
    if isinstance(older_than, str):
        text = older_than.strip().lower()
        units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
        if text[-1:] in units:
            try:
                return now - float(text[:-1]) * units[text[-1]]
            except ValueError:
                pass
        try:
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise ValueError(f"older_than must be a timedelta, days, '12h' / '7d' / '2w', or a date; got {older_than!r}")


_BASE_OWNERS = ("system", "openai", "openai-internal", "openai-dev")


def _is_fine_tuned(model) -> bool:
    return str(model.id).startswith("ft:") and (getattr(model, "owned_by", "") or "") not in _BASE_OWNERS


def cleanup(
    client,
    *,
    files: bool | Iterable[str] = True,
    models: bool | Iterable[str] = True,
    older_than=None,
    dry_run: bool = True,
):
    """Delete fine-tuning files and fine-tuned models -- by default only says what it would delete.

    * ``files``: True for every file with purpose ``fine-tune`` or ``fine-tune-results``, a list
      of ids for those only, False for none. Files used by a job that is still going are kept.
    * ``models``: True for every fine-tuned model (``ft:...``), a list of ids, or False. Base
      models are never deleted, even when named.
    * ``older_than``: only things created before then (a timedelta, days, "12h", "7d", a date).
    * ``dry_run`` (default True): list what would be deleted; pass False to delete.

    Returns a DataFrame: kind, id, name, created_at, size (bytes, files), action.

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    cutoff = _age_limit(older_than)

    def old_enough(ts) -> bool:
        return cutoff is None or (ts is not None and ts < cutoff)

    rows: list[dict] = []
    if files is not False:
        rows += _file_rows(client, None if files is True else {_file_id(f) for f in files}, old_enough)
    if models is not False:
        rows += _model_rows(client, None if models is True else set(models), old_enough)
    deleted_files = _delete(client, rows, dry_run)
    if deleted_files:
        _forget(client, deleted_files)
    df = pd.DataFrame(rows, columns=["kind", "id", "name", "created_at", "bytes", "action"])
    print(_summary(df, dry_run))
    return df


def _file_rows(client, wanted: set[str] | None, old_enough) -> list[dict]:
    """The files to delete (all fine-tuning files, or the ``wanted`` ids), those in use kept."""
    in_use = set()
    for job in client.fine_tuning.jobs.list(limit=100):
        if job.status in ACTIVE_STATUSES:
            in_use.update(x for x in (job.training_file, job.validation_file) if x)
    rows = []
    for f in client.files.list():
        chosen = f.purpose in ("fine-tune", lifecycle.RESULTS_PURPOSE) if wanted is None else f.id in wanted
        if not chosen or not old_enough(f.created_at):
            continue
        rows.append({"kind": "file", "id": f.id, "name": f"{f.filename} ({f.purpose})",
                     "created_at": _local_time(f.created_at), "bytes": f.bytes,
                     "action": "kept: used by a job still going" if f.id in in_use else "delete"})
    return rows


def _model_rows(client, wanted: set[str] | None, old_enough) -> list[dict]:
    """The fine-tuned models to delete; a base model named in ``wanted`` is listed as kept."""
    rows = []
    for m in client.models.list():
        if wanted is not None and m.id not in wanted:
            continue
        row = {"kind": "model", "id": m.id, "created_at": _local_time(m.created), "bytes": None}
        if not _is_fine_tuned(m):
            if wanted is not None:
                rows.append({**row, "name": m.owned_by, "action": "kept: a base model is never deleted"})
        elif old_enough(m.created):
            rows.append({**row, "name": f"owned by {m.owned_by}", "action": "delete"})
    return rows


def _delete(client, rows: list[dict], dry_run: bool) -> list[str]:
    """Delete what ``rows`` mark "delete" (or mark it "would delete"); the ids of deleted files."""
    import openai

    deleted_files = []
    for row in rows:
        if row["action"] != "delete":
            continue
        if dry_run:
            row["action"] = "would delete"
            continue
        try:
            if row["kind"] == "file":
                client.files.delete(row["id"])
                deleted_files.append(row["id"])
            else:
                client.models.delete(row["id"])
            row["action"] = "deleted"
        except openai.APIStatusError as e:
            message = e.body.get("message") if isinstance(e.body, dict) else str(e)
            row["action"] = f"error: {message}"
    return deleted_files


def _summary(df, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    n_files = int(((df["kind"] == "file") & (df["action"] == verb)).sum())
    n_models = int(((df["kind"] == "model") & (df["action"] == verb)).sum())
    size = df.loc[(df["kind"] == "file") & (df["action"] == verb), "bytes"].fillna(0).sum()
    return (f"{'dry run: ' if dry_run else ''}{verb} {n_files} file(s) ({size / 1e6:,.2f} MB) and {n_models} "
            f"fine-tuned model(s)" + ("; pass dry_run=False to delete" if dry_run and (n_files or n_models) else ""))

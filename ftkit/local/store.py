"""Durable state of the local server: metadata in SQLite (WAL), blobs on disk.

Layout under the home directory::

    ftkit.db                 files, jobs, events, checkpoints, models, batches, responses
    files/<file-id>          uploaded and generated file contents
    models/<job-id>/...      LoRA adapters: final model and per-epoch checkpoints
    jobs/<job-id>/resume/    state to resume an interrupted or paused job

Every path is built from an id that matched a strict pattern, so no request can name a path
outside the home directory. The store is shared by the HTTP process and the trainer process;
each opens its own connection (SQLite serialises the writes).
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ALPHABET = string.ascii_letters + string.digits
ID_PATTERNS = {
    "file": re.compile(r"^file-[A-Za-z0-9]{24}$"),
    "ftjob": re.compile(r"^ftjob-[A-Za-z0-9]{24}$"),
    "batch": re.compile(r"^batch_[A-Za-z0-9]{24}$"),
    "resp": re.compile(r"^resp_[A-Za-z0-9]{48}$"),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, sha256 TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, model TEXT NOT NULL,
    training_file TEXT NOT NULL, validation_file TEXT, suffix TEXT, seed INTEGER NOT NULL,
    status TEXT NOT NULL, method TEXT NOT NULL, metadata TEXT, integrations TEXT,
    fine_tuned_model TEXT, finished_at INTEGER, trained_tokens INTEGER, error TEXT,
    result_files TEXT NOT NULL DEFAULT '[]', estimated_finish INTEGER, interruptions INTEGER NOT NULL DEFAULT 0,
    trainer_pid INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, job_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    step INTEGER NOT NULL, model_id TEXT NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, owned_by TEXT NOT NULL,
    kind TEXT NOT NULL, base TEXT, source TEXT, adapter_path TEXT, job_id TEXT, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL
);
"""


def new_id(prefix: str, sep: str = "-", length: int = 24) -> str:
    return prefix + sep + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def short_id(length: int = 8) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


def valid_id(kind: str, value: str) -> bool:
    return bool(ID_PATTERNS[kind].match(value or ""))


_JSON_COLUMNS = {"method", "metadata", "integrations", "error", "result_files", "metrics", "data", "body"}


class Store:
    """SQLite metadata plus blob directories under ``home``."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        for sub in ("files", "models", "jobs"):
            (self.home / sub).mkdir(exist_ok=True)
        self.db_path = self.home / "ftkit.db"
        self._local = threading.local()
        with self._conn() as c:
            c.executescript(SCHEMA)
            columns = {row[1] for row in c.execute("PRAGMA table_info(jobs)")}
            if "trainer_pid" not in columns:  # homes created before the column existed
                c.execute("ALTER TABLE jobs ADD COLUMN trainer_pid INTEGER")

    # -- connection -----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._conn().execute(sql, tuple(params))

    def _row(self, sql: str, params: Iterable[Any] = ()) -> dict | None:
        row = self._exec(sql, params).fetchone()
        return _decode(row) if row else None

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        return [_decode(r) for r in self._exec(sql, params).fetchall()]

    def _next_seq(self, table: str) -> int:
        return self._exec(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()[0]

    # -- files ----------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        if not valid_id("file", file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.home / "files" / file_id

    def add_file(self, file_id: str, *, filename: str, purpose: str, size: int, sha256: str) -> dict:
        self._exec(
            "INSERT INTO files (id, seq, bytes, created_at, filename, purpose, sha256) VALUES (?,?,?,?,?,?,?)",
            (file_id, self._next_seq("files"), size, now(), filename, purpose, sha256),
        )
        return self.get_file(file_id)

    def get_file(self, file_id: str) -> dict | None:
        return self._row("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,))

    def list_files(self, purpose: str | None = None) -> list[dict]:
        if purpose:
            return self._rows("SELECT * FROM files WHERE deleted = 0 AND purpose = ? ORDER BY seq", (purpose,))
        return self._rows("SELECT * FROM files WHERE deleted = 0 ORDER BY seq")

    def delete_file(self, file_id: str) -> bool:
        cur = self._exec("UPDATE files SET deleted = 1 WHERE id = ? AND deleted = 0", (file_id,))
        if cur.rowcount:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(cur.rowcount)

    # -- jobs -----------------------------------------------------------------------------------

    def create_job(self, job: dict) -> dict:
        job = {**job, "seq": self._next_seq("jobs"), "created_at": now()}
        cols = list(job)
        self._exec(
            f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [_encode(k, job[k]) for k in cols],
        )
        return self.get_job(job["id"])

    def get_job(self, job_id: str) -> dict | None:
        return self._row("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def list_jobs(self) -> list[dict]:
        return self._rows("SELECT * FROM jobs ORDER BY seq DESC")

    def jobs_with_status(self, *statuses: str) -> list[dict]:
        marks = ", ".join("?" * len(statuses))
        return self._rows(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses)

    def update_job(self, job_id: str, *, only_if_status: Iterable[str] | None = None,
                   only_if_trainer: bool | None = None, **fields: Any) -> bool:
        """Update fields in one statement; returns whether the row changed.

        ``only_if_status``: only when the job is in one of those states; ``only_if_trainer``: only
        when a trainer process is (True) or is not (False) recorded for it. The conditions make
        each transition atomic -- two processes racing to end a job (cancel vs finish) cannot
        both win. The transitions themselves live in :mod:`ftkit.local.jobstate`.
        """
        sets = ", ".join(f"{k} = ?" for k in fields)
        params = [_encode(k, v) for k, v in fields.items()] + [job_id]
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        if only_if_status is not None:
            statuses = list(only_if_status)
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params += statuses
        if only_if_trainer is not None:
            sql += " AND trainer_pid IS NOT NULL" if only_if_trainer else " AND trainer_pid IS NULL"
        return bool(self._exec(sql, params).rowcount)

    def job_dir(self, job_id: str) -> Path:
        if not valid_id("ftjob", job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.home / "jobs" / job_id

    def model_dir(self, job_id: str) -> Path:
        if not valid_id("ftjob", job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.home / "models" / job_id

    # -- events ---------------------------------------------------------------------------------

    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict | None = None) -> dict:
        event_id = new_id("ftevent")
        self._exec(
            "INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?,?,?,?,?,?,?)",
            (event_id, job_id, now(), level, message, type, json.dumps(data or {})),
        )
        return self._row("SELECT * FROM events WHERE id = ?", (event_id,))

    def list_events(self, job_id: str, *, after: str | None = None, limit: int = 20) -> tuple[list[dict], bool]:
        """Events newest first; ``after`` is an event id (continue past it). Returns (events, has_more)."""
        params: list[Any] = [job_id]
        sql = "SELECT * FROM events WHERE job_id = ?"
        if after:
            anchor = self._row("SELECT seq FROM events WHERE id = ? AND job_id = ?", (after, job_id))
            if anchor is None:
                return [], False
            sql += " AND seq < ?"
            params.append(anchor["seq"])
        rows = self._rows(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit + 1])
        return rows[:limit], len(rows) > limit

    def delete_metrics_events_after(self, job_id: str, step: int) -> int:
        """Withdraw the ``metrics`` events of steps after ``step`` (and full-validation events at
        ``step`` or later): work a crash lost, about to be done again. Returns how many went."""
        cur = self._exec(
            "DELETE FROM events WHERE job_id = ? AND type = 'metrics' AND ("
            " CAST(json_extract(data, '$.step') AS INTEGER) > ? OR"
            " (json_extract(data, '$.train_loss') IS NULL AND CAST(json_extract(data, '$.step') AS INTEGER) >= ?))",
            (job_id, step, step),
        )
        return cur.rowcount

    # -- checkpoints ----------------------------------------------------------------------------

    def add_checkpoint(self, job_id: str, *, step: int, model_id: str, metrics: dict, path: str) -> dict:
        ckpt_id = new_id("ftckpt", "_")
        self._exec(
            "INSERT INTO checkpoints (id, seq, job_id, created_at, step, model_id, metrics, path) VALUES (?,?,?,?,?,?,?,?)",
            (ckpt_id, self._next_seq("checkpoints"), job_id, now(), step, model_id, json.dumps(metrics), path),
        )
        return self._row("SELECT * FROM checkpoints WHERE id = ?", (ckpt_id,))

    def list_checkpoints(self, job_id: str) -> list[dict]:
        return self._rows("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY seq DESC", (job_id,))

    def delete_checkpoint(self, ckpt_id: str) -> None:
        self._exec("DELETE FROM checkpoints WHERE id = ?", (ckpt_id,))

    # -- models ---------------------------------------------------------------------------------

    def add_model(self, model_id: str, *, kind: str, owned_by: str, base: str | None = None,
                  source: str | None = None, adapter_path: str | None = None, job_id: str | None = None) -> dict:
        self._exec(
            "INSERT OR REPLACE INTO models (id, seq, created_at, owned_by, kind, base, source, adapter_path, job_id)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (model_id, self._next_seq("models"), now(), owned_by, kind, base, source, adapter_path, job_id),
        )
        return self.get_model(model_id)

    def get_model(self, model_id: str) -> dict | None:
        return self._row("SELECT * FROM models WHERE id = ? AND deleted = 0", (model_id,))

    def list_models(self) -> list[dict]:
        return self._rows("SELECT * FROM models WHERE deleted = 0 ORDER BY seq")

    def delete_model(self, model_id: str) -> bool:
        return bool(self._exec("UPDATE models SET deleted = 1 WHERE id = ? AND deleted = 0", (model_id,)).rowcount)

    # -- batches (Batch API) --------------------------------------------------------------------

    def save_batch(self, batch: dict) -> dict:
        exists = self._row("SELECT seq FROM batches WHERE id = ?", (batch["id"],))
        if exists:
            self._exec("UPDATE batches SET body = ? WHERE id = ?", (json.dumps(batch), batch["id"]))
        else:
            self._exec(
                "INSERT INTO batches (id, seq, created_at, body) VALUES (?,?,?,?)",
                (batch["id"], self._next_seq("batches"), batch["created_at"], json.dumps(batch)),
            )
        return batch

    def get_batch(self, batch_id: str) -> dict | None:
        row = self._row("SELECT body FROM batches WHERE id = ?", (batch_id,))
        return row["body"] if row else None

    def list_batches(self) -> list[dict]:
        return [r["body"] for r in self._rows("SELECT body FROM batches ORDER BY seq DESC")]


    # -- stored responses (Responses API) -------------------------------------------------------

    def save_response(self, response_id: str, record: dict) -> None:
        """Store a response with what it needs to be continued (``previous_response_id``)."""
        self._exec("INSERT INTO responses (id, seq, created_at, body) VALUES (?,?,?,?)",
                   (response_id, self._next_seq("responses"), now(), json.dumps(record)))

    def get_response(self, response_id: str) -> dict | None:
        row = self._row("SELECT body FROM responses WHERE id = ?", (response_id,))
        return row["body"] if row else None

    def delete_response(self, response_id: str) -> bool:
        return bool(self._exec("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount)


def _encode(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS and value is not None:
        return json.dumps(value)
    return value


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for k in _JSON_COLUMNS & out.keys():
        if out[k] is not None:
            out[k] = json.loads(out[k])
    return out

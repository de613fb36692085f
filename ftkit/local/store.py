"""Durable state of the local server: metadata in SQLite (WAL), blobs on disk.

Layout under the home directory::

    ftkit.db                 files, jobs, events, checkpoints, models, batches, responses,
                             stored chat completions, evals, eval runs and their output items
    files/<file-id>          uploaded and generated file contents
    models/<job-id>/...      LoRA adapters: final model and per-epoch checkpoints
    jobs/<job-id>/resume/    state to resume an interrupted or paused job
    jobs/<job-id>/wandb/     the job's offline W&B run, when its integrations ask for one

Every path is built from an id that matched a strict pattern, so no request can name a path
outside the home directory. The store is shared by the HTTP process and the trainer process;
each opens its own connection (SQLite serialises the writes).

Everything in the home is private to its owner (training data are customers' words): the home
and its directories are 0700, its files 0600. The server sets its umask with
:func:`private_umask` (the trainer inherits it) and tightens an older, looser home once with
:func:`make_home_private`; the store also creates its own directories and database privately
whatever the umask.

Why one module of ~650 lines: one schema (:data:`SCHEMA`), one connection discipline (a
connection per thread, WAL, private files) and one row encoding (:func:`_encode` /
:func:`_decode`) that every table's methods share; split by table, each part would repeat them
and the schema would lose its one place. About a third is the home's privacy and the damaged-
database diagnosis, which run before a :class:`Store` exists.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import sqlite3
import stat
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
CREATE TABLE IF NOT EXISTS chat_completions (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, model TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS eval_runs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, eval_id TEXT NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS eval_output_items (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_output_items_run ON eval_output_items(run_id, seq);
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


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def private_umask() -> int:
    """Make every file this process (and its children) creates private to its owner.

    The umask becomes the current one plus 077: group and others lose every bit, and whatever
    a stricter umask already removed stays removed. Returns the previous umask. Called as the
    server starts (``ftkit.client()`` in notebooks/00_setup.ipynb).
    """
    previous = os.umask(0o077)
    os.umask(previous | 0o077)
    return previous


#: What ftkit keeps directly in its home; in a home that is not ftkit's alone (see
#: :func:`shared_directory`) only these are tightened, and the directory itself is left alone.
HOME_ENTRIES = ("ftkit.db", "ftkit.db-wal", "ftkit.db-shm", "ftkit.db-journal", "api_key", "server.json",
                "server.log", "files", "models", "jobs")


def make_home_private(home: str | Path) -> int:
    """Tighten a home created before ftkit made it private: directories 0700, files 0600.

    Only group and other permissions are removed, never added (the owner's own bits and a
    stricter mode stay as they are); symbolic links are not followed. Returns how many paths
    changed -- 0 for a home that was already private, as every home ftkit creates is. Runs as
    the server starts (``ftkit.client()`` in notebooks/00_setup.ipynb).
    """
    home = Path(home)
    if not home.is_dir():
        return 0
    shared = shared_directory(home)
    changed = 0 if shared else _tighten(home)
    roots = [home / name for name in HOME_ENTRIES] if shared else list(home.iterdir())
    for root in roots:
        changed += _tighten(root)
        if root.is_dir() and not root.is_symlink():
            for parent, dirs, files in os.walk(root):
                for name in dirs + files:
                    changed += _tighten(Path(parent) / name)
    return changed


def shared_directory(path: Path) -> bool:
    """Whether ``path`` holds more than ftkit's data: the user's home directory or one above it
    (``/``), or a sticky directory that every user writes to (``/tmp``)."""
    resolved, user_home = path.resolve(), Path.home().resolve()
    if resolved == user_home or resolved in user_home.parents:
        return True
    return bool(os.stat(resolved).st_mode & stat.S_ISVTX)


def _tighten(path: Path) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode):
        return 0  # its target is not ours to change
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return 0
    try:
        os.chmod(path, mode & ~0o077)
    except OSError:  # owned by someone else: nothing this process may do about it
        return 0
    return 1


# -- a damaged database --------------------------------------------------------------------------


class UnusableDatabase(RuntimeError):
    """``ftkit.db`` cannot be used: damaged, another program's, or not openable. The message says
    what was found and the way out; the file is left exactly as it was."""


def check_database(home: str | Path) -> list[str]:
    """Check ``<home>/ftkit.db`` before the server uses it; raise :class:`UnusableDatabase` if it
    is damaged. Returns notes worth one log line each (a new database beside older blobs).

    Checks, reading only: a regular file; SQLite's ``PRAGMA quick_check`` (and on a finding
    ``integrity_check``, whose output the message shows); ftkit's tables
    (not another program's database); and an empty file beside uploaded files or models (a
    database truncated to nothing). Nothing is written, so a damaged file stays as it was for a
    restore or a closer look. Runs as the server starts (ftkit.client() in notebooks/00_setup.ipynb).
    """
    home = Path(home)
    path = home / "ftkit.db"
    blobs = _count_blobs(home)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if blobs:
            return [f"{path} did not exist: started a new, empty database. {_blob_words(home, blobs)} "
                    "from before are kept on disk (the new database does not list them)."]
        return []
    except OSError as e:
        raise UnusableDatabase(_unusable(path, f"it cannot be read ({e.strerror or e})")) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnusableDatabase(_unusable(path, "it is damaged: not a regular file", damaged=True))
    if st.st_size == 0:
        if blobs:
            raise UnusableDatabase(_unusable(
                path, f"it is damaged: empty (0 bytes) while {_blob_words(home, blobs)} are there; the "
                      "database that listed them was truncated to nothing", damaged=True))
        return []  # a database whose creation was cut off before its first table: start afresh
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error as e:
        raise UnusableDatabase(_unusable(path, f"SQLite cannot open it ({e})")) from None
    found, damaged = None, True
    try:
        # quick_check reads every page (8x faster than integrity_check on a large database, as
        # it skips matching indexes to tables); on a finding, integrity_check says it in full.
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(8)")]
        if rows != ["ok"]:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check(8)")]
        if rows != ["ok"]:
            lines = [line for row in rows for line in row.splitlines()]
            found = "it is damaged: PRAGMA integrity_check found:\n" + "\n".join(f"      {line}" for line in lines)
        else:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            found = _wrong_tables(conn, tables)
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        damaged = _is_damage(e)
        found = f"it is damaged: PRAGMA integrity_check fails with {str(e)!r}" if damaged else f"SQLite says: {e}"
    finally:
        conn.close()  # first: the message lists the files as they are once SQLite let go of them
    if found:
        raise UnusableDatabase(_unusable(path, found, damaged=damaged))
    return []


def _is_damage(error: sqlite3.Error) -> bool:
    """Damage to the file itself (the way out is a restore), not a lock, a permission or a full disk."""
    text = str(error).lower()
    return any(word in text for word in ("not a database", "malformed", "corrupt"))


def _wrong_tables(conn: sqlite3.Connection, tables: set[str]) -> str | None:
    """Why the tables are not ftkit's (another program's database), or None."""
    expected = _expected_columns()
    ours = tables & expected.keys()
    others = sorted(t for t in tables - expected.keys() if not t.startswith("sqlite_"))
    if others and not ours:
        shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
        return f"it is not ftkit's: it holds the tables {shown} (another program's SQLite file?)"
    for table in sorted(ours):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = sorted(expected[table] - have - {"trainer_pid"})  # trainer_pid is added on open
        if missing:
            return (f"it is not ftkit's (or not one this version can use): its table {table!r} lacks the "
                    f"columns {', '.join(missing)}")
    return None


def _expected_columns() -> dict[str, set[str]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: {row[1] for row in conn.execute(f"PRAGMA table_info({n})")}
                for n in names if not n.startswith("sqlite_")}
    finally:
        conn.close()


def _count_blobs(home: Path) -> dict[str, int]:
    counts = {}
    for sub in ("files", "models"):
        try:
            counts[sub] = sum(1 for _ in os.scandir(home / sub))
        except OSError:
            counts[sub] = 0
    return {k: v for k, v in counts.items() if v}


def _blob_words(home: Path, blobs: dict[str, int]) -> str:
    words = {"files": "uploaded or generated file(s)", "models": "model or checkpoint folder(s)"}
    return " and ".join(f"{n} {words[sub]} under {home / sub}" for sub, n in blobs.items())


def _unusable(path: Path, found: str, *, damaged: bool = False) -> str:
    """The one message a user sees: the file, what was found, and the way out."""
    if not damaged:
        return f"the local server cannot use its database {path}: {found}."
    home = path.parent
    moves = [f"    mv {shlex.quote(str(home / name))} {shlex.quote(str(home / name.replace('ftkit.db', 'ftkit.db.broken')))}"
             for name in ("ftkit.db", "ftkit.db-wal", "ftkit.db-shm") if (home / name).exists()]
    return (f"the local server cannot use its database {path}: {found}\n"
            f"  It was left as it is. To go on, either restore {path.name} from a backup, or move it aside "
            f"to start with an empty database:\n" + "\n".join(moves) + "\n"
            f"  Uploaded files and models under {home / 'files'} and {home / 'models'} are kept either way "
            "(nothing is deleted; a new database does not list them).")


class Store:
    """SQLite metadata plus blob directories under ``home``."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        for sub in ("files", "models", "jobs"):
            (self.home / sub).mkdir(mode=PRIVATE_DIR, exist_ok=True)
        self.db_path = self.home / "ftkit.db"
        if not self.db_path.exists():  # SQLite gives its -wal and -shm files the database's mode
            os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        self._local = threading.local()
        try:
            with self._conn() as c:
                c.executescript(SCHEMA)
                columns = {row[1] for row in c.execute("PRAGMA table_info(jobs)")}
                if "trainer_pid" not in columns:  # homes created before the column existed
                    c.execute("ALTER TABLE jobs ADD COLUMN trainer_pid INTEGER")
        except sqlite3.DatabaseError as e:  # what check_database explains in full; never a traceback
            found = f"it is damaged: SQLite says {str(e)!r}" if _is_damage(e) else f"SQLite says: {e}"
            raise UnusableDatabase(_unusable(self.db_path, found, damaged=_is_damage(e))) from None

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
        both win. The transitions themselves live in :mod:`ftkit.local.jobs.jobstate`.
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

    def list_responses(self) -> list[dict]:
        """Stored responses, oldest first (the ``responses`` source of an eval run)."""
        return [r["body"] for r in self._rows("SELECT body FROM responses ORDER BY seq")]

    # -- stored chat completions (``store: true``) ----------------------------------------------

    def save_chat_completion(self, record: dict) -> None:
        """Insert or replace a stored completion (``record["completion"]`` is the chat.completion)."""
        completion = record["completion"]
        exists = self._row("SELECT seq FROM chat_completions WHERE id = ?", (completion["id"],))
        if exists:
            self._exec("UPDATE chat_completions SET body = ? WHERE id = ?", (json.dumps(record), completion["id"]))
        else:
            self._exec("INSERT INTO chat_completions (id, seq, created_at, model, body) VALUES (?,?,?,?,?)",
                       (completion["id"], self._next_seq("chat_completions"), completion["created"],
                        completion["model"], json.dumps(record)))

    def get_chat_completion(self, completion_id: str) -> dict | None:
        row = self._row("SELECT body FROM chat_completions WHERE id = ?", (completion_id,))
        return row["body"] if row else None

    def list_chat_completions(self, model: str | None = None) -> list[dict]:
        """Stored completions, oldest first; only ``model``'s when given."""
        if model:
            return [r["body"] for r in self._rows("SELECT body FROM chat_completions WHERE model = ? ORDER BY seq",
                                                  (model,))]
        return [r["body"] for r in self._rows("SELECT body FROM chat_completions ORDER BY seq")]

    def delete_chat_completion(self, completion_id: str) -> bool:
        return bool(self._exec("DELETE FROM chat_completions WHERE id = ?", (completion_id,)).rowcount)

    # -- evals, their runs and output items (Evals API) -----------------------------------------

    def save_eval(self, record: dict) -> None:
        if self._row("SELECT seq FROM evals WHERE id = ?", (record["id"],)):
            self._exec("UPDATE evals SET body = ? WHERE id = ?", (json.dumps(record), record["id"]))
        else:
            self._exec("INSERT INTO evals (id, seq, created_at, body) VALUES (?,?,?,?)",
                       (record["id"], self._next_seq("evals"), record["created_at"], json.dumps(record)))

    def get_eval(self, eval_id: str) -> dict | None:
        row = self._row("SELECT body FROM evals WHERE id = ?", (eval_id,))
        return row["body"] if row else None

    def list_evals(self) -> list[dict]:
        """Oldest first."""
        return [r["body"] for r in self._rows("SELECT body FROM evals ORDER BY seq")]

    def delete_eval(self, eval_id: str) -> bool:
        """The eval with its runs and their output items."""
        for run in self._rows("SELECT id FROM eval_runs WHERE eval_id = ?", (eval_id,)):
            self.delete_eval_run(run["id"])
        return bool(self._exec("DELETE FROM evals WHERE id = ?", (eval_id,)).rowcount)

    def save_eval_run(self, run: dict) -> None:
        if self._row("SELECT seq FROM eval_runs WHERE id = ?", (run["id"],)):
            self._exec("UPDATE eval_runs SET body = ? WHERE id = ?", (json.dumps(run), run["id"]))
        else:
            self._exec("INSERT INTO eval_runs (id, seq, eval_id, created_at, body) VALUES (?,?,?,?,?)",
                       (run["id"], self._next_seq("eval_runs"), run["eval_id"], run["created_at"], json.dumps(run)))

    def get_eval_run(self, run_id: str) -> dict | None:
        row = self._row("SELECT body FROM eval_runs WHERE id = ?", (run_id,))
        return row["body"] if row else None

    def list_eval_runs(self, eval_id: str | None = None) -> list[dict]:
        """Oldest first; every eval's when ``eval_id`` is None (the runner looks for queued runs)."""
        if eval_id is None:
            return [r["body"] for r in self._rows("SELECT body FROM eval_runs ORDER BY seq")]
        return [r["body"] for r in self._rows("SELECT body FROM eval_runs WHERE eval_id = ? ORDER BY seq", (eval_id,))]

    def delete_eval_run(self, run_id: str) -> bool:
        self._exec("DELETE FROM eval_output_items WHERE run_id = ?", (run_id,))
        return bool(self._exec("DELETE FROM eval_runs WHERE id = ?", (run_id,)).rowcount)

    def add_eval_output_item(self, item: dict) -> None:
        self._exec("INSERT INTO eval_output_items (id, seq, run_id, status, body) VALUES (?,?,?,?,?)",
                   (item["id"], self._next_seq("eval_output_items"), item["run_id"], item["status"], json.dumps(item)))

    def delete_eval_output_items(self, run_id: str) -> None:
        """A run's output items (a run cut off by a restart starts over)."""
        self._exec("DELETE FROM eval_output_items WHERE run_id = ?", (run_id,))

    def get_eval_output_item(self, item_id: str) -> dict | None:
        row = self._row("SELECT body FROM eval_output_items WHERE id = ?", (item_id,))
        return row["body"] if row else None

    def list_eval_output_items(self, run_id: str, status: str | None = None) -> list[dict]:
        """Oldest first; only those with ``status`` (``pass`` / ``fail``) when given."""
        if status:
            return [r["body"] for r in self._rows(
                "SELECT body FROM eval_output_items WHERE run_id = ? AND status = ? ORDER BY seq", (run_id, status))]
        return [r["body"] for r in self._rows("SELECT body FROM eval_output_items WHERE run_id = ? ORDER BY seq",
                                              (run_id,))]


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

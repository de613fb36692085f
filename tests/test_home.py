"""The local server's home (issue 12): private to its owner, and a damaged database stops the
start with one clear message -- never a traceback, never a lost file.

Fast tests check the store's functions on crafted homes and one real start through
``control.start_server`` (what ``ftkit.client()`` runs), which stops before any model loads. The
slow test starts the real server on an older, looser home.
"""

from __future__ import annotations

import os
import random
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import LocalServer, loose_paths, tiny_chat_file

from ftkit.local import control
from ftkit.local.store import (
    Store,
    UnusableDatabase,
    check_database,
    make_home_private,
    private_umask,
)

FILE_ID = "file-" + "a" * 24


@pytest.fixture
def open_umask():
    """The umask most users have (022), restored afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _home_with_data(home: Path, events: int = 300) -> Path:
    """A home as the server leaves it: a database that knows an uploaded file, and the file."""
    store = Store(home)
    store.add_file(FILE_ID, filename="train.jsonl", purpose="fine-tune", size=3, sha256="0" * 64)
    store.file_path(FILE_ID).write_bytes(b"abc")
    (home / "models" / ("ftjob-" + "b" * 24) / "final").mkdir(parents=True)
    (home / "models" / ("ftjob-" + "b" * 24) / "final" / "adapter_model.safetensors").write_bytes(b"weights")
    for i in range(events):  # a few pages, so that truncation cuts into data
        store.add_event("ftjob-" + "b" * 24, f"event {i} " + "x" * 200)
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._conn().close()
    return home


# -- private files -------------------------------------------------------------------------------


def test_private_umask_adds_077_and_keeps_a_stricter_one():
    for before, after in ((0o022, 0o077), (0o027, 0o077), (0o077, 0o077), (0o277, 0o277), (0o002, 0o077)):
        old = os.umask(before)
        try:
            assert private_umask() == before
            assert os.umask(old) == after
        finally:
            os.umask(old)


def test_store_creates_its_home_and_database_private_whatever_the_umask(tmp_path, open_umask):
    home = _home_with_data(tmp_path / "home", events=3)
    assert _mode(home) == 0o700
    assert {p.name: _mode(p) for p in home.iterdir() if p.is_dir()} == {"files": 0o700, "models": 0o700, "jobs": 0o700}
    assert _mode(home / "ftkit.db") == 0o600
    store = Store(home)
    store.add_event("ftjob-" + "b" * 24, "one more")  # in WAL mode: -wal and -shm exist now
    assert {p.name: _mode(p) for p in home.glob("ftkit.db*")} == dict.fromkeys(
        ["ftkit.db", "ftkit.db-wal", "ftkit.db-shm"], 0o600)


def test_make_home_private_tightens_group_and_other_bits_only(tmp_path):
    home = _home_with_data(tmp_path / "home", events=3)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not ftkit's")
    os.chmod(outside, 0o644)
    (home / "models" / "linked.txt").symlink_to(outside)
    (home / "notes.txt").write_text("the user's own file in the home")
    for path in [home, *home.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (home / "read-only.txt").write_text("x")
    os.chmod(home / "read-only.txt", 0o400)  # stricter than 0600: stays as it is

    changed = make_home_private(home)
    assert loose_paths(home) == []
    assert changed == len([p for p in [home, *home.rglob("*")] if not p.is_symlink()]) - 1  # all but read-only
    assert _mode(home / "read-only.txt") == 0o400
    assert _mode(home / "files" / FILE_ID) == 0o600 and _mode(home / "models") == 0o700
    assert _mode(outside) == 0o644  # a link's target is not the home's to change
    assert make_home_private(home) == 0  # already private: nothing to say


def test_a_shared_directory_as_home_keeps_its_mode_and_others_files(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    (shared / "someone-else.txt").write_text("x")
    os.chmod(shared / "someone-else.txt", 0o644)
    (shared / "ftkit.db").write_bytes(b"")
    os.chmod(shared / "ftkit.db", 0o644)
    assert make_home_private(shared) == 1
    assert _mode(shared) == 0o1777 and _mode(shared / "someone-else.txt") == 0o644
    assert _mode(shared / "ftkit.db") == 0o600


# -- a damaged database --------------------------------------------------------------------------


def _truncate(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _random_bytes(db: Path) -> None:
    db.write_bytes(random.Random(12).randbytes(8192))


def _text(db: Path) -> None:
    db.write_text("id,filename\nfile-1,train.jsonl\n" * 50)


def _zero_bytes(db: Path) -> None:
    db.write_bytes(b"")


def _other_program(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")


def _other_program_with_a_files_table(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE files (path TEXT, size INTEGER)")


def _overwritten_page(db: Path) -> None:
    content = bytearray(db.read_bytes())
    content[3 * 4096 : 3 * 4096 + 600] = b"\x55" * 600
    db.write_bytes(bytes(content))


DAMAGE = {  # how the file was damaged -> what the message must say was found
    # cut at half: SQLite reports it from the check's rows or as an error, by where the cut falls
    "truncated": (_truncate, ("it is damaged: PRAGMA integrity_check found:\n",
                              "it is damaged: PRAGMA integrity_check fails with 'database disk image is malformed'")),
    "random bytes": (_random_bytes, "it is damaged: PRAGMA integrity_check fails with 'file is not a database'"),
    "a text file": (_text, "it is damaged: PRAGMA integrity_check fails with 'file is not a database'"),
    "zero bytes beside uploaded files": (_zero_bytes, "it is damaged: empty (0 bytes) while 1 uploaded or "
                                                      "generated file(s) under "),
    "another program's database": (_other_program,
                                   "it is not ftkit's: it holds the tables contacts (another program's SQLite file?)"),
    "another program's table named files": (_other_program_with_a_files_table,
                                            "it is not ftkit's (or not one this version can use): its table 'files' "
                                            "lacks the columns bytes, created_at"),
    "an overwritten page": (_overwritten_page, "it is damaged: PRAGMA integrity_check fails with 'database disk "
                                               "image is malformed'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_database_is_named_with_what_was_found_and_the_way_out(tmp_path, damage):
    home = _home_with_data(tmp_path / "home")
    db = home / "ftkit.db"
    spoil, found = DAMAGE[damage]
    spoil(db)
    before = db.read_bytes()
    with pytest.raises(UnusableDatabase) as raised:
        check_database(home)
    message = str(raised.value)
    assert message.startswith(f"the local server cannot use its database {db}: it is ")
    assert any(text in message for text in ((found,) if isinstance(found, str) else found)), message
    assert "restore ftkit.db from a backup" in message
    assert f"mv {db} {home / 'ftkit.db.broken'}" in message
    assert f"Uploaded files and models under {home / 'files'} and {home / 'models'} are kept" in message
    assert db.read_bytes() == before  # left as it was, for a restore or a closer look
    assert (home / "files" / FILE_ID).read_bytes() == b"abc"


@pytest.mark.parametrize("damage", ["random bytes", "a text file"])
def test_the_store_itself_never_shows_a_traceback_for_a_damaged_file(tmp_path, damage):
    """The trainer and register-model open the store directly: the same message, as an exception."""
    home = _home_with_data(tmp_path / "home")
    DAMAGE[damage][0](home / "ftkit.db")
    with pytest.raises(UnusableDatabase, match="it is damaged: SQLite says 'file is not a database'"):
        Store(home)


def test_an_empty_or_missing_database_is_a_new_one_and_older_blobs_are_kept(tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "ftkit.db").write_bytes(b"")  # a start cut off before the first table: nothing lost
    assert check_database(fresh) == []
    home = _home_with_data(tmp_path / "home")
    for name in ("ftkit.db", "ftkit.db-wal", "ftkit.db-shm"):
        if (home / name).exists():
            (home / name).rename(home / name.replace("ftkit.db", "ftkit.db.broken"))
    notes = check_database(home)
    assert len(notes) == 1 and notes[0].startswith(f"{home / 'ftkit.db'} did not exist: started a new, empty database")
    assert "1 uploaded or generated file(s)" in notes[0] and "1 model or checkpoint folder(s)" in notes[0]
    store = Store(home)
    assert store.list_files() == []
    assert (home / "files" / FILE_ID).exists()  # kept: nothing deletes what the database does not know


def test_start_server_shows_the_damage_message_and_the_server_exits_2(tmp_path, open_umask):
    """What a notebook's ftkit.client() meets: the one message, readable, in the exception."""
    home = _home_with_data(tmp_path / "home")
    os.chmod(home, 0o755)  # an older home: tightened before the database is looked at
    _random_bytes(home / "ftkit.db")
    before = (home / "ftkit.db").read_bytes()
    with pytest.raises(control.ServerStartError) as raised:
        control.start_server(home, timeout=120)
    message = str(raised.value)
    assert message.startswith("the local server stopped while starting (exit code 2):\n")
    assert (f"ftkit: the local server cannot use its database {home / 'ftkit.db'}: it is damaged: PRAGMA "
            "integrity_check fails with 'file is not a database'") in message
    assert f"mv {home / 'ftkit.db'} {home / 'ftkit.db.broken'}" in message
    assert "Traceback" not in message and "Traceback" not in (home / "server.log").read_text()
    assert (home / "ftkit.db").read_bytes() == before and (home / "files" / FILE_ID).exists()
    assert loose_paths(home) == []  # the log ftkit.client() created is private too


# -- the real server on an older home ------------------------------------------------------------


@pytest.mark.slow
def test_an_older_loose_home_is_tightened_once_and_a_database_moved_aside_starts_empty(tmp_path, open_umask):
    pytest.importorskip("torch")
    home = _home_with_data(tmp_path / "home", events=3)
    (home / "server.log").write_text("an older server's log\n")
    for path in [home, *home.rglob("*")]:  # as ftkit created homes before issue 12
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    n_loose = len([home, *home.rglob("*")])
    server = LocalServer(home)
    server.start()
    try:
        assert loose_paths(home) == []
        uploaded = server.client().files.create(file=tiny_chat_file(tmp_path / "t.jsonl").open("rb"),
                                                purpose="fine-tune")
        assert loose_paths(home) == []  # what the server writes from now on is private too
    finally:
        server.stop()
    lines = [line for line in (home / "server.log").read_text().splitlines() if "private" in line]
    assert lines == [f"made the home {home} private: {n_loose} of its files and folders could be read by other "
                     "users; now folders are 0700 and files 0600"]

    # The way out of a damaged database: move it aside; the server starts empty, keeps every blob.
    blobs = sorted(p.relative_to(home) for p in home.rglob("*") if p.parts[len(home.parts)] in ("files", "models"))
    for name in ("ftkit.db", "ftkit.db-wal", "ftkit.db-shm"):
        if (home / name).exists():
            (home / name).rename(home / name.replace("ftkit.db", "ftkit.db.broken"))
    server.start()
    try:
        assert server.client().files.list().data == []
    finally:
        server.stop()
    log = (home / "server.log").read_text()
    assert log.count(f"made the home {home} private") == 1  # once: the home stayed private
    assert f"{home / 'ftkit.db'} did not exist: started a new, empty database. 2 uploaded or generated file(s)" in log
    assert sorted(p.relative_to(home) for p in home.rglob("*")
                  if p.parts[len(home.parts)] in ("files", "models")) == blobs
    assert (home / "files" / uploaded.id).exists()


def test_a_server_this_process_started_counts_as_stopped_once_it_exits():
    """A child that has exited stays a zombie until reaped; stop_server must not wait out its whole
    timeout on it (notebook 08 stops the server it started: that took 30 s)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 30
    while control._alive(proc.pid):
        assert time.monotonic() < deadline, "an exited child still counts as alive"
        time.sleep(0.05)
    assert not control._alive(proc.pid)
    assert control._alive(os.getpid())  # this process, not our child, is alive

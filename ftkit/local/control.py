"""Start, find and stop the local server from other processes (no torch imported here).

The server writes ``server.json`` (pid, host, port) into its home directory when it is up;
``ensure_server`` reuses a live one or starts ``python -m ftkit.local serve`` in the background
and waits until it answers. Its output goes to ``<home>/server.log``. The home and everything
this module creates in it are private to their owner (0700 / 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8765
KEY_PREFIX = "ftkit-local-"


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The local backend's home (``FTKIT_HOME``, default ``~/.ftkit``): files, jobs, models, key."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("FTKIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".ftkit"


def api_key(home: Path) -> str:
    """The server's bearer key, generated on first use into ``<home>/api_key`` with mode 0600."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / "api_key"
    if not path.exists():
        key = KEY_PREFIX + secrets.token_hex(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    os.chmod(path, 0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    home: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def _alive(pid: int) -> bool:
    try:  # a server this process started and that has exited is a zombie until reaped
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child: the signal test below decides
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(info: ServerInfo, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"http://{info.host}:{info.port}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(home: Path) -> ServerInfo | None:
    """The server serving ``home``, if one is up and answering."""
    path = home / "server.json"
    try:
        meta = json.loads(path.read_text())
        info = ServerInfo(int(meta["pid"]), meta["host"], int(meta["port"]), home)
    except (OSError, ValueError, KeyError):
        return None
    if _alive(info.pid) and _answers(info):
        return info
    return None


def _free_port(host: str, preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise OSError("no free port")


class ServerStartError(RuntimeError):
    """The local server stopped while starting; the message is what it said (its log)."""


def open_log(home: Path):
    """``<home>/server.log`` for appending, private to its owner (created 0600)."""
    fd = os.open(home / "server.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


def start_server(
    home: Path, *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 120.0
) -> ServerInfo:
    """Start the server in the background and wait until it answers.

    If it stops instead, :class:`ServerStartError` carries what it wrote while starting, e.g. why
    its database cannot be used and what to do about it.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    api_key(home)
    port = _free_port(host, port if port is not None else int(os.environ.get("FTKIT_PORT", DEFAULT_PORT)))
    log = open_log(home)
    started_at = log.seek(0, os.SEEK_END)  # what this start writes begins here
    cmd = [sys.executable, "-m", "ftkit.local", "serve", "--home", str(home), "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # outlives the notebook kernel that started it
    log.close()
    deadline = time.monotonic() + timeout
    info = ServerInfo(proc.pid, host, port, home)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"the local server stopped while starting (exit code {proc.returncode}):\n"
                                   + _log_since(home / "server.log", started_at))
        if _answers(info, timeout=1.0):
            return info
        time.sleep(0.25)
    proc.terminate()
    raise TimeoutError(f"the local server did not answer within {timeout:.0f} s; see {home / 'server.log'}")


def _log_since(path: Path, offset: int, limit: int = 6000) -> str:
    """What the log gained since ``offset`` (its last ``limit`` characters), or a pointer to it."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text or f"(it wrote nothing; see {path})"


def ensure_server(home: Path | None = None) -> ServerInfo:
    """A running server for ``home``: the one already up, or a new one."""
    home = home_dir(home)
    return running_server(home) or start_server(home)


def stop_server(home: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the server of ``home`` (SIGTERM, then SIGKILL). True if one was running."""
    home = home_dir(home)
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True

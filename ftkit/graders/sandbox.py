"""Running ``python`` graders: ``grade(sample, item)`` in a separate, limited process.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

A :class:`PythonSandbox` keeps one worker process (``_sandbox_worker.py``) and sends it one
sample at a time, so grading a batch pays one process start, not one per sample; a worker that
timed out or died is replaced before the next sample. What the worker guarantees on Linux:

* **Wall-clock limit** per sample (``timeout_s``, default 30 s, or ``FTKIT_PYTHON_GRADER_TIMEOUT_S``;
  OpenAI's hosted graders allow 2 minutes, which would stall a local training step): past it, the worker's whole process group
  is killed and the sample reports ``unresponsive_reward_error``. Grader code at module level
  counts against the first sample's limit.
* **CPU limit** (``RLIMIT_CPU``): a grader that burns CPU (on several threads, it can use more
  CPU time than wall time) is stopped by the kernel (``SIGXCPU``) once it has used ``cpu_s``
  CPU seconds in one call (default: ``timeout_s``), also reported as ``unresponsive_reward_error``.
  The limit has whole-second steps; the worker's lifetime hard limit is 4 calls' worth, and it is
  replaced before a call could start with less than ``cpu_s`` left.
* **Memory limit** (``RLIMIT_AS``, default 2 GiB, as hosted): allocations beyond it fail, which
  Python reports as ``MemoryError`` (a ``python_grader_runtime_error``).
* **Files** (``RLIMIT_FSIZE``, 256 MiB per file; no core dumps) in a fresh temporary working
  directory, removed afterwards; ``RLIMIT_NPROC`` caps a fork bomb when the worker runs as
  ``nobody``.
* **No network**: the worker moves into a new, empty network namespace (needs root, or
  unprivileged user namespaces); where the OS refuses, only Python's ``socket`` module is
  blocked, which is weaker (ctypes or a subprocess get round it). :attr:`PythonSandbox.info`
  says which applied.
* **Not root**: started as root, the worker becomes ``nobody`` before running grader code.
* **A clean environment**: no ``OPENAI_API_KEY`` or other variables of the caller; one thread
  for numpy/BLAS.

What a grader prints goes nowhere; only ``grade``'s return value is read. These limits contain
mistakes (a loop, a memory bomb, a crash); they are not a security boundary against hostile code
run as the same user that owns the machine's files, as a hosted container would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT_S", "PythonSandbox", "SandboxOutcome"]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MB = 2048
FILE_SIZE_MB = 256
MAX_PROCESSES = 256
START_TIMEOUT_S = 60.0  # a cold Python start on a busy 2-core machine can take seconds
WORKER = Path(__file__).with_name("_sandbox_worker.py")


@dataclass
class SandboxOutcome:
    """One sample's result: ``reward`` when ``grade`` returned a number, else which error flag
    applies (``error``: ``python_grader_runtime_error``, ``unresponsive_reward_error`` or
    ``python_grader_server_error``), ``details`` for the grader's author and, for server errors,
    ``server_error_type``."""

    reward: float | None = None
    error: str | None = None
    details: str | None = None
    server_error_type: str | None = None


class _WorkerDied(Exception):
    pass


class _TimedOut(Exception):
    pass


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _cleanup(proc: subprocess.Popen | None, fds: list[int], workdir: str | None) -> None:
    if proc is not None:
        _kill_group(proc)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


class PythonSandbox:
    """Runs python graders' ``grade(sample, item)`` in a limited worker process, reused across
    samples (see the module docstring for the limits). Thread-safe: calls are serialised.

    >>> with PythonSandbox(timeout_s=5) as box:
    ...     box.grade("def grade(sample, item):\\n    return 1.0", {"output_text": "x"}, {}).reward
    1.0

    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """

    def __init__(self, *, timeout_s: float | None = None, memory_mb: int = DEFAULT_MEMORY_MB,
                 cpu_s: float | None = None) -> None:
        if timeout_s is None:
            timeout_s = float(os.environ.get("FTKIT_PYTHON_GRADER_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.cpu_s = float(cpu_s if cpu_s is not None else self.timeout_s)
        # the worker's lifetime CPU budget: several calls' worth, so it is seldom replaced; it is
        # replaced before a call could start with less than cpu_s left
        self._cpu_budget = int(self.cpu_s * 4) + 1
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._fds: list[int] = []
        self._workdir: str | None = None
        self._known: set[str] = set()
        self._cpu_used = 0.0
        self._finalizer = None
        self.info: dict = {}
        self.workers_started = 0

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> PythonSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (a later :meth:`grade` starts a new one)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills the process group, closes the pipes, removes the directory
        self._proc, self._fds, self._workdir, self._finalizer = None, [], None, None
        self._known.clear()
        self._cpu_used = 0.0

    def _start(self) -> None:
        self._workdir = tempfile.mkdtemp(prefix="ftkit-grader-")
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        limits = {
            "RLIMIT_AS": self.memory_mb * 1024 * 1024,
            "RLIMIT_CPU": self._cpu_budget,
            "RLIMIT_FSIZE": FILE_SIZE_MB * 1024 * 1024,
            "RLIMIT_CORE": 0,
            "RLIMIT_NPROC": MAX_PROCESSES,
        }
        config = json.dumps({"workdir": self._workdir, "limits": limits, "cpu_per_call": self.cpu_s})
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self._workdir, "TMPDIR": self._workdir,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
               **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
        try:
            # -I: isolated mode (no PYTHONPATH, no user site, no current directory on sys.path);
            # the installed packages stay importable, as numpy, rapidfuzz... are on hosted graders
            proc = subprocess.Popen(
                [sys.executable, "-I", str(WORKER), str(req_r), str(resp_w), config],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(req_r, resp_w), env=env, cwd=self._workdir, start_new_session=True, close_fds=True)
        except OSError:
            _cleanup(None, [req_w, resp_r], self._workdir)
            raise
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._proc, self._fds = proc, [req_w, resp_r]
        self._finalizer = weakref.finalize(self, _cleanup, proc, [req_w, resp_r], self._workdir)
        self.workers_started += 1
        ready = self._receive(START_TIMEOUT_S)
        self.info = {"network": ready.get("network"), "user": ready.get("user"), "limits": ready.get("limits", {}),
                     "timeout_s": self.timeout_s, "cpu_s": self.cpu_s, "memory_mb": self.memory_mb}

    # -- protocol --------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        data = struct.pack(">I", len(data)) + data
        try:
            while data:
                data = data[os.write(self._fds[0], data):]
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied(str(exc)) from None

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TimedOut()
            ready, _, _ = select.select([self._fds[1]], [], [], left)
            if not ready:
                raise _TimedOut()
            chunk = os.read(self._fds[1], min(1 << 20, size - len(out)))
            if not chunk:
                raise _WorkerDied("the worker closed its pipe")
            out += chunk
        return bytes(out)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        (size,) = struct.unpack(">I", self._read_exactly(4, deadline))
        return json.loads(self._read_exactly(size, deadline).decode("utf-8"))

    def _death_details(self) -> tuple[str, str]:
        """(error flag, details) for a worker that died while grading."""
        code = self._proc.wait(timeout=10) if self._proc else None
        if code is not None and code < 0:
            try:
                sig = signal.Signals(-code)
            except ValueError:
                return "python_grader_runtime_error", f"the grader process died (signal {-code})"
            if sig == signal.SIGXCPU:
                return "unresponsive_reward_error", f"the grader used more than {self.cpu_s:g} s of CPU time"
            if sig == signal.SIGXFSZ:
                return "python_grader_runtime_error", f"the grader wrote a file larger than {FILE_SIZE_MB} MiB"
            if sig == signal.SIGKILL:
                return "python_grader_runtime_error", "the grader process was killed (SIGKILL; out of memory?)"
            return "python_grader_runtime_error", f"the grader process died ({sig.name})"
        return "python_grader_runtime_error", f"the grader process exited with code {code} (sys.exit/os._exit?)"

    # -- grading ---------------------------------------------------------------------------

    def grade(self, source: str, sample: dict, item: dict) -> SandboxOutcome:
        """Run ``grade(sample, item)`` from ``source`` and return its reward or its error."""
        with self._lock:
            return self._grade(source, sample, item)

    def _grade(self, source: str, sample: dict, item: dict) -> SandboxOutcome:
        if self._proc is not None and (self._proc.poll() is not None or self._cpu_used + self.cpu_s > self._cpu_budget):
            self._stop()
        if self._proc is None:
            try:
                self._start()
            except (_WorkerDied, _TimedOut, OSError, ValueError) as exc:
                self._stop()
                why = f"no answer within {START_TIMEOUT_S:g} s" if isinstance(exc, _TimedOut) else f"{type(exc).__name__}: {exc}"
                return SandboxOutcome(error="python_grader_server_error", server_error_type="sandbox_start_failed",
                                      details=f"the python grader sandbox did not start ({why})")
        source_id = hashlib.sha256(source.encode("utf-8")).hexdigest()
        request = {"source_id": source_id, "sample": sample, "item": item}
        if source_id not in self._known:
            request["source"] = source
        try:
            data = json.dumps(request).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return SandboxOutcome(error="python_grader_server_error", server_error_type="invalid_input",
                                  details=f"the sample or item cannot be sent to the grader as JSON: {exc}")
        try:
            self._send(data)
            self._known.add(source_id)
            answer = self._receive(self.timeout_s)
        except _TimedOut:
            self._stop()
            return SandboxOutcome(error="unresponsive_reward_error",
                                  details=f"grade() did not return within {self.timeout_s:g} s (wall-clock limit); stopped")
        except _WorkerDied:
            error, details = self._death_details()
            self._stop()
            return SandboxOutcome(error=error, details=details)
        except (ValueError, struct.error) as exc:  # a garbled message: never trust that worker again
            self._stop()
            return SandboxOutcome(error="python_grader_server_error", server_error_type="protocol_error",
                                  details=f"unreadable answer from the grader process: {exc}")
        self._cpu_used = float(answer.get("cpu", 0.0))
        if answer.get("ok"):
            return SandboxOutcome(reward=float(answer["reward"]))
        return SandboxOutcome(error="python_grader_runtime_error", details=answer.get("details"))

"""The python grader's worker process (run as a script by ftkit.graders.sandbox; imports nothing
from ftkit, so it starts fast and a grader cannot reach ftkit's state).

Protocol: length-prefixed JSON messages (4-byte big-endian length, then UTF-8 JSON) read from
the request pipe and written to the response pipe, whose file descriptors are given on the
command line. The grader's own stdout and stderr go elsewhere, so whatever it prints cannot
corrupt the protocol.

Start-up, before any grader code runs: cut the network (a new, empty network namespace; else a
Python-level block), drop root to ``nobody``, set the resource limits, then say ``ready`` with
what was applied. Then, per request ``{"source_id", "source"?, "sample", "item"}``: compile the
source once per id, allow the call ``cpu_per_call`` more CPU seconds, call ``grade(sample, item)``, and answer ``{"ok": true, "reward": float}``
or ``{"ok": false, "details": "..."}``, with the process's CPU seconds so far.
"""

import ctypes
import json
import math
import numbers
import os
import resource
import struct
import sys
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NOBODY = 65534


def read_message(fd):
    header = b""
    while len(header) < 4:
        chunk = os.read(fd, 4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = bytearray()
    while len(body) < size:
        chunk = os.read(fd, min(1 << 20, size - len(body)))
        if not chunk:
            return None
        body += chunk
    return json.loads(body.decode("utf-8"))


def write_message(fd, message):
    data = json.dumps(message).encode("utf-8")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def isolate_network():
    """A new network namespace has only a loopback device, down: nothing can be reached, not
    even this machine's own servers. Root may create one; others need a user namespace too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            return "network namespace"
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            return "user and network namespace"
    except (OSError, AttributeError):
        pass
    # Weaker: only Python's socket module is blocked; code using ctypes or a subprocess gets round it.
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in python graders")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse()

    socket.socket = NoSocket
    socket.create_connection = socket.getaddrinfo = socket.socketpair = socket.fromfd = refuse
    return "python socket block"


def readable_by_others(path):
    """Whether a user other than the owner can read ``path`` (every directory above it
    searchable, the path itself readable)."""
    import stat

    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(path)
            if parent == path:
                return True
            path = parent
    except OSError:
        return False


def drop_root(workdir):
    """Run as ``nobody`` when started as root -- unless ``nobody`` could not read Python itself
    (e.g. a pyenv install under /root), which would leave the grader unable to import anything."""
    if os.geteuid() != 0:
        return None
    if not all(readable_by_others(p) for p in (sys.base_prefix, sys.prefix, *sys.path) if p and os.path.exists(p)):
        return None
    try:
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        return "nobody"
    except OSError:
        return None


def set_limits(limits):
    applied = {}
    for name, value in limits.items():
        which = getattr(resource, name)
        try:
            # soft = hard, so the grader cannot raise its own limits
            resource.setrlimit(which, (value, value))
            applied[name] = value
        except (ValueError, OSError):
            pass
    return applied


def cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def limit_cpu(seconds):
    """This call may use ``seconds`` more CPU seconds: the soft limit moves up to the used time
    plus that, never past the hard limit (the worker's lifetime budget, which the parent tracks)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY:
        return
    wanted = min(hard, math.ceil(cpu_seconds() + seconds))
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_CPU, (wanted, hard))


def short_traceback(exc):
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    # drop this worker's own frames: the grader's author needs their code's lines only
    lines = [line for line in lines if __file__ not in line]
    text = "".join(lines).strip()
    return text if len(text) <= 4000 else "..." + text[-4000:]


def load_grader(source):
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    code = compile(source, "<grader>", "exec")
    exec(code, namespace)  # noqa: S102 -- running the user's grader is this process's purpose
    grade = namespace.get("grade")
    if not callable(grade):
        raise TypeError("the source defines no grade(sample, item) function")
    return grade


def as_reward(value):
    if isinstance(value, numbers.Real):
        reward = float(value)
        if math.isfinite(reward):
            return reward, None
        return None, f"grade() returned {reward}, which is not a finite number"
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    return None, f"grade() returned {shown} ({type(value).__name__}); it must return a float"


def main():
    request_fd, response_fd = int(sys.argv[1]), int(sys.argv[2])
    config = json.loads(sys.argv[3])
    workdir = config["workdir"]
    network = isolate_network()
    user = drop_root(workdir)
    limits = set_limits(config["limits"])
    os.chdir(workdir)
    write_message(response_fd, {"ready": True, "network": network, "user": user, "limits": limits})
    graders = {}
    while True:
        request = read_message(request_fd)
        if request is None:
            return
        try:
            limit_cpu(config["cpu_per_call"])
            source_id = request["source_id"]
            if source_id not in graders:
                graders[source_id] = load_grader(request["source"])
            reward, problem = as_reward(graders[source_id](request["sample"], request["item"]))
            answer = {"ok": True, "reward": reward} if problem is None else {"ok": False, "details": problem}
        except BaseException as exc:  # noqa: BLE001 -- SystemExit and KeyboardInterrupt from a grader are its errors too
            answer = {"ok": False, "details": short_traceback(exc)}
        answer["cpu"] = cpu_seconds()
        write_message(response_fd, answer)


if __name__ == "__main__":
    main()

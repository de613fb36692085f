"""The trainer process: ``python -m ftkit.local.jobs.trainer --home DIR --job ftjob-…``.

Started by the server's worker, one per running job, so the API keeps answering while it trains
and a cancel or pause can stop it. It runs the job with :class:`ftkit.local.jobs.training.loop.JobRun`
and reports only through the store (events, metrics, checkpoints, the job's status); it never
touches HTTP.

SIGTERM (the server stopping, or dying: see :func:`_die_with_parent`) only raises a flag; the
loop checks it between steps and saves a resumable state, which is never written half-way.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from ..store import Store
from . import jobstate


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the server that started it dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit.local.jobs.trainer")
    parser.add_argument("--home", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent()
    import signal

    import torch

    from .training.loop import JobRun, JobStopped

    if args.threads:
        torch.set_num_threads(args.threads)
    store = Store(args.home)
    job = store.get_job(args.job)
    if job is None:
        print(f"no job {args.job}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set())
    store.job_dir(args.job).mkdir(parents=True, exist_ok=True)
    (store.job_dir(args.job) / "trainer.pid").write_text(str(os.getpid()))
    try:
        JobRun(store, job, log=lambda m: print(m, flush=True), stop_requested=stop_requested).run()
    except JobStopped:
        return 0
    except Exception as e:  # the job fails with the reason; the server sees the status
        import traceback

        traceback.print_exc()
        jobstate.fail(store, args.job, "training_failed", f"Training failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

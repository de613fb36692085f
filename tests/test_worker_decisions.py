"""The worker's decisions (ftkit.local.jobs.worker) as tables, in milliseconds: files -> queue or fail,
and status x exit code x stopping -> wait, terminate, requeue, fail or finish.

The end-to-end proof stays with the server tests (kill -9 of the trainer and of the server in
tests/test_durability.py); these tables pin every branch of the rules those tests exercise.
"""

from __future__ import annotations

import pytest

from ftkit import lifecycle as lc
from ftkit.local.jobs import worker
from ftkit.tokens import ExampleTokens
from ftkit.validation import validate


class _WordCounter:
    """Counts words instead of tokens: the decisions do not depend on the tokenizer."""

    def count_examples(self, examples):
        return [ExampleTokens(total=len(str(ex).split()), trained=1) for ex in examples]


def _report(examples, method=None, grader_fields=()):
    """ftkit's real validator on ``examples``, as the worker runs it."""
    return validate(examples, token_counter=_WordCounter(), encoding="words", min_examples=1, method=method,
                    grader_fields=grader_fields)


def _chat(i):
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]}


def _pair(i):
    return {"input": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "preferred_output": [{"role": "assistant", "content": "good"}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def _prompt(i):
    return {"messages": [{"role": "user", "content": f"question {i}"}], "label": "x"}


REPORTS = {
    "chat": lambda: _report([_chat(i) for i in range(3)]),
    "preference": lambda: _report([_pair(i) for i in range(3)]),
    "reinforcement": lambda: _report([_prompt(i) for i in range(3)], lc.REINFORCEMENT, {"label"}),
    "broken": lambda: _report([_chat(0), {"messages": "not a list"}, {"prompt": "legacy"}, {}, {"x": 1}]),
}

# file's contents, method, role -> ok?, error code, a phrase of the message
FILE_TABLE = [
    ("chat", lc.SUPERVISED, "training", True, None, None),
    ("chat", lc.SUPERVISED, "validation", True, None, None),
    ("preference", lc.DPO, "training", True, None, None),
    ("reinforcement", lc.REINFORCEMENT, "validation", True, None, None),
    ("preference", lc.SUPERVISED, "training", False, "invalid_training_file", "use method 'dpo' for preference examples"),
    ("chat", lc.DPO, "validation", False, "invalid_validation_file", "method 'dpo' trains on preference examples"),
    ("chat", lc.REINFORCEMENT, "training", False, "invalid_training_file", "trains on reinforcement examples"),
    ("broken", lc.SUPERVISED, "training", False, "invalid_training_file", "(and 1 more errors)"),
]


@pytest.mark.parametrize(("contents", "method", "role", "ok", "code", "phrase"), FILE_TABLE)
def test_files_queue_or_fail(contents, method, role, ok, code, phrase):
    verdict = worker.judge_file(role, "file-abc", method, REPORTS[contents]())
    assert verdict.ok is ok and verdict.code == code
    if ok:
        assert verdict.message is None and verdict.param is None
    else:
        assert verdict.param == f"{role}_file" and "file-abc" in verdict.message and phrase in verdict.message


def test_every_method_trains_on_the_kind_the_validator_reports():
    kinds = {lc.SUPERVISED: "chat", lc.DPO: "preference", lc.REINFORCEMENT: "reinforcement"}
    for method, contents in kinds.items():
        assert REPORTS[contents]().kind == worker.FILE_KIND[method]
    assert set(worker.FILE_KIND) == set(lc.METHODS)


def test_warnings_become_at_most_five_events_naming_the_file():
    duplicated = _report([_chat(0)] * 8)  # a duplicate example is a warning, not an error
    assert duplicated.ok and duplicated.warnings
    verdict = worker.judge_file("training", "file-dup", lc.SUPERVISED, duplicated)
    assert verdict.ok and 1 <= len(verdict.warnings) <= 5
    assert all(w.startswith("Training file file-dup: ") for w in verdict.warnings)


GRACE = worker.STOP_GRACE_SECONDS
# status, exit code (None: still running; negative: killed by that signal), server stopping,
# seconds since the cancel/pause was seen -> action
TRAINER_TABLE = [
    (lc.RUNNING, None, False, None, worker.WAIT),
    (lc.RUNNING, None, True, None, worker.WAIT),
    (lc.CANCELLED, None, False, 1.0, worker.WAIT),  # it stops by itself at its next step
    (lc.PAUSED, None, False, GRACE, worker.WAIT),
    (lc.CANCELLED, None, False, GRACE + 1, worker.TERMINATE),
    (lc.PAUSED, None, False, GRACE + 1, worker.TERMINATE),
    (lc.RUNNING, None, False, GRACE + 1, worker.WAIT),  # only a stop that was asked for is overdue
    (lc.RUNNING, -9, False, None, worker.REQUEUE),  # kill -9 / the OOM killer: resume
    (lc.RUNNING, -15, False, None, worker.REQUEUE),
    (lc.RUNNING, -9, True, None, worker.FAIL),  # our own shutdown is not a crash
    (lc.RUNNING, 1, False, None, worker.FAIL),  # exited without recording the end
    (lc.RUNNING, 0, False, None, worker.FAIL),
    (lc.SUCCEEDED, 0, False, None, worker.FINISH),
    (lc.FAILED, 1, False, None, worker.FINISH),
    (lc.CANCELLED, 0, False, 3.0, worker.FINISH),
    (lc.PAUSED, 0, False, 3.0, worker.FINISH),
    (lc.CANCELLED, -15, True, GRACE + 1, worker.FINISH),
]


@pytest.mark.parametrize(("status", "code", "stopping", "seen_for", "action"), TRAINER_TABLE)
def test_status_exit_code_and_stopping_decide(status, code, stopping, seen_for, action):
    assert worker.trainer_action(status, code, stopping=stopping, stop_seen_for=seen_for) == action


def test_the_trainer_table_covers_every_status_and_action():
    assert {row[0] for row in TRAINER_TABLE} == set(lc.KNOWN_STATUSES) - {lc.VALIDATING_FILES, lc.QUEUED}
    assert {row[-1] for row in TRAINER_TABLE} == {worker.WAIT, worker.TERMINATE, worker.REQUEUE, worker.FAIL,
                                                  worker.FINISH}

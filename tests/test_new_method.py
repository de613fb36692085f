"""Adding a fine-tuning method is one module and one registry entry (CONTRIBUTING.md, "A new
fine-tuning method"): a toy method defined here -- one class implementing the contract, one
``methods.register`` -- is accepted by the server's job service, its files by the worker, and it
trains to a succeeded job on the tiny model (tests/tiny.py), while nothing else in ftkit had to
change."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny import load_tiny, tiny_tokenizer  # noqa: E402

from ftkit import jobs, methods  # noqa: E402
from ftkit import lifecycle as lc  # noqa: E402
from ftkit.data import read_jsonl  # noqa: E402
from ftkit.local.api import wire  # noqa: E402
from ftkit.local.inference.weights import MAX_EXAMPLE_TOKENS  # noqa: E402
from ftkit.local.jobs import jobstate  # noqa: E402
from ftkit.local.jobs.training import steps  # noqa: E402
from ftkit.local.jobs.training.contract import TrainingMethod, step_message  # noqa: E402
from ftkit.local.jobs.training.loop import JobRun  # noqa: E402
from ftkit.local.jobs.worker import Worker  # noqa: E402
from ftkit.local.services.platform import Platform  # noqa: E402
from ftkit.local.store import Store  # noqa: E402

NAME = "last_turn"
LEARNED = "train_learned_tokens"


# -- place 1: the method's module (here, a class in this test module) -------------------------------


class LastTurnOnly(TrainingMethod):
    """A toy method: learn only the last assistant turn of each chat (earlier ones get weight 0),
    reporting the tokens learned per example as its own metric."""

    name = NAME

    def load(self, path, tokenizer) -> list[steps.Encoded]:
        encoded = []
        for example in read_jsonl(path):
            answers = [i for i, m in enumerate(example["messages"]) if m["role"] == "assistant"]
            messages = [{**m, "weight": int(i == answers[-1])} if m["role"] == "assistant" else m
                        for i, m in enumerate(example["messages"])]
            encoded.append(steps.encode_example(tokenizer, {"messages": messages}, MAX_EXAMPLE_TOKENS))
        return [e for e in encoded if e.learned_tokens]

    def length(self, example) -> int:
        return len(example.ids)

    def billed(self, example) -> int:
        return example.billed

    def prepare(self, ctx, train, valid) -> None:
        pass

    def eval_every(self, total_steps: int, hp: dict) -> int:
        return max(1, total_steps // 2)

    def valid_sample(self, valid: list, hp: dict) -> list:
        return valid[:2]

    def step(self, ctx, batch):
        ids, labels, mask = steps.collate(batch, ctx.pad_id, ctx.device)
        loss, _, _ = steps.token_loss_and_accuracy(ctx.model, ids, labels, mask, ctx.precision)
        return loss, {lc.TRAIN_LOSS: round(loss.item(), 4), LEARNED: sum(e.learned_tokens for e in batch) / len(batch)}

    def evaluate(self, ctx, examples, prefix: str) -> dict:
        loss, _ = steps.evaluate_tokens(ctx.model, examples, ctx.pad_id, precision=ctx.precision)
        return {f"{prefix}_loss": round(loss, 4)}

    def results_row(self, data: dict) -> dict:
        return {c: data.get(c) for c in methods.get(NAME).result_columns}

    def checkpoint_metrics(self, row: dict, full: dict) -> dict:
        return {lc.TRAIN_LOSS: row.get(lc.TRAIN_LOSS), **full}

    def message(self, data: dict, total: int) -> str:
        return step_message(data, total)

    def close(self) -> None:
        pass


# -- place 2: its registry entry ---------------------------------------------------------------------


def _entry() -> methods.Method:
    return methods.Method(
        NAME, file_kind=methods.CHAT_FILE, rules=dict(methods.COMMON_RULES), base_learning_rate=1e-3,
        result_columns=[lc.STEP, lc.TRAIN_LOSS, LEARNED, lc.VALID_LOSS],
        checkpoint_metrics=[lc.TRAIN_LOSS, lc.FULL_VALID_LOSS], trainer=f"{__name__}:LastTurnOnly",
        quantities=("learned_tokens",))


def _ftkit_tables() -> dict[tuple[str, str], object]:
    """A copy of every module-level table (dict, list, set, tuple) of every loaded ftkit module:
    where a per-method list would live if a method had to be added by hand."""
    tables = {}
    for module_name, module in list(sys.modules.items()):
        if module_name != "ftkit" and not module_name.startswith("ftkit."):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, (dict, list, set, tuple)) and not attr.startswith("__"):
                tables[(module_name, attr)] = type(value)(value) if not isinstance(value, tuple) else value
    return tables


@pytest.fixture
def registered():
    """Register the toy method; the registry (and everything else) as it was afterwards."""
    before = _ftkit_tables()
    names_before = methods.names()
    methods.register(_entry())
    try:
        yield before, names_before
    finally:
        methods.unregister(NAME)
    assert methods.names() == names_before


class _TinyEngine:
    """The worker checks files with the job's model's tokenizer (the engine's, in the server)."""

    def tokenizer_for(self, model_id):
        return tiny_tokenizer()


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Subject: ticket {i}"},
                         {"role": "assistant", "content": "Which order?"},
                         {"role": "user", "content": f"Order {i}, it never arrived."},
                         {"role": "assistant", "content": json.dumps({"category": "shipping"})}]}


def _upload(platform: Platform, lines: list[dict]) -> str:
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    return platform.create_file(io.BytesIO(content), "toy.jsonl", "fine-tune")["id"]


def test_a_new_method_is_one_class_and_one_registry_entry(tmp_path, registered):
    before, names_before = registered
    # the two places touched: this module's class, and ftkit's state changed by exactly one registry entry
    changed = {key for key, value in _ftkit_tables().items() if key in before and before[key] != value}
    assert changed == {("ftkit.methods", "_REGISTRY")} and methods.names() == (*names_before, NAME)
    places = {f"{__name__}.{LastTurnOnly.__name__}"} | {".".join(key) for key in changed}
    assert len(places) == 2

    store = Store(tmp_path / "home")
    store.add_model("tiny", kind="base", owned_by="system", source="tiny")
    platform = Platform(store, max_upload_bytes=1 << 20)
    job = platform.create_job({
        "model": "tiny", "training_file": _upload(platform, [_chat(i) for i in range(10)]),
        "validation_file": _upload(platform, [_chat(i) for i in (20, 21)]), "suffix": "toy", "seed": 3,
        "method": {"type": NAME, NAME: {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}}})
    assert job["method"][NAME]["hyperparameters"] == {"batch_size": 4, "learning_rate_multiplier": "auto",
                                                      "n_epochs": 2}
    assert wire.job_object(job)["method"]["type"] == NAME

    Worker(store, _TinyEngine(), log=lambda m: None)._validate(job)  # the worker's file checks, in-process
    assert store.get_job(job["id"])["status"] == lc.QUEUED
    assert jobstate.start(store, job["id"])
    JobRun(store, store.get_job(job["id"]), log=lambda m: None, load_base=load_tiny).run()

    done = store.get_job(job["id"])
    assert done["status"] == lc.SUCCEEDED and done["fine_tuned_model"].startswith("ft:tiny:local:toy:")
    assert done["method"][NAME]["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0}
    results = list(csv.DictReader(io.StringIO(lc.results_csv(store.file_path(done["result_files"][0]).read_bytes()))))
    assert list(results[0]) == methods.get(NAME).result_columns and [int(r["step"]) for r in results] == [1, 2, 3, 4, 5, 6]
    losses = [float(r[lc.TRAIN_LOSS]) for r in results]
    assert all(loss > 0 for loss in losses) and losses[-1] < losses[0]
    # only the last answer is learned: its tokens and the end of its turn, not the first answer's
    last_answer = len(tiny_tokenizer()(json.dumps({"category": "shipping"}))["input_ids"]) + 1
    assert {float(r[LEARNED]) for r in results} == {last_answer}
    assert jobs.method_of_metrics(results[0]) == NAME
    checkpoints = store.list_checkpoints(job["id"])
    assert sorted(c["step"] for c in checkpoints) == [3, 6]
    assert {lc.STEP, lc.TRAIN_LOSS, lc.FULL_VALID_LOSS} == set(checkpoints[0]["metrics"])

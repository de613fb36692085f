"""The method registry (ftkit.methods): one entry per method, read by the server's checks, the
worker, the validator and ftkit.jobs alike; torch-free, and below the lessons."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftkit import cost, jobs, lifecycle, methods
from ftkit.local.jobs import hyperparameters, worker


def test_the_server_side_does_not_import_a_lesson():
    code = ("import sys, ftkit.local.jobs.hyperparameters, ftkit.local.jobs.worker, ftkit.methods; "
            "print(sorted(m for m in sys.modules if m in ('ftkit.cost', 'torch', 'ftkit.jobs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_cost_lesson_teaches_the_registry_rule():
    assert cost.default_epochs is methods.default_epochs
    assert [methods.default_epochs(n) for n in (10, 40, 10_000, 30_000)] == [10, 3, 2, 1]
    assert hyperparameters.resolve(lifecycle.SUPERVISED, {}, 40)["n_epochs"] == 3


def test_builtin_entries_match_the_vocabulary():
    assert methods.names() == lifecycle.METHODS
    for name in methods.names():
        spec = methods.get(name)
        assert spec.result_columns == lifecycle.RESULT_COLUMNS[name] and spec.result_columns[0] == lifecycle.STEP
        assert hyperparameters.RULES[name] is spec.rules and worker.FILE_KIND[name] == spec.file_kind
    assert jobs.DPO_CHECKPOINT_METRICS == methods.get(lifecycle.DPO).checkpoint_metrics
    assert "full_valid_reward_mean" in jobs.RFT_CHECKPOINT_METRICS
    assert [n for n in methods.names() if methods.get(n).needs_grader] == [lifecycle.REINFORCEMENT]
    with pytest.raises(ValueError, match="unknown fine-tuning method 'nope'"):
        methods.get("nope")


@pytest.fixture
def toy():
    """A toy method: supervised files, one extra hyperparameter, its own metric and base rate."""
    spec = methods.register(methods.Method(
        "toy", file_kind="chat", rules={**methods.COMMON_RULES, "temperature": methods.Rule(float, 0, 2)},
        base_learning_rate=1e-3, result_columns=[lifecycle.STEP, lifecycle.TRAIN_LOSS, "train_toyness"],
        checkpoint_metrics=["train_loss", "full_valid_toyness"], trainer="ftkit.local.jobs.training.sft:Supervised",
        auto=lambda given, n: {**methods.common_auto(given, n), "temperature": float(given.get("temperature", 1.0))},
        quantities=("toyness",)))
    yield spec
    methods.unregister("toy")


def test_one_registry_entry_reaches_every_reader(toy):
    assert "toy" in methods.names() and worker.FILE_KIND["toy"] == "chat"
    checked = hyperparameters.check("toy", {"temperature": 0.5})
    assert checked == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto",
                       "temperature": 0.5}
    resolved = hyperparameters.resolve("toy", {"temperature": 0.5}, 40)
    assert resolved == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0, "temperature": 0.5}
    assert hyperparameters.learning_rate("toy", resolved) == pytest.approx(1e-3)
    with pytest.raises(hyperparameters.InvalidHyperparameter, match="temperature must be >= 0 and <= 2"):
        hyperparameters.check("toy", {"temperature": 3})
    assert jobs.method_of_metrics(["step", "train_loss", "train_toyness"]) == "toy"
    assert list(jobs.step_metrics_from_events(_events([{"step": 1, "train_loss": 0.5, "train_toyness": 0.1}]),
                                              "toy").columns) == toy.result_columns
    report = worker.judge_file("training", "file-t", "toy", _chat_report())
    assert report.ok  # the worker accepts its files: the kind comes from the entry
    from ftkit.local.jobs.training import loop
    from ftkit.local.jobs.training.sft import Supervised

    assert isinstance(loop.method_for({"method": {"type": "toy"}}), Supervised)


def _events(rows):
    import pandas as pd

    return pd.DataFrame({"data": rows})


def _chat_report():
    from ftkit.tokens import ExampleTokens
    from ftkit.validation import validate

    class Words:
        def count_examples(self, examples):
            return [ExampleTokens(total=3, trained=1) for _ in examples]

    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    return validate([chat], token_counter=Words(), encoding="words", min_examples=1, method="toy")


def test_every_registered_trainer_fulfils_the_whole_contract():
    import importlib
    import inspect

    from ftkit.local.jobs.training.contract import TrainingMethod

    hooks = {name for name, value in vars(TrainingMethod).items() if getattr(value, "__isabstractmethod__", False)}
    assert {"load", "step", "evaluate", "results_row", "checkpoint_metrics", "message", "close"} <= hooks
    for name in methods.names():
        module, _, cls = methods.get(name).trainer.partition(":")
        trainer = getattr(importlib.import_module(module), cls)
        assert issubclass(trainer, TrainingMethod) and not inspect.isabstract(trainer) and trainer.name == name

    class Partial(TrainingMethod):  # a method that forgets a hook cannot be made at all
        name = "partial"

        def load(self, path, tokenizer):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Partial()

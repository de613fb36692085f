"""OpenAI's graders, run locally: score a model's answers for evals and reinforcement fine-tuning.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

A grader is a JSON object in the shape of OpenAI's API (``string_check``, ``text_similarity``,
``python``, ``score_model``, ``label_model``, ``multi``); it turns a model's answer (the
``sample``) and a dataset row (the ``item``) into a reward, usually from 0 to 1. OpenAI's
hosted graders went with its evals and reinforcement fine-tuning; here the same JSON runs on
your machine, offline:

>>> from ftkit import graders
>>> grader = {"type": "string_check", "name": "category", "operation": "eq",
...           "input": "{{ sample.output_json.category }}", "reference": "{{ item.category }}"}
>>> graders.run_grader({"grader": grader, "model_sample": '{"category": "billing"}',
...                     "item": {"category": "billing"}})["reward"]
1.0

Modules: :mod:`~ftkit.graders.core` (the grader types, validation, results),
:mod:`~ftkit.graders.templates` (``{{ item.x }}``), :mod:`~ftkit.graders.metrics`
(``text_similarity``), :mod:`~ftkit.graders.formula` (``calculate_output``),
:mod:`~ftkit.graders.sandbox` (``python`` graders' process) and :mod:`~ftkit.graders.api`
(the run/validate envelopes and batch grading). Only the standard library is imported here: the
metric libraries (``pip install 'ftkit[graders]'``) load when a metric first needs them.
"""

from .api import client_judge, grade_many, run_grader, validate_grader_request
from .core import (
    DEFAULT_JUDGE_MAX_TOKENS,
    ERROR_FLAGS,
    Grader,
    GraderError,
    GradeResult,
    GraderLabelModel,
    GraderMulti,
    GraderPython,
    GraderScoreModel,
    GraderStringCheck,
    GraderTextSimilarity,
    GradingContext,
    Judge,
    JudgeRefusal,
    build_sample,
    compile_grader,
    validate_grader,
)
from .formula import Formula, FormulaError
from .metrics import METRICS, similarity
from .sandbox import PythonSandbox, SandboxOutcome
from .templates import render

__all__ = [
    "DEFAULT_JUDGE_MAX_TOKENS",
    "ERROR_FLAGS",
    "METRICS",
    "Formula",
    "FormulaError",
    "GradeResult",
    "Grader",
    "GraderError",
    "GraderLabelModel",
    "GraderMulti",
    "GraderPython",
    "GraderScoreModel",
    "GraderStringCheck",
    "GraderTextSimilarity",
    "GradingContext",
    "Judge",
    "JudgeRefusal",
    "PythonSandbox",
    "SandboxOutcome",
    "build_sample",
    "client_judge",
    "compile_grader",
    "grade_many",
    "render",
    "run_grader",
    "similarity",
    "validate_grader",
    "validate_grader_request",
]

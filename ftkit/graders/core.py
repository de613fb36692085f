"""The grader types of OpenAI's API, validated and run locally.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

Each class follows one schema of OpenAI's OpenAPI spec (``GraderStringCheck``,
``GraderTextSimilarity``, ``GraderPython``, ``GraderScoreModel``, ``GraderLabelModel``,
``GraderMulti``) and OpenAI's graders guide for what it returns:

* ``string_check`` -- 1 or 0: ``eq`` (equal, case-sensitive), ``ne`` (not equal), ``like``
  (input contains reference, case-sensitive), ``ilike`` (contains, case-insensitive).
* ``text_similarity`` -- the metric's value (see :mod:`ftkit.graders.metrics`).
* ``python`` -- what ``grade(sample, item)`` returns, run in a limited process
  (:mod:`ftkit.graders.sandbox`); an exception or a non-number is an error and rewards 0.
* ``score_model`` -- a judge model is asked for ``{"result": float, "steps": [...]}`` (the
  response format the guide documents); the result is clipped to ``range`` (default [0, 1]);
  an answer without a number rewards 0 with ``model_grader_parse_error``.
* ``label_model`` -- the judge picks one of ``labels`` (``{"result": label, "steps": [...]}``);
  1 if it is one of ``passing_labels``, else 0.
* ``multi`` -- sub-graders keyed by name (as in the guide: ``"graders": {"name": {...}}``; a list,
  keyed by each grader's ``name``, and a single grader, as the spec's schema has it, are accepted
  too) combined by ``calculate_output`` (:mod:`ftkit.graders.formula`). Multi graders do not nest.

The judge of the model graders is injected -- a function
``judge(model, messages, sampling_params, response_format) -> (text, usage)`` -- so the server
can back it with its inference engine and the trainer with its own. ``messages`` are the
grader's ``input`` with templates filled in, as ``{"role", "content": str}`` (``developer``
becomes ``system``); ``sampling_params`` are the grader's (``temperature``, ``top_p``, ``seed``,
``max_completions_tokens``, ``reasoning_effort``; ``max_completions_tokens`` defaults to
:data:`DEFAULT_JUDGE_MAX_TOKENS`), and ``response_format`` is a ``json_schema`` format a
constrained decoder can enforce. ``usage`` is a chat-completions ``usage`` dict (or None). A
judge that raises :class:`JudgeRefusal` reports ``model_grader_refusal_error``; any other
exception, ``model_grader_server_error``.

Errors never raise out of grading: they come back in :class:`GradeResult` as the hosted error
flags, with a reward of 0. Malformed graders raise :class:`GraderError` (a 400) when compiled.

Why one module of ~900 lines: one class per grader schema of the spec, each small, over one base
class and one compile step that dispatches on ``type`` (``multi`` compiles its sub-graders with
it); the templates, metrics, formula and sandbox they use are their own modules already.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import metrics, templates
from .formula import Formula, FormulaError
from .sandbox import PythonSandbox

__all__ = [
    "DEFAULT_JUDGE_MAX_TOKENS",
    "ERROR_FLAGS",
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
    "build_sample",
    "compile_grader",
    "validate_grader",
]

#: The error flags of the spec's ``RunGraderResponse.metadata.errors``, with their "no error" value.
ERROR_FLAGS: dict[str, Any] = {
    "formula_parse_error": False,
    "sample_parse_error": False,
    "truncated_observation_error": False,
    "unresponsive_reward_error": False,
    "invalid_variable_error": False,
    "other_error": False,
    "python_grader_server_error": False,
    "python_grader_server_error_type": None,
    "python_grader_runtime_error": False,
    "python_grader_runtime_error_details": None,
    "model_grader_server_error": False,
    "model_grader_refusal_error": False,
    "model_grader_parse_error": False,
    "model_grader_server_error_details": None,
}
_DETAIL_KEYS = ("python_grader_server_error_type", "python_grader_runtime_error_details",
                "model_grader_server_error_details")

#: A judge's answer length when the grader does not set ``max_completions_tokens`` (hosted
#: graders allow far more; a local judge needs a bound).
DEFAULT_JUDGE_MAX_TOKENS = 512
#: Python grader source limit, as on the hosted graders ("less than 256kB").
MAX_SOURCE_BYTES = 256 * 1024
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
ROLES = ("user", "assistant", "system", "developer")

Judge = Callable[[str, list, dict, "dict | None"], "tuple[str, dict | None]"]


class GraderError(ValueError):
    """A malformed grader (or run request): ``param`` names the field, as an HTTP 400's
    ``param`` does (``grader.graders.email.operation``). Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""

    def __init__(self, message: str, param: str | None = "grader", code: str = "invalid_grader") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def __str__(self) -> str:
        return f"{self.param}: {self.message}" if self.param else self.message


class JudgeRefusal(Exception):
    """Raised by a judge that declines to grade (reported as ``model_grader_refusal_error``)."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class GradeResult:
    """One sample's grade: the reward and what the hosted ``RunGraderResponse`` reports with it.

    ``errors`` holds the spec's flags (:data:`ERROR_FLAGS`); ``error_details`` says in words what
    went wrong, naming the grader. :meth:`to_response` gives the run endpoint's JSON body.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """

    name: str
    type: str
    reward: float = 0.0
    errors: dict = field(default_factory=lambda: dict(ERROR_FLAGS))
    error_details: list[str] = field(default_factory=list)
    scores: dict = field(default_factory=dict)
    sub_rewards: dict = field(default_factory=dict)
    token_usage: int | None = None
    usage_per_model: dict = field(default_factory=dict)
    sampled_model_name: str | None = None
    execution_time: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no error flag is set."""
        return not any(self.errors[k] for k in ERROR_FLAGS if k not in _DETAIL_KEYS)

    def fail(self, flag: str, message: str, **details: str | None) -> GradeResult:
        """Mark an error: the flag, its detail fields, a message naming this grader; reward 0."""
        self.errors[flag] = True
        self.errors.update({k: v for k, v in details.items() if v is not None})
        self.error_details.append(f"{self.name}: {message}")
        self.reward = 0.0
        return self

    def add_usage(self, model: str, usage: dict | None) -> None:
        if not usage:
            return
        counts = {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        counts["total_tokens"] = counts["total_tokens"] or counts["prompt_tokens"] + counts["completion_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        counts["cached_tokens"] = int(usage.get("cached_tokens") or details.get("cached_tokens") or 0)
        into = self.usage_per_model.setdefault(model, dict.fromkeys(counts, 0))
        for key, value in counts.items():
            into[key] = into.get(key, 0) + value
        self.token_usage = (self.token_usage or 0) + counts["total_tokens"]

    def to_response(self) -> dict:
        """The spec's ``RunGraderResponse``: ``reward``, ``metadata`` (``name``, ``type``,
        ``errors``, ``execution_time``, ``scores``, ``token_usage``, ``sampled_model_name``),
        ``sub_rewards`` and ``model_grader_token_usage_per_model``. When something failed,
        ``metadata.error_details`` (not in the spec) says what, in words."""
        metadata = {
            "name": self.name,
            "type": self.type,
            "errors": {k: self.errors.get(k, v) for k, v in ERROR_FLAGS.items()},
            "execution_time": round(self.execution_time, 6),
            "scores": self.scores,
            "token_usage": self.token_usage,
            "sampled_model_name": self.sampled_model_name,
        }
        if self.error_details:
            metadata["error_details"] = list(self.error_details)
        return {"reward": self.reward, "metadata": metadata, "sub_rewards": self.sub_rewards,
                "model_grader_token_usage_per_model": self.usage_per_model}


@dataclass
class GradingContext:
    """What grading may need besides the sample: the judge for model graders and the sandbox
    for python graders (one is started when needed and none was given)."""

    judge: Judge | None = None
    sandbox: PythonSandbox | None = None
    _owned_sandbox: bool = field(default=False, init=False, repr=False)

    def python_sandbox(self) -> PythonSandbox:
        if self.sandbox is None:
            self.sandbox, self._owned_sandbox = PythonSandbox(), True
        return self.sandbox

    def close(self) -> None:
        """Stop a sandbox this context started itself."""
        if self._owned_sandbox and self.sandbox is not None:
            self.sandbox.close()
            self.sandbox, self._owned_sandbox = None, False


# ---------------------------------------------------------------------------------------------
# Samples


def _parse_json_text(text) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def build_sample(sample: str | dict | None) -> dict:
    """The ``sample`` namespace for a model answer.

    A string (the run endpoint's ``model_sample``) becomes ``output_text``; ``output_json`` is
    the parsed text when it is valid JSON, else None; ``output_tools`` is empty; ``choices`` holds
    one assistant message. A dict may be that namespace already (``output_text`` ...), a chat
    completions message (``{"role": "assistant", "content", "tool_calls"}``) or a choice
    (``{"message", "finish_reason"}``): ``output_tools`` then holds the message's tool calls.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    if sample is None:
        sample = ""
    if isinstance(sample, str):
        return {"output_text": sample, "output_json": _parse_json_text(sample), "output_tools": [],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": sample}, "finish_reason": "stop"}],
                "output_audio": None}
    if not isinstance(sample, dict):
        raise TypeError(f"a sample is a string or a dict, not {type(sample).__name__}")
    if "message" in sample:  # a chat completions choice
        choice = {"index": 0, **sample}
        message = sample.get("message") or {}
    elif {"role", "content", "tool_calls"} & sample.keys():  # a chat completions message
        message, choice = sample, {"index": 0, "message": sample, "finish_reason": "stop"}
    else:  # the namespace itself
        out = dict(sample)
        out.setdefault("output_text", "")
        if "output_json" not in out:
            out["output_json"] = _parse_json_text(out["output_text"])
        out.setdefault("output_tools", [])
        out.setdefault("choices", [{"index": 0, "message": {"role": "assistant", "content": out["output_text"]},
                                    "finish_reason": "stop"}])
        out.setdefault("output_audio", None)
        return out
    text = message.get("content") or ""
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    return {"output_text": text, "output_json": _parse_json_text(text), "output_tools": list(message.get("tool_calls") or []),
            "choices": [choice], "output_audio": message.get("audio")}


def _truncated(sample: dict) -> bool:
    choices = sample.get("choices") or []
    return bool(choices) and isinstance(choices[0], dict) and choices[0].get("finish_reason") == "length"


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _require(spec: dict, key: str, kind, param: str, what: str, *, allow_empty: bool = False):
    if key not in spec or spec[key] is None:
        raise GraderError(f"missing required field '{key}'", f"{param}.{key}")
    value = spec[key]
    if not isinstance(value, kind) or (kind is str and not allow_empty and not value.strip()):
        raise GraderError(f"'{key}' must be {what}", f"{param}.{key}")
    return value


def _template(spec: dict, key: str, param: str) -> list:
    text = _require(spec, key, str, param, "a string (it may hold templates)", allow_empty=True)
    try:
        return templates.parse_template(text)
    except templates.TemplateSyntaxError as exc:
        raise GraderError(f"bad template: {exc}", f"{param}.{key}") from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(spec: dict, allowed: set[str], param: str) -> None:
    unknown = sorted(set(spec) - allowed - {"type", "name"})
    if unknown:
        raise GraderError(f"unknown field '{unknown[0]}' for a {spec['type']} grader "
                          f"(fields: {', '.join(sorted(allowed | {'type', 'name'}))})", f"{param}.{unknown[0]}")


class Grader:
    """A validated grader; build one with :func:`compile_grader`. ``to_dict()`` gives the
    normalised JSON form, ``grade(sample, item, context)`` a :class:`GradeResult`."""

    type: ClassVar[str] = ""
    fields: ClassVar[set[str]] = set()

    def __init__(self, spec: dict, param: str) -> None:
        _check_keys(spec, self.fields, param)
        name = spec.get("name", self.type)  # the guide's own python example has no name
        if not isinstance(name, str) or not name.strip():
            raise GraderError("'name' must be a non-empty string", f"{param}.name")
        self.name, self.param = name, param
        self.spec = {**copy.deepcopy(spec), "name": name}

    def to_dict(self) -> dict:
        return copy.deepcopy(self.spec)

    def uses_judge(self) -> bool:
        return False

    def uses_python(self) -> bool:
        return False

    def item_fields(self) -> set[str]:
        """Top-level ``item`` fields the grader's templates read (for checking training data)."""
        return set()

    def grade(self, sample: dict, item: dict, context: GradingContext) -> GradeResult:
        """Grade one sample (a ``sample`` namespace dict, see :func:`build_sample`) against its
        ``item``. Never raises for a bad sample, template, judge or python grader: those are
        error flags on the result, with a reward of 0."""
        result = self._run(sample, item, context)
        if _truncated(sample):
            # the answer hit its token limit: flagged, and graded as it stands
            result.errors["truncated_observation_error"] = True
            result.error_details.append(f"{self.name}: the sample was cut off at its token limit (finish_reason 'length')")
        return result

    def _run(self, sample: dict, item: dict, context: GradingContext) -> GradeResult:
        start = time.perf_counter()
        result = GradeResult(self.name, self.type)
        try:
            self._grade(sample, item, context, result)
        except Exception as exc:  # noqa: BLE001 -- whatever went wrong is this sample's error, never the caller's crash
            result.fail("other_error", f"{type(exc).__name__}: {exc}")
        result.execution_time = time.perf_counter() - start
        return result

    def _grade(self, sample: dict, item: dict, context: GradingContext, result: GradeResult) -> None:
        raise NotImplementedError


def _render(parts: list, sample: dict, item: dict, result: GradeResult) -> str | None:
    try:
        return templates.render(parts, sample, item)
    except templates.TemplateError as exc:
        result.fail(exc.kind, exc.message)
        return None


def _item_fields(parts: list) -> set[str]:
    return {str(p.path[0]) for p in parts if isinstance(p, templates.Reference) and p.namespace == "item"}


# ---------------------------------------------------------------------------------------------
# The grader types


class GraderStringCheck(Grader):
    """``{"type": "string_check", "name", "input", "reference", "operation"}``: 1 or 0.

    ``eq``: input equals reference (case-sensitive); ``ne``: it does not; ``like``: input
    contains reference (case-sensitive); ``ilike``: contains, ignoring case. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb.
    """

    type = "string_check"
    fields = {"input", "reference", "operation"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        self.input = _template(spec, "input", param)
        self.reference = _template(spec, "reference", param)
        self.operation = _require(spec, "operation", str, param, f"one of {', '.join(STRING_OPERATIONS)}")
        if self.operation not in STRING_OPERATIONS:
            raise GraderError(f"unknown operation {self.operation!r}; one of {', '.join(STRING_OPERATIONS)}",
                              f"{param}.operation")

    def item_fields(self) -> set[str]:
        return _item_fields(self.input) | _item_fields(self.reference)

    def _grade(self, sample, item, context, result):
        text, reference = _render(self.input, sample, item, result), _render(self.reference, sample, item, result)
        if text is None or reference is None:
            return
        passed = {"eq": text == reference, "ne": text != reference, "like": reference in text,
                  "ilike": reference.casefold() in text.casefold()}[self.operation]
        result.reward = 1.0 if passed else 0.0


class GraderTextSimilarity(Grader):
    """``{"type": "text_similarity", "name", "input", "reference", "evaluation_metric"}``: the
    metric's value (``pass_threshold``, from the evals form, is accepted and not used). Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""

    type = "text_similarity"
    fields = {"input", "reference", "evaluation_metric", "pass_threshold"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        self.input = _template(spec, "input", param)
        self.reference = _template(spec, "reference", param)
        self.metric = _require(spec, "evaluation_metric", str, param, f"one of {', '.join(metrics.METRICS)}")
        problem = metrics.metric_problem(self.metric)
        if problem:
            raise GraderError(problem, f"{param}.evaluation_metric",
                              code="metric_unavailable" if self.metric in metrics.METRICS else "invalid_grader")
        if "pass_threshold" in spec and not _number(spec["pass_threshold"]):
            raise GraderError("'pass_threshold' must be a number", f"{param}.pass_threshold")

    def item_fields(self) -> set[str]:
        return _item_fields(self.input) | _item_fields(self.reference)

    def _grade(self, sample, item, context, result):
        text, reference = _render(self.input, sample, item, result), _render(self.reference, sample, item, result)
        if text is None or reference is None:
            return
        try:
            result.reward = float(metrics.similarity(self.metric, text, reference))
        except Exception as exc:  # noqa: BLE001 -- a metric library failing must not crash grading
            result.fail("other_error", f"{self.metric} failed: {type(exc).__name__}: {exc}")


class GraderPython(Grader):
    """``{"type": "python", "name", "source", "image_tag"?}``: ``grade(sample, item) -> float``
    from ``source``, run in a :class:`~ftkit.graders.sandbox.PythonSandbox`. ``image_tag`` is
    accepted and recorded; the local interpreter and its installed packages are used. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""

    type = "python"
    fields = {"source", "image_tag"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        self.source = _require(spec, "source", str, param, "Python source defining grade(sample, item)")
        if len(self.source.encode("utf-8")) >= MAX_SOURCE_BYTES:
            raise GraderError(f"the source is {len(self.source.encode('utf-8')):,} bytes; it must be under 256 kB",
                              f"{param}.source")
        if "image_tag" in spec and not isinstance(spec["image_tag"], str):
            raise GraderError("'image_tag' must be a string", f"{param}.image_tag")
        self._check_source(param)

    def _check_source(self, param: str) -> None:
        # compiling runs nothing; the grader's code itself only ever runs in the sandbox
        try:
            tree = ast.parse(self.source, filename="<grader>")
            compile(tree, "<grader>", "exec")
        except SyntaxError as exc:
            raise GraderError(f"the source does not compile: {exc.msg} (line {exc.lineno})", f"{param}.source") from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise GraderError(f"the source does not compile: {type(exc).__name__}", f"{param}.source") from None
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade"]
        if defs:
            grade = defs[-1]
            if isinstance(grade, ast.AsyncFunctionDef):
                raise GraderError("grade must be a plain function, not async", f"{param}.source")
            args = grade.args
            positional = len(args.posonlyargs) + len(args.args)
            required = positional - len(args.defaults)
            if required > 2 or (positional < 2 and args.vararg is None):
                raise GraderError(f"grade must take two arguments, grade(sample, item); it takes {required}",
                                  f"{param}.source")
            return
        if not any(_binds_grade(node) for node in tree.body):
            raise GraderError("the source defines no grade(sample, item) function", f"{param}.source")

    def uses_python(self) -> bool:
        return True

    def item_fields(self) -> set[str]:
        """The fields ``grade`` reads as ``item["field"]`` (its second parameter, subscripted
        with a constant): a best guess from the source, since ``item.get(...)`` is optional and
        computed keys cannot be known without running it."""
        tree = ast.parse(self.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"]
        params = defs[-1].args.posonlyargs + defs[-1].args.args if defs else []
        if len(params) < 2:
            return set()
        name = params[1].arg
        return {n.slice.value for n in ast.walk(defs[-1]) if isinstance(n, ast.Subscript)
                and isinstance(n.value, ast.Name) and n.value.id == name
                and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)}

    def _grade(self, sample, item, context, result):
        outcome = context.python_sandbox().grade(self.source, sample, item)
        if outcome.error is None:
            result.reward = outcome.reward
            return
        details = {"python_grader_runtime_error_details": outcome.details}
        if outcome.error == "python_grader_server_error":
            details["python_grader_server_error_type"] = outcome.server_error_type
        result.fail(outcome.error, outcome.details or outcome.error, **details)


def _binds_grade(node: ast.stmt) -> bool:
    """Whether a top-level statement other than ``def`` binds the name ``grade``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any((alias.asname or alias.name) == "grade" for alias in node.names)
    if isinstance(node, ast.ClassDef):
        return node.name == "grade"
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == "grade" for t in targets)


class _ModelGrader(Grader):
    """What score_model and label_model share: model, input messages, the judge call."""

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        self.model = _require(spec, "model", str, param, "a model name")
        messages = _require(spec, "input", list, param, "a list of messages")
        if not messages:
            raise GraderError("'input' must hold at least one message", f"{param}.input")
        self.messages = [self._message(m, f"{param}.input[{i}]") for i, m in enumerate(messages)]
        self.sampling_params = self._sampling_params(spec.get("sampling_params"), f"{param}.sampling_params")

    @staticmethod
    def _message(message, param: str) -> tuple[str, list]:
        if not isinstance(message, dict):
            raise GraderError("a message must be an object with 'role' and 'content'", param)
        if message.get("type", "message") != "message":
            raise GraderError(f"a message's type is 'message', not {message.get('type')!r}", f"{param}.type")
        role = message.get("role")
        if role not in ROLES:
            raise GraderError(f"role must be one of {', '.join(ROLES)}, not {role!r}", f"{param}.role")
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        if content is None or not parts:
            raise GraderError("missing content", f"{param}.content")
        texts = []
        for j, part in enumerate(parts):
            where = f"{param}.content[{j}]" if isinstance(content, list) else f"{param}.content"
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text") and isinstance(part.get("text"), str):
                part = part["text"]
            elif isinstance(part, dict) and part.get("type") in ("input_image", "input_audio"):
                raise GraderError(f"{part['type']} content is not supported: ftkit's judges read text only", where)
            if not isinstance(part, str):
                raise GraderError("content must be text, an input_text/output_text part, or a list of them", where)
            try:
                texts.append(templates.parse_template(part))
            except templates.TemplateSyntaxError as exc:
                raise GraderError(f"bad template: {exc}", where) from None
        return ("system" if role == "developer" else role), texts

    @staticmethod
    def _sampling_params(params, param: str) -> dict:
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise GraderError("'sampling_params' must be an object", param)
        checks = {
            "temperature": lambda v: _number(v) and 0 <= v <= 2,
            "top_p": lambda v: _number(v) and 0 < v <= 1,
            "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "max_completions_tokens": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "reasoning_effort": lambda v: v in REASONING_EFFORTS,
        }
        wants = {"temperature": "a number from 0 to 2", "top_p": "a number in (0, 1]", "seed": "an integer",
                 "max_completions_tokens": "an integer >= 1", "reasoning_effort": f"one of {', '.join(REASONING_EFFORTS)}"}
        out = {}
        for key, value in params.items():
            if key not in checks:
                hint = " (the spec spells it max_completions_tokens)" if key in ("max_completion_tokens", "max_tokens") else ""
                raise GraderError(f"unknown sampling parameter '{key}'{hint}", f"{param}.{key}")
            if value is None:
                continue
            if not checks[key](value):
                raise GraderError(f"'{key}' must be {wants[key]}", f"{param}.{key}")
            out[key] = value
        return out

    def uses_judge(self) -> bool:
        return True

    def item_fields(self) -> set[str]:
        return set().union(*(_item_fields(parts) for _, texts in self.messages for parts in texts))

    def response_format(self) -> dict:
        raise NotImplementedError

    def parse(self, text: str):
        raise NotImplementedError

    def _ask(self, sample, item, context, result) -> str | None:
        """The judge's answer text, or None after marking the error."""
        messages = []
        for role, texts in self.messages:
            rendered = [_render(parts, sample, item, result) for parts in texts]
            if any(r is None for r in rendered):
                return None
            messages.append({"role": role, "content": "\n".join(rendered)})
        if context.judge is None:
            result.fail("model_grader_server_error", "no judge model is configured for model graders",
                        model_grader_server_error_details="no judge model is configured")
            return None
        params = {"max_completions_tokens": DEFAULT_JUDGE_MAX_TOKENS, **self.sampling_params}
        result.sampled_model_name = self.model
        try:
            text, usage = context.judge(self.model, messages, params, self.response_format())
        except JudgeRefusal as exc:
            result.fail("model_grader_refusal_error", f"the judge refused: {exc}")
            return None
        except Exception as exc:  # noqa: BLE001 -- a failing judge is an error flag, never a crash
            message = f"{type(exc).__name__}: {exc}"
            result.fail("model_grader_server_error", f"the judge failed: {message}",
                        model_grader_server_error_details=message)
            return None
        result.add_usage(self.model, usage)
        if not isinstance(text, str) or not text.strip():
            result.fail("model_grader_refusal_error", "the judge gave no answer")
            return None
        return text


_STEPS_SCHEMA = {
    "type": "array",
    "items": {"type": "object", "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
              "required": ["description", "conclusion"], "additionalProperties": False},
}
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _json_format(name: str, result_schema: dict) -> dict:
    # "result" comes first, so a judge cut off while writing its steps has still given it
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": {"result": result_schema, "steps": _STEPS_SCHEMA},
        "required": ["result", "steps"], "additionalProperties": False}}}


class GraderScoreModel(_ModelGrader):
    """``{"type": "score_model", "name", "model", "input", "range"?, "sampling_params"?}``: the
    judge's ``result``, clipped to ``range`` (default [0, 1]); 0 when it gives no number. Taught
    in notebooks/07_reinforcement_fine_tuning.ipynb."""

    type = "score_model"
    fields = {"model", "input", "range", "sampling_params", "pass_threshold"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        bounds = spec.get("range", [0, 1])
        if bounds is None:
            bounds = [0, 1]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_number, bounds)) and bounds[0] < bounds[1]):
            raise GraderError("'range' must be two numbers [low, high] with low < high", f"{param}.range")
        self.low, self.high = float(bounds[0]), float(bounds[1])
        if "pass_threshold" in spec and not _number(spec["pass_threshold"]):
            raise GraderError("'pass_threshold' must be a number", f"{param}.pass_threshold")

    def response_format(self) -> dict:
        return _json_format("score_model_grader", {"type": "number"})

    @staticmethod
    def parse(text: str) -> float | None:
        """The score in a judge's answer: ``{"result": x}``, a cut-off ``{"result": x, ...``,
        or an answer that is just one number. None when there is none."""
        value = _parse_json_text(text.strip())
        if isinstance(value, dict):
            value = value.get("result")
            if isinstance(value, str):
                value = _parse_json_text(value.strip())
        if _number(value):
            return float(value)
        found = re.search(r'"result"\s*:\s*"?(' + _NUMBER + ')', text)
        if found:
            return float(found.group(1))
        numbers = re.findall(r"(?<![\w.])" + _NUMBER + r"(?![\w.])", text)
        if len(numbers) == 1 and len(text.strip()) <= 40:  # "0.8" or "Score: 0.8", not prose
            return float(numbers[0])
        return None

    def _grade(self, sample, item, context, result):
        text = self._ask(sample, item, context, result)
        if text is None:
            return
        score = self.parse(text)
        if score is None or not math.isfinite(score):
            shown = text if len(text) <= 200 else text[:200] + "..."
            result.fail("model_grader_parse_error", f"no score in the judge's answer: {shown!r}")
            return
        result.scores = {"result": score}
        result.reward = min(max(score, self.low), self.high)


class GraderLabelModel(_ModelGrader):
    """``{"type": "label_model", "name", "model", "input", "labels", "passing_labels"}``: 1 when
    the judge's label is one of ``passing_labels``, else 0. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""

    type = "label_model"
    fields = {"model", "input", "labels", "passing_labels", "sampling_params"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        self.labels = _require(spec, "labels", list, param, "a list of strings")
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels) or len(set(self.labels)) != len(self.labels):
            raise GraderError("'labels' must be a non-empty list of distinct, non-empty strings", f"{param}.labels")
        self.passing = _require(spec, "passing_labels", list, param, "a list of strings")
        outside = [x for x in self.passing if x not in self.labels]
        if not self.passing or outside:
            raise GraderError("'passing_labels' must be a non-empty subset of 'labels'"
                              + (f"; {outside[0]!r} is not a label" if outside else ""), f"{param}.passing_labels")

    def response_format(self) -> dict:
        return _json_format("label_model_grader", {"type": "string", "enum": list(self.labels)})

    def parse(self, text: str) -> str | None:
        """The label in a judge's answer (``{"result": label}`` or the bare label), or None."""
        value = _parse_json_text(text.strip())
        candidates = []
        if isinstance(value, dict) and isinstance(value.get("result"), str):
            candidates.append(value["result"])
        elif isinstance(value, str):
            candidates.append(value)
        found = re.search(r'"result"\s*:\s*"([^"]*)"', text)
        if found:
            candidates.append(found.group(1))
        candidates.append(text.strip().strip("\"'`.!").strip())
        for candidate in candidates:
            if candidate in self.labels:
                return candidate
            folded = [label for label in self.labels if label.casefold() == candidate.casefold().strip()]
            if len(folded) == 1:
                return folded[0]
        return None

    def _grade(self, sample, item, context, result):
        text = self._ask(sample, item, context, result)
        if text is None:
            return
        label = self.parse(text)
        if label is None:
            shown = text if len(text) <= 200 else text[:200] + "..."
            result.fail("model_grader_parse_error", f"no label of {self.labels} in the judge's answer: {shown!r}")
            return
        result.scores = {"label": label}
        result.reward = 1.0 if label in self.passing else 0.0


class GraderMulti(Grader):
    """``{"type": "multi", "name", "graders": {key: grader, ...}, "calculate_output"}``: the
    formula over the sub-graders' rewards, each under its key. ``sub_rewards`` and
    ``metadata.scores`` hold the sub-rewards; a sub-grader that fails counts as 0 in the formula
    and its error flags are the multi's too.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb."""

    type = "multi"
    fields = {"graders", "calculate_output"}

    def __init__(self, spec: dict, param: str) -> None:
        super().__init__(spec, param)
        graders = spec.get("graders")
        if graders is None:
            raise GraderError("missing required field 'graders'", f"{param}.graders")
        single = isinstance(graders, dict) and isinstance(graders.get("type"), str)
        if single:
            entries = [(graders.get("name", graders["type"]), graders, f"{param}.graders")]  # one grader, as the spec's schema
        elif isinstance(graders, dict):
            entries = [(key, sub, f"{param}.graders.{key}") for key, sub in graders.items()]
        elif isinstance(graders, list):
            entries = [(sub.get("name") if isinstance(sub, dict) else None, sub, f"{param}.graders[{i}]")
                       for i, sub in enumerate(graders)]
        else:
            raise GraderError("'graders' must be an object of named graders", f"{param}.graders")
        if not entries:
            raise GraderError("'graders' must hold at least one grader", f"{param}.graders")
        self.graders: dict[str, Grader] = {}
        for key, sub, where in entries:
            if not isinstance(key, str) or not key:
                raise GraderError("each grader needs a name to be referred to in calculate_output", where)
            if key in self.graders:
                raise GraderError(f"two graders are named {key!r}", where)
            if isinstance(sub, dict) and sub.get("type") == "multi":
                raise GraderError("multi graders cannot be nested", f"{where}.type")
            self.graders[key] = _compile(sub, where)
        expression = _require(spec, "calculate_output", str, param, "a formula over the graders' names")
        try:
            self.formula = Formula(expression, self.graders)
        except FormulaError as exc:
            raise GraderError(str(exc), f"{param}.calculate_output") from None
        # normalised sub-graders, kept in the shape they were given (object, list or one grader)
        normalised = [g.to_dict() for g in self.graders.values()]
        self.spec["graders"] = (normalised[0] if single else normalised if isinstance(graders, list)
                                else dict(zip(self.graders, normalised)))

    def uses_judge(self) -> bool:
        return any(g.uses_judge() for g in self.graders.values())

    def uses_python(self) -> bool:
        return any(g.uses_python() for g in self.graders.values())

    def item_fields(self) -> set[str]:
        return set().union(*(g.item_fields() for g in self.graders.values()))

    def _grade(self, sample, item, context, result):
        rewards = {}
        for key, grader in self.graders.items():
            sub = grader._run(sample, item, context)
            rewards[key] = sub.reward
            for flag, value in sub.errors.items():
                if value and not result.errors.get(flag):
                    result.errors[flag] = value
            result.error_details.extend(f"{self.name}.graders.{key}: {d.removeprefix(grader.name + ': ')}"
                                        for d in sub.error_details)
            for model, usage in sub.usage_per_model.items():
                result.add_usage(model, usage)
            result.sampled_model_name = result.sampled_model_name or sub.sampled_model_name
        result.sub_rewards = dict(rewards)
        result.scores = dict(rewards)
        try:
            result.reward = self.formula.evaluate(rewards)
        except FormulaError as exc:
            result.fail("formula_parse_error", str(exc))


_TYPES: dict[str, type[Grader]] = {cls.type: cls for cls in
                                   (GraderStringCheck, GraderTextSimilarity, GraderPython, GraderScoreModel,
                                    GraderLabelModel, GraderMulti)}


def _compile(spec, param: str) -> Grader:
    if not isinstance(spec, dict):
        raise GraderError("a grader must be an object with a 'type'", param)
    kind = spec.get("type")
    if kind is None:
        raise GraderError(f"missing required field 'type' (one of {', '.join(_TYPES)})", f"{param}.type")
    if kind not in _TYPES:
        raise GraderError(f"unknown grader type {kind!r}; one of {', '.join(_TYPES)}", f"{param}.type")
    return _TYPES[kind](spec, param)


def _model_graders(grader: Grader) -> list[_ModelGrader]:
    if isinstance(grader, GraderMulti):
        return [g for sub in grader.graders.values() for g in _model_graders(sub)]
    return [grader] if isinstance(grader, _ModelGrader) else []


def compile_grader(grader: dict | Grader, *, param: str = "grader", models: Collection[str] | None = None) -> Grader:
    """A :class:`Grader` ready to grade, from its JSON form. Raises :class:`GraderError` naming
    the field (``param``) for a malformed grader, and -- when ``models`` (the judge models
    available) is given -- for a model grader whose ``model`` is not among them. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""
    compiled = grader if isinstance(grader, Grader) else _compile(grader, param)
    if models is not None:
        for model_grader in _model_graders(compiled):
            if model_grader.model not in models:
                raise GraderError(f"the judge model {model_grader.model!r} is not available here; "
                                  f"available: {', '.join(sorted(models)) or 'none'}",
                                  f"{model_grader.param}.model", code="model_not_found")
    return compiled


def validate_grader(grader: dict, *, models: Collection[str] | None = None) -> dict:
    """The grader, checked and normalised (a default ``name`` filled in); raises
    :class:`GraderError` with ``param`` and a message for anything malformed: unknown type,
    missing or unknown fields, a bad operation or metric, python source that does not compile
    or has no ``grade``, a bad template, a formula using an unknown grader, and (when
    ``models`` is given) a judge model that is not available. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb."""
    return compile_grader(grader, models=models).to_dict()

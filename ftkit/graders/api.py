"""What the graders endpoints and the trainer call: the spec's envelopes and batch grading.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

* :func:`run_grader` -- ``POST /v1/fine_tuning/alpha/graders/run``: a ``RunGraderRequest``
  body in, a ``RunGraderResponse`` out.
* :func:`validate_grader_request` -- ``POST /v1/fine_tuning/alpha/graders/validate``: a
  ``ValidateGraderRequest`` in, a ``ValidateGraderResponse`` (the normalised grader) out.
* :func:`grade_many` -- many samples through one grader, reusing one python worker process and
  sending model-grader questions to the judge concurrently (so a batching engine can answer them
  together): the reward function of reinforcement fine-tuning.
* :func:`client_judge` -- a judge for model graders that asks any ``openai`` client (ftkit's
  local server, the hosted API, Azure) through chat completions.

A malformed request or grader raises :class:`~ftkit.graders.core.GraderError`, whose
``param``, ``message`` and ``code`` make an HTTP 400; nothing else raises for bad input.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Collection, Sequence

from .core import (
    Grader,
    GraderError,
    GradeResult,
    GradingContext,
    Judge,
    JudgeRefusal,
    build_sample,
    compile_grader,
)
from .sandbox import PythonSandbox

__all__ = ["client_judge", "grade_many", "run_grader", "validate_grader_request"]


def _body(body) -> dict:
    if not isinstance(body, dict):
        raise GraderError("the request body must be a JSON object", None, code="invalid_request")
    if body.get("grader") is None:
        raise GraderError("Missing required parameter: 'grader'", "grader", code="missing_required_parameter")
    return body


def validate_grader_request(body: dict, *, models: Collection[str] | None = None) -> dict:
    """The ``ValidateGraderResponse`` for a ``ValidateGraderRequest`` body: ``{"grader": ...}``
    with the grader checked and normalised. Raises :class:`GraderError` (a 400) naming the
    field that is wrong; with ``models`` (the judge models served), also for a model grader
    whose ``model`` is not one of them. Taught in notebooks/07_reinforcement_fine_tuning.ipynb."""
    return {"grader": compile_grader(_body(body)["grader"], models=models).to_dict()}


def run_grader(body: dict, *, judge: Judge | None = None, sandbox: PythonSandbox | None = None,
               models: Collection[str] | None = None) -> dict:
    """The ``RunGraderResponse`` for a ``RunGraderRequest`` body (``grader``, ``model_sample``,
    optional ``item``).

    ``model_sample`` fills the ``sample`` namespace: ``output_text`` is the string, and
    ``output_json`` its parsed value when it is valid JSON (see
    :func:`~ftkit.graders.core.build_sample`). ``judge`` answers model graders; ``sandbox`` runs
    python graders (a temporary one when None); ``models``, when given, are the judge models a
    model grader may name (others are a 400). A bad grader or request raises
    :class:`GraderError`; a grader that fails on this sample returns its error flags.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    body = _body(body)
    grader = compile_grader(body["grader"], models=models)
    if "model_sample" not in body or body["model_sample"] is None:
        raise GraderError("Missing required parameter: 'model_sample'", "model_sample", code="missing_required_parameter")
    if not isinstance(body["model_sample"], str):
        raise GraderError("'model_sample' must be a string (the model's answer)", "model_sample")
    item = body.get("item")
    if item is None:
        item = {}
    if not isinstance(item, dict):
        raise GraderError("'item' must be a JSON object (the dataset row)", "item")
    context = GradingContext(judge=judge, sandbox=sandbox)
    try:
        return grader.grade(build_sample(body["model_sample"]), item, context).to_response()
    finally:
        context.close()


def grade_many(grader: dict | Grader, samples: Sequence, items: Sequence[dict] | None = None, *,
               judge: Judge | None = None, sandbox: PythonSandbox | None = None,
               concurrency: int = 8) -> list[GradeResult]:
    """Grade ``samples[i]`` against ``items[i]`` for every i, in order.

    A sample is a string or a dict (see :func:`~ftkit.graders.core.build_sample`: a chat
    completions choice or message carries its tool calls and ``finish_reason``). Python graders
    share one worker process -- ``sandbox`` if given (keep one for a whole training run), else one
    started and stopped here. Samples are sent to the judge up to ``concurrency`` at a time.
    Raises :class:`GraderError` for a malformed grader and ValueError when the lengths differ;
    per-sample failures are error flags on the results. Taught in
    notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    grader = compile_grader(grader)
    samples = [build_sample(s) for s in samples]
    items = [{} for _ in samples] if items is None else [dict(i) if i is not None else {} for i in items]
    if len(items) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(items)} items")
    context = GradingContext(judge=judge, sandbox=sandbox)
    if grader.uses_python():
        context.python_sandbox()  # started once, before any thread could race to start it
    try:
        if grader.uses_judge() and concurrency > 1 and len(samples) > 1:
            # python graders inside still run one at a time: the sandbox serialises its calls
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(concurrency, len(samples))) as pool:
                return list(pool.map(lambda pair: grader.grade(pair[0], pair[1], context), zip(samples, items)))
        return [grader.grade(sample, item, context) for sample, item in zip(samples, items)]
    finally:
        context.close()


def client_judge(client) -> Judge:
    """A judge for ``score_model`` / ``label_model`` graders that asks ``client`` (an
    ``openai.OpenAI``: ftkit's local server, the hosted API or Azure) with
    ``chat.completions.create``: the grader's sampling parameters become ``temperature``,
    ``top_p``, ``seed``, ``reasoning_effort`` and ``max_completion_tokens``, and the grader's
    JSON schema is sent as ``response_format``. A refusal raises :class:`JudgeRefusal`.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """

    def judge(model: str, messages: list, sampling_params: dict, response_format: dict | None):
        kwargs = {k: sampling_params[k] for k in ("temperature", "top_p", "seed", "reasoning_effort") if k in sampling_params}
        if "max_completions_tokens" in sampling_params:
            kwargs["max_completion_tokens"] = sampling_params["max_completions_tokens"]
        if response_format is not None:
            kwargs["response_format"] = response_format
        completion = client.chat.completions.create(model=model, messages=messages, **kwargs)
        message = completion.choices[0].message
        if getattr(message, "refusal", None):
            raise JudgeRefusal(message.refusal)
        usage = completion.usage.model_dump() if getattr(completion, "usage", None) is not None else None
        return message.content or "", usage

    return judge

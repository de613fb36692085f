"""Which request parameters the local server implements: the documented deviations, in one place.

Every top-level parameter of every JSON operation the server implements is listed here (a test
checks the list against the spec's request schemas, so a parameter the spec adds cannot be
ignored silently). A parameter is

* ``implemented`` -- it does what the hosted API does;
* ``accepted`` -- it only carries metadata or a hint that cannot change the answer (``user``,
  ``metadata``, ``safety_identifier``, prompt-cache hints); accepted and recorded or ignored;
* ``hint`` -- it steers how the server works (which prompt-cache entries it keeps), never the answer;
* ``values`` -- some values are implemented, any other answers 400 ``unsupported_value``;
* ``refused`` -- any value but null answers 400 ``unsupported_parameter`` naming it.

A parameter the spec does not know answers 400 ``unknown_parameter``. Values *inside* an
implemented parameter that the server cannot honour (an image content part, a built-in tool, a
reasoning input item, a ``tool_choice`` of an unsupported kind, ...) are refused where that
parameter is read (:mod:`ftkit.local.services.chat`, :mod:`ftkit.local.services.responses`) with the same codes;
:data:`NESTED_REFUSALS` lists them for the README's table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .wire import unsupported_parameter, unsupported_value


@dataclass(frozen=True)
class Rule:
    kind: str  # "implemented" | "accepted" | "hint" | "values" | "refused"
    note: str = ""
    allowed: tuple = ()  # for "values": the values that are implemented (null always is)

    def check(self, name: str, value: Any) -> None:
        if value is None or self.kind in ("implemented", "accepted", "hint"):
            return
        if self.kind == "refused":
            raise unsupported_parameter(name, self.note)
        if not any(_same(value, ok) for ok in self.allowed):
            raise unsupported_value(name, value, f"{self.shown_values()} ({self.note})")

    def shown_values(self) -> str:
        return " or ".join(json.dumps(value) for value in self.allowed)


def _same(value: Any, allowed: Any) -> bool:
    """Equal as JSON values: 0 and 0.0 are, false and 0 are not."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return value is allowed
    return value == allowed


IMPLEMENTED = Rule("implemented")


def accepted(note: str) -> Rule:
    return Rule("accepted", note)


def hint(note: str) -> Rule:
    return Rule("hint", note)


def refused(note: str) -> Rule:
    return Rule("refused", note)


def values(note: str, *allowed) -> Rule:
    return Rule("values", note, allowed)


_METADATA = {
    "metadata": accepted("returned with the object"),
    "user": accepted("an end-user id; not used"),
    "safety_identifier": accepted("an end-user id; not used"),
    "prompt_cache_key": hint("the prompt-cache entries last used under one of the 64 most recent keys are evicted "
                              "after every other entry; every prompt is cached, with or without a key"),
    "prompt_cache_retention": accepted("a caching hint; the local cache keeps entries until its memory budget "
                                        "(FTKIT_PROMPT_CACHE_MB) needs them"),
    "prompt_cache_options": accepted("a caching hint; the local engine caches every prompt prefix"),
}

POLICY: dict[str, dict[str, Rule]] = {
    "createChatCompletion": {
        **{name: IMPLEMENTED for name in (
            "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
            "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
            "response_format", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
            "logit_bias")},
        **_METADATA,
        "store": IMPLEMENTED,
        "service_tier": values("there is one service tier", "auto", "default"),
        "modalities": values("the local models only write text", ["text"]),
        "audio": refused("the local models have no audio output"),
        "prediction": refused("no predicted outputs"),
        "web_search_options": refused("no web search"),
        "reasoning_effort": refused("the local models do not reason"),
        "verbosity": refused("the local models have no verbosity control"),
        "moderation": refused("no moderation"),
    },
    "createCompletion": {
        **{name: IMPLEMENTED for name in (
            "model", "prompt", "max_tokens", "temperature", "top_p", "n", "best_of", "stop", "seed", "stream",
            "stream_options", "echo", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias")},
        "user": accepted("an end-user id; not used"),
        "suffix": refused("no insertion (fill-in-the-middle); the prompt is continued"),
    },
    "createResponse": {
        **{name: IMPLEMENTED for name in (
            "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "text", "tools",
            "tool_choice", "parallel_tool_calls", "previous_response_id", "store", "stream", "stream_options",
            "include", "top_logprobs")},
        **_METADATA,
        "max_tool_calls": accepted("limits calls to built-in tools, which the local server has none of"),
        "service_tier": values("there is one service tier", "auto", "default"),
        "truncation": values("input over the context length is an error", "disabled"),
        "background": values("responses run in the foreground", False),
        "reasoning": refused("the local models do not reason"),
        "conversation": refused("no conversations API; use previous_response_id"),
        "context_management": refused("no context management"),
        "prompt": refused("no stored prompt templates"),
        "moderation": refused("no moderation"),
    },
    "createFineTuningJob": {
        **{name: IMPLEMENTED for name in (
            "model", "training_file", "validation_file", "hyperparameters", "method", "suffix", "seed", "metadata",
            "integrations")},
    },
    "runGrader": {name: IMPLEMENTED for name in ("grader", "item", "model_sample")},
    "validateGrader": {"grader": IMPLEMENTED},
    "updateChatCompletion": {"metadata": IMPLEMENTED},
    "createEval": {name: IMPLEMENTED for name in ("name", "metadata", "data_source_config", "testing_criteria")},
    "updateEval": {name: IMPLEMENTED for name in ("name", "metadata")},
    "createEvalRun": {name: IMPLEMENTED for name in ("name", "metadata", "data_source")},
    "createBatch": {
        **{name: IMPLEMENTED for name in ("input_file_id", "endpoint", "completion_window", "metadata")},
        "output_expires_after": refused("output files are kept until deleted"),
    },
}

# Values inside implemented parameters that are refused where they are read (for the README).
NESTED_REFUSALS = {
    "createChatCompletion": [
        ("messages[].content[].type", "only 'text' parts (and 'refusal' in assistant messages)", "unsupported_value"),
        ("messages[].audio", "no audio", "unsupported_parameter"),
        ("tools[].type", "only 'function' tools", "unsupported_value"),
        ("tool_choice", "'none', 'auto', 'required' or one function; not allowed_tools or custom tools",
         "unsupported_value"),
    ],
    "createCompletion": [
        ("echo + logprobs", "not together: the engine scores the tokens it generates, not the prompt's (the hosted "
                            "API refuses the pair for gpt-3.5-turbo-instruct too)", "unsupported_value"),
        ("n, best_of", "at most 16 choices per prompt", "invalid_value"),
    ],
    "createResponse": [
        ("input[].type", "message, function_call and function_call_output items only (no reasoning, "
                         "item_reference, built-in tool items)", "unsupported_value"),
        ("input[].content[].type", "input_text / output_text / refusal only (no images, files, audio)",
         "unsupported_value"),
        ("tools[].type", "only 'function' tools (no web_search, file_search, computer, mcp, code_interpreter, "
                         "image_generation, shell, custom ...)", "unsupported_value"),
        ("tool_choice", "'none', 'auto', 'required' or one function", "unsupported_value"),
        ("include[]", "only 'message.output_text.logprobs'", "unsupported_value"),
        ("text.verbosity", "'medium' only", "unsupported_value"),
    ],
    "createBatch": [
        ("endpoint", "'/v1/chat/completions' only", "invalid_value"),
    ],
}


@dataclass(frozen=True)
class ResponseDeviation:
    """A field of a response object where the local server knowingly sends what the spec's schema
    does not allow: ``also`` lists those values (``None``: null). The tests amend the spec by
    exactly these before checking responses against it (``amend_spec`` in tests/conftest.py,
    used by ``check_schema`` and the fuzz test)."""

    operations: tuple[str, ...]  # the operations that return the object (for the README)
    schema: str  # the spec's components/schemas name
    fields: tuple[str, ...]
    also: tuple
    note: str


_PAGE_IDS = "null on an empty page, as the hosted API sends them; the spec types them as strings here"
_JOB_OPERATIONS = ("createFineTuningJob", "listPaginatedFineTuningJobs", "retrieveFineTuningJob", "cancelFineTuningJob",
                   "pauseFineTuningJob", "resumeFineTuningJob")
_EVAL_RUN_OPERATIONS = ("createEvalRun", "getEvalRuns", "getEvalRun", "cancelEvalRun")
RESPONSE_DEVIATIONS = [
    ResponseDeviation(("createFile", "listFiles", "retrieveFile"), "OpenAIFile", ("purpose",), ("evals",),
                      "a file uploaded with purpose 'evals' (the upload's enum allows it) says so, as on the hosted "
                      "API; the file object's enum lacks it"),
    ResponseDeviation(_JOB_OPERATIONS, "FineTuningJob", ("status",), ("paused",),
                      "paused jobs say so, as on the hosted API; the spec's status enum lacks it"),
    ResponseDeviation(("listFiles",), "ListFilesResponse", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("listBatches",), "ListBatchesResponse", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("listInputItems",), "ResponseItemList", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("listEvals",), "EvalList", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("getEvalRuns",), "EvalRunList", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("getEvalRunOutputItems",), "EvalRunOutputItemList", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("listChatCompletions",), "ChatCompletionList", ("first_id", "last_id"), (None,), _PAGE_IDS),
    ResponseDeviation(("getChatCompletionMessages",), "ChatCompletionMessageList", ("first_id", "last_id"), (None,),
                      _PAGE_IDS),
    ResponseDeviation(_EVAL_RUN_OPERATIONS, "EvalRun", ("report_url",), (None,),
                      "there is no dashboard; the run's output items are its report"),
    ResponseDeviation(_EVAL_RUN_OPERATIONS, "EvalRun", ("error",), (None,),
                      "null while nothing went wrong, as the hosted API sent it; the spec requires an error object"),
    ResponseDeviation(("getEvalRunOutputItems", "getEvalRunOutputItem"), "EvalRunOutputItem", ("sample.error",),
                      (None,), "null when the row was answered, as the hosted API sent it"),
    ResponseDeviation(("createCompletion",), "CreateCompletionResponse", ("choices.finish_reason",), (None,),
                      "null in a stream's chunks until a choice's last, as the hosted API streams them; the spec "
                      "uses the whole answer's schema, which requires a reason, for the chunks too"),
    ResponseDeviation(("getChatCompletionMessages",), "ChatCompletionResponseMessage", ("role",),
                      ("system", "developer", "user", "tool", "function"),
                      "a stored completion's input messages keep their roles, as the hosted API lists them; the "
                      "spec's message schema (shared with answers) says 'assistant'"),
]
# Whole answers in another media type than the spec names, by operationId: (status, media type, why).
MEDIA_TYPE_DEVIATIONS = {
    "downloadFile": ("200", "application/octet-stream",
                     "the file's bytes as they were uploaded, as the hosted API sends them; the spec says a JSON string"),
}
# Errors: the spec lists (nearly) only success responses. Every operation answers errors with
# OpenAI's envelope ({"error": {"message", "type", "param", "code"}}, the spec's ErrorResponse)
# and a 4xx status; where the spec does name an error response with the bare Error object
# (getResponse, deleteResponse: 404) the local server, like the hosted API and the SDK, uses the
# envelope. The tests amend the spec accordingly ("4XX": ErrorResponse on every operation).
ERROR_RESPONSE = "ErrorResponse"


def check_parameters(operation: str, body: dict) -> None:
    """Refuse the parameters of ``body`` that the local server does not implement (see above)."""
    policy = POLICY[operation]
    for name, value in body.items():
        rule = policy.get(name)
        if rule is None:  # in the spec but not classified here (tests/test_request_check.py prevents it)
            raise unsupported_parameter(name)
        rule.check(name, value)


def deviations_table() -> str:
    """The markdown table of every parameter that is not simply implemented, and of every response
    field that differs from the spec (README, Deviations)."""
    rows = ["| operation | parameter | local server |", "|---|---|---|"]
    for operation, policy in POLICY.items():
        for name, rule in sorted(policy.items()):
            if rule.kind == "implemented":
                continue
            if rule.kind == "accepted":
                what = f"accepted, no effect ({rule.note})"
            elif rule.kind == "hint":
                what = f"a hint: {rule.note}"
            elif rule.kind == "values":
                what = f"only `{rule.shown_values()}` ({rule.note}); other values: 400 `unsupported_value`"
            else:
                what = f"400 `unsupported_parameter` ({rule.note})"
            rows.append(f"| {operation} | `{name}` | {what} |")
        for name, note, code in NESTED_REFUSALS.get(operation, []):
            rows.append(f"| {operation} | `{name}` | {note}; else 400 `{code}` |")
    for deviation in RESPONSE_DEVIATIONS:
        shown = " or ".join("null" if value is None else json.dumps(value) for value in deviation.also)
        fields = ", ".join(f"`{deviation.schema}.{field}`" for field in deviation.fields)
        rows.append(f"| {', '.join(deviation.operations)} | response: {fields} | also {shown} ({deviation.note}) |")
    for operation, (status, media_type, note) in MEDIA_TYPE_DEVIATIONS.items():
        rows.append(f"| {operation} | response: {status} content type | `{media_type}` ({note}) |")
    rows.append("| every operation | response: errors | OpenAI's error envelope (`ErrorResponse`) with a 4xx "
                "status, also where the spec lists only a success response or the bare `Error` object |")
    return "\n".join(rows)

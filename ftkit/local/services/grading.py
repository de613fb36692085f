"""OpenAI's graders on the local server: ``/v1/fine_tuning/alpha/graders/run`` and ``/validate``.

The graders themselves live in :mod:`ftkit.graders` (no torch, no HTTP); this service gives them
what the server has: a *judge* for ``score_model`` / ``label_model`` graders backed by the
server's own chat service -- any model it serves, base or fine-tuned, with the grader's sampling
parameters and its JSON format enforced by constrained decoding -- and the list of served models,
so a grader naming an unknown judge model is a 400. A bad grader is a 400 naming the field.
"""

from __future__ import annotations

from ... import graders
from ..api.wire import APIError
from .chat import ChatService

#: Judge requests keep at most this many tokens of completion (a grader's
#: ``max_completions_tokens`` is honoured below it).
JUDGE_MAX_TOKENS = 512


class GradingService:
    def __init__(self, chat: ChatService, list_models) -> None:
        self.chat = chat
        self.list_models = list_models  # () -> the model ids the server serves

    def judge(self, model: str, messages: list[dict], sampling_params: dict, response_format: dict | None):
        """Ask a served model, as the graders module's ``Judge`` expects: (text, usage).

        ``reasoning_effort`` is dropped: the local models do not reason."""
        body: dict = {"model": model, "messages": messages}
        for key in ("temperature", "top_p", "seed"):
            if sampling_params.get(key) is not None:
                body[key] = sampling_params[key]
        body["max_completion_tokens"] = min(int(sampling_params.get("max_completions_tokens") or JUDGE_MAX_TOKENS),
                                            JUDGE_MAX_TOKENS)
        if response_format is not None:
            body["response_format"] = response_format
        try:
            call = self.chat.prepare(body)
        except APIError as e:  # reported in the grader's metadata as a judge error, not raised
            raise RuntimeError(f"the judge request was refused: {e.message}") from None
        choices = self.chat.submit(call).result()
        from .chat import usage

        return choices[0].text, usage(call.request, choices)

    def run(self, body: dict) -> dict:
        try:
            return graders.run_grader(body, judge=self.judge, models=self.list_models())
        except graders.GraderError as e:
            raise APIError(400, e.message, param=e.param, code=e.code) from None

    def validate(self, body: dict) -> dict:
        try:
            return graders.validate_grader_request(body, models=self.list_models())
        except graders.GraderError as e:
            raise APIError(400, e.message, param=e.param, code=e.code) from None

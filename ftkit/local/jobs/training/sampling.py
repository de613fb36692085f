"""Answers sampled in the trainer: the model being trained answering its prompts, and model-grader judges.

Both go through the serving engine's batched decoder (:func:`ftkit.local.inference.engine.generate`): all
prompts and all samples of a step are decoded together, with a shared KV cache, instead of one
``generate`` call per sample.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Completion:
    ids: list[int]  # the answer's tokens, with the end-of-sequence token it sampled when it ended by itself
    text: str
    finish_reason: str


def generate(model, tokenizer, prompts: list[list[int]], *, n: int, max_tokens: int, temperature: float,
             seed: int | None, precision: str = "fp32") -> list[list[Completion]]:
    """``n`` answers to each prompt (token ids), decoded in shared batches: one list per prompt."""
    from ...inference.engine import GenerationRequest
    from ...inference.engine import generate as decode

    requests = [GenerationRequest(model="trainer", messages=[], max_tokens=max_tokens, temperature=temperature,
                                  n=n, seed=None if seed is None else seed + 1000 * k, prompt_ids=list(ids))
                for k, ids in enumerate(prompts)]
    # the end token is the one the answer sampled: a model may have several (the generation
    # config's besides the tokenizer's), and the update must score the token that was drawn
    return [[Completion(list(c.token_ids) + ([c.end_token] if c.end_token is not None else []), c.text, c.finish_reason)
             for c in choices] for choices in decode(model, tokenizer, requests, precision=precision)]


class LocalJudge:
    """A judge for ``score_model`` / ``label_model`` graders inside the trainer process: any model
    the server serves (base or fine-tuned), loaded once, answering with the grader's sampling
    parameters and JSON format (constrained decoding), as ``ftkit.graders`` expects a judge to."""

    def __init__(self, store, *, precision: str = "fp32", log=print) -> None:
        import threading

        self.store = store
        self.precision = precision
        self.log = log
        self._models: dict[str, tuple] = {}
        self._lock = threading.Lock()  # the grader asks concurrently; one decode at a time here

    def _load(self, model_id: str):
        from .starting import load_starting_model

        if model_id not in self._models:
            start = load_starting_model(self.store, model_id, progress=self.log)
            start.model.eval()
            self._models[model_id] = (start.model, start.tokenizer)
        return self._models[model_id]

    def __call__(self, model: str, messages: list[dict], sampling_params: dict, response_format: dict | None):
        import torch

        from ...inference.engine import GenerationRequest
        from ...inference.engine import generate as decode
        from ...inference.render import render_prompt

        with self._lock:
            judge, tok = self._load(model)
            prompt = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
            constraint = None
            if response_format and response_format.get("type") == "json_schema":
                spec = response_format.get("json_schema") or {}
                constraint = {"type": "json_schema", "schema": spec.get("schema") or {}, "strict": bool(spec.get("strict"))}
            elif response_format and response_format.get("type") == "json_object":
                constraint = {"type": "json_object"}
            request = GenerationRequest(model=model, messages=messages,
                                        max_tokens=int(sampling_params.get("max_completions_tokens") or 256),
                                        temperature=float(sampling_params.get("temperature", 1.0) or 0.0),
                                        top_p=float(sampling_params.get("top_p", 1.0) or 1.0),
                                        seed=sampling_params.get("seed"), prompt_ids=prompt, constraint=constraint)
            with torch.no_grad():
                choice = decode(judge, tok, [request], precision=self.precision)[0][0]
        usage = {"prompt_tokens": len(prompt), "completion_tokens": choice.completion_tokens,
                 "total_tokens": len(prompt) + choice.completion_tokens}
        return choice.text, usage

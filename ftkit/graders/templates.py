"""Grader templates: ``{{ item.<field> }}`` and ``{{ sample.<variable> }}`` filled in per sample.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

As in OpenAI's graders guide, a template is any string with ``{{ namespace.variable }}``
placeholders. The namespace is ``item`` (the dataset row: any keys) or ``sample`` (the model's
answer: ``output_text``, ``output_json``, ``output_tools``, ``choices``, ``output_audio``).
Nested values are reached with a JSON-path-like syntax: ``item.address.city``,
``sample.output_tools[0].function.name``, ``item["key with spaces"]``.

A placeholder is replaced by the value as text: strings as they are, anything else as JSON
(``1.0``, ``true``, ``{"a": 1}``). A reference that does not resolve is not an exception of the
caller's: :func:`render` raises :class:`TemplateError` with a ``kind`` the grader turns into the
hosted error flag -- ``sample_parse_error`` when ``sample.output_json`` is used but the answer
is not JSON, ``invalid_variable_error`` for any other missing field or index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "SAMPLE_VARIABLES",
    "Reference",
    "TemplateError",
    "TemplateSyntaxError",
    "parse_template",
    "references",
    "render",
]

#: The variables of the ``sample`` namespace (OpenAI graders guide, "Sample namespace").
SAMPLE_VARIABLES = ("output_text", "output_json", "output_tools", "choices", "output_audio")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
# one step of a path: .name, [3] or ["key"] / ['key']
_STEP = re.compile(r"""\.([^.\[\]\s{}"']+)|\[\s*(-?\d+)\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*'([^']*)'\s*\]""")
_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Reference:
    """One placeholder: ``namespace`` (``item`` or ``sample``) and the path below it."""

    namespace: str
    path: tuple[str | int, ...]
    text: str  # as written, for messages

    @property
    def dotted(self) -> str:
        out = self.namespace
        for step in self.path:
            out += f"[{step}]" if isinstance(step, int) else f".{step}" if re.fullmatch(r"[\w-]+", step) else f"[{json.dumps(step)}]"
        return out


class TemplateSyntaxError(ValueError):
    """A template that cannot be parsed: found when the grader is validated (a 400)."""


class TemplateError(Exception):
    """A reference that does not resolve for this sample and item: becomes an error flag."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid_variable_error" or "sample_parse_error"
        self.message = message


def _parse_reference(inner: str) -> Reference:
    text = inner.strip()
    head = _HEAD.match(inner)
    if not head:
        raise TemplateSyntaxError(f"'{{{{{inner}}}}}' is not a reference; write {{{{ item.<field> }}}} or {{{{ sample.<variable> }}}}")
    namespace, pos = head.group(1), head.end()
    if namespace not in ("item", "sample"):
        raise TemplateSyntaxError(f"'{{{{{inner}}}}}': the namespace must be 'item' or 'sample', not {namespace!r}")
    path: list[str | int] = []
    rest = inner.rstrip()
    while pos < len(rest):
        step = _STEP.match(rest, pos)
        if not step:
            raise TemplateSyntaxError(f"'{{{{{inner}}}}}': cannot read the path at {rest[pos:]!r}")
        name, index, dq, sq = step.groups()
        path.append(int(index) if index is not None else name if name is not None else dq if dq is not None else sq)
        pos = step.end()
    if not path:
        raise TemplateSyntaxError(f"'{{{{{inner}}}}}' names the namespace only; add a variable, e.g. {{{{ {namespace}.field }}}}")
    if namespace == "sample" and path[0] not in SAMPLE_VARIABLES:
        raise TemplateSyntaxError(f"'{{{{{inner}}}}}': the sample namespace has {', '.join(SAMPLE_VARIABLES)}; "
                                  f"not {path[0]!r}")
    return Reference(namespace, tuple(path), text)


def parse_template(template: str) -> list[str | Reference]:
    """The template as alternating literal text and references. Raises
    :class:`TemplateSyntaxError` for a malformed placeholder or an unclosed ``{{``."""
    if not isinstance(template, str):
        raise TemplateSyntaxError("a template must be a string")
    parts: list[str | Reference] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(template[pos:match.start()])
        parts.append(_parse_reference(match.group(1)))
        pos = match.end()
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateSyntaxError(f"unclosed '{{{{' in {tail[tail.index('{{'):][:40]!r}")
    parts.append(tail)
    return [p for p in parts if p != ""]


def references(template: str) -> list[Reference]:
    """The references a template makes, in order."""
    return [p for p in parse_template(template) if isinstance(p, Reference)]


def _resolve(ref: Reference, sample: dict, item: dict):
    if ref.namespace == "sample" and ref.path[0] == "output_json" and sample.get("output_json") is None:
        raise TemplateError("sample_parse_error", f"{{{{{ref.text}}}}}: the sample is not valid JSON, so it has no output_json")
    value = sample if ref.namespace == "sample" else item
    walked = ref.namespace
    for step in ref.path:
        index = step if isinstance(step, int) else int(step) if re.fullmatch(r"-?\d+", step) else None
        if isinstance(value, dict) and str(step) in value:
            value = value[str(step)]
        elif isinstance(value, list) and index is not None and -len(value) <= index < len(value):
            value = value[index]
        else:
            where = f"{walked} has no field {step!r}" if isinstance(value, dict) else (
                f"{walked} has {len(value)} element(s), no index {step}" if isinstance(value, list)
                else f"{walked} is {type(value).__name__}, not an object")
            raise TemplateError("invalid_variable_error", f"{{{{{ref.text}}}}}: {where}")
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    return value


def as_text(value) -> str:
    """How a value is written into a template: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str | list, sample: dict, item: dict) -> str:
    """The template with every reference replaced by its value for this ``sample`` and ``item``.

    ``template`` is a string or the result of :func:`parse_template`. Raises
    :class:`TemplateError` (with the hosted error flag as ``kind``) for a reference that does not
    resolve. Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    parts = parse_template(template) if isinstance(template, str) else template
    return "".join(p if isinstance(p, str) else as_text(_resolve(p, sample, item)) for p in parts)

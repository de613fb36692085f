"""The dated model and price catalog shipped with ftkit (``ftkit/catalog.csv``).

One row per model and price period: tokenizer encoding, per-example training token limit,
training and inference prices (USD per 1M tokens, or per hour for reinforcement fine-tuning),
the date the row became valid, and its source. ``confirmed`` says whether the figures were
checked against a primary source. Taught in notebooks/03_cost_math.ipynb.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources

from .tokens import base_model_of

__all__ = ["CatalogEntry", "UnknownCatalogModel", "entries", "lookup", "max_example_tokens", "to_dataframe"]


class UnknownCatalogModel(KeyError):
    """The model is not in ftkit's catalog."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class CatalogEntry:
    model: str
    snapshot: str
    backend: str
    method: str
    encoding: str | None
    max_example_tokens: int | None
    training_usd_per_1m: float | None
    training_usd_per_hour: float | None
    ft_input_usd_per_1m: float | None
    ft_cached_input_usd_per_1m: float | None
    ft_output_usd_per_1m: float | None
    base_input_usd_per_1m: float | None
    base_output_usd_per_1m: float | None
    valid_from: dt.date
    shutdown: dt.date | None
    confirmed: bool
    source: str
    notes: str


def _parse(row: dict[str, str]) -> CatalogEntry:
    values: dict[str, object] = {}
    for f in fields(CatalogEntry):
        raw = (row.get(f.name) or "").strip()
        if f.name in ("valid_from", "shutdown"):
            values[f.name] = dt.date.fromisoformat(raw) if raw else None
        elif f.name == "confirmed":
            values[f.name] = raw.lower() == "yes"
        elif f.name == "max_example_tokens":
            values[f.name] = int(raw) if raw else None
        elif f.name.endswith(("_per_1m", "_per_hour")):
            values[f.name] = float(raw) if raw else None
        else:
            values[f.name] = raw or (None if f.name == "encoding" else "")
    return CatalogEntry(**values)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def entries() -> tuple[CatalogEntry, ...]:
    """Every row of the catalog, oldest first within a model."""
    text = (resources.files("ftkit") / "catalog.csv").read_text(encoding="utf-8")
    rows = [_parse(r) for r in csv.DictReader(text.splitlines())]
    return tuple(sorted(rows, key=lambda e: (e.model, e.valid_from)))


def _as_date(on) -> dt.date:
    if on is None:
        return dt.date.today()
    if isinstance(on, dt.datetime):
        return on.date()
    if isinstance(on, dt.date):
        return on
    return dt.date.fromisoformat(str(on))


def lookup(model: str, on: dt.date | str | None = None) -> CatalogEntry:
    """The catalog row for ``model`` in force on date ``on`` (default: today).

    Accepts a snapshot (``gpt-4o-mini-2024-07-18``), a model alias (``gpt-4o-mini``), a
    fine-tuned model or checkpoint name (resolved through its base model), or a dated snapshot
    the catalog does not list (matched to its model family, e.g. ``gpt-3.5-turbo-1106``).
    """
    base = base_model_of(model)
    day = _as_date(on)
    rows = [e for e in entries() if base == e.snapshot]
    if not rows:
        rows = [e for e in entries() if base == e.model]
    if not rows:
        family = [e for e in entries() if base.startswith(e.model + "-")]
        if family:  # the longest matching family name ("gpt-4o-mini" rather than "gpt-4o")
            longest = max(len(e.model) for e in family)
            rows = [e for e in family if len(e.model) == longest]
    if not rows:
        known = ", ".join(sorted({e.model for e in entries()}))
        raise UnknownCatalogModel(f"{model!r} is not in ftkit's catalog (known: {known})")
    in_force = [e for e in rows if e.valid_from <= day]
    return max(in_force or rows, key=lambda e: e.valid_from)


def max_example_tokens(model: str) -> int | None:
    """Per-example training token limit for ``model``; longer examples get truncated."""
    return lookup(model).max_example_tokens


def to_dataframe():
    """The whole catalog as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([e.__dict__ for e in entries()])

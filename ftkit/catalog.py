"""The dated model and price catalog shipped with ftkit (``ftkit/catalog.csv``).

Taught in notebooks/03_cost_math.ipynb.

The CSV has two kinds of rows (column ``kind``):

* ``price`` -- one row per model snapshot and price period: tokenizer encoding, per-example
  training token limit, training price (USD per 1M tokens, or per hour for reinforcement
  fine-tuning), fine-tuned inference prices (input / cached input / output), the base model's
  own prices, the date the row took effect (``valid_from``), and the model's dates:
  ``training_ends`` (first day no new fine-tuning job can be created on it), ``base_shutdown``
  (the base model stops answering) and ``shutdown`` (its fine-tuned models stop answering).
* ``platform`` -- a backend-wide change of who may create fine-tuning jobs, from ``valid_from``
  on: ``status`` is ``restricted`` (only some organizations) or ``closed`` (nobody).

``confirmed`` says whether every figure of the row was checked against a primary source (the
vendor's pricing page, launch posts, changelog, deprecations page or help articles, or a
verbatim copy of one); ``notes`` says which figure is not. ``source`` lists the pages used.

:func:`lookup` finds the price row in force on a date; :func:`availability` says whether a
model can still be fine-tuned (or used) on a date, and why not.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources

from .tokens import base_model_of

__all__ = [
    "COMPLETION_ONLY_MODELS",
    "Availability",
    "CatalogEntry",
    "PlatformEvent",
    "UnknownCatalogModel",
    "availability",
    "availability_table",
    "deadlines",
    "entries",
    "is_chat_model",
    "lookup",
    "max_example_tokens",
    "models",
    "platform_events",
    "timeline",
    "to_dataframe",
]

#: Availability statuses, from best to worst.
STATUSES = ("available", "restricted", "training_closed", "shut_down", "not_yet")


class UnknownCatalogModel(KeyError):
    """The model is not in ftkit's catalog."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class CatalogEntry:
    """One price row: a model snapshot's prices and limits from ``valid_from`` on."""

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
    base_cached_input_usd_per_1m: float | None
    base_output_usd_per_1m: float | None
    valid_from: dt.date
    training_ends: dt.date | None
    base_shutdown: dt.date | None
    shutdown: dt.date | None
    confirmed: bool
    source: str
    notes: str

    @property
    def priced(self) -> bool:
        """True when the row has a training price (the local backend has none)."""
        return self.training_usd_per_1m is not None or self.training_usd_per_hour is not None


@dataclass(frozen=True)
class PlatformEvent:
    """A backend-wide change to who may create fine-tuning jobs, from ``date`` on."""

    backend: str
    date: dt.date
    status: str  # "restricted" or "closed"
    rule: str
    source: str
    confirmed: bool


_DATE_FIELDS = ("valid_from", "training_ends", "base_shutdown", "shutdown")


def _parse_price(row: dict[str, str]) -> CatalogEntry:
    values: dict[str, object] = {}
    for f in fields(CatalogEntry):
        raw = (row.get(f.name) or "").strip()
        if f.name in _DATE_FIELDS:
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


def _parse_platform(row: dict[str, str]) -> PlatformEvent:
    status = row["status"].strip()
    if status not in ("restricted", "closed"):
        raise ValueError(f"catalog.csv: platform row of {row['valid_from']} has status {status!r}")
    return PlatformEvent(
        backend=row["backend"].strip(),
        date=dt.date.fromisoformat(row["valid_from"].strip()),
        status=status,
        rule=row["notes"].strip(),
        source=row["source"].strip(),
        confirmed=row["confirmed"].strip().lower() == "yes",
    )


@lru_cache(maxsize=1)
def _load() -> tuple[tuple[CatalogEntry, ...], tuple[PlatformEvent, ...]]:
    text = (resources.files("ftkit") / "catalog.csv").read_text(encoding="utf-8")
    prices, events = [], []
    for row in csv.DictReader(text.splitlines()):
        kind = (row.get("kind") or "price").strip()
        if kind == "price":
            prices.append(_parse_price(row))
        elif kind == "platform":
            events.append(_parse_platform(row))
        else:
            raise ValueError(f"catalog.csv: unknown row kind {kind!r}")
    # Stable sort: rows of one model that take effect on the same day keep their CSV order,
    # and the later one wins in lookup().
    prices.sort(key=lambda e: (e.model, e.valid_from))
    events.sort(key=lambda e: (e.backend, e.date))
    return tuple(prices), tuple(events)


def entries() -> tuple[CatalogEntry, ...]:
    """Every price row of the catalog, oldest first within a model."""
    return _load()[0]


def platform_events(backend: str | None = None) -> tuple[PlatformEvent, ...]:
    """The backend-wide fine-tuning availability changes, oldest first."""
    return tuple(e for e in _load()[1] if backend is None or e.backend == backend)


#: Models fine-tuned on prompt/completion pairs, not chat messages: OpenAI's launch post of
#: 2023-08-22 ("GPT-3.5 Turbo fine-tuning and API updates") offers babbage-002 and davinci-002 as
#: the replacements of the GPT-3 base models, which used the legacy prompt/completion format. A
#: chat-format training file (the course's) cannot train them.
COMPLETION_ONLY_MODELS = ("babbage-002", "davinci-002")


def is_chat_model(model: str) -> bool:
    """True unless ``model`` (or the base of an ``ft:`` name) is one of
    :data:`COMPLETION_ONLY_MODELS`, whose fine-tuning takes prompt/completion pairs."""
    return base_model_of(model.strip()) not in COMPLETION_ONLY_MODELS


def models(*, priced: bool | None = None) -> list[str]:
    """Model names in the catalog, oldest first (``priced=True``: only those with a training
    price, i.e. not the local backend)."""
    first: dict[str, dt.date] = {}
    for e in entries():
        if priced is None or e.priced == priced:
            first.setdefault(e.model, e.valid_from)
    return sorted(first, key=lambda name: (first[name], name))


def _as_date(on) -> dt.date:
    if on is None:
        return dt.date.today()
    if isinstance(on, dt.datetime):
        return on.date()
    if isinstance(on, dt.date):
        return on
    try:
        return dt.date.fromisoformat(str(on))
    except ValueError:
        raise ValueError(f"not a date: {on!r} (use a datetime.date or 'YYYY-MM-DD')") from None


def _rows_for(model: str) -> list[CatalogEntry]:
    """Price rows matching a model name (snapshot, alias, fine-tuned name or unlisted snapshot)."""
    if not isinstance(model, str) or not model.strip():
        raise UnknownCatalogModel(f"model must be a non-empty string, got {model!r}")
    base = base_model_of(model.strip())
    rows = [e for e in entries() if base == e.snapshot]
    if not rows:
        rows = [e for e in entries() if base == e.model]
    if not rows:
        family = [e for e in entries() if base.startswith(e.model + "-")]
        if family:  # the longest matching family name ("gpt-4o-mini" rather than "gpt-4o")
            longest = max(len(e.model) for e in family)
            rows = [e for e in family if len(e.model) == longest]
    if not rows:
        known = ", ".join(models())
        raise UnknownCatalogModel(f"{model!r} is not in ftkit's catalog (known: {known})")
    return rows


def lookup(model: str, on: dt.date | str | None = None) -> CatalogEntry:
    """The catalog row for ``model`` in force on date ``on`` (default: today).

    Accepts a snapshot (``gpt-4o-mini-2024-07-18``), a model alias (``gpt-4o-mini``), a
    fine-tuned model or checkpoint name (resolved through its base model), or a dated snapshot
    the catalog does not list (matched to its model family, e.g. ``gpt-3.5-turbo-16k-0613``).
    Before a model's first row, the first row is returned (see :func:`availability`).

    Taught in notebooks/03_cost_math.ipynb.
    """
    rows = _rows_for(model)
    day = _as_date(on)
    in_force = [e for e in rows if e.valid_from <= day]
    return in_force[-1] if in_force else rows[0]


def max_example_tokens(model: str) -> int | None:
    """Per-example training token limit for ``model``; longer examples get truncated."""
    return lookup(model).max_example_tokens


# ---------------------------------------------------------------------------------------------
# Availability: can this model still be fine-tuned, or used, on a date?


@dataclass(frozen=True)
class Availability:
    """Whether a model can be fine-tuned (and its fine-tuned models used) on a date.

    ``status`` is one of ``available``, ``restricted`` (new jobs only for some organizations),
    ``training_closed`` (no new jobs; existing fine-tuned models still answer), ``shut_down``
    (fine-tuned models no longer answer) or ``not_yet`` (not offered before that date).
    ``can_train`` is ``None`` when it depends on your organization. ``upcoming`` lists the
    model's and the platform's later dates as ``(date, what happens)``. ``fine_tuned_model`` is
    the fine-tuned model asked about (``ft:...``), if one was; ``stops_answering`` is the day its
    fine-tuned models stop answering (None when no shutdown is announced).
    """

    model: str
    snapshot: str
    backend: str
    on: dt.date
    status: str
    can_train: bool | None
    can_use_fine_tuned: bool
    reason: str
    upcoming: tuple[tuple[dt.date, str], ...] = ()
    fine_tuned_model: str | None = None
    stops_answering: dt.date | None = None

    @property
    def ok(self) -> bool:
        """True only when anyone can start a new fine-tuning job on the date."""
        return self.status == "available"

    def __str__(self) -> str:
        name = f"{self.fine_tuned_model} (on {self.snapshot})" if self.fine_tuned_model else self.snapshot
        lines = [f"{name} on {self.on}: {self.status.upper().replace('_', ' ')} -- {self.reason}"]
        for day, what in self.upcoming:
            lines.append(f"  {day} (in {(day - self.on).days} days): {what}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        colour = {"available": "#1a7f37", "restricted": "#9a6700"}.get(self.status, "#cf222e")
        items = "".join(
            f"<li>{day} (in {(day - self.on).days} days): {html.escape(what)}</li>" for day, what in self.upcoming
        )
        name = f"{self.fine_tuned_model} (on {self.snapshot})" if self.fine_tuned_model else self.snapshot
        return (
            f"<div><b>{html.escape(name)}</b> on {self.on}: "
            f"<b style='color:{colour}'>{self.status.replace('_', ' ')}</b> &mdash; {html.escape(self.reason)}"
            + (f"<ul>{items}</ul>" if items else "")
            + "</div>"
        )


def availability(model: str, on: dt.date | str | None = None) -> Availability:
    """Can ``model`` be fine-tuned on date ``on`` (default: today), and can its fine-tunes be used?

    Combines the model's own dates (first price row, ``training_ends``, ``base_shutdown``,
    ``shutdown``) with the backend's platform-wide changes (for OpenAI: 2026-05-07 and
    2026-07-02 restrict who may create jobs, 2027-01-06 stops new jobs for everyone).

    ``model`` may be a fine-tuned model (``ft:gpt-4o-mini-2024-07-18:org::id``) or checkpoint: it
    answers as long as its base model's fine-tunes do (``stops_answering``).

    >>> availability("gpt-4.1-nano", on="2026-11-21").status
    'shut_down'
    >>> availability("ft:gpt-4o-mini-2024-07-18:acme::abc123", on="2027-01-14").can_use_fine_tuned
    False

    Taught in notebooks/03_cost_math.ipynb.
    """
    day = _as_date(on)
    rows = _rows_for(model)
    entry = lookup(model, day)
    name = entry.snapshot

    fine_tuned = model.strip() if model.strip().startswith("ft:") else None

    def result(status: str, can_train: bool | None, can_use: bool, reason: str) -> Availability:
        upcoming = () if status == "shut_down" else _upcoming(entry, day)
        if fine_tuned and entry.backend != "local":
            # Asked about one fine-tuned model: say first whether it still answers, and until when.
            if not can_use and status != "not_yet":
                reason = f"{fine_tuned} no longer answers: {name} {reason}"
            elif entry.shutdown:
                reason = f"{fine_tuned} stops answering on {entry.shutdown}, when {name} shuts down. {reason}"
        return Availability(model, name, entry.backend, day, status, can_train, can_use, reason, upcoming,
                            fine_tuned, entry.shutdown)

    if entry.backend == "local":
        return result(
            "available", True, True, "ftkit's local backend: no platform dates apply, and the cost is CPU time"
        )
    first = rows[0].valid_from
    if day < first:
        return result("not_yet", False, False, f"fine-tuning {name} was not offered before {first}")
    if entry.shutdown and day >= entry.shutdown:
        return result(
            "shut_down",
            False,
            False,
            f"shut down on {entry.shutdown}: fine-tuned models on it no longer answer and no new jobs can be created",
        )
    after = ""
    if entry.base_shutdown and day >= entry.base_shutdown:
        after = f" The base model itself was shut down on {entry.base_shutdown}, so its base prices no longer apply."
    if entry.training_ends and day >= entry.training_ends:
        until = f" until {entry.shutdown}" if entry.shutdown else ""
        return result(
            "training_closed",
            False,
            True,
            f"new fine-tuning jobs on {name} ended on {entry.training_ends}; existing fine-tuned models answer{until}.{after}",
        )
    in_force = [e for e in platform_events(entry.backend) if e.date <= day]
    if in_force:
        latest = in_force[-1]
        if latest.status == "closed":
            return result(
                "training_closed", False, True, f"since {latest.date}: {latest.rule}.{after}"
            )
        return result(
            "restricted",
            None,
            True,
            f"since {latest.date}: {latest.rule} -- whether you can start a job depends on your organization.{after}",
        )
    return result("available", True, True, ("new fine-tuning jobs can be created." + after).strip())


def _upcoming(entry: CatalogEntry, day: dt.date) -> tuple[tuple[dt.date, str], ...]:
    """Later dates that change something for this model, one line per date."""
    events: list[tuple[dt.date, str]] = []
    if entry.backend != "local":
        events += [(e.date, f"platform: {e.rule}") for e in platform_events(entry.backend) if e.date > day]
    if entry.training_ends and entry.training_ends > day and entry.training_ends != entry.shutdown:
        events.append((entry.training_ends, "new fine-tuning jobs on this model end"))
    if entry.base_shutdown and entry.base_shutdown > day and entry.base_shutdown != entry.shutdown:
        events.append((entry.base_shutdown, "the base model shuts down (its fine-tuned models keep answering)"))
    if entry.shutdown and entry.shutdown > day:
        events.append((entry.shutdown, "the model and every fine-tuned model on it shut down"))
    merged: dict[dt.date, list[str]] = {}
    for when, what in sorted(events, key=lambda x: x[0]):
        merged.setdefault(when, []).append(what)
    return tuple((when, "; ".join(whats)) for when, whats in merged.items())


def availability_table(on: dt.date | str | None = None, *, priced_only: bool = False):
    """One row per catalog model: the snapshot in force on ``on``, its status, the reason and
    the next date that changes something. A pandas DataFrame."""
    import pandas as pd

    rows = []
    for name in models(priced=True if priced_only else None):
        a = availability(name, on)
        nxt = a.upcoming[0] if a.upcoming else (None, "")
        rows.append((name, a.snapshot, a.status, a.can_train, a.can_use_fine_tuned, nxt[0], nxt[1], a.reason))
    return pd.DataFrame(
        rows,
        columns=["model", "snapshot", "status", "can_train", "can_use_fine_tuned", "next_date", "next_change", "reason"],
    )


def deadlines(on: dt.date | str | None = None, *, backend: str = "openai"):
    """When to act, per hosted fine-tunable model: the day new fine-tuning jobs end (the model's
    own end of training or the platform's closing, whichever comes first: from that day on no job
    can be created), the day its fine-tuned models stop answering, and the days left until then
    from ``on`` (default today).
    One row per model in force on ``on``; a pandas DataFrame sorted by the shutdown date.

    Taught in notebooks/08_own_your_model.ipynb.
    """
    import pandas as pd

    day = _as_date(on)
    closed = next((e.date for e in platform_events(backend) if e.status == "closed"), None)
    rows = []
    for name in models(priced=True):
        entry = lookup(name, day)
        if entry.backend != backend:
            continue
        ends = [d for d in (entry.training_ends, closed) if d is not None]
        no_new_jobs = min(ends) if ends else None
        a = availability(name, day)
        rows.append({
            "model": name, "snapshot": entry.snapshot, "status": a.status,
            "new_jobs_end": no_new_jobs,
            "fine_tunes_stop_answering": entry.shutdown,
            "days_left": (entry.shutdown - day).days if entry.shutdown and entry.shutdown > day else 0
            if entry.shutdown else None,
            "confirmed": entry.confirmed,
        })
    df = pd.DataFrame(rows)
    return df.sort_values(["fine_tunes_stop_answering", "model"], na_position="last", kind="stable").reset_index(drop=True)


def timeline(model: str | None = None):
    """Every dated event (price periods, training ends, shutdowns, platform changes) as a
    DataFrame sorted by date; ``model`` restricts it to one model (plus its platform's events)."""
    import pandas as pd

    rows = []
    chosen = entries() if model is None else tuple(_rows_for(model))
    backends = {e.backend for e in chosen}
    seen: set[tuple] = set()
    for e in chosen:
        rows.append((e.valid_from, e.model, e.snapshot, "price period", _price_text(e)))
        for field_name, what in (
            ("training_ends", "new fine-tuning jobs end"),
            ("base_shutdown", "base model shuts down"),
            ("shutdown", "fine-tuned models shut down"),
        ):
            when = getattr(e, field_name)
            key = (e.snapshot, field_name, when)
            if when and key not in seen:
                seen.add(key)
                rows.append((when, e.model, e.snapshot, what, ""))
    for ev in _load()[1]:
        if ev.backend in backends:
            rows.append((ev.date, f"{ev.backend} (all models)", "", f"platform: {ev.status}", ev.rule))
    df = pd.DataFrame(rows, columns=["date", "model", "snapshot", "event", "detail"])
    return df.sort_values(["date", "model"], kind="stable").reset_index(drop=True)


def _price_text(e: CatalogEntry) -> str:
    def usd(x):
        return "-" if x is None else f"${x:g}"

    if not e.priced:
        return "no price (local backend: CPU time)"
    train = f"{usd(e.training_usd_per_hour)}/hour" if e.training_usd_per_hour is not None else f"{usd(e.training_usd_per_1m)}/1M"
    return (
        f"training {train}; fine-tuned in/cached/out {usd(e.ft_input_usd_per_1m)}/"
        f"{usd(e.ft_cached_input_usd_per_1m)}/{usd(e.ft_output_usd_per_1m)} per 1M"
    )


def to_dataframe():
    """Every price row of the catalog as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([e.__dict__ for e in entries()])

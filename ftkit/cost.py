"""Cost math for fine-tuning: what training and inference cost, and when fine-tuning pays off.

Taught in notebooks/03_cost_math.ipynb.

What is billed (hosted OpenAI fine-tuning; prices come from :mod:`ftkit.catalog`, by date):

* **Training** (supervised and preference fine-tuning): every token of the training file, once
  per epoch. An example longer than the model's per-example limit is truncated, so it is billed
  for the limit only: ``billed = sum(min(limit, tokens of example)) x epochs``. Validation-file
  tokens are not billed. Reinforcement fine-tuning (o4-mini) is billed per hour of training
  instead.
* **Inference** with the fine-tuned model: input (prompt) tokens, cached input tokens (a
  discounted rate for a recently seen prompt prefix, where offered) and output tokens, each at
  the fine-tuned model's own price -- higher than the base model's.

The trade-off: a fine-tuned model costs more per token, but it can be given a much shorter
prompt (the instructions and examples are in its weights). :func:`break_even` says which is
cheaper, by how much per month, how short the fine-tuned prompt must be for parity, and how
many months the saving takes to pay back the training.

The launch figures, reproduced here (OpenAI, "GPT-3.5 Turbo fine-tuning and API updates",
2023-08-22): at GPT-3.5 Turbo's launch prices a 100,000-token file trained for 3 epochs costs
300,000 x $8 / 1M = **$2.40**; fine-tuned input cost $12 / 1M against the base model's $1.50 / 1M,
**8x**, so the fine-tuned prompt had to be 1 - 1/8 = **87.5%** shorter to break even -- about the
"up to 90%" the post reported for its early testers -- and more once output tokens, also 8x
dearer, are counted.

The local backend has no price: its cost is CPU time (:func:`local_run_cost`).

Why one module of ~1,200 lines: it is notebook 03's whole lesson, read beside it in the lesson's
order (billed tokens, training cost, inference cost, break-even, price history, the local CPU
cost, their plots), and each part builds on the one before; the epochs rule it teaches lives in
:mod:`ftkit.methods` (the local server uses it too).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from numbers import Real

from . import catalog, lifecycle

# The hosted API's default number of epochs ("auto"), as the OpenAI cookbook's data-preparation
# notebook estimates it: aim for 3 epochs, but keep the number of example-passes
# (examples x epochs) between 100 and 25,000, and the epochs between 1 and 25. The rule lives in
# the torch-free method registry (the local server's "auto" epochs use it too, and the server must
# not import a lesson); this lesson teaches it from there.
from .methods import (
    MAX_DEFAULT_EPOCHS,
    MAX_TARGET_EXAMPLES,
    MIN_DEFAULT_EPOCHS,
    MIN_TARGET_EXAMPLES,
    TARGET_EPOCHS,
    default_epochs,
)
from .methods import (
    whole_number as _count,  # one check of whole numbers, shared with the epochs rule
)

__all__ = [
    "MAX_DEFAULT_EPOCHS",
    "MAX_TARGET_EXAMPLES",
    "MIN_DEFAULT_EPOCHS",
    "MIN_TARGET_EXAMPLES",
    "TARGET_EPOCHS",
    "BreakEven",
    "Calculator",
    "InferenceCost",
    "LocalRunCost",
    "NoPriceError",
    "TrainingCost",
    "TrainingTokens",
    "break_even",
    "calculator",
    "compare_models",
    "default_epochs",
    "epochs_table",
    "inference_cost",
    "local_run_cost",
    "local_run_cost_from_job",
    "plot_break_even",
    "plot_price_history",
    "plot_training_cost",
    "price_ratio",
    "request_tokens",
    "RequestTokens",
    "training_cost",
    "training_tokens",
]

_PER_MILLION = 1_000_000


class NoPriceError(ValueError):
    """The model has no price in the catalog (the local backend: its cost is CPU time)."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def _usd(x: float | None) -> str:
    """Dollars, readably: $2.40, $1,234.50, $0.00015."""
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "never" if x > 0 else "-inf"
    if x == 0:
        return "$0.00"
    if abs(x) >= 0.01:
        return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"
    return f"-${-x:.3g}" if x < 0 else f"${x:.3g}"


def _price(x: float | None) -> str:
    """A unit price: $8.00, $1.50, $1.875, $0.075."""
    if x is None:
        return "n/a"
    whole, _, frac = f"{x:,.4f}".rstrip("0").partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _priced_entry(model: str, on) -> catalog.CatalogEntry:
    entry = catalog.lookup(model, on)
    if not entry.priced:
        raise NoPriceError(
            f"{entry.snapshot} runs on ftkit's {entry.backend} backend: it has no price -- its cost is "
            "CPU time. Measure a real run with ftkit.cost.local_run_cost()."
        )
    return entry


# ---------------------------------------------------------------------------------------------
# Epochs (default_epochs: ftkit.methods, imported above)


def epochs_table(sizes=(1, 3, 10, 20, 33, 34, 100, 1_000, 8_333, 8_334, 10_000, 30_000)):
    """The default-epochs rule on a few dataset sizes: examples, epochs, example-passes, and
    which clamp applied. A pandas DataFrame. Taught in notebooks/03_cost_math.ipynb."""
    import pandas as pd

    rows = []
    for n in sizes:
        epochs = default_epochs(n)
        if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
            why = "raised: fewer than 100 passes at 3 epochs" + (" (capped at 25)" if epochs == MAX_DEFAULT_EPOCHS else "")
        elif n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
            why = "lowered: more than 25,000 passes at 3 epochs" + (" (at least 1)" if epochs == MIN_DEFAULT_EPOCHS else "")
        else:
            why = "target: 3 epochs"
        rows.append((n, epochs, n * epochs, why))
    return pd.DataFrame(rows, columns=["examples", "epochs", "example_passes", "rule"])


# ---------------------------------------------------------------------------------------------
# Training tokens and training cost


@dataclass(frozen=True)
class TrainingTokens:
    """The billed training tokens of a file or dataset for one model.

    ``raw_tokens_per_epoch``: every token of every example (an estimate; see
    :mod:`ftkit.tokens`). ``tokens_per_epoch``: what is billed per epoch, each example
    truncated to the model's per-example limit. ``billed_tokens`` = ``tokens_per_epoch`` x
    ``n_epochs``.
    """

    source: str
    model: str
    max_example_tokens: int | None
    n_examples: int
    raw_tokens_per_epoch: int
    tokens_per_epoch: int
    truncated_examples: int
    n_epochs: int
    epochs_from: str
    n_errors: int = 0
    report: object = field(default=None, repr=False, compare=False)

    @property
    def billed_tokens(self) -> int:
        return self.tokens_per_epoch * self.n_epochs

    def __str__(self) -> str:
        limit = f"{self.max_example_tokens:,}" if self.max_example_tokens else "none"
        text = (
            f"{self.source}: {self.n_examples:,} examples, {self.tokens_per_epoch:,} billed tokens per epoch "
            f"(limit {limit} per example; {self.truncated_examples} truncated) x {self.n_epochs} epochs "
            f"({self.epochs_from}) = {self.billed_tokens:,} billed tokens for {self.model}"
        )
        if self.n_errors:
            text += f" -- the file has {self.n_errors} errors: the API would reject it (see the validation report)"
        return text


def training_tokens(
    dataset,
    model: str,
    *,
    n_epochs: int | None = None,
    on: dt.date | str | None = None,
    encoding: str | None = None,
    token_counter=None,
) -> TrainingTokens:
    """Billed training tokens of ``dataset`` for ``model``: sum(min(limit, tokens)) x epochs.

    ``dataset`` is a JSONL path, a list of example dicts, a DataFrame of examples, or a
    :class:`ftkit.validation.ValidationReport` already computed. Tokens are counted by
    :func:`ftkit.validation.validate` (tiktoken, the model's encoding); the per-example limit
    comes from the catalog row in force on ``on``. Without ``n_epochs``, the API's default
    (:func:`default_epochs`) is used. For a model without a tiktoken encoding (the local model)
    pass ``encoding=`` or ``token_counter=``.

    Taught in notebooks/03_cost_math.ipynb.
    """
    from .validation import ValidationReport, validate

    entry = catalog.lookup(model, on)
    limit = entry.max_example_tokens
    if isinstance(dataset, ValidationReport):
        report = dataset
    else:
        if encoding is None and token_counter is None and entry.encoding is None:
            raise ValueError(
                f"{entry.snapshot} has no tiktoken encoding in the catalog (the local backend counts with "
                "its own tokenizer): pass encoding='o200k_base' for an estimate, or token_counter="
            )
        report = validate(
            dataset,
            None if (encoding or token_counter) else entry.snapshot,
            encoding=encoding or (entry.encoding if token_counter is None else None),
            max_example_tokens=limit,
            token_counter=token_counter,
        )
    totals = list(report.total_tokens)
    if not totals:
        raise ValueError(f"{report.source}: no examples to count ({report.n_examples} lines with examples)")
    if report.max_example_tokens == limit:
        per_epoch = report.billed_tokens(1)  # the validator's own sum(min(limit, tokens))
    else:  # a report computed for another limit: apply this model's limit
        per_epoch = sum(min(t, limit) if limit else t for t in totals)
    if n_epochs is None:
        epochs, why = default_epochs(len(totals)), f"API default for {len(totals):,} examples"
    else:
        epochs, why = _count("n_epochs", n_epochs, allow_zero=False), "given"
    return TrainingTokens(
        source=str(report.source),
        model=entry.snapshot,
        max_example_tokens=limit,
        n_examples=len(totals),
        raw_tokens_per_epoch=int(sum(totals)),
        tokens_per_epoch=int(per_epoch),
        truncated_examples=sum(1 for t in totals if limit and t > limit),
        n_epochs=epochs,
        epochs_from=why,
        n_errors=len(report.errors),
        report=report,
    )


@dataclass(frozen=True)
class TrainingCost:
    """What one fine-tuning job costs. ``usd`` is the total; the other fields show the sum."""

    model: str
    snapshot: str
    on: dt.date
    method: str
    tokens_per_epoch: int
    n_epochs: int
    epochs_from: str
    billed_tokens: int
    usd_per_1m: float | None
    hours: float | None
    usd_per_hour: float | None
    usd: float

    def __str__(self) -> str:
        if self.usd_per_hour is not None:
            return (
                f"{self.snapshot} on {self.on} ({self.method}): {self.hours:g} training "
                f"hour{'' if self.hours == 1 else 's'} x "
                f"{_price(self.usd_per_hour)}/hour = {_usd(self.usd)}"
            )
        return (
            f"{self.snapshot} on {self.on}: {self.tokens_per_epoch:,} tokens x {self.n_epochs} epochs "
            f"({self.epochs_from}) = {self.billed_tokens:,} billed tokens x {_price(self.usd_per_1m)}/1M "
            f"= {_usd(self.usd)}"
        )

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        return f"<code>TrainingCost</code>: {html.escape(str(self))}"


def training_cost(
    model: str,
    tokens: int | TrainingTokens | None = None,
    *,
    n_epochs: int | None = None,
    n_examples: int | None = None,
    hours: float | None = None,
    on: dt.date | str | None = None,
) -> TrainingCost:
    """The price of a fine-tuning job on ``model`` at the prices in force on ``on`` (default today).

    ``tokens`` is the billed tokens of one epoch (an int) or a :class:`TrainingTokens` from
    :func:`training_tokens`. Epochs: ``n_epochs``, else the API default for ``n_examples``
    (:func:`default_epochs`), else the epochs of the ``TrainingTokens``. Reinforcement
    fine-tuning is billed per hour: pass ``hours``.

    >>> training_cost("gpt-3.5-turbo", 100_000, n_epochs=3, on="2023-08-22").usd
    2.4

    Taught in notebooks/03_cost_math.ipynb.
    """
    entry = _priced_entry(model, on)
    day = catalog._as_date(on)
    if entry.training_usd_per_hour is not None:
        if hours is None:
            raise ValueError(
                f"{entry.snapshot} is {entry.method} fine-tuning, billed per training hour "
                f"({_price(entry.training_usd_per_hour)}/hour), not per token: pass hours="
            )
        h = _positive("hours", hours)
        return TrainingCost(
            model, entry.snapshot, day, entry.method, 0, 0, "n/a", 0, None, h,
            entry.training_usd_per_hour, h * entry.training_usd_per_hour,
        )
    if tokens is None:
        raise ValueError("pass tokens= (billed tokens per epoch, or a TrainingTokens from training_tokens())")
    why = "given"
    if isinstance(tokens, TrainingTokens):
        per_epoch = tokens.tokens_per_epoch
        if n_epochs is None and n_examples is None:
            n_epochs, why = tokens.n_epochs, tokens.epochs_from
    else:
        per_epoch = _count("tokens", tokens)
    if n_epochs is not None:
        epochs = _count("n_epochs", n_epochs, allow_zero=False)
    elif n_examples is not None:
        epochs = default_epochs(n_examples)
        why = f"API default for {n_examples:,} examples"
    else:
        raise ValueError("pass n_epochs=, or n_examples= to use the API's default number of epochs")
    billed = per_epoch * epochs
    usd = billed * entry.training_usd_per_1m / _PER_MILLION
    return TrainingCost(
        model, entry.snapshot, day, entry.method, per_epoch, epochs, why, billed,
        entry.training_usd_per_1m, None, None, usd,
    )


# ---------------------------------------------------------------------------------------------
# Inference


@dataclass(frozen=True)
class InferenceCost:
    """What requests to a model cost: per request (split into input, cached input and output)
    and per month."""

    model: str
    snapshot: str
    on: dt.date
    fine_tuned: bool
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    requests_per_month: int
    input_usd_per_1m: float
    cached_usd_per_1m: float
    output_usd_per_1m: float
    input_usd: float
    cached_usd: float
    output_usd: float

    @property
    def per_request_usd(self) -> float:
        return self.input_usd + self.cached_usd + self.output_usd

    @property
    def per_month_usd(self) -> float:
        return self.per_request_usd * self.requests_per_month

    def __str__(self) -> str:
        kind = "fine-tuned" if self.fine_tuned else "base"
        cached = f" ({self.cached_tokens:,} cached)" if self.cached_tokens else ""
        text = (
            f"{kind} {self.snapshot} on {self.on}: {self.prompt_tokens:,} prompt{cached} + "
            f"{self.output_tokens:,} output tokens = {_usd(self.per_request_usd)} per request"
        )
        if self.requests_per_month:
            text += f", {_usd(self.per_month_usd)} per month at {self.requests_per_month:,} requests"
        return text

    __repr__ = __str__


def inference_cost(
    model: str,
    prompt_tokens: int,
    output_tokens: int,
    *,
    cached_tokens: int = 0,
    requests_per_month: int = 0,
    fine_tuned: bool = True,
    on: dt.date | str | None = None,
) -> InferenceCost:
    """Cost of requests to ``model`` (its fine-tuned version, or with ``fine_tuned=False`` the
    base model) at the prices in force on ``on``.

    ``cached_tokens`` is the part of the prompt served from the prompt cache; where the catalog
    has no cached price (caching not offered), those tokens are billed at the input price.

    Taught in notebooks/03_cost_math.ipynb.
    """
    entry = _priced_entry(model, on)
    prompt = _count("prompt_tokens", prompt_tokens)
    output = _count("output_tokens", output_tokens)
    cached = _count("cached_tokens", cached_tokens)
    requests = _count("requests_per_month", requests_per_month)
    if cached > prompt:
        raise ValueError(f"cached_tokens ({cached:,}) cannot exceed prompt_tokens ({prompt:,})")
    if fine_tuned:
        p_in, p_cached, p_out = entry.ft_input_usd_per_1m, entry.ft_cached_input_usd_per_1m, entry.ft_output_usd_per_1m
    else:
        p_in, p_cached, p_out = entry.base_input_usd_per_1m, entry.base_cached_input_usd_per_1m, entry.base_output_usd_per_1m
    if p_in is None or p_out is None:
        raise NoPriceError(f"the catalog has no {'fine-tuned' if fine_tuned else 'base'} prices for {entry.snapshot}")
    if p_cached is None:  # no prompt caching for this model/period: full input price
        p_cached = p_in
    return InferenceCost(
        model, entry.snapshot, catalog._as_date(on), fine_tuned, prompt, cached, output, requests,
        p_in, p_cached, p_out,
        (prompt - cached) * p_in / _PER_MILLION, cached * p_cached / _PER_MILLION, output * p_out / _PER_MILLION,
    )


@dataclass(frozen=True)
class RequestTokens:
    """Mean prompt and output tokens per request, measured on chat examples."""

    model: str
    n_requests: int
    prompt_tokens: float
    output_tokens: float

    def __str__(self) -> str:
        return (
            f"{self.n_requests:,} requests to {self.model}: {self.prompt_tokens:,.0f} prompt tokens and "
            f"{self.output_tokens:,.0f} output tokens on average"
        )

    __repr__ = __str__


def request_tokens(
    examples,
    model: str,
    *,
    system: str | None = None,
    few_shot=(),
    encoding: str | None = None,
) -> RequestTokens:
    """How many tokens a request would have if each chat example were sent to ``model``.

    The prompt is the example's messages before its last assistant message -- with the system
    message replaced by ``system`` (if given) and the ``few_shot`` messages inserted after it --
    and the output is that last assistant message. Counted with :class:`ftkit.tokens.TokenCounter`
    (message framing included). ``examples`` is a JSONL path or an iterable of example dicts.

    Taught in notebooks/03_cost_math.ipynb.
    """
    from .data import read_jsonl
    from .tokens import TokenCounter

    entry = catalog.lookup(model)
    counter = TokenCounter(None if encoding else entry.snapshot, encoding=encoding)
    if isinstance(examples, (str, bytes)) or hasattr(examples, "__fspath__"):
        examples = read_jsonl(examples)
    prompts, answers = [], []
    for ex in examples:
        messages = ex.get("messages") if isinstance(ex, dict) else None
        if not isinstance(messages, list):
            raise ValueError("request_tokens needs chat examples with a 'messages' list")
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None:
            raise ValueError("an example has no assistant message to use as the output")
        prompt = list(messages[:last])
        if system is not None:
            prompt = [m for m in prompt if m.get("role") not in ("system", "developer")]
            prompt = [{"role": "system", "content": system}, *few_shot, *prompt]
        elif few_shot:
            head = 1 if prompt and prompt[0].get("role") in ("system", "developer") else 0
            prompt = [*prompt[:head], *few_shot, *prompt[head:]]
        prompts.append({"messages": prompt})
        answers.append(messages[last].get("content") or "")
    if not prompts:
        raise ValueError("no examples")
    prompt_counts = [c.total for c in counter.count_examples(prompts)]
    output_counts = counter.count_batch(answers)
    return RequestTokens(
        entry.snapshot, len(prompts), sum(prompt_counts) / len(prompts), sum(output_counts) / len(prompts)
    )


def price_ratio(model: str, on: dt.date | str | None = None, *, kind: str = "input") -> float:
    """How many times dearer the fine-tuned model's ``kind`` ("input" or "output") tokens are
    than the base model's. At GPT-3.5 Turbo's launch: 12.00 / 1.50 = 8.0.

    Taught in notebooks/03_cost_math.ipynb.
    """
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', not {kind!r}")
    entry = _priced_entry(model, on)
    ft = getattr(entry, f"ft_{kind}_usd_per_1m")
    base = getattr(entry, f"base_{kind}_usd_per_1m")
    if not ft or not base:
        raise NoPriceError(f"the catalog has no {kind} prices for {entry.snapshot}")
    return ft / base


# ---------------------------------------------------------------------------------------------
# Break-even


@dataclass(frozen=True)
class BreakEven:
    """Base model with a long prompt vs fine-tuned model with a short one.

    ``monthly_saving_usd`` > 0 means the fine-tuned model is cheaper. ``parity_prompt_tokens``
    is the fine-tuned prompt length at which both cost the same per request (``None`` when no
    length can make the fine-tuned model as cheap); ``parity_reduction`` is the fraction of the
    base prompt that must go for parity. ``payback_months`` is training cost / monthly saving
    (infinite when there is no saving).
    """

    base: InferenceCost
    fine_tuned: InferenceCost
    input_price_ratio: float
    parity_prompt_tokens: float | None
    training_usd: float | None

    @property
    def requests_per_month(self) -> int:
        return self.fine_tuned.requests_per_month

    @property
    def saving_per_request_usd(self) -> float:
        return self.base.per_request_usd - self.fine_tuned.per_request_usd

    @property
    def monthly_saving_usd(self) -> float:
        return self.base.per_month_usd - self.fine_tuned.per_month_usd

    @property
    def cheaper(self) -> str:
        saving = self.saving_per_request_usd
        if abs(saving) <= 1e-12 * max(self.base.per_request_usd, 1e-300):
            return "same"
        return "fine-tuned" if saving > 0 else "base"

    @property
    def parity_reduction(self) -> float | None:
        if self.parity_prompt_tokens is None or self.base.prompt_tokens == 0:
            return None
        return 1 - self.parity_prompt_tokens / self.base.prompt_tokens

    @property
    def actual_reduction(self) -> float | None:
        if self.base.prompt_tokens == 0:
            return None
        return 1 - self.fine_tuned.prompt_tokens / self.base.prompt_tokens

    @property
    def payback_months(self) -> float | None:
        if self.training_usd is None:
            return None
        if self.monthly_saving_usd <= 0:
            return math.inf
        return self.training_usd / self.monthly_saving_usd

    def to_frame(self):
        """The comparison as a two-column table (base, fine-tuned) plus the verdict rows."""
        import pandas as pd

        b, f = self.base, self.fine_tuned
        rows = [
            ("model", b.snapshot, f"ft:{f.snapshot}"),
            ("prompt tokens", f"{b.prompt_tokens:,}", f"{f.prompt_tokens:,}"),
            ("output tokens", f"{b.output_tokens:,}", f"{f.output_tokens:,}"),
            ("input price per 1M", _price(b.input_usd_per_1m), _price(f.input_usd_per_1m)),
            ("output price per 1M", _price(b.output_usd_per_1m), _price(f.output_usd_per_1m)),
            ("cost per request", _usd(b.per_request_usd), _usd(f.per_request_usd)),
            (f"cost per month ({self.requests_per_month:,} requests)", _usd(b.per_month_usd), _usd(f.per_month_usd)),
        ]
        verdict = [
            ("cheaper", self.cheaper, ""),
            ("monthly saving with fine-tuning", _usd(self.monthly_saving_usd), ""),
            ("input price ratio (fine-tuned / base)", f"{self.input_price_ratio:.2f}x", ""),
            ("prompt length for parity", _tokens(self.parity_prompt_tokens), ""),
            ("prompt reduction needed for parity", _pct(self.parity_reduction), ""),
            ("prompt reduction you have", _pct(self.actual_reduction), ""),
            ("training cost", _usd(self.training_usd), ""),
            ("months to pay back training", _months(self.payback_months), ""),
        ]
        return pd.DataFrame(rows + verdict, columns=["", "base model", "fine-tuned"]).set_index("")

    def __str__(self) -> str:
        lines = [
            f"base       {self.base}",
            f"fine-tuned {self.fine_tuned}",
            f"cheaper: {self.cheaper}; monthly saving with fine-tuning: {_usd(self.monthly_saving_usd)}",
            f"fine-tuned input costs {self.input_price_ratio:.2f}x the base input; "
            + (
                f"parity at a {_tokens(self.parity_prompt_tokens)}-token prompt = {_pct(self.parity_reduction)} "
                f"shorter (you have {_pct(self.actual_reduction)})"
                if self.parity_prompt_tokens is not None
                else "no fine-tuned prompt length is as cheap: its output alone costs more than the base request"
            ),
        ]
        if self.training_usd is not None:
            lines.append(f"training {_usd(self.training_usd)} pays back in {_months(self.payback_months)}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.to_frame().to_html()


def _pct(x: float | None) -> str:
    return "impossible" if x is None else f"{100 * x:.1f}%"


def _tokens(x: float | None) -> str:
    return "none" if x is None else f"{x:,.0f}"


def _months(x: float | None) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "never"
    if x < 1:
        days = x * 365.25 / 12
        if days < 1:
            return "under a day"
        return f"{x:.2f} months (~{days:.0f} day{'' if round(days) == 1 else 's'})"
    return f"{x:.1f} months"


def break_even(
    model: str,
    *,
    base_prompt_tokens: int,
    ft_prompt_tokens: int,
    output_tokens: int,
    requests_per_month: int = 0,
    training: float | TrainingCost | None = None,
    base_output_tokens: int | None = None,
    base_cached_tokens: int = 0,
    ft_cached_tokens: int = 0,
    base_model: str | None = None,
    on: dt.date | str | None = None,
) -> BreakEven:
    """Is the fine-tuned ``model`` with a short prompt cheaper than a base model with a long one?

    Compares, per request and per month, the base model (``base_model``, default: the same
    model's base prices) with ``base_prompt_tokens`` against the fine-tuned model with
    ``ft_prompt_tokens``; both answer with ``output_tokens`` (``base_output_tokens`` if the base
    model answers at another length). ``training`` (dollars or a :class:`TrainingCost`) gives the
    months to pay it back.

    Parity: the fine-tuned prompt length ``P`` at which both cost the same per request,
    ``P = (base cost - fine-tuned output cost - cached part) / fine-tuned input price``.

    Taught in notebooks/03_cost_math.ipynb.
    """
    day = catalog._as_date(on)
    base_out = output_tokens if base_output_tokens is None else base_output_tokens
    base = inference_cost(
        base_model or model, base_prompt_tokens, base_out, cached_tokens=base_cached_tokens,
        requests_per_month=requests_per_month, fine_tuned=False, on=day,
    )
    ft = inference_cost(
        model, ft_prompt_tokens, output_tokens, cached_tokens=ft_cached_tokens,
        requests_per_month=requests_per_month, fine_tuned=True, on=day,
    )
    # cost(P) = P_in * (P - cached) + P_cached * cached + P_out * output, solved for cost(P) = base
    fixed = (ft.cached_tokens * ft.cached_usd_per_1m + ft.output_tokens * ft.output_usd_per_1m) / _PER_MILLION
    parity = (base.per_request_usd - fixed) / (ft.input_usd_per_1m / _PER_MILLION) + ft.cached_tokens
    if parity < ft.cached_tokens:  # even an empty uncached prompt costs more than the base request
        parity = None
    if isinstance(training, TrainingCost):
        training_usd = training.usd
    elif training is None:
        training_usd = None
    else:
        training_usd = _positive("training", training)
    return BreakEven(base, ft, ft.input_usd_per_1m / base.input_usd_per_1m, parity, training_usd)


def compare_models(
    *,
    tokens_per_epoch: int,
    n_epochs: int | None = None,
    n_examples: int | None = None,
    base_prompt_tokens: int,
    ft_prompt_tokens: int,
    output_tokens: int,
    requests_per_month: int,
    on: dt.date | str | None = None,
    models: list[str] | None = None,
    include_completion_models: bool = False,
):
    """Training cost, monthly costs, saving, parity and payback for every priced per-token chat
    model (or ``models``) at the prices and availability of date ``on``. A pandas DataFrame.

    The scenario is a chat file and chat requests, so the completion-only models
    (:data:`ftkit.catalog.COMPLETION_ONLY_MODELS`: babbage-002, davinci-002, trained on
    prompt/completion pairs) are left out unless ``include_completion_models`` is true.

    Taught in notebooks/03_cost_math.ipynb.
    """
    import pandas as pd

    rows = []
    for name in models or catalog.models(priced=True):
        entry = catalog.lookup(name, on)
        if entry.training_usd_per_1m is None:  # per-hour (reinforcement) models need hours
            continue
        if not include_completion_models and not catalog.is_chat_model(name):
            continue  # a chat file cannot train a prompt/completion model
        status = catalog.availability(name, on).status
        t = training_cost(name, tokens_per_epoch, n_epochs=n_epochs, n_examples=n_examples, on=on)
        be = break_even(
            name, base_prompt_tokens=base_prompt_tokens, ft_prompt_tokens=ft_prompt_tokens,
            output_tokens=output_tokens, requests_per_month=requests_per_month, training=t, on=on,
        )
        rows.append(
            (
                name, entry.snapshot, status, round(t.usd, 4), round(be.base.per_month_usd, 2),
                round(be.fine_tuned.per_month_usd, 2), round(be.monthly_saving_usd, 2),
                round(be.input_price_ratio, 2),
                None if be.parity_reduction is None else round(100 * be.parity_reduction, 1),
                None if be.payback_months is None or math.isinf(be.payback_months) else round(be.payback_months, 2),
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "model", "snapshot", "status", "training_usd", "base_usd_per_month", "ft_usd_per_month",
            "saving_usd_per_month", "input_price_ratio", "parity_reduction_pct", "payback_months",
        ],
    )


# ---------------------------------------------------------------------------------------------
# The local backend: CPU time


@dataclass(frozen=True)
class LocalRunCost:
    """A local fine-tuning run measured in CPU time (the local backend has no price).

    ``parallelism`` = CPU seconds / wall seconds (how many cores were busy on average).
    ``usd`` is only set when you give a price for a CPU-hour (e.g. your cloud's vCPU rate).
    """

    wall_seconds: float
    cpu_seconds: float
    trained_tokens: int
    usd_per_cpu_hour: float | None = None

    @property
    def cpu_seconds_per_1k_tokens(self) -> float | None:
        return None if not self.trained_tokens else 1000 * self.cpu_seconds / self.trained_tokens

    @property
    def tokens_per_second(self) -> float | None:
        return None if not self.wall_seconds else self.trained_tokens / self.wall_seconds

    @property
    def parallelism(self) -> float | None:
        return None if not self.wall_seconds else self.cpu_seconds / self.wall_seconds

    @property
    def usd(self) -> float | None:
        return None if self.usd_per_cpu_hour is None else self.cpu_seconds / 3600 * self.usd_per_cpu_hour

    def __str__(self) -> str:
        text = (
            f"local run: {self.trained_tokens:,} trained tokens in {self.wall_seconds:,.1f} s wall / "
            f"{self.cpu_seconds:,.1f} s CPU"
        )
        if self.trained_tokens:
            text += f" = {self.cpu_seconds_per_1k_tokens:.2f} CPU seconds per 1K tokens"
        if self.parallelism is not None:
            text += f", {self.tokens_per_second:,.0f} tokens/s on {self.parallelism:.1f} busy cores"
        if self.usd is not None:
            text += f"; at {_price(self.usd_per_cpu_hour)} per CPU-hour: {_usd(self.usd)}"
        return text

    __repr__ = __str__


def local_run_cost(
    cpu_seconds: float,
    wall_seconds: float,
    trained_tokens: int,
    *,
    usd_per_cpu_hour: float | None = None,
) -> LocalRunCost:
    """The cost of a local run as CPU time; a dollar figure only if you name a CPU-hour price.

    Taught in notebooks/03_cost_math.ipynb.
    """
    return LocalRunCost(
        _positive("wall_seconds", wall_seconds),
        _positive("cpu_seconds", cpu_seconds),
        _count("trained_tokens", trained_tokens),
        None if usd_per_cpu_hour is None else _positive("usd_per_cpu_hour", usd_per_cpu_hour),
    )


COMPLETED_MESSAGE = lifecycle.COMPLETED


def local_run_cost_from_job(client, job_id: str, *, usd_per_cpu_hour: float | None = None) -> LocalRunCost:
    """Read a finished local job's CPU time from its completion event.

    ftkit's local server ends a job with the event "The job has successfully completed", whose
    ``data`` holds ``wall_seconds``, ``cpu_seconds`` and ``trained_tokens``.

    Taught in notebooks/03_cost_math.ipynb.
    """
    job = client.fine_tuning.jobs.retrieve(job_id)
    if job.status != lifecycle.SUCCEEDED:
        raise ValueError(f"job {job_id} is {job.status!r}, not 'succeeded': no CPU time to read yet")
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data  # newest first
    for event in events:
        if getattr(event, "message", "") != COMPLETED_MESSAGE:
            continue
        data = event.data if isinstance(event.data, dict) else (getattr(event.data, "__dict__", None) or {})
        if "cpu_seconds" in data:
            tokens = data.get("trained_tokens", job.trained_tokens) or 0
            return local_run_cost(data["cpu_seconds"], data["wall_seconds"], tokens, usd_per_cpu_hour=usd_per_cpu_hour)
    raise ValueError(f"job {job_id} has no '{COMPLETED_MESSAGE}' event with cpu_seconds (not a local job?)")


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib; each returns its Figure)


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def plot_training_cost(
    tokens_per_epoch: int,
    *,
    models: list[str] | None = None,
    on: dt.date | str | None = None,
    n_epochs: int = 3,
    max_epochs: int = 10,
):
    """Training cost against epochs (left, for ``tokens_per_epoch``) and against dataset size
    (right, at ``n_epochs``), one line per per-token chat model priced on ``on`` (not the
    completion-only babbage-002 and davinci-002). Log scales.

    Taught in notebooks/03_cost_math.ipynb.
    """
    import numpy as np

    tokens = _count("tokens_per_epoch", tokens_per_epoch, allow_zero=False)
    names = models or [
        m for m in catalog.models(priced=True)
        if catalog.lookup(m, on).training_usd_per_1m is not None and catalog.is_chat_model(m)
    ]  # the course's files are chat files: the completion-only models could not train on them
    fig, (left, right) = _figure(2)
    epochs = np.arange(1, max_epochs + 1)
    sizes = np.logspace(3, 8, 60)
    for name in names:
        price = _priced_entry(name, on).training_usd_per_1m
        if price is None:
            continue
        (line,) = left.plot(epochs, tokens * epochs * price / _PER_MILLION, marker="o", ms=3, label=name)
        right.plot(sizes, sizes * n_epochs * price / _PER_MILLION, color=line.get_color(), label=name)
        right.plot([tokens], [tokens * n_epochs * price / _PER_MILLION], "o", color=line.get_color())
    day = catalog._as_date(on)
    left.set(yscale="log", xlabel="epochs", ylabel="training cost (USD)",
             title=f"{tokens:,} tokens per epoch, prices of {day}")
    right.set(xscale="log", yscale="log", xlabel="billed tokens per epoch", ylabel="training cost (USD)",
              title=f"{n_epochs} epochs (dots: your dataset)")
    right.axvline(tokens, color="grey", lw=0.8, ls=":")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    return fig


def plot_break_even(
    model: str,
    *,
    base_prompt_tokens: int,
    output_tokens: int,
    requests_per_month: int = 0,
    ft_prompt_tokens: int | None = None,
    base_model: str | None = None,
    on: dt.date | str | None = None,
    ax=None,
):
    """The break-even curve: monthly cost (per request if ``requests_per_month`` is 0) of the
    fine-tuned model against its prompt length, the base model's cost as a line, the parity
    point marked, and your fine-tuned prompt length if given.

    Taught in notebooks/03_cost_math.ipynb.
    """
    import numpy as np

    be = break_even(
        model, base_prompt_tokens=base_prompt_tokens, ft_prompt_tokens=ft_prompt_tokens or 0,
        output_tokens=output_tokens, requests_per_month=requests_per_month, base_model=base_model, on=on,
    )
    scale = requests_per_month if requests_per_month else 1
    unit = f"per month ({requests_per_month:,} requests)" if requests_per_month else "per request"
    if ax is None:
        fig, (ax,) = _figure(1, width=7.0, height=4.2)
    else:
        fig = ax.figure
    x = np.linspace(0, max(base_prompt_tokens, ft_prompt_tokens or 0, 1), 200)
    f = be.fine_tuned
    ft_cost = ((x * f.input_usd_per_1m + f.output_tokens * f.output_usd_per_1m) / _PER_MILLION) * scale
    base_cost = be.base.per_request_usd * scale
    ax.plot(x, ft_cost, color="C1", label=f"fine-tuned {f.snapshot}")
    ax.axhline(base_cost, color="C0", label=f"base {be.base.snapshot}, {base_prompt_tokens:,}-token prompt")
    ax.fill_between(x, ft_cost, base_cost, where=ft_cost < base_cost, color="C2", alpha=0.15,
                    label="fine-tuned is cheaper")
    if be.parity_prompt_tokens is not None:
        ax.plot([be.parity_prompt_tokens], [base_cost], "o", color="k", zorder=5)
        ax.annotate(
            f"parity: {be.parity_prompt_tokens:,.0f} tokens\n({_pct(be.parity_reduction)} shorter)",
            (be.parity_prompt_tokens, base_cost), textcoords="offset points", xytext=(10, 12), fontsize=9,
        )
    else:
        ax.text(0.02, 0.95, "no prompt length makes the fine-tuned model as cheap", transform=ax.transAxes,
                va="top", fontsize=9, color="C3")
    if ft_prompt_tokens is not None:
        y = be.fine_tuned.per_request_usd * scale
        ax.plot([ft_prompt_tokens], [y], "s", color="C1", zorder=5)
        ax.annotate(f"yours: {ft_prompt_tokens:,}", (ft_prompt_tokens, y), textcoords="offset points",
                    xytext=(8, -14), fontsize=9)
    top = max(2 * base_cost, 1.25 * be.fine_tuned.per_request_usd * scale, 1e-12)
    ax.set(xlabel="fine-tuned prompt length (tokens)", ylabel=f"cost {unit} (USD)", ylim=(0, top),
           title=f"Break-even on {be.fine_tuned.on}: {output_tokens:,} output tokens per request")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_price_history(models: list[str] | None = None, *, until: dt.date | str | None = None):
    """Prices over time per model: training price per 1M tokens (left) and fine-tuned input price
    per 1M tokens (right), as steps from each price period to the model's shutdown (a cross);
    dotted lines mark the platform's fine-tuning cut-off dates.

    Taught in notebooks/03_cost_math.ipynb.
    """
    end = catalog._as_date(until)
    names = models or catalog.models(priced=True)
    fig, (left, right) = _figure(2, height=4.4)
    for i, name in enumerate(names):
        rows = [e for e in catalog.entries() if e.model == name and e.priced]
        if not rows:
            continue
        color = f"C{i % 10}"
        style = ("-", "--", "-.", ":")[i % 4]  # equal prices overlap: the dashes keep both visible
        stop = min((e.shutdown for e in rows if e.shutdown), default=None)
        last = min(stop, end) if stop else end
        for ax, attr in ((left, "training_usd_per_1m"), (right, "ft_input_usd_per_1m")):
            xs, ys = [], []
            for j, e in enumerate(rows):
                value = getattr(e, attr)
                if value is None or e.valid_from > last:
                    continue
                nxt = rows[j + 1].valid_from if j + 1 < len(rows) else last
                xs += [e.valid_from, min(nxt, last)]
                ys += [value, value]
            if xs:
                ax.plot(xs, ys, color=color, ls=style, lw=2, label=name)
                if stop and stop <= end:
                    ax.plot([stop], [ys[-1]], "x", color=color, ms=8)
    for ax, title in ((left, "training, USD per 1M tokens"), (right, "fine-tuned input, USD per 1M tokens")):
        for ev in catalog.platform_events("openai"):
            if ev.date <= end:
                ax.axvline(ev.date, color="grey", ls=":", lw=1)
        ax.set(yscale="log", title=title, xlabel="date")
        ax.grid(True, which="both", alpha=0.3)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    right.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Fine-tuning prices over time (x: shutdown; dotted: platform cut-off dates)")
    return fig


def _figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The live calculator (ipywidgets)


@dataclass
class _CalcState:
    model: str
    on: dt.date
    dataset_tokens: int
    n_epochs: int
    rft_hours: float
    requests_per_month: int
    base_prompt_tokens: int
    ft_prompt_tokens: int
    output_tokens: int


class Calculator:
    """A live cost calculator: model, date, dataset tokens, epochs, monthly requests and prompt
    lengths in; training cost, monthly costs, break-even and availability out, with the
    break-even plot. Sliders update on release (``continuous_update=False``).

    ``widget`` is the ipywidgets box; ``result`` (CSS class ``ftkit-calc-result``) holds the
    numbers; the monthly-requests slider has the class ``ftkit-calc-requests``. Displaying the
    calculator also shows a static copy of its current state (table and plot), so exported HTML
    and CI logs keep something meaningful without a live kernel.

    Taught in notebooks/03_cost_math.ipynb.
    """

    RESULT_CLASS = "ftkit-calc-result"
    REQUESTS_CLASS = "ftkit-calc-requests"
    PLOT_CLASS = "ftkit-calc-plot"

    def __init__(
        self,
        model: str = "gpt-4.1-mini",
        *,
        on: dt.date | str | None = None,
        dataset_tokens: int = 100_000,
        n_epochs: int = 3,
        rft_hours: float = 1.0,
        requests_per_month: int = 100_000,
        base_prompt_tokens: int = 1_200,
        ft_prompt_tokens: int = 150,
        output_tokens: int = 30,
    ) -> None:
        import ipywidgets as w

        options = catalog.models(priced=True)
        entry = catalog.lookup(model)
        if entry.model not in options:
            raise NoPriceError(f"{entry.snapshot} has no price: the calculator covers {', '.join(options)}")
        style = {"description_width": "190px"}
        wide = w.Layout(width="600px")

        def slider(cls, value, lo, hi, step, description):
            return cls(value=value, min=lo, max=hi, step=step, description=description,
                       continuous_update=False, style=style, layout=wide)

        self.model = w.Dropdown(options=options, value=entry.model, description="Model", style=style, layout=wide)
        self.on = w.DatePicker(value=catalog._as_date(on), description="Prices of date", style=style,
                               layout=w.Layout(width="400px"))
        self.dataset_tokens = w.BoundedIntText(
            value=_count("dataset_tokens", dataset_tokens), min=0, max=10**10, step=1_000,
            description="Dataset tokens (1 epoch)", style=style, layout=wide,
        )
        self.n_epochs = slider(w.IntSlider, _count("n_epochs", n_epochs, allow_zero=False), 1, 25, 1, "Epochs")
        self.rft_hours = w.BoundedFloatText(value=rft_hours, min=0, max=10_000, step=0.5,
                                            description="RFT training hours", style=style, layout=wide)
        self.requests_per_month = slider(
            w.IntSlider, _count("requests_per_month", requests_per_month), 0,
            max(2_000_000, requests_per_month), 1_000, "Monthly requests",
        )
        self.requests_per_month.add_class(self.REQUESTS_CLASS)
        self.base_prompt_tokens = slider(
            w.IntSlider, _count("base_prompt_tokens", base_prompt_tokens), 0, max(8_000, base_prompt_tokens), 10,
            "Base prompt tokens",
        )
        self.ft_prompt_tokens = slider(
            w.IntSlider, _count("ft_prompt_tokens", ft_prompt_tokens), 0, max(8_000, ft_prompt_tokens), 10,
            "Fine-tuned prompt tokens",
        )
        self.output_tokens = slider(
            w.IntSlider, _count("output_tokens", output_tokens), 0, max(4_000, output_tokens), 10, "Output tokens"
        )
        self.result = w.HTML()
        self.result.add_class(self.RESULT_CLASS)
        self.plot = w.Output()
        self.plot.add_class(self.PLOT_CLASS)
        self.controls = [
            self.model, self.on, self.dataset_tokens, self.n_epochs, self.rft_hours,
            self.requests_per_month, self.base_prompt_tokens, self.ft_prompt_tokens, self.output_tokens,
        ]
        for control in self.controls:
            control.observe(self.update, names="value")
        self.widget = w.VBox(
            [w.HTML("<b>Fine-tuning cost calculator</b>"), *self.controls, self.result, self.plot]
        )
        self.updates = 0
        self.update()

    # -- state and numbers ---------------------------------------------------------------------

    def state(self) -> _CalcState:
        """The current inputs."""
        return _CalcState(
            self.model.value, self.on.value or dt.date.today(), int(self.dataset_tokens.value or 0),
            int(self.n_epochs.value), float(self.rft_hours.value or 0), int(self.requests_per_month.value),
            int(self.base_prompt_tokens.value), int(self.ft_prompt_tokens.value), int(self.output_tokens.value),
        )

    def compute(self):
        """(availability, training cost, break-even) for the current inputs."""
        s = self.state()
        avail = catalog.availability(s.model, s.on)
        entry = catalog.lookup(s.model, s.on)
        if entry.training_usd_per_hour is not None:
            training = training_cost(s.model, hours=s.rft_hours, on=s.on)
        else:
            training = training_cost(s.model, s.dataset_tokens, n_epochs=s.n_epochs, on=s.on)
        be = break_even(
            s.model, base_prompt_tokens=s.base_prompt_tokens, ft_prompt_tokens=s.ft_prompt_tokens,
            output_tokens=s.output_tokens, requests_per_month=s.requests_per_month, training=training, on=s.on,
        )
        return avail, training, be

    def table(self):
        """The numbers of the current state as a pandas DataFrame (one column)."""
        import pandas as pd

        avail, training, be = self.compute()
        rows = [
            ("model (snapshot in force)", be.fine_tuned.snapshot),
            ("availability", avail.status.replace("_", " ")
             + (f" (next change {avail.upcoming[0][0]})" if avail.upcoming else "")),
            ("training cost", _usd(training.usd)),
            ("training", str(training).split(": ", 1)[-1]),
            ("base model cost per month", _usd(be.base.per_month_usd)),
            ("fine-tuned cost per month", _usd(be.fine_tuned.per_month_usd)),
            ("cheaper", be.cheaper),
            ("monthly saving with fine-tuning", _usd(be.monthly_saving_usd)),
            ("input price ratio", f"{be.input_price_ratio:.2f}x"),
            ("prompt length for parity", f"{_tokens(be.parity_prompt_tokens)} tokens"),
            ("prompt reduction needed / yours", f"{_pct(be.parity_reduction)} / {_pct(be.actual_reduction)}"),
            ("months to pay back training", _months(be.payback_months)),
        ]
        return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")

    def figure(self):
        s = self.state()
        return plot_break_even(
            s.model, base_prompt_tokens=s.base_prompt_tokens, output_tokens=s.output_tokens,
            requests_per_month=s.requests_per_month, ft_prompt_tokens=s.ft_prompt_tokens, on=s.on,
        )

    def result_html(self) -> str:
        """The numbers as HTML, with a coloured availability warning."""
        import html

        try:
            avail, _, _ = self.compute()
            table = self.table()
        except (ValueError, KeyError) as e:  # a model/date without prices, bad input ...
            return f"<div style='color:#cf222e'><b>Cannot compute:</b> {html.escape(str(e))}</div>"
        colour = {"available": "#1a7f37", "restricted": "#9a6700"}.get(avail.status, "#cf222e")
        head = f"<div style='color:{colour}'><b>{html.escape(str(avail).splitlines()[0])}</b></div>"
        return head + table.rename_axis(None).to_html(header=False, escape=True)

    def update(self, change=None) -> None:
        """Recompute the numbers and redraw the plot (called when any control changes)."""
        import base64

        self.result.value = self.result_html()
        try:
            png = base64.b64encode(_figure_png(self.figure())).decode("ascii")
            outputs = ({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": png, "text/plain": "<break-even plot>"}},)
        except (ValueError, KeyError):
            outputs = ()
        # Replace the plot in one assignment: works with or without a kernel, and does not flicker.
        self.plot.outputs = outputs
        self.updates += 1

    # -- display ---------------------------------------------------------------------------------

    def snapshot_html(self) -> str:
        """A static copy of the current state: the numbers and the break-even plot (PNG)."""
        import base64

        img = ""
        try:
            png = base64.b64encode(_figure_png(self.figure())).decode("ascii")
            img = f"<img alt='break-even plot' src='data:image/png;base64,{png}'/>"
        except (ValueError, KeyError):
            pass
        return (
            "<div class='ftkit-calc-static'><p><i>Static copy of the calculator's current settings (kept in "
            "exported HTML; the live calculator above updates as you move its sliders).</i></p>"
            f"{self.result_html()}{img}</div>"
        )

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        display(HTML(self.snapshot_html()))


def calculator(model: str = "gpt-4.1-mini", **kwargs) -> Calculator:
    """A live cost calculator (see :class:`Calculator`); show it as a cell's last expression.

    Taught in notebooks/03_cost_math.ipynb.
    """
    return Calculator(model, **kwargs)

"""The result of an evaluation: :class:`Evaluation` (one row per configuration and example, scored,
with summaries, costs, intervals, side-by-side tables and a plot).

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .display import CUT_OFF_MARK, DisagreementViewer, full_text
from .examples import Config, load_examples, reference_of
from .scoring import (
    Scorer,
    _fields_of,
    _missing,
    _normal_text,
    confusion_matrix,
    f1_by_label,
    macro_f1,
    parse_json,
    score,
)
from .stats import interval_text, paired_difference, paired_shift, wilson_interval

#: The Batch API's discount on the hosted platform: requests cost half (OpenAI's pricing page
#: and Batch API guide: "50% lower costs"). Only used where a cost table says so in its label.
HOSTED_BATCH_DISCOUNT = 0.5

def _assemble(configs, examples, rows_per_config, runs, *, fields, labels, scorers, backend, via) -> Evaluation:
    """Score the raw answers and put everything into one :class:`Evaluation`."""
    import pandas as pd

    references = [reference_of(ex) for ex in examples]
    meta = pd.DataFrame([_meta(ex) for ex in examples]).drop(columns=["id"], errors="ignore")
    parts = []
    for config, rows in zip(configs, rows_per_config):
        raw = pd.DataFrame(rows)
        scored = score(raw["prediction"], references, examples, fields=fields, scorers=scorers)
        head = pd.DataFrame({"config": config.name, "model": config.model, "id": [ex["id"] for ex in examples],
                             "reference": references})
        parts.append(pd.concat([head, raw, scored, meta], axis=1))
    results = pd.concat(parts, ignore_index=True)
    return Evaluation(results=results, configs=list(configs), fields=tuple(fields),
                      labels={f: list((labels or {}).get(f) or _values(results, f)) for f in fields},
                      runs=pd.DataFrame(runs, columns=["config", "model", "via", "wall_s", "cpu_s", "batch_id"]),
                      backend=backend, examples=list(examples), via=via)


def _meta(example: dict) -> dict:
    """The example's own scalar fields (id, kind ...) to carry into the results."""
    return {k: v for k, v in example.items()
            if k != "messages" and (v is None or isinstance(v, (str, int, float, bool)))}


def _values(results, f: str) -> list:
    return sorted({v for v in results[f"{f}_true"] if not _missing(v)}, key=str)


def _catalog_snapshot(model: str) -> str | None:
    from .. import catalog

    try:
        return catalog.lookup(model).snapshot
    except catalog.UnknownCatalogModel:
        return None


@dataclass
class Evaluation:
    """The answers of every configuration on every example, scored. Taught in
    notebooks/05_evaluation.ipynb.

    ``results``: one row per (configuration, example): ``config, model, id, reference,
    prediction, finish_reason, prompt_tokens, completion_tokens, latency_s, attempts, error``, the
    scores (``exact``, ``valid_json``, ``<field>_pred/_true/_ok``, scorer columns) and the
    example's own scalar fields (``kind`` ...). ``runs``: per configuration, the wall time and (on
    a local server on this machine) the server's CPU seconds.
    """

    results: Any
    configs: list[Config]
    fields: tuple[str, ...]
    labels: dict[str, list]
    runs: Any
    backend: str = "local"
    examples: list[dict] = field(default_factory=list, repr=False)
    via: str = "chat"

    @classmethod
    def from_predictions(
        cls,
        examples,
        predictions: dict[str, Sequence],
        *,
        labels: dict[str, Sequence] | None = None,
        fields: Sequence[str] | None = None,
        scorers: Sequence[Scorer] = (),
    ) -> Evaluation:
        """Score answers you already have (``{configuration name: [answer per example]}``), e.g.
        from a hosted run saved to a file: the same tables and views, without tokens or timing."""
        examples = load_examples(examples)
        configs = [Config(name, name) for name in predictions]
        rows = []
        for name, answers in predictions.items():
            answers = list(answers)
            if len(answers) != len(examples):
                raise ValueError(f"{name}: {len(answers)} answers for {len(examples)} examples")
            rows.append([{"prediction": a, "finish_reason": None, "prompt_tokens": math.nan,
                          "completion_tokens": math.nan, "latency_s": math.nan, "attempts": 1, "error": None}
                         for a in answers])
        if labels is not None:
            fields = tuple(labels)
        fields = tuple(fields) if fields is not None else _fields_of([reference_of(ex) for ex in examples])
        runs = [{"config": c.name, "model": c.model, "via": "given", "wall_s": math.nan, "cpu_s": math.nan,
                 "batch_id": ""} for c in configs]
        return _assemble(configs, examples, rows, runs, fields=fields, labels=labels, scorers=scorers,
                         backend="", via="given")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.configs]

    def config(self, name: str) -> Config:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(f"no configuration {name!r}; have {self.names}")

    def of(self, name: str):
        """The result rows of one configuration (indexed by example id)."""
        self.config(name)
        return self.results[self.results["config"] == name].set_index("id")

    # -- metrics ---------------------------------------------------------------------------------

    def field_accuracy(self):
        """Accuracy per field (columns) and configuration (rows); a failed or unparseable answer
        counts as wrong."""
        import pandas as pd

        return pd.DataFrame({f: self.results.groupby("config", sort=False)[f"{f}_ok"].mean() for f in self.fields})

    def macro_f1(self):
        """Macro F1 per field (columns) and configuration (rows)."""
        import pandas as pd

        data = {}
        for f in self.fields:
            data[f] = {name: macro_f1(self.of(name)[f"{f}_true"], self.of(name)[f"{f}_pred"], self.labels[f])
                       for name in self.names}
        return pd.DataFrame(data).reindex(self.names)

    def f1_by_label(self, field_name: str, config: str):
        """Precision, recall and F1 per label of one field for one configuration."""
        rows = self.of(config)
        return f1_by_label(rows[f"{field_name}_true"], rows[f"{field_name}_pred"], self.labels[field_name])

    def confusion(self, field_name: str, config: str):
        """Confusion matrix of one field for one configuration (rows true, columns predicted)."""
        rows = self.of(config)
        return confusion_matrix(rows[f"{field_name}_true"], rows[f"{field_name}_pred"], self.labels[field_name])

    def scores(self, columns: Sequence[str] | None = None, by: str | None = None):
        """Mean of score columns (default: ``exact`` plus every scorer column) per configuration,
        or per configuration and ``by`` (an example field such as ``kind``)."""
        skip = {"config", "model", "id", "reference", "prediction", "finish_reason", "prompt_tokens",
                "completion_tokens", "latency_s", "attempts", "error"}
        if columns is None:
            columns = [c for c in self.results.columns if c not in skip and not c.endswith(("_pred", "_true"))
                       and self.results[c].dtype == bool]
        keys = ["config"] + ([by] if by else [])
        table = self.results.groupby(keys, sort=False)[list(columns)].mean()
        return table.unstack("config") if by else table

    def summary(self):
        """One row per configuration: quality, tokens, latency and time.

        ``errors`` counts failed requests and ``cut_off`` the answers that stopped at ``max_tokens``
        (``finish_reason == "length"``: too long to judge, whatever they would have said);
        ``exact``, ``valid_json`` and ``<field>`` (accuracy) are shares of all examples;
        ``prompt_tokens``/``completion_tokens`` are means from ``usage``; ``latency_s`` is the mean
        time per request (under the run's concurrency), ``latency_p90_s`` its 90th percentile;
        ``wall_s`` the time of the whole configuration; ``cpu_s`` the local server's CPU seconds.
        """
        import pandas as pd

        g = self.results.groupby("config", sort=False)
        table = pd.DataFrame({"n": g.size(), "errors": g["error"].apply(lambda s: int(s.notna().sum()))})
        # Answers that stopped at max_tokens: wrong because cut off, not (only) because mistaken.
        table["cut_off"] = g["finish_reason"].apply(lambda s: int((s == "length").sum()))
        table["exact"] = g["exact"].mean()
        if "valid_json" in self.results:
            table["valid_json"] = g["valid_json"].mean()
        for f in self.fields:
            table[f] = g[f"{f}_ok"].mean()
        table["prompt_tokens"] = g["prompt_tokens"].mean()
        table["completion_tokens"] = g["completion_tokens"].mean()
        table["latency_s"] = g["latency_s"].mean()
        table["latency_p90_s"] = g["latency_s"].quantile(0.9)
        table["retries"] = g["attempts"].apply(lambda s: int((s - 1).clip(lower=0).sum()))
        runs = self.runs.set_index("config")
        table["wall_s"] = runs["wall_s"].reindex(table.index)
        table["cpu_s"] = runs["cpu_s"].reindex(table.index)
        return table.reindex(self.names)

    def costs(self, *, priced_as: str | None = None, on=None, requests: int = 1_000):
        """Cost of ``requests`` requests per configuration, from the measured mean tokens.

        Each configuration is priced as its own model in the catalog (fine-tuned prices for
        fine-tuned models); a model without a price (the local backend) gets NaN and a note, with
        its measured CPU and wall seconds per ``requests`` instead. ``priced_as`` (e.g.
        ``"gpt-4.1-mini"``) prices every configuration's *measured token counts* at that hosted
        model's prices instead -- base prices for base configurations, fine-tuned ones for
        fine-tuned ones; the ``priced_as`` column says so. ``usd_batch`` is the same at the hosted
        Batch API's 50% discount.
        """
        import pandas as pd

        from .. import catalog, cost

        summary = self.summary()
        rows = []
        for c in self.configs:
            s = summary.loc[c.name]
            n = max(1, int(s["n"] - s["errors"]))
            price_model = priced_as or c.price_model or c.model
            label, usd, note = "", math.nan, ""
            try:
                entry = catalog.lookup(price_model, on)
                prompt, completion = s["prompt_tokens"], s["completion_tokens"]
                if math.isnan(prompt) or math.isnan(completion):
                    raise ValueError("the API reported no usage")
                bill = cost.inference_cost(entry.snapshot, round(prompt * requests), round(completion * requests),
                                           fine_tuned=c.is_fine_tuned, on=on)
                usd = bill.per_request_usd
                label = f"{entry.snapshot} ({'fine-tuned' if c.is_fine_tuned else 'base'} prices)"
                if priced_as and _catalog_snapshot(c.price_model or c.model) != entry.snapshot:
                    note = (f"{c.model}'s measured token counts at {entry.model}'s prices: an illustration "
                            "(its tokenizer would count differently)")
            except (catalog.UnknownCatalogModel, cost.NoPriceError, ValueError) as e:
                note = ("no price: the local backend's cost is CPU time"
                        if isinstance(e, cost.NoPriceError) else str(e).split(" (known")[0])
            rows.append({
                "config": c.name, "model": c.model, "prompt_tokens": s["prompt_tokens"],
                "completion_tokens": s["completion_tokens"], "priced_as": label, f"usd_per_{requests}": usd,
                f"usd_per_{requests}_batch": usd * HOSTED_BATCH_DISCOUNT if not math.isnan(usd) else math.nan,
                f"cpu_s_per_{requests}": s["cpu_s"] / n * requests if not pd.isna(s["cpu_s"]) else math.nan,
                f"wall_s_per_{requests}": s["wall_s"] / n * requests if not pd.isna(s["wall_s"]) else math.nan,
                "note": note,
            })
        return pd.DataFrame(rows).set_index("config")

    def paired(self, before: str, after: str, column: str = "exact"):
        """How the answers changed from configuration ``before`` to ``after`` on the same examples:
        both right, gained (wrong -> right), lost (right -> wrong), both wrong, the exact McNemar
        p-value of gained vs lost (small: the change is unlikely to be chance), and the difference
        ``after - before`` with its 95% interval for paired data (:func:`paired_difference`)."""
        import pandas as pd

        a, b = self.of(before)[column].astype(bool), self.of(after)[column].astype(bool)
        b = b.reindex(a.index)
        shift = paired_shift(a, b)
        both_right, both_wrong = int((a & b).sum()), int((~a & ~b).sum())
        diff = paired_difference(both_right, shift["gained"], shift["lost"], both_wrong)
        counts = {"both right": both_right, "gained": shift["gained"], "lost": shift["lost"],
                  "both wrong": both_wrong, f"{before}": shift["before"], f"{after}": shift["after"],
                  "mcnemar_p": shift["mcnemar_p"], "difference": diff["difference"], "diff_low": diff["low"],
                  "diff_high": diff["high"]}
        return pd.Series(counts, name=f"{before} -> {after} ({column})")

    def _yes_no_columns(self) -> dict[str, str]:
        """{metric name: score column}: exact, valid JSON and each field's accuracy."""
        columns = {"exact": "exact"}
        if "valid_json" in self.results:
            columns["valid_json"] = "valid_json"
        columns.update({f: f"{f}_ok" for f in self.fields})
        return columns

    def intervals(self, columns: Sequence[str] | None = None, *, confidence: float = 0.95):
        """Each configuration's rate of each yes/no score with its Wilson interval.

        ``columns``: score columns or metric names (default: ``exact``, ``valid_json`` and each
        field, whose column is ``<field>_ok``). One row per (configuration, metric): ``right`` (the
        count), ``n``, ``rate``, ``low``, ``high``. A failed or unparseable answer counts as wrong.
        The interval (:func:`wilson_interval`) says how far the rate on this many
        examples could be from the rate on all such examples. Taught in notebooks/05_evaluation.ipynb.
        """
        import pandas as pd

        known = self._yes_no_columns()
        wanted = list(columns) if columns is not None else list(known)
        rows = []
        for name in self.names:
            part = self.of(name)
            for metric in wanted:
                column = known.get(metric, metric)
                if column not in part:
                    raise KeyError(f"no score column {column!r}; have {sorted(known)}")
                values = part[column].fillna(False).astype(bool)
                right, n = int(values.sum()), int(len(values))
                low, high = wilson_interval(right, n, confidence)
                rows.append({"config": name, "metric": metric, "right": right, "n": n,
                             "rate": right / n if n else math.nan, "low": low, "high": high})
        return pd.DataFrame(rows).set_index(["config", "metric"])

    def interval_table(self, columns: Sequence[str] | None = None, *, confidence: float = 0.95):
        """:meth:`intervals` as one readable table: a row per configuration, a column per metric,
        each cell ``"62% (52-71%)"`` (the rate and its Wilson interval)."""
        table = self.intervals(columns, confidence=confidence)
        text = table.apply(lambda r: interval_text(r["rate"], r["low"], r["high"]), axis=1)
        return text.unstack("metric").reindex(index=self.names, columns=list(table.index.get_level_values("metric").unique()))

    def format_and_task(self):
        """Format vs task, per configuration: ``valid_json`` (the format), ``exact`` and the mean
        field accuracy over all answers, and the same two over the valid-JSON answers only
        (``exact_if_valid``, ``fields_if_valid``: the task, given the format), with ``n_valid``.

        A configuration whose answers are all valid JSON (Structured Outputs) has the same
        numbers in both; one whose answers rarely parse can look strong on the few that do --
        read ``n_valid`` too. Taught in notebooks/05_evaluation.ipynb.
        """
        import pandas as pd

        if "valid_json" not in self.results:
            raise ValueError("format_and_task needs JSON references")
        rows = {}
        for name in self.names:
            part = self.of(name)
            valid = part["valid_json"].astype(bool)
            field_ok = part[[f"{f}_ok" for f in self.fields]].astype(bool).mean(axis=1)
            rows[name] = {"n": len(part), "n_valid": int(valid.sum()), "valid_json": float(valid.mean()),
                          "exact": float(part["exact"].mean()), "fields": float(field_ok.mean()),
                          "exact_if_valid": float(part.loc[valid, "exact"].mean()) if valid.any() else math.nan,
                          "fields_if_valid": float(field_ok[valid].mean()) if valid.any() else math.nan}
        return pd.DataFrame.from_dict(rows, orient="index")

    def outcomes(self, by: str = "exact"):
        """Right or wrong, and whether the answer was finished or cut off at ``max_tokens``, per
        configuration: ``right``, ``wrong (finished)``, ``wrong (cut off)``, ``right (cut off)``
        and ``failed`` (no answer). A wrong answer that was cut off may only have needed more room;
        a finished wrong answer is a real mistake. Taught in notebooks/05_evaluation.ipynb."""
        import pandas as pd

        rows = {}
        for name in self.names:
            part = self.of(name)
            ok = part[by].fillna(False).astype(bool)
            cut = part["finish_reason"].eq("length")
            failed = part["prediction"].isna()
            rows[name] = {"right": int((ok & ~cut).sum()), "wrong (finished)": int((~ok & ~cut & ~failed).sum()),
                          "wrong (cut off)": int((~ok & cut).sum()), "right (cut off)": int((ok & cut).sum()),
                          "failed": int(failed.sum())}
        return pd.DataFrame.from_dict(rows, orient="index")

    # -- answers side by side ---------------------------------------------------------------------

    def side_by_side(self, configs: Sequence[str] | None = None, *, input_chars: int | None = 160,
                     mark_cut_off: bool = True):
        """One row per example: its input (the last user message), the reference, and each
        configuration's answer (``None`` when the request failed), every answer in full.

        An answer that stopped at ``max_tokens`` ends with :data:`CUT_OFF_MARK` when
        ``mark_cut_off``: a cut-off answer is wrong for a different reason than a mistaken one.
        The table shows every cell in full, wrapped (see :func:`full_text`); ``input_chars``
        shortens only the input column.
        """
        import pandas as pd

        names = list(configs or self.names)
        inputs = {}
        for ex in self.examples:
            users = [m for m in ex.get("messages", []) if m.get("role") == "user"]
            text = (users[-1].get("content") or "") if users else ""
            if input_chars and len(text) > input_chars:
                text = text[: input_chars - 1] + "…"
            inputs[ex["id"]] = text
        first = self.of(names[0])
        frame = pd.DataFrame({"input": pd.Series(inputs), "reference": first["reference"]})
        for name in names:
            rows = self.of(name)
            answers = rows["prediction"]
            if mark_cut_off:
                cut = rows["finish_reason"].eq("length") & answers.notna()
                answers = answers.where(~cut, answers.astype(str) + CUT_OFF_MARK)
            frame[name] = answers
        frame.index.name = "id"
        return full_text(frame)

    def _key(self, prediction) -> str:
        parsed = parse_json(prediction)
        if parsed is not None:
            return json.dumps(parsed, sort_keys=True)
        return "" if prediction is None else _normal_text(prediction)

    def disagreements(self, configs: Sequence[str] | None = None, *, by: str = "exact",
                      input_chars: int | None = 160):
        """The examples on which the configurations answered differently (JSON compared as
        objects, text without case and spacing), side by side, with a ``right`` column naming the
        configurations whose answer was right by the score column ``by`` (``exact``, or a scorer's
        column such as ``correct``). Answers cut off at ``max_tokens`` are marked as in
        :meth:`side_by_side`; they are compared as the model wrote them."""
        names = list(configs or self.names)
        frame = self.side_by_side(names, input_chars=input_chars)
        keys = {name: self.of(name)["prediction"].reindex(frame.index).map(self._key) for name in names}
        import pandas as pd

        differ = pd.DataFrame(keys).nunique(axis=1) > 1
        out = frame[differ].copy()
        right = {n: self.of(n)[by] for n in names}
        out["right"] = [", ".join(n for n in names if bool(right[n].get(i, False))) or "none" for i in out.index]
        return out

    def viewer(self, configs: Sequence[str] | None = None, *, by: str = "exact", n_static: int = 5) -> DisagreementViewer:
        """An ipywidgets viewer to page through the disagreements (see :class:`DisagreementViewer`)."""
        return DisagreementViewer(self, configs, by=by, n_static=n_static)

    # -- plots -----------------------------------------------------------------------------------

    def plot(self, *, priced_as: str | None = None, on=None):
        """Four panels, one bar group per configuration: accuracy (exact, valid JSON, each
        field), tokens per request (prompt + completion), cost per 1,000 requests (at
        ``priced_as`` prices when given; else CPU seconds per 1,000 on the local backend) and
        latency (mean per request, and wall time of the run). Returns the matplotlib Figure."""
        import numpy as np
        from matplotlib.figure import Figure

        summary = self.summary()
        names = self.names
        x = np.arange(len(names))
        fig = Figure(figsize=(13, 8.5), layout="constrained")
        (ax_acc, ax_tok), (ax_cost, ax_lat) = fig.subplots(2, 2)

        metrics = ["exact"] + (["valid_json"] if "valid_json" in summary else []) + list(self.fields)
        width = 0.8 / max(1, len(metrics))
        for k, m in enumerate(metrics):
            values = summary[m].to_numpy(dtype=float)
            bars = ax_acc.bar(x + (k - (len(metrics) - 1) / 2) * width, values, width, label=m.replace("_", " "))
            ax_acc.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7, rotation=90, padding=2)
        ax_acc.set_ylim(0, 1.35)
        ax_acc.set_title("Accuracy (share of test examples)")
        ax_acc.legend(fontsize=8, ncols=min(5, len(metrics)), loc="upper left")

        prompt = summary["prompt_tokens"].to_numpy(dtype=float)
        completion = summary["completion_tokens"].to_numpy(dtype=float)
        ax_tok.bar(x, prompt, label="prompt")
        ax_tok.bar(x, completion, bottom=prompt, label="completion")
        for i, (p, c) in enumerate(zip(prompt, completion)):
            ax_tok.text(i, p + c, f"{p:.0f} + {c:.0f}", ha="center", va="bottom", fontsize=8)
        ax_tok.set_title("Tokens per request (from usage)")
        ax_tok.legend(fontsize=8)

        costs = self.costs(priced_as=priced_as, on=on)
        usd = costs["usd_per_1000"].to_numpy(dtype=float)
        if not np.all(np.isnan(usd)):
            bars = ax_cost.bar(x, usd, color="tab:green")
            ax_cost.bar_label(bars, labels=[f"${v:.3f}" if not np.isnan(v) else "n/a" for v in usd], fontsize=8)
            where = f" at {priced_as} prices\n(the measured token counts: an illustration)" if priced_as else ""
            ax_cost.set_title(f"Cost per 1,000 requests (USD){where}")
        else:
            cpu = costs["cpu_s_per_1000"].to_numpy(dtype=float)
            bars = ax_cost.bar(x, cpu, color="tab:gray")
            ax_cost.bar_label(bars, labels=[f"{v:.0f} s" for v in cpu], fontsize=8)
            ax_cost.set_title("No price (local backend): server CPU seconds per 1,000 requests")

        lat = summary["latency_s"].to_numpy(dtype=float)
        wall = summary["wall_s"].to_numpy(dtype=float)
        ax_lat.bar(x - 0.2, lat, 0.4, label="mean latency per request")
        ax_lat.bar(x + 0.2, wall, 0.4, label=f"wall time of the run ({len(self.examples)} requests)")
        for i, (a, b) in enumerate(zip(lat, wall)):
            if not np.isnan(a):
                ax_lat.text(i - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
            ax_lat.text(i + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=8)
        ax_lat.set_title("Seconds")
        ax_lat.legend(fontsize=8)
        for ax in (ax_acc, ax_tok, ax_cost, ax_lat):
            ax.set_xticks(x, names, rotation=15, ha="right", fontsize=9)
            ax.margins(y=0.15)
        return fig

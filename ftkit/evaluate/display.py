"""Display: tables shown in full (:func:`full_text`), the :class:`DisagreementViewer` and
:func:`plot_learning_curve`.

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .evaluation import Evaluation


def plot_learning_curve(curves: dict[str, Any], fields: Sequence[str]):
    """Accuracy against training examples, one panel per test set (``{test set name: the
    :func:`learning_curve` table}``): valid JSON (the format), exact match with its interval, and
    each field (the task). Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2 * len(curves), 4.2), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (title, curve) in zip(axes, curves.items()):
        x = curve["examples"].to_numpy()
        ax.fill_between(x, curve["exact_low"], curve["exact_high"], alpha=0.15, color="tab:blue",
                        label="exact, 95% interval")
        ax.plot(x, curve["exact"], "o-", color="tab:blue", lw=2, label="exact match")
        if "valid_json" in curve:
            ax.plot(x, curve["valid_json"], "s--", color="black", label="valid JSON (format)")
        for f in fields:
            ax.plot(x, curve[f], ".:", label=f"{f} (task)")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training examples (0: the base model)")
        ax.set_ylabel("share of test tickets")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


# ---------------------------------------------------------------------------------------------
# Tables of answers, shown in full

#: Appended by :meth:`Evaluation.side_by_side` to an answer that stopped at ``max_tokens``.
CUT_OFF_MARK = " ⟨cut off: max_tokens⟩"

_FULL_TEXT_CSS = ("<style>.ftkit-full-text td, .ftkit-full-text th {white-space: pre-wrap; text-align: left; "
                  "vertical-align: top; max-width: 38em; overflow-wrap: anywhere}</style>")


@functools.cache
def _full_text_class():
    import pandas as pd

    class FullTextFrame(pd.DataFrame):
        """A DataFrame that displays every cell in full (wrapped in HTML) instead of cutting text
        at pandas' ``display.max_colwidth`` (50 characters): a JSON answer cut there loses its
        last field. Operations that return a frame (``head``, ``drop``, selection) keep it."""

        @property
        def _constructor(self):
            return FullTextFrame

        def _repr_html_(self):
            with pd.option_context("display.max_colwidth", None):
                table = super()._repr_html_()
            return None if table is None else f"<div class='ftkit-full-text'>{_FULL_TEXT_CSS}{table}</div>"

        def __repr__(self) -> str:
            with pd.option_context("display.max_colwidth", None):
                return super().__repr__()

        def to_string(self, *args, **kwargs) -> str:
            kwargs.setdefault("max_colwidth", None)
            return super().to_string(*args, **kwargs)

    return FullTextFrame


def full_text(frame):
    """``frame`` as a table that shows every cell in full, wrapped, in a notebook and as text.

    pandas cuts each cell at ``display.max_colwidth`` (50 characters by default), which hides the
    end of an answer -- for the course's JSON answers, the last field. This changes nothing in
    the data and no global pandas option: the returned frame (a DataFrame) displays differently.
    :meth:`Evaluation.side_by_side` and :meth:`Evaluation.disagreements` already return one.

    Taught in notebooks/04_job_lifecycle.ipynb and notebooks/05_evaluation.ipynb.
    """
    return _full_text_class()(frame)


# ---------------------------------------------------------------------------------------------
# The disagreement viewer


class DisagreementViewer:
    """Page through the examples on which configurations disagree, one at a time (ipywidgets),
    like the hosted comparison playground: the input, the reference, and each configuration's
    answer marked right or wrong. Displaying it also shows a static table of the first
    ``n_static`` disagreements, so exported HTML and CI logs keep something meaningful.

    Taught in notebooks/05_evaluation.ipynb.
    """

    def __init__(self, evaluation: Evaluation, configs: Sequence[str] | None = None, *, by: str = "exact",
                 n_static: int = 5) -> None:
        self.evaluation = evaluation
        self.configs = list(configs or evaluation.names)
        self.by = by
        self.frame = evaluation.disagreements(self.configs, by=by, input_chars=None)
        self.n_static = n_static
        self.position = 0
        self._widget = None

    def __len__(self) -> int:
        return len(self.frame)

    def card_html(self, position: int | None = None) -> str:
        """The HTML of one disagreement (the current one by default)."""
        if not len(self.frame):
            return "<p>The configurations agree on every example.</p>"
        position = self.position if position is None else position
        example_id = self.frame.index[position]
        row = self.frame.iloc[position]
        cells = []
        for name in self.configs:
            answer = row[name]
            rows = self.evaluation.of(name)
            right = bool(rows[self.by].get(example_id, False))
            colour = "#1a7f37" if right else "#cf222e"
            mark = "right" if right else "wrong"
            if rows["finish_reason"].get(example_id) == "length":
                mark += ", cut off at max_tokens"
            text = "(request failed)" if answer is None else answer
            cells.append(f"<tr><td><b>{html.escape(name)}</b></td><td style='color:{colour}'>{mark}</td>"
                         f"<td><code>{html.escape(str(text))}</code></td></tr>")
        return (
            f"<div><b>{position + 1} of {len(self.frame)}</b> &middot; example {html.escape(str(example_id))}"
            f"<pre style='white-space:pre-wrap'>{html.escape(str(row['input']))}</pre>"
            f"<p>reference: <code>{html.escape(str(row['reference']))}</code></p>"
            f"<table>{''.join(cells)}</table></div>"
        )

    def show(self, position: int) -> None:
        """Move to disagreement ``position`` (wraps around)."""
        if len(self.frame):
            self.position = position % len(self.frame)
        if self._widget is not None:
            self._card.value = self.card_html()

    @property
    def widget(self):
        if self._widget is None:
            import ipywidgets as w

            self._card = w.HTML(self.card_html())
            back, forward = w.Button(description="◀ previous"), w.Button(description="next ▶")
            back.on_click(lambda _: self.show(self.position - 1))
            forward.on_click(lambda _: self.show(self.position + 1))
            self._widget = w.VBox([w.HBox([back, forward]), self._card])
        return self._widget

    def static_table(self):
        """The first ``n_static`` disagreements as a DataFrame (for HTML export and CI)."""
        return self.evaluation.disagreements(self.configs, by=self.by).head(self.n_static)

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        display(HTML(f"<p><i>Static copy: the first {min(self.n_static, len(self.frame))} of {len(self.frame)} "
                     "disagreements (the viewer above pages through all of them).</i></p>"))
        display(self.static_table())

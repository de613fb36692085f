"""Under the hood of a supervised job: what the local trainer learns from one example.

:func:`label_mask_table` lists an example's tokens as the trainer sees them -- which ones the loss
is computed on -- and :func:`label_mask_html` draws them, learned tokens on green. Both use the
server's own encoder (:func:`ftkit.local.jobs.training.steps.encode_example`), so the mask shown is
exactly the one a job trains with; the notebooks take one training step with the trainer's own
functions (:mod:`ftkit.local.jobs.training.steps`) next to them.

Taught in notebooks/04_job_lifecycle.ipynb (section 2, before the first job);
notebooks/06_preference_tuning.ipynb builds on it for DPO. Needs the ``local`` extra (torch,
transformers).
"""

from __future__ import annotations

__all__ = ["label_mask_html", "label_mask_table"]


def label_mask_table(tokenizer, example: dict, max_tokens: int | None = None):
    """One row per token of a chat example as the local trainer sees it: ``position``, ``id``,
    ``token`` (its text), ``learned`` (the loss is computed on it) and ``label`` (the id, or -100
    where nothing is learned). Made with the server's own encoder
    (:func:`ftkit.local.jobs.training.steps.encode_example`), so the mask is exactly the one it trains
    with: only assistant turns whose ``weight`` is not 0, their text and end-of-turn token.

    Taught in notebooks/04_job_lifecycle.ipynb (section 2). Needs the ``local`` extra.
    """
    import pandas as pd

    from .local.inference.render import IGNORE_INDEX
    from .local.inference.weights import MAX_EXAMPLE_TOKENS
    from .local.jobs.training import steps

    encoded = steps.encode_example(tokenizer, example, max_tokens or MAX_EXAMPLE_TOKENS)
    rows = [{"position": i, "id": token_id, "token": tokenizer.decode([token_id]), "learned": label != IGNORE_INDEX,
             "label": label} for i, (token_id, label) in enumerate(zip(encoded.ids, encoded.labels))]
    return pd.DataFrame(rows, columns=["position", "id", "token", "learned", "label"])


def label_mask_html(table) -> str:
    """The tokens of :func:`label_mask_table` as one line of HTML: learned tokens on green, the
    rest grey (newlines shown as ⏎). Taught in notebooks/04_job_lifecycle.ipynb (section 2)."""
    import html

    spans = []
    for token, learned in zip(table["token"], table["learned"]):
        text = html.escape(str(token)).replace("\n", "⏎")
        style = "background:#c9f2d0" if learned else "color:#6e7781"
        spans.append(f"<span style='{style};border-right:1px solid #ddd'>{text}</span>")
    return "<div style='font-family:monospace;line-height:1.8;white-space:pre-wrap'>" + "".join(spans) + "</div>"

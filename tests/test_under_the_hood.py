"""The label mask as notebook 04 shows it (ftkit.under_the_hood), on the tiny tokenizer."""

from __future__ import annotations

import pytest


def test_label_mask_table_marks_exactly_the_weighted_assistant_turn():
    pytest.importorskip("torch")
    from tiny import tiny_tokenizer

    from ftkit.under_the_hood import label_mask_html, label_mask_table

    tok = tiny_tokenizer()
    example = {"messages": [
        {"role": "system", "content": "Rewrite in house style."},
        {"role": "user", "content": "Maya asked where her refund is."},
        {"role": "assistant", "content": "refund sent.", "weight": 0},
        {"role": "user", "content": "House style, please."},
        {"role": "assistant", "content": "Hi Maya, we have sent your refund."},
    ]}
    table = label_mask_table(tok, example)
    assert list(table.columns) == ["position", "id", "token", "learned", "label"]
    assert table["position"].tolist() == list(range(len(table)))
    learned = "".join(table.loc[table["learned"], "token"])
    assert learned == "Hi Maya, we have sent your refund.<|im_end|>"  # the rewrite and its end-of-turn
    assert "refund sent." not in learned  # weight 0: context only
    assert (table.loc[~table["learned"], "label"] == -100).all()
    assert (table.loc[table["learned"], "label"] == table.loc[table["learned"], "id"]).all()
    html = label_mask_html(table)
    assert html.count("<span") == len(table) and html.count("#c9f2d0") == int(table["learned"].sum())


def test_preference_still_exports_the_moved_helpers():
    from ftkit import preference, under_the_hood

    assert preference.label_mask_table is under_the_hood.label_mask_table
    assert preference.label_mask_html is under_the_hood.label_mask_html

"""ftkit.evaluate: metrics checked against values computed by hand on tiny sets; requests,
concurrency, retries and the Batch API against the real local server (marked slow)."""

from __future__ import annotations

import json
import math
import random

import httpx
import openai
import pandas as pd
import pytest

from ftkit import evaluate as ev
from ftkit.evaluate import Config, Evaluation, RetryPolicy

# ---------------------------------------------------------------------------------------------
# A tiny hand-made set: five tickets, two fields, five answers with one property each


def _example(i, category, urgency, system="Triage."):
    return {"id": f"t{i}", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": f"ticket {i}"},
        {"role": "assistant", "content": json.dumps({"category": category, "urgency": urgency})},
    ]}


EXAMPLES = [
    _example(1, "billing", "high"),
    _example(2, "billing", "low"),
    _example(3, "technical", "low"),
    _example(4, "technical", "high"),
    _example(5, "account", "low"),
]
PREDICTIONS = [
    '{"urgency": "high", "category": "billing"}',  # right; key order does not matter
    '{"category": "technical", "urgency": "low"}',  # valid, category wrong
    'Sure! {"category": "technical", "urgency": "low"}',  # prose around it: not valid JSON
    '{"category": "technical"}',  # valid, urgency missing
    '```json\n{"category": "account", "urgency": "low"}\n```',  # a Markdown fence: not valid JSON
]
LABELS = {"category": ["billing", "technical", "account"], "urgency": ["low", "medium", "high"]}


def _labels(column) -> list:
    return [None if pd.isna(v) else v for v in column]  # pandas keeps None as NaN in string columns


@pytest.fixture()
def hand():
    return Evaluation.from_predictions(EXAMPLES, {"model": PREDICTIONS}, labels=LABELS)


def test_parse_json_is_strict():
    assert ev.parse_json(' {"a": 1}\n') == {"a": 1}
    assert ev.parse_json('{"a": 1} {"b": 2}') is None
    assert ev.parse_json('```json\n{"a": 1}\n```') is None
    assert ev.parse_json("[1, 2]") is None  # JSON, but not an object
    assert ev.parse_json(None) is None


def test_exact_match_json_and_text():
    assert ev.exact_match('{"b": 2, "a": 1}', '{"a": 1, "b": 2}')
    assert not ev.exact_match('{"a": 1}', '{"a": 1, "b": 2}')
    assert not ev.exact_match('{"a": "1"}', '{"a": 1}')
    assert ev.exact_match("  Paris ", "paris")
    assert not ev.exact_match("Paris.", "Paris")
    assert not ev.exact_match(None, "Paris")


def test_exact_valid_json_and_field_accuracy_by_hand(hand):
    rows = hand.of("model")
    assert rows["exact"].tolist() == [True, False, False, False, False]
    assert rows["valid_json"].tolist() == [True, True, False, True, False]
    assert _labels(rows["category_pred"]) == ["billing", "technical", None, "technical", None]
    assert _labels(rows["urgency_pred"]) == ["high", "low", None, None, None]
    summary = hand.summary().loc["model"]
    assert summary["exact"] == pytest.approx(1 / 5)
    assert summary["valid_json"] == pytest.approx(3 / 5)
    accuracy = hand.field_accuracy().loc["model"]
    assert accuracy["category"] == pytest.approx(2 / 5)  # t1, t4
    assert accuracy["urgency"] == pytest.approx(2 / 5)  # t1, t2


def test_macro_f1_by_hand(hand):
    # category: billing P=1 R=1/2 F1=2/3; technical P=1/2 R=1/2 F1=1/2; account P=0 R=0 F1=0
    table = hand.f1_by_label("category", "model")
    assert table["f1"].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert table["support"].tolist() == [2, 2, 1]
    # urgency: medium never occurs in the references, so it does not count; high F1=2/3, low 1/2
    f1 = hand.macro_f1().loc["model"]
    assert f1["category"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert f1["urgency"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_macro_f1_perfect_and_all_wrong():
    assert ev.macro_f1(["a", "b", "b"], ["a", "b", "b"]) == 1.0
    assert ev.macro_f1(["a", "b"], [None, None]) == 0.0
    with pytest.raises(ValueError):
        ev.macro_f1(["a"], ["a", "b"])


def test_confusion_matrix_by_hand(hand):
    table = hand.confusion("category", "model")
    assert list(table.index) == ["billing", "technical", "account"]
    assert list(table.columns) == ["billing", "technical", "account", ev.INVALID]
    assert table.loc["billing"].tolist() == [1, 1, 0, 0]
    assert table.loc["technical"].tolist() == [0, 1, 0, 1]
    assert table.loc["account"].tolist() == [0, 0, 0, 1]
    # every answer a label: no "(no valid answer)" column
    clean = ev.confusion_matrix(["x", "y"], ["y", "y"], ["x", "y"])
    assert list(clean.columns) == ["x", "y"] and clean.to_numpy().tolist() == [[0, 1], [0, 1]]


def test_pluggable_scorers_float_and_dict():
    def length(prediction, reference, example):
        return float(len(prediction or ""))

    def mentions_id(prediction, reference, example):
        return {"mentions": example["id"] in (prediction or ""), "ref_len": len(reference)}

    table = ev.score(["ab", None], ["x", "yy"], [{"id": "a"}, {"id": "b"}], scorers=[length, mentions_id])
    assert table["length"].tolist() == [2.0, 0.0]
    assert table["mentions"].tolist() == [True, False]
    assert table["ref_len"].tolist() == [1, 2]
    assert table["exact"].tolist() == [False, False]
    assert "valid_json" not in table  # plain-text references: no JSON columns


def test_ability_scorer():
    arithmetic = {"match": "number", "accept": ["12"],
                  "messages": [{"role": "user", "content": "What is 7 + 5? Answer with just the number."}]}
    assert ev.ability_scorer("12", "12", arithmetic)["correct"]
    assert ev.ability_scorer("7 + 5 = 12.", "12", arithmetic)["correct"]  # operands are allowed
    assert not ev.ability_scorer("12 or 13", "12", arithmetic)["correct"]
    assert not ev.ability_scorer("13", "12", arithmetic)["correct"]
    assert not ev.ability_scorer(None, "12", arithmetic)["correct"]
    spelling = {"match": "word", "accept": ["receive"], "reject": ["recieve"]}
    assert ev.ability_scorer("The correct spelling is 'receive'.", "receive", spelling)["correct"]
    assert not ev.ability_scorer("'recieve' or 'receive'", "receive", spelling)["correct"]
    opposite = {"match": "word", "accept": ["small", "little"]}
    assert ev.ability_scorer("Little.", "small", opposite)["correct"]
    assert not ev.ability_scorer("smaller", "small", opposite)["correct"]  # whole words only


def test_side_by_side_and_disagreements():
    other = list(PREDICTIONS)
    other[0] = '{"category": "billing", "urgency": "high"}'  # same object, other key order: agrees
    other[1] = '{"category": "billing", "urgency": "low"}'  # right where "model" was wrong
    both = Evaluation.from_predictions(EXAMPLES, {"model": PREDICTIONS, "other": other}, labels=LABELS)
    frame = both.side_by_side()
    assert list(frame.columns) == ["input", "reference", "model", "other"]
    assert list(frame.index) == ["t1", "t2", "t3", "t4", "t5"]
    assert frame.loc["t3", "input"] == "ticket 3"
    diff = both.disagreements()
    assert list(diff.index) == ["t2"]
    assert diff.loc["t2", "right"] == "other"
    viewer = both.viewer(n_static=3)
    assert len(viewer) == 1
    assert "t2" in viewer.card_html() and "other" in viewer.card_html()
    viewer.show(5)  # wraps around
    assert viewer.position == 0
    assert viewer.widget is not None
    assert len(viewer.static_table()) == 1
    paired = both.paired("model", "other")
    assert (paired["gained"], paired["lost"], paired["both right"], paired["both wrong"]) == (1, 0, 1, 3)


LONG_ANSWER = '{"category": "technical", "urgency": "medium", "product": "mobile_app"}'  # 71 characters


def test_answer_tables_show_every_answer_in_full():
    examples = [_example(1, "technical", "medium"), _example(2, "billing", "low")]
    answers = {"model": [LONG_ANSWER, '{"category": "billing", "urgency": "low"}']}
    frame = Evaluation.from_predictions(examples, answers, labels=LABELS).side_by_side()
    assert isinstance(frame, pd.DataFrame)
    # pandas on its own cuts the cell at 50 characters and the last field is lost ...
    assert pd.get_option("display.max_colwidth") == 50
    plain = repr(pd.DataFrame(frame))
    assert '"mobile_app"}' not in plain and "..." in plain
    # ... the answer table shows it whole, as text and as HTML (wrapped, not cut)
    assert LONG_ANSWER in repr(frame)
    assert LONG_ANSWER in frame.to_string()
    html_table = frame._repr_html_()
    assert LONG_ANSWER in html_table and "pre-wrap" in html_table
    # selections keep showing in full, and no global pandas option was changed
    for part in (frame.head(1), frame.drop(columns="input"), frame[["model"]], frame.loc[["t1"]]):
        assert LONG_ANSWER in repr(part), type(part)
    assert pd.get_option("display.max_colwidth") == 50
    # any frame (e.g. jobs.ask_models' answers) can be shown the same way; the data is unchanged
    shown = ev.full_text(pd.DataFrame({"answer": [LONG_ANSWER]}))
    assert LONG_ANSWER in repr(shown) and shown["answer"].iloc[0] == LONG_ANSWER


def test_answers_cut_off_at_max_tokens_are_marked():
    examples = [_example(1, "technical", "medium"), _example(2, "billing", "low")]
    cut = '{"category": "technical", "urgency": "medium", "prod'
    result = Evaluation.from_predictions(examples, {"short": [cut, '{"category": "billing", "urgency": "low"}'],
                                                    "long": [LONG_ANSWER, '{"category": "billing", "urgency": "low"}']},
                                         labels=LABELS)
    # what the API reports for an answer that hit max_tokens (from_predictions has no API reply)
    result.results.loc[(result.results["config"] == "short") & (result.results["id"] == "t1"), "finish_reason"] = "length"
    assert result.summary()["cut_off"].to_dict() == {"short": 1, "long": 0}
    frame = result.side_by_side()
    assert frame.loc["t1", "short"] == cut + ev.CUT_OFF_MARK
    assert frame.loc["t2", "short"] == '{"category": "billing", "urgency": "low"}'  # finished: unmarked
    assert frame.loc["t1", "long"] == LONG_ANSWER
    assert result.side_by_side(mark_cut_off=False).loc["t1", "short"] == cut
    diff = result.disagreements()
    assert list(diff.index) == ["t1"] and ev.CUT_OFF_MARK in diff.loc["t1", "short"]
    card = result.viewer().card_html()
    assert "wrong, cut off at max_tokens" in card
    assert card.count("cut off at max_tokens") == 1  # only the answer that was cut


def test_mcnemar_exact_values():
    assert ev.mcnemar_p(0, 0) == 1.0
    assert ev.mcnemar_p(5, 0) == pytest.approx(2 / 32)  # 2 x (1/2)^5
    assert ev.mcnemar_p(3, 3) == 1.0
    assert ev.mcnemar_p(1, 4) == pytest.approx(2 * (1 + 5) / 32)


def test_paired_difference_by_hand():
    # 101 tickets: 50 both right, 10 gained, 1 lost, 40 both wrong. Bonett-Price by hand:
    # g = 11/103, l = 2/103, centre = 9/103 = 0.087379; variance = (13/103 - (9/103)^2) / 103
    # = (0.126214 - 0.007635) / 103 = 0.00115125, sd 0.033930; half = 1.959964 x 0.033930 = 0.066501
    r = ev.paired_difference(50, 10, 1, 40)
    assert r["n"] == 101
    assert r["before"] == pytest.approx(51 / 101) and r["after"] == pytest.approx(60 / 101)
    assert r["difference"] == pytest.approx(9 / 101)
    assert r["low"] == pytest.approx(0.087379 - 0.066501, abs=2e-5)
    assert r["high"] == pytest.approx(0.087379 + 0.066501, abs=2e-5)
    # swapping the roles mirrors the interval
    mirror = ev.paired_difference(50, 1, 10, 40)
    assert (mirror["low"], mirror["high"]) == pytest.approx((-r["high"], -r["low"]))
    # nothing flipped on 12 tickets: the interval keeps a width (agreement on 12 proves nothing)
    none = ev.paired_difference(6, 0, 0, 6)
    assert none["difference"] == 0 and none["low"] < -0.15 and none["high"] > 0.15
    with pytest.raises(ValueError, match="no paired examples"):
        ev.paired_difference(0, 0, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        ev.paired_difference(1, -1, 0, 0)


def test_paired_difference_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(7)
    n, p_gain, p_lose = 40, 0.15, 0.10  # true difference +5 points
    covered = 0
    for _ in range(2000):
        flips = [rng.random() for _ in range(n)]
        gained = sum(1 for f in flips if f < p_gain)
        lost = sum(1 for f in flips if p_gain <= f < p_gain + p_lose)
        r = ev.paired_difference(n - gained - lost, gained, lost, 0)
        covered += r["low"] <= p_gain - p_lose <= r["high"]
    assert 0.93 <= covered / 2000 <= 0.99


def test_majority_baseline_answers_the_commonest_training_labels():
    def ex(c, u, p):
        return {"messages": [{"role": "user", "content": "t"},
                             {"role": "assistant", "content": json.dumps({"category": c, "urgency": u, "product": p})}]}

    train = [ex("billing", "low", "api"), ex("billing", "high", "api"), ex("technical", "low", "web")]
    test = [ex("billing", "low", "api"), ex("billing", "high", "api"), ex("technical", "low", "api"),
            ex("account", "low", "web")]
    table = ev.majority_baseline(train, test, ["category", "urgency", "product"])
    assert table.attrs["answer"] == {"category": "billing", "urgency": "low", "product": "api"}
    assert table.loc["exact", "rate"] == pytest.approx(1 / 4)  # only the first ticket is billing/low/api
    assert table.loc["category", "rate"] == pytest.approx(2 / 4)
    assert table.loc["urgency", "rate"] == pytest.approx(3 / 4)
    assert table.loc["product", "rate"] == pytest.approx(3 / 4)
    assert (table.loc["exact", "low"], table.loc["exact", "high"]) == pytest.approx(ev.wilson_interval(1, 4))
    assert (table["n"] == 4).all()


def test_paired_verdict_from_sign_interval_and_margin():
    assert ev.paired_verdict(0.02, 0.15) == "better"
    assert ev.paired_verdict(-0.2, -0.01) == "worse"
    assert ev.paired_verdict(-0.04, 0.06) == "non-inferior within 5 points"
    assert ev.paired_verdict(-0.04, 0.06, margin=0.03) == "cannot tell"
    assert ev.paired_verdict(-0.28, 0.28, n=12) == "cannot tell at n = 12"
    with pytest.raises(ValueError, match="margin"):
        ev.paired_verdict(0, 0.1, margin=5)
    with pytest.raises(ValueError, match="above high"):
        ev.paired_verdict(0.2, 0.1)


def test_prompt_messages_replaces_system_and_inserts_few_shot():
    ex = EXAMPLES[0]
    shots = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert ev.prompt_messages(ex) == ex["messages"][:2]
    long = ev.prompt_messages(ex, system="LONG", few_shot=shots)
    assert [m["content"] for m in long] == ["LONG", "q", "a", "ticket 1"]
    assert [m["content"] for m in ev.prompt_messages(ex, system="")] == ["ticket 1"]
    assert [m["content"] for m in ev.prompt_messages(ex, few_shot=shots)] == ["Triage.", "q", "a", "ticket 1"]
    body = Config("c", "m", max_tokens=7, extra={"seed": 3}).request(ex)
    assert body == {"model": "m", "messages": ex["messages"][:2], "max_tokens": 7, "temperature": 0.0, "seed": 3}


def test_costs_priced_local_and_illustration():
    examples = EXAMPLES[:2]
    evaluation = Evaluation.from_predictions(examples, {"base": ["x", "y"], "tuned": ["x", "y"]})
    evaluation.configs = [Config("base", "gpt-4.1-mini-2025-04-14"),
                          Config("tuned", "ft:gpt-4.1-mini-2025-04-14:acme::abc")]
    evaluation.results["prompt_tokens"] = [1000.0, 1000.0, 100.0, 100.0]
    evaluation.results["completion_tokens"] = [20.0, 20.0, 20.0, 20.0]
    costs = evaluation.costs(on="2026-11-21")
    # gpt-4.1-mini: base $0.40 in / $1.60 out per 1M; fine-tuned $0.80 / $3.20
    assert costs.loc["base", "usd_per_1000"] == pytest.approx(1000 * (1000 * 0.40 + 20 * 1.60) / 1e6)
    assert costs.loc["tuned", "usd_per_1000"] == pytest.approx(1000 * (100 * 0.80 + 20 * 3.20) / 1e6)
    assert costs.loc["tuned", "usd_per_1000_batch"] == pytest.approx(costs.loc["tuned", "usd_per_1000"] / 2)
    assert "fine-tuned prices" in costs.loc["tuned", "priced_as"]
    # the local model has no price: NaN and a note, never a made-up number
    evaluation.configs = [Config("base", "SmolLM2-135M-Instruct"), Config("tuned", "ft:SmolLM2-135M-Instruct:local::x")]
    local = evaluation.costs()
    assert local["usd_per_1000"].isna().all()
    assert local["note"].str.contains("CPU time").all()
    # ... unless asked, clearly labelled, what the same token counts would cost on a hosted model
    shown = evaluation.costs(priced_as="gpt-4.1-mini", on="2026-11-21")
    assert shown.loc["tuned", "usd_per_1000"] == pytest.approx(1000 * (100 * 0.80 + 20 * 3.20) / 1e6)
    assert shown["note"].str.contains("illustration").all()


def test_label_schema_is_a_strict_json_schema_of_enums():
    fmt = ev.label_schema(LABELS, name="triage")
    assert fmt["type"] == "json_schema"
    spec = fmt["json_schema"]
    assert spec["name"] == "triage" and spec["strict"] is True
    schema = spec["schema"]
    assert schema["required"] == ["category", "urgency"] and schema["additionalProperties"] is False
    assert schema["properties"]["urgency"] == {"type": "string", "enum": ["low", "medium", "high"]}
    # what Structured Outputs promises, checked with a real JSON Schema validator
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate({"category": "billing", "urgency": "low"}, schema)
    for bad in ({"category": "billing"}, {"category": "billing", "urgency": "urgent"},
                {"category": "billing", "urgency": "low", "product": "hub"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    for labels, name in (({}, "x"), ({"category": []}, "x"), ({"category": [1, 2]}, "x"), (LABELS, "has space")):
        with pytest.raises(ValueError):
            ev.label_schema(labels, name=name)


def test_config_sends_response_format():
    fmt = ev.label_schema(LABELS)
    body = Config("schema", "m", response_format=fmt).request(EXAMPLES[0])
    assert body["response_format"] == fmt
    assert "response_format" not in Config("plain", "m").request(EXAMPLES[0])
    # extra still wins, as for every other parameter
    body = Config("c", "m", response_format=fmt, extra={"response_format": {"type": "json_object"}}).request(EXAMPLES[0])
    assert body["response_format"] == {"type": "json_object"}
    with pytest.raises(ValueError, match="response_format"):
        Config("bad", "m", response_format="json")


def test_wilson_intervals_per_metric(hand):
    table = hand.intervals()
    assert list(table.loc["model"].index) == ["exact", "valid_json", "category", "urgency"]
    row = table.loc[("model", "valid_json")]
    assert (row["right"], row["n"], row["rate"]) == (3, 5, pytest.approx(0.6))
    # Wilson 95% for 3/5, by hand: centre (0.6 + z^2/10) / (1 + z^2/5), z = 1.95996
    z = 1.959964
    centre = (0.6 + z * z / 10) / (1 + z * z / 5)
    half = z / (1 + z * z / 5) * math.sqrt(0.6 * 0.4 / 5 + z * z / 100)
    assert row["low"] == pytest.approx(centre - half, abs=1e-6) and row["high"] == pytest.approx(centre + half, abs=1e-6)
    assert table.loc[("model", "exact"), "right"] == 1
    text = hand.interval_table(["exact", "category"])
    assert list(text.columns) == ["exact", "category"]
    assert text.loc["model", "exact"] == ev.interval_text(0.2, *table.loc[("model", "exact"), ["low", "high"]])
    assert text.loc["model", "exact"].startswith("20% (")
    with pytest.raises(KeyError):
        hand.intervals(["no_such_score"])


def test_format_and_task_split_by_hand(hand):
    table = hand.format_and_task().loc["model"]
    # valid answers: t1 (both right), t2 (urgency right), t4 (category right) -> fields 1, 1/2, 1/2
    assert table["n_valid"] == 3 and table["valid_json"] == pytest.approx(3 / 5)
    assert table["exact_if_valid"] == pytest.approx(1 / 3)
    assert table["fields_if_valid"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert table["fields"] == pytest.approx((1 + 0.5 + 0 + 0.5 + 0) / 5)
    assert table["exact"] == pytest.approx(1 / 5)


def test_outcomes_tell_cut_off_from_wrong():
    examples = [_example(1, "billing", "low"), _example(2, "billing", "low"), _example(3, "billing", "low")]
    right = '{"category": "billing", "urgency": "low"}'
    result = Evaluation.from_predictions(examples, {"m": [right, '{"category": "technical", "urgency": "low"}',
                                                          '{"category": "billing", "urg']}, labels=LABELS)
    result.results.loc[result.results["id"] == "t3", "finish_reason"] = "length"
    assert result.outcomes().loc["m"].to_dict() == {"right": 1, "wrong (finished)": 1, "wrong (cut off)": 1,
                                                    "right (cut off)": 0, "failed": 0}


def test_learning_curve_table_and_plot():
    examples = EXAMPLES[:4]
    answers = [ev.reference_of(e) for e in examples]
    result = Evaluation.from_predictions(examples, {"base": ["no"] * 4, "ft-10": answers[:2] + ["no", "no"],
                                                    "ft-40": answers}, labels=LABELS)
    curve = ev.learning_curve(result, {"ft-40": 40, "base": 0, "ft-10": 10})
    assert list(curve.index) == ["base", "ft-10", "ft-40"]
    assert curve["examples"].tolist() == [0, 10, 40]
    assert curve["exact"].tolist() == [0.0, 0.5, 1.0]
    assert curve["valid_json"].tolist() == [0.0, 0.5, 1.0]
    assert (curve["exact_low"] <= curve["exact"]).all() and (curve["exact"] <= curve["exact_high"]).all()
    fig = ev.plot_learning_curve({"in-distribution": curve, "out-of-distribution": curve}, list(LABELS))
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2 + len(LABELS)  # exact, valid JSON, one per field


def test_retry_policy_delays_are_bounded_exponential_with_jitter():
    policy = RetryPolicy(initial=1.0, multiplier=2.0, max_delay=5.0, jitter=0.5)
    rng = random.Random(0)
    for attempt, base in enumerate([1, 2, 4, 5, 5]):
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert base * 0.5 <= min(delays) and max(delays) <= base
    assert policy.delay(0, retry_after=3.0, rng=rng) == 3.0  # the server's Retry-After wins ...
    assert policy.delay(0, retry_after=60.0, rng=rng) == 5.0  # ... up to max_delay


def _status_error(cls, status, code=None):
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    body = {"error": {"message": "m", "type": "t", "param": None, "code": code}}
    return cls("m", response=httpx.Response(status, request=request, json=body), body=body["error"])


def test_which_errors_are_retried():
    request = httpx.Request("POST", "http://x")
    assert ev.is_retryable(_status_error(openai.RateLimitError, 429, "rate_limit_exceeded"))
    assert not ev.is_retryable(_status_error(openai.RateLimitError, 429, "insufficient_quota"))
    assert ev.is_retryable(_status_error(openai.InternalServerError, 503))
    assert ev.is_retryable(openai.APIConnectionError(request=request))
    assert ev.is_retryable(openai.APITimeoutError(request=request))
    for cls, status in ((openai.BadRequestError, 400), (openai.AuthenticationError, 401),
                        (openai.NotFoundError, 404), (openai.UnprocessableEntityError, 422)):
        assert not ev.is_retryable(_status_error(cls, status))
    assert not ev.is_retryable(ValueError("not an API error"))


def test_with_retries_stops_at_the_limit_and_on_client_errors():
    waits = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise _status_error(openai.RateLimitError, 429, "rate_limit_exceeded")
        return "ok"

    policy = RetryPolicy(max_retries=3, initial=0.1)
    assert ev._with_retries(flaky, policy, random.Random(0), sleep=waits.append)[:2] == ("ok", 3)
    assert len(waits) == 2 and waits[1] > waits[0] * 1.0 - 1e-9

    def always_429():
        raise _status_error(openai.RateLimitError, 429, "rate_limit_exceeded")

    with pytest.raises(openai.RateLimitError) as err:
        ev._with_retries(always_429, RetryPolicy(max_retries=2), random.Random(0), sleep=lambda s: None)
    assert err.value.ftkit_attempts == 3

    def bad_request():
        raise _status_error(openai.BadRequestError, 400)

    with pytest.raises(openai.BadRequestError) as err:
        ev._with_retries(bad_request, RetryPolicy(), random.Random(0), sleep=lambda s: pytest.fail("slept"))
    assert err.value.ftkit_attempts == 1


def test_load_examples_ids(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    assert [e["id"] for e in ev.load_examples(path)] == ["t1", "t2", "t3", "t4", "t5"]
    assert [e["id"] for e in ev.load_examples(path, ids=list("abcde"))] == list("abcde")
    plain = [{"messages": e["messages"]} for e in EXAMPLES[:2]]
    assert [e["id"] for e in ev.load_examples(plain)] == [0, 1]
    with pytest.raises(ValueError):
        ev.load_examples(EXAMPLES + EXAMPLES[:1])


def test_plot_has_four_panels(hand):
    fig = hand.plot()
    assert len(fig.axes) == 4
    assert math.isnan(hand.summary().loc["model", "prompt_tokens"])  # given answers: no usage


# ---------------------------------------------------------------------------------------------
# Against the real local server (SmolLM2-135M-Instruct on CPU)

MODEL = "SmolLM2-135M-Instruct"


def _questions(n):
    return [{"id": f"q{i}", "messages": [{"role": "user", "content": f"Say the number {i}."},
                                         {"role": "assistant", "content": str(i)}]} for i in range(n)]


class _InFlight:
    """httpx event hooks counting chat requests in flight (to check the concurrency bound)."""

    def __init__(self):
        import threading

        self.now = self.peak = 0
        self.lock = threading.Lock()

    def request(self, request):
        if request.url.path.endswith("/chat/completions"):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)

    def response(self, response):
        if response.request.url.path.endswith("/chat/completions"):
            with self.lock:
                self.now -= 1


@pytest.mark.slow
def test_concurrency_is_bounded_and_batched(local_server):
    counter = _InFlight()
    http = httpx.Client(event_hooks={"request": [counter.request], "response": [counter.response]})
    client = openai.OpenAI(base_url=local_server.base_url, api_key=local_server.key, http_client=http)
    config = Config("base", MODEL, max_tokens=4)
    before = local_server.health()["engine"]
    result = ev.evaluate(client, _questions(8), [config], concurrency=4, progress=False)
    after = local_server.health()["engine"]
    assert counter.peak == 4  # never more than asked for; all four used
    assert after["rows"] - before["rows"] == 8
    assert after["batches"] - before["batches"] < 8  # concurrent requests shared forward passes
    rows = result.of("base")
    assert rows["error"].isna().all() and rows["prediction"].map(bool).all()
    assert (rows["prompt_tokens"] > 0).all() and (rows["completion_tokens"] <= 4).all()
    assert (rows["latency_s"] > 0).all() and result.summary().loc["base", "wall_s"] > 0
    assert result.summary().loc["base", "cpu_s"] > 0  # the server's CPU time was measured

    one = ev.evaluate(client, _questions(4), [config], concurrency=1, progress=False)
    assert counter.peak == 4 and one.of("base")["error"].isna().all()
    assert local_server.health()["engine"]["batches"] - after["batches"] == 4  # one at a time


@pytest.mark.slow
def test_client_errors_are_recorded_not_retried(client):
    configs = [Config("missing", "no-such-model"), Config("too-long", MODEL, max_tokens=100_000)]
    with pytest.warns(UserWarning, match="requests failed"):
        result = ev.evaluate(client, _questions(2), configs, progress=False,
                             retry=RetryPolicy(initial=5.0))  # a retry would take 5 s
    assert result.results["attempts"].tolist() == [1, 1, 1, 1]
    assert result.of("missing")["error"].str.startswith("NotFoundError").all()
    assert result.of("too-long")["error"].str.contains("maximum context length").all()
    assert result.summary()["errors"].tolist() == [2, 2]


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory):
    """A second server whose first 3 chat requests answer 429 (FTKIT_FAULTS)."""
    pytest.importorskip("torch")
    from conftest import LocalServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_FAULTS", "chat=429:3")
        server = LocalServer(tmp_path_factory.mktemp("ftkit-faults")).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_rate_limits_are_retried_with_backoff(faulty_server):
    assert faulty_server.health()["faults"] == {"chat": {"status": 429, "remaining": 3}}
    raw = faulty_server.client().chat.completions.with_raw_response
    with pytest.raises(openai.RateLimitError) as err:  # what the API sends: OpenAI's envelope
        raw.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert err.value.code == "rate_limit_exceeded" and err.value.type == "requests"
    policy = RetryPolicy(initial=0.05, max_delay=0.5)
    result = ev.evaluate(faulty_server.client(), _questions(2), [Config("base", MODEL, max_tokens=3)],
                         concurrency=1, retry=policy, progress=False)
    rows = result.of("base")
    assert rows["error"].isna().all()
    assert rows["attempts"].tolist() == [3, 1]  # q0: two more 429s, then an answer; q1 first time
    assert result.summary().loc["base", "retries"] == 2
    assert faulty_server.health()["faults"]["chat"]["remaining"] == 0


def test_fault_spec_is_checked():
    from ftkit.local.api.middleware import Faults

    assert Faults("").left == {}
    assert Faults("chat=503:2").left == {"chat": [503, 2]}
    for bad in ("chat=429", "files=429:1", "chat=200:1", "chat=abc:1"):
        with pytest.raises(ValueError):
            Faults(bad)


@pytest.mark.slow
def test_batch_api_round_trip_matches_chat(client):
    questions = _questions(4)
    configs = [Config("short", MODEL, max_tokens=3), Config("shorter", MODEL, max_tokens=2)]
    via_batch = ev.evaluate(client, questions, configs, via="batch", poll_interval=0.3, progress=False)
    via_chat = ev.evaluate(client, questions, configs, progress=False)
    assert via_batch.via == "batch"
    for name in ("short", "shorter"):
        b, c = via_batch.of(name), via_chat.of(name)
        assert b["error"].isna().all()
        assert b["prediction"].tolist() == c["prediction"].tolist()  # custom_id mapped back in order
        assert b["prompt_tokens"].tolist() == c["prompt_tokens"].tolist()
        assert b["latency_s"].isna().all()  # batches report no per-request latency
    assert via_batch.runs["batch_id"].str.startswith("batch_").sum() == 2  # one batch per configuration
    batch = client.batches.retrieve(via_batch.runs["batch_id"].iloc[0])
    assert batch.metadata == {"ftkit": "evaluate", "config": "short"}
    lines = client.files.content(batch.input_file_id).text.splitlines()
    first = json.loads(lines[0])
    assert first["custom_id"] == "request-0" and first["url"] == "/v1/chat/completions"
    assert first["body"]["max_tokens"] == 3


@pytest.mark.slow
def test_sample_agreement(client):
    table = ev.sample_agreement(client, Config("base", MODEL, max_tokens=4), _questions(2), n=4, seed=1)
    assert list(table.index) == ["q0", "q1"]
    assert all(len(s) == 4 for s in table["samples"])
    assert ((table["agreement"] > 0) & (table["agreement"] <= 1)).all()
    again = ev.sample_agreement(client, Config("base", MODEL, max_tokens=4), _questions(2), n=4, seed=1)
    assert again["samples"].tolist() == table["samples"].tolist()  # seeded
    assert isinstance(table, pd.DataFrame)


def test_learning_curve_jobs_are_their_own_recipes():
    from ftkit import course

    for quick in (True, False):
        main = course.triage_settings(quick)
        points = course.learning_curve_settings(quick)
        sizes = [s.train_examples for s in points]
        assert sizes == list(course.LEARNING_CURVE_SIZES["quick" if quick else "full"])
        assert sizes == sorted(sizes) and sizes[-1] < len(main.training_examples())
        recipes = {s.recipe for s in points} | {main.recipe}
        assert len(recipes) == len(points) + 1  # each point is found again by its own metadata
        for s in points:
            assert s.training_examples() == main.training_examples()[: s.train_examples]  # nested subsets
        if not quick:
            assert all(s.metadata["lesson"] == "05" and s.validation_set() == [] for s in points)
    assert course.triage_settings(True).metadata["lesson"] == "04"
    # quick mode trains no job of its own for the curve: its one smaller point is notebook 04's
    # overfitting run, found again by that job's metadata (lesson 04), so CI trains it once
    assert course.learning_curve_settings(True) == [course.overfit_settings(True)]
    assert course.learning_curve_settings(True)[0].metadata == course.overfit_settings(True).metadata
    assert course.overfit_settings(True).metadata["lesson"] == "04"

"""ftkit.cost: the 2023 launch figures, the epochs heuristic, break-even parity, the calculator."""

from __future__ import annotations

import json
import math

import pytest

from ftkit import cost

LAUNCH = "2023-08-22"


def chat(user_text: str, answer: str, system: str = "Classify the ticket.") -> dict:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": answer},
        ]
    }


# -- the 2023 launch figures (OpenAI's GPT-3.5 Turbo fine-tuning post) ---------------------------


def test_seed_training_cost_is_240():
    seed = cost.training_cost("gpt-3.5-turbo", 100_000, n_epochs=3, on=LAUNCH)
    assert seed.snapshot == "gpt-3.5-turbo-0613"
    assert seed.billed_tokens == 300_000
    assert seed.usd == pytest.approx(2.40, abs=1e-12)
    assert f"${seed.usd:.2f}" == "$2.40"
    assert "$2.40" in str(seed) and "300,000 billed tokens" in str(seed)


def test_seed_price_ratio_is_8():
    assert cost.price_ratio("gpt-3.5-turbo", LAUNCH) == 8.0  # 12.00 / 1.50
    assert cost.price_ratio("gpt-3.5-turbo", LAUNCH, kind="output") == 8.0  # 16.00 / 2.00
    assert cost.price_ratio("gpt-3.5-turbo", "2024-03-01") == 6.0  # 3.00 / 0.50 after the cuts


def test_seed_parity_reduction_is_87_5_percent():
    be = cost.break_even(
        "gpt-3.5-turbo", base_prompt_tokens=1_000, ft_prompt_tokens=100, output_tokens=0,
        requests_per_month=100_000, on=LAUNCH,
    )
    assert be.parity_prompt_tokens == pytest.approx(125.0)
    assert be.parity_reduction == pytest.approx(0.875)  # 1 - 1/8: about the early testers' "up to 90%"
    assert be.input_price_ratio == 8.0
    assert be.cheaper == "fine-tuned"
    assert be.monthly_saving_usd == pytest.approx(150.0 - 120.0)


def test_output_tokens_raise_the_reduction_needed():
    be = cost.break_even(
        "gpt-3.5-turbo", base_prompt_tokens=1_000, ft_prompt_tokens=100, output_tokens=100, on=LAUNCH,
    )
    # base: 1000 x 1.5 + 100 x 2 = 1700; fine-tuned: 12 P + 100 x 16 = 12 P + 1600  (per 1M)
    assert be.parity_prompt_tokens == pytest.approx(100 / 12)
    assert be.parity_reduction == pytest.approx(1 - (100 / 12) / 1000)
    assert be.cheaper == "base"
    assert be.monthly_saving_usd == 0  # no requests given
    more = cost.break_even("gpt-3.5-turbo", base_prompt_tokens=100, ft_prompt_tokens=10, output_tokens=500, on=LAUNCH)
    assert more.parity_prompt_tokens is None and more.parity_reduction is None  # never as cheap


# -- epochs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_examples", "epochs"),
    [
        (1, 25),  # 100 // 1 = 100, capped at 25
        (3, 25),  # 100 // 3 = 33, capped at 25
        (4, 25),
        (5, 20),
        (10, 10),
        (20, 5),
        (33, 3),  # 99 passes < 100: 100 // 33 = 3
        (34, 3),  # 102 passes: the target
        (259, 3),
        (8_333, 3),  # 24,999 passes
        (8_334, 2),  # 25,002 > 25,000: 25,000 // 8,334 = 2
        (12_501, 1),
        (30_000, 1),  # 25,000 // 30,000 = 0, at least 1
        (10_000_000, 1),
    ],
)
def test_default_epochs(n_examples, epochs):
    assert cost.default_epochs(n_examples) == epochs


def test_default_epochs_keeps_passes_in_range_where_possible():
    for n in range(4, 30_000, 97):
        passes = n * cost.default_epochs(n)
        assert 1 <= cost.default_epochs(n) <= 25
        if 4 <= n <= 25_000:
            assert 99 <= passes <= 25_000 + n


@pytest.mark.parametrize("bad", [0, -1])
def test_default_epochs_rejects_empty_datasets(bad):
    with pytest.raises(ValueError, match=">= 1"):
        cost.default_epochs(bad)


def test_epochs_table_names_the_clamps():
    table = cost.epochs_table((3, 100, 30_000)).set_index("examples")
    assert table.loc[3, "epochs"] == 25 and "capped at 25" in table.loc[3, "rule"]
    assert table.loc[100, "rule"] == "target: 3 epochs"
    assert table.loc[30_000, "example_passes"] == 30_000


# -- training ----------------------------------------------------------------------------------


def test_training_cost_uses_the_heuristic_when_epochs_are_not_given():
    c = cost.training_cost("gpt-4.1-mini", 50_000, n_examples=10, on="2026-01-01")
    assert c.n_epochs == 10 and "API default" in c.epochs_from
    assert c.usd == pytest.approx(50_000 * 10 * 5.0 / 1e6)
    with pytest.raises(ValueError, match="n_epochs"):
        cost.training_cost("gpt-4.1-mini", 50_000)


def test_training_cost_per_hour_for_reinforcement_fine_tuning():
    c = cost.training_cost("o4-mini", hours=2.5, on="2025-06-01")
    assert c.usd == pytest.approx(250.0)
    with pytest.raises(ValueError, match="per training hour"):
        cost.training_cost("o4-mini", 100_000, n_epochs=3, on="2025-06-01")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": "gpt-9", "tokens": 1, "n_epochs": 1}, KeyError, "not in ftkit's catalog"),
        ({"model": "gpt-4.1", "tokens": -5, "n_epochs": 1}, ValueError, "tokens must be >= 0"),
        ({"model": "gpt-4.1", "tokens": 10, "n_epochs": 0}, ValueError, "n_epochs must be >= 1"),
        ({"model": "gpt-4.1", "tokens": 1.5, "n_epochs": 1}, TypeError, "whole number"),
        ({"model": "SmolLM2-135M-Instruct", "tokens": 10, "n_epochs": 1}, cost.NoPriceError, "CPU time"),
        ({"model": "o4-mini", "hours": -1.0}, ValueError, "hours must be"),
    ],
)
def test_training_cost_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        cost.training_cost(**kwargs)


def test_training_tokens_bills_truncated_examples_at_the_limit(tmp_path):
    path = tmp_path / "train.jsonl"
    long_text = "word " * 6_000  # well over gpt-3.5-turbo-0613's 4,096-token limit
    examples = [chat(f"ticket {i}", "billing") for i in range(11)] + [chat(long_text, "billing")]
    path.write_text("\n".join(json.dumps(e) for e in examples) + "\n", encoding="utf-8")

    tt = cost.training_tokens(path, "gpt-3.5-turbo", on=LAUNCH)
    report = tt.report
    totals = list(report.total_tokens)
    assert tt.n_examples == 12 and tt.truncated_examples == 1
    assert tt.max_example_tokens == 4096
    assert tt.raw_tokens_per_epoch == sum(totals)
    assert tt.tokens_per_epoch == sum(min(t, 4096) for t in totals) < tt.raw_tokens_per_epoch
    assert tt.n_epochs == 8  # 12 examples: 100 // 12
    assert tt.billed_tokens == tt.tokens_per_epoch * 8 == report.billed_tokens(8)

    later = cost.training_tokens(report, "gpt-3.5-turbo", on="2024-03-01", n_epochs=2)
    assert later.max_example_tokens == 16385 and later.truncated_examples == 0
    assert later.tokens_per_epoch == later.raw_tokens_per_epoch
    c = cost.training_cost("gpt-3.5-turbo", tt, on=LAUNCH)
    assert c.n_epochs == 8 and c.usd == pytest.approx(tt.billed_tokens * 8.0 / 1e6)


def test_training_tokens_for_the_local_model_needs_an_encoding():
    examples = [chat(f"ticket {i}", "ok") for i in range(10)]
    with pytest.raises(ValueError, match="no tiktoken encoding"):
        cost.training_tokens(examples, "SmolLM2-135M-Instruct")
    tt = cost.training_tokens(examples, "SmolLM2-135M-Instruct", encoding="o200k_base", n_epochs=1)
    assert tt.max_example_tokens == 2048 and tt.billed_tokens > 0


# -- inference and break-even ------------------------------------------------------------------


def test_inference_cost_splits_input_cached_and_output():
    c = cost.inference_cost("gpt-4.1-mini", 1_000, 100, cached_tokens=400, requests_per_month=1_000, on="2026-01-01")
    assert c.input_usd == pytest.approx(600 * 0.80 / 1e6)
    assert c.cached_usd == pytest.approx(400 * 0.20 / 1e6)
    assert c.output_usd == pytest.approx(100 * 3.20 / 1e6)
    assert c.per_month_usd == pytest.approx(1_000 * c.per_request_usd)
    base = cost.inference_cost("gpt-4.1-mini", 1_000, 100, fine_tuned=False, on="2026-01-01")
    assert base.per_request_usd == pytest.approx((1_000 * 0.40 + 100 * 1.60) / 1e6)
    # no prompt caching offered: cached tokens are billed at the full input price
    old = cost.inference_cost("gpt-3.5-turbo", 1_000, 0, cached_tokens=500, on=LAUNCH)
    assert old.per_request_usd == pytest.approx(1_000 * 12.0 / 1e6)
    with pytest.raises(ValueError, match="cannot exceed"):
        cost.inference_cost("gpt-4.1-mini", 10, 1, cached_tokens=11)


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-nano", "davinci-002"])
@pytest.mark.parametrize("output", [0, 25, 150])
def test_costs_are_equal_at_the_parity_prompt_length(model, output):
    on = "2025-06-01"
    be = cost.break_even(model, base_prompt_tokens=2_000, ft_prompt_tokens=0, output_tokens=output, on=on)
    assert be.parity_prompt_tokens is not None
    ft_at_parity = (
        be.parity_prompt_tokens * be.fine_tuned.input_usd_per_1m + output * be.fine_tuned.output_usd_per_1m
    ) / 1e6
    assert ft_at_parity == pytest.approx(be.base.per_request_usd, rel=1e-12)
    # and a whole-token prompt on each side of parity falls on the right side of the line
    below = cost.break_even(model, base_prompt_tokens=2_000, ft_prompt_tokens=math.floor(be.parity_prompt_tokens) - 1,
                            output_tokens=output, on=on)
    above = cost.break_even(model, base_prompt_tokens=2_000, ft_prompt_tokens=math.ceil(be.parity_prompt_tokens) + 1,
                            output_tokens=output, on=on)
    assert below.cheaper == "fine-tuned" and above.cheaper == "base"


def test_parity_with_cached_tokens():
    be = cost.break_even(
        "gpt-4.1-mini", base_prompt_tokens=3_000, ft_prompt_tokens=500, ft_cached_tokens=200, output_tokens=50,
        on="2026-01-01",
    )
    p = be.parity_prompt_tokens
    ft_at_parity = ((p - 200) * 0.80 + 200 * 0.20 + 50 * 3.20) / 1e6
    assert ft_at_parity == pytest.approx(be.base.per_request_usd)


def test_payback_months():
    be = cost.break_even(
        "gpt-4.1-mini", base_prompt_tokens=1_200, ft_prompt_tokens=150, output_tokens=30,
        requests_per_month=100_000, training=3.12, on="2026-01-01",
    )
    # base 1200 x 0.40 + 30 x 1.60 = 528; fine-tuned 150 x 0.80 + 30 x 3.20 = 216 (per 1M, per request)
    assert be.monthly_saving_usd == pytest.approx(100_000 * (528 - 216) / 1e6)  # $31.20
    assert be.payback_months == pytest.approx(0.1)
    assert be.actual_reduction == pytest.approx(0.875)
    frame = be.to_frame()
    assert frame.loc["cheaper", "base model"] == "fine-tuned"
    never = cost.break_even("gpt-4.1-mini", base_prompt_tokens=100, ft_prompt_tokens=100, output_tokens=30,
                            requests_per_month=1_000, training=5.0, on="2026-01-01")
    assert never.cheaper == "base" and math.isinf(never.payback_months)
    assert cost.break_even("gpt-4.1-mini", base_prompt_tokens=100, ft_prompt_tokens=50, output_tokens=0,
                           on="2026-01-01").payback_months is None  # no training cost given


def test_break_even_against_another_base_model():
    be = cost.break_even("gpt-4.1-nano", base_model="gpt-4.1", base_prompt_tokens=1_000, ft_prompt_tokens=1_000,
                         output_tokens=100, on="2025-06-01")
    assert be.base.snapshot == "gpt-4.1-2025-04-14" and be.fine_tuned.snapshot == "gpt-4.1-nano-2025-04-14"
    assert be.cheaper == "fine-tuned"  # a fine-tuned nano is cheaper than base gpt-4.1 even at equal prompts


def test_compare_models_skips_per_hour_models_and_reports_status():
    table = cost.compare_models(
        tokens_per_epoch=20_000, n_examples=259, base_prompt_tokens=700, ft_prompt_tokens=70, output_tokens=20,
        requests_per_month=100_000, on="2026-11-21",
    ).set_index("model")
    assert "o4-mini" not in table.index
    # a chat file cannot train the completion-only models: left out unless asked for
    assert "babbage-002" not in table.index and "davinci-002" not in table.index
    assert "gpt-4.1-mini" in table.index
    with_completion = cost.compare_models(
        tokens_per_epoch=20_000, n_examples=259, base_prompt_tokens=700, ft_prompt_tokens=70, output_tokens=20,
        requests_per_month=100_000, on="2026-11-21", include_completion_models=True,
    ).set_index("model")
    assert {"babbage-002", "davinci-002"} <= set(with_completion.index)
    assert table.loc["gpt-4.1-nano", "status"] == "shut_down"
    assert table.loc["gpt-4.1-mini", "training_usd"] == pytest.approx(20_000 * 3 * 5.0 / 1e6)
    assert table.loc["gpt-4.1-mini", "parity_reduction_pct"] == pytest.approx(
        100 * (1 - ((700 * 0.40 + 20 * 1.60) - 20 * 3.20) / 0.80 / 700), abs=0.05
    )


def test_request_tokens_swaps_the_system_prompt_and_adds_few_shot_examples():
    examples = [chat("My invoice is wrong", '{"category": "billing"}', system="Short.")] * 4
    short = cost.request_tokens(examples, "gpt-4.1-mini")
    longer = cost.request_tokens(examples, "gpt-4.1-mini", system="A much longer set of instructions " * 20)
    shots = [{"role": "user", "content": "Example ticket"}, {"role": "assistant", "content": "billing"}]
    with_shots = cost.request_tokens(examples, "gpt-4.1-mini", system="Short.", few_shot=shots)
    assert short.n_requests == 4
    assert longer.prompt_tokens > short.prompt_tokens + 100
    assert with_shots.prompt_tokens > short.prompt_tokens
    assert short.output_tokens == longer.output_tokens == with_shots.output_tokens > 0


# -- local backend -----------------------------------------------------------------------------


def test_local_run_cost_is_cpu_time():
    run = cost.local_run_cost(cpu_seconds=120.0, wall_seconds=60.0, trained_tokens=24_000)
    assert run.cpu_seconds_per_1k_tokens == pytest.approx(5.0)
    assert run.tokens_per_second == pytest.approx(400.0)
    assert run.parallelism == pytest.approx(2.0)
    assert run.usd is None
    assert cost.local_run_cost(3600, 1800, 10, usd_per_cpu_hour=0.05).usd == pytest.approx(0.05)
    with pytest.raises(ValueError):
        cost.local_run_cost(-1, 1, 1)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _FakeJobs:
    def __init__(self, status="succeeded"):
        self.status = status

    def retrieve(self, job_id):
        return _Obj(id=job_id, status=self.status, trained_tokens=999)

    def list_events(self, job_id, limit=100):
        return _Obj(data=[
            _Obj(message=cost.COMPLETED_MESSAGE, data={"wall_seconds": 30.0, "cpu_seconds": 55.5, "trained_tokens": 1234}),
            _Obj(message="Step 10/10: training loss=0.5", data={"step": 10}),
        ])


def test_local_run_cost_from_job_reads_the_completion_event():
    client = _Obj(fine_tuning=_Obj(jobs=_FakeJobs()))
    run = cost.local_run_cost_from_job(client, "ftjob-1")
    assert (run.cpu_seconds, run.wall_seconds, run.trained_tokens) == (55.5, 30.0, 1234)
    running = _Obj(fine_tuning=_Obj(jobs=_FakeJobs("running")))
    with pytest.raises(ValueError, match="not 'succeeded'"):
        cost.local_run_cost_from_job(running, "ftjob-1")


# -- plots and calculator ----------------------------------------------------------------------


def test_plots_return_figures_with_the_parity_point():
    fig = cost.plot_break_even("gpt-3.5-turbo", base_prompt_tokens=1_000, output_tokens=0, requests_per_month=1_000,
                               ft_prompt_tokens=100, on=LAUNCH)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert any("parity: 125 tokens" in t and "87.5%" in t for t in texts)
    parity_points = [line for line in ax.lines if list(line.get_xdata()) == [125.0]]
    assert parity_points and parity_points[0].get_ydata()[0] == pytest.approx(1_000 * 1_000 * 1.5 / 1e6)
    assert len(cost.plot_training_cost(100_000, on="2026-01-01").axes) == 2
    history = cost.plot_price_history(until="2026-11-21")
    labels = {line.get_label() for line in history.axes[1].lines}
    assert {"gpt-3.5-turbo", "gpt-4.1-mini"} <= labels


def test_calculator_builds_and_reacts_to_the_requests_slider():
    calc = cost.calculator("gpt-4.1-mini", on="2026-01-01", dataset_tokens=100_000, n_epochs=3,
                           requests_per_month=100_000, base_prompt_tokens=1_200, ft_prompt_tokens=150, output_tokens=30)
    assert cost.Calculator.REQUESTS_CLASS in calc.requests_per_month._dom_classes
    assert cost.Calculator.RESULT_CLASS in calc.result._dom_classes
    assert calc.requests_per_month.description == "Monthly requests"
    assert calc.requests_per_month.continuous_update is False
    before = calc.result.value
    assert "$52.80" in before and "$1.50" in before  # base per month; training 300K x $5/1M
    assert len(calc.plot.outputs) == 1 and "image/png" in calc.plot.outputs[0]["data"]

    calc.requests_per_month.value = 200_000  # the observer calls update()
    after = calc.result.value
    assert after != before and "$105.60" in after
    updates = calc.updates
    calc.update()  # and calling the callback directly recomputes too
    assert calc.updates == updates + 1 and calc.result.value == after

    calc.on.value = calc.on.value.replace(year=2027, month=2)
    assert "SHUT DOWN" in calc.result.value
    calc.model.value = "o4-mini"
    calc.on.value = calc.on.value.replace(year=2025, month=6)
    assert "$100.00" in calc.result.value  # one RFT hour


def test_calculator_static_copy_for_exported_html():
    calc = cost.calculator(on="2026-01-01")
    html = calc.snapshot_html()
    assert "ftkit-calc-static" in html and "data:image/png;base64," in html and "$52.80" in html
    with pytest.raises(cost.NoPriceError):
        cost.calculator("SmolLM2-135M-Instruct")

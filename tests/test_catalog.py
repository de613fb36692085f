"""The dated catalog: price periods by date, availability (platform cut-offs, shutdowns), lookups."""

from __future__ import annotations

import datetime as dt

import pytest

from ftkit import catalog


def test_every_price_row_is_consistent():
    rows = catalog.entries()
    assert len(rows) >= 15
    for e in rows:
        assert e.source, f"{e.snapshot} has no source"
        if e.backend == "local":
            assert not e.priced  # the local backend has no price: its cost is CPU time
            continue
        assert e.priced, e.snapshot
        # exactly one way of billing training: per token or per hour
        assert (e.training_usd_per_1m is None) != (e.training_usd_per_hour is None), e.snapshot
        assert e.ft_input_usd_per_1m > 0 and e.ft_output_usd_per_1m > 0
        assert e.base_input_usd_per_1m > 0 and e.base_output_usd_per_1m > 0
        if e.ft_cached_input_usd_per_1m is not None:
            assert e.ft_cached_input_usd_per_1m < e.ft_input_usd_per_1m
        for later in (e.training_ends, e.base_shutdown, e.shutdown):
            assert later is None or later > e.valid_from, e.snapshot
        if e.shutdown and e.training_ends:
            assert e.training_ends <= e.shutdown
        if not e.confirmed:
            assert "nconfirmed" in e.notes or "not confirmed" in e.notes or "not published" in e.notes, e.snapshot


def test_launch_prices_of_gpt_35_turbo():
    e = catalog.lookup("gpt-3.5-turbo", on="2023-08-22")
    assert e.snapshot == "gpt-3.5-turbo-0613"
    assert (e.training_usd_per_1m, e.ft_input_usd_per_1m, e.ft_output_usd_per_1m) == (8.0, 12.0, 16.0)
    assert (e.base_input_usd_per_1m, e.base_output_usd_per_1m) == (1.5, 2.0)
    assert e.max_example_tokens == 4096
    assert e.confirmed


@pytest.mark.parametrize(
    ("model", "on", "snapshot", "ft_input"),
    [
        ("gpt-3.5-turbo", "2023-11-05", "gpt-3.5-turbo-0613", 12.0),  # the day before DevDay
        ("gpt-3.5-turbo", "2023-11-06", "gpt-3.5-turbo-1106", 3.0),  # DevDay price cut
        ("gpt-3.5-turbo-0613", "2023-12-01", "gpt-3.5-turbo-0613", 3.0),  # the cut applied to 0613 too
        ("gpt-3.5-turbo", "2024-02-01", "gpt-3.5-turbo-0125", 3.0),
        ("ft:gpt-3.5-turbo-0613:acme::abc123", "2023-09-01", "gpt-3.5-turbo-0613", 12.0),
        ("gpt-4o-mini", "2026-11-21", "gpt-4o-mini-2024-07-18", 0.30),
    ],
)
def test_lookup_finds_the_price_period_in_force(model, on, snapshot, ft_input):
    e = catalog.lookup(model, on=on)
    assert e.snapshot == snapshot
    assert e.ft_input_usd_per_1m == ft_input


def test_cached_prices_start_with_prompt_caching():
    assert catalog.lookup("gpt-4o-mini", on="2024-09-30").ft_cached_input_usd_per_1m is None
    assert catalog.lookup("gpt-4o-mini", on="2024-10-01").ft_cached_input_usd_per_1m == 0.15
    assert catalog.lookup("gpt-4o", on=dt.date(2025, 1, 1)).base_cached_input_usd_per_1m == 1.25


def test_unlisted_snapshot_matches_its_family_and_unknown_model_is_an_error():
    assert catalog.lookup("gpt-4o-mini-2099-01-01").model == "gpt-4o-mini"  # not "gpt-4o"
    with pytest.raises(catalog.UnknownCatalogModel, match="not in ftkit's catalog"):
        catalog.lookup("gpt-9-turbo")
    with pytest.raises(catalog.UnknownCatalogModel):
        catalog.lookup("")
    with pytest.raises(ValueError, match="not a date"):
        catalog.lookup("gpt-4o", on="next tuesday")


def test_max_example_tokens_still_serves_the_validator():
    assert catalog.max_example_tokens("gpt-4o-mini-2024-07-18") == 65536
    assert catalog.max_example_tokens("SmolLM2-135M-Instruct") == 2048
    assert catalog.max_example_tokens("babbage-002") is None  # not published: no limit applied


def test_platform_events_are_the_wind_down_dates():
    events = catalog.platform_events("openai")
    assert [(e.date.isoformat(), e.status) for e in events] == [
        ("2026-05-07", "restricted"),
        ("2026-07-02", "restricted"),
        ("2027-01-06", "closed"),
    ]
    assert "60 days" in events[1].rule


@pytest.mark.parametrize(
    ("model", "on", "status", "can_train", "can_use"),
    [
        ("gpt-4.1-mini", "2025-06-01", "available", True, True),
        ("gpt-4.1-mini", "2026-05-07", "restricted", None, True),  # first day of the wind-down
        ("gpt-4.1-mini", "2026-11-21", "restricted", None, True),
        ("gpt-4.1-mini", "2027-01-05", "restricted", None, True),
        ("gpt-4.1-mini", "2027-01-06", "training_closed", False, True),  # no new jobs for anyone
        ("gpt-4.1-mini", "2027-01-14", "shut_down", False, False),
        ("gpt-4.1-nano", "2026-10-22", "restricted", None, True),
        ("gpt-4.1-nano", "2026-10-23", "shut_down", False, False),
        ("gpt-4.1-mini", "2024-01-01", "not_yet", False, False),
        ("babbage-002", "2024-10-28", "training_closed", False, True),
        ("gpt-3.5-turbo-0613", "2025-01-01", "training_closed", False, True),
        ("SmolLM2-135M-Instruct", "2030-01-01", "available", True, True),
    ],
)
def test_availability_on_a_date(model, on, status, can_train, can_use):
    a = catalog.availability(model, on=on)
    assert (a.status, a.can_train, a.can_use_fine_tuned) == (status, can_train, can_use)
    assert a.reason
    assert a.ok == (status == "available")


def test_availability_explains_and_lists_what_comes_next():
    a = catalog.availability("gpt-4o-mini", on="2026-11-21")
    assert "60 days" in a.reason
    assert [d.isoformat() for d, _ in a.upcoming] == ["2027-01-06", "2027-01-14"]
    text = str(a)
    assert "RESTRICTED" in text and "in 46 days" in text and "in 54 days" in text
    shut = catalog.availability("o4-mini", on="2026-11-21")
    assert "2026-10-23" in shut.reason and shut.upcoming == ()
    old = catalog.availability("gpt-3.5-turbo-0613", on="2025-01-01")
    assert "2024-09-13" in old.reason and "base model itself was shut down" in old.reason


def test_availability_table_and_timeline():
    table = catalog.availability_table("2026-11-21").set_index("model")
    assert table.loc["gpt-4.1-nano", "status"] == "shut_down"
    assert table.loc["gpt-4.1", "status"] == "restricted"
    assert table.loc["gpt-4.1", "next_date"] == dt.date(2027, 1, 6)
    assert table.loc["SmolLM2-135M-Instruct", "status"] == "available"
    events = catalog.timeline("gpt-4.1-mini")
    assert list(events["date"]) == sorted(events["date"])
    assert {"platform: closed", "fine-tuned models shut down"} <= set(events["event"])


def test_models_lists_priced_models_oldest_first():
    priced = catalog.models(priced=True)
    assert priced[0] in ("babbage-002", "davinci-002", "gpt-3.5-turbo")
    assert "SmolLM2-135M-Instruct" not in priced
    assert "SmolLM2-135M-Instruct" in catalog.models()
    assert priced.index("gpt-4o-mini") < priced.index("gpt-4.1-mini")


@pytest.mark.parametrize(
    ("model", "on", "status", "can_use", "stops"),
    [
        # fine-tunes of gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini answer until their base shuts down
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "2027-01-05", "restricted", True, "2027-01-14"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "2027-01-06", "training_closed", True, "2027-01-14"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "2027-01-13", "training_closed", True, "2027-01-14"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "2027-01-14", "shut_down", False, "2027-01-14"),
        ("ft:gpt-4o-2024-08-06:acme:triage:xyz", "2027-01-14", "shut_down", False, "2027-01-14"),
        ("ft:gpt-4.1-2025-04-14:acme::q1", "2027-01-13", "training_closed", True, "2027-01-14"),
        ("ft:gpt-4.1-mini-2025-04-14:acme::q1:ckpt-step-30", "2027-01-14", "shut_down", False, "2027-01-14"),
        # o4-mini (reinforcement fine-tuning) and gpt-4.1-nano went earlier
        ("ft:o4-mini-2025-04-16:acme::rft1", "2026-10-22", "restricted", True, "2026-10-23"),
        ("ft:o4-mini-2025-04-16:acme::rft1", "2026-10-23", "shut_down", False, "2026-10-23"),
        ("ft:gpt-4.1-nano-2025-04-14:acme::n1", "2026-10-23", "shut_down", False, "2026-10-23"),
    ],
)
def test_availability_of_a_fine_tuned_model_follows_its_base(model, on, status, can_use, stops):
    a = catalog.availability(model, on=on)
    assert (a.status, a.can_use_fine_tuned) == (status, can_use)
    assert a.fine_tuned_model == model
    assert a.stops_answering == dt.date.fromisoformat(stops)
    assert model in a.reason and model in str(a)
    if can_use:
        assert f"stops answering on {stops}" in a.reason
    else:
        assert "no longer answers" in a.reason


def test_no_new_hosted_jobs_from_2027_01_06_for_any_model():
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"):
        assert catalog.availability(model, on="2027-01-05").can_train is None  # restricted: depends on you
        a = catalog.availability(model, on="2027-01-06")
        assert (a.status, a.can_train, a.can_use_fine_tuned) == ("training_closed", False, True)
        assert catalog.availability(model, on="2027-01-14").status == "shut_down"
    local = catalog.availability("ft:SmolLM2-135M-Instruct:local:triage:ab12cd34", on="2030-01-01")
    assert (local.status, local.stops_answering) == ("available", None)


def test_deadlines_say_when_to_act():
    table = catalog.deadlines("2026-11-27").set_index("model")
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"):
        assert table.loc[model, "new_jobs_end"] == dt.date(2027, 1, 6)
        assert table.loc[model, "fine_tunes_stop_answering"] == dt.date(2027, 1, 14)
        assert table.loc[model, "days_left"] == 48
    for model in ("o4-mini", "gpt-4.1-nano"):
        assert table.loc[model, "fine_tunes_stop_answering"] == dt.date(2026, 10, 23)
        assert table.loc[model, "days_left"] == 0 and table.loc[model, "status"] == "shut_down"
    assert "SmolLM2-135M-Instruct" not in table.index
    assert list(table["fine_tunes_stop_answering"]) == sorted(table["fine_tunes_stop_answering"])

"""ftkit.preference: the house-style rule notebook 06 measures with, its scorer and its statistics."""

from __future__ import annotations

import pytest

from ftkit import evaluate
from ftkit.evaluate import wilson_interval
from ftkit.preference import (
    MAX_WORDS,
    SIGN_OFF,
    check_house_style,
    greeted_name,
    house_style_scorer,
    invented_details,
)

GOOD = f"Hi Maya, the Hub lost its internet connection. Please restart your router, then the Hub.\n{SIGN_OFF}"


def test_a_house_style_answer_passes_every_check():
    check = check_house_style(GOOD, "Maya")
    assert check.ok and check.failed == () and check.words == 19 and check.shorthand == ()
    assert check_house_style(GOOD.replace("Hi Maya", "Hello maya"), "Maya").ok  # greeting word and case
    assert check_house_style(GOOD + "\n\n", "Maya").ok  # trailing blank lines are not a last line


@pytest.mark.parametrize(("answer", "failed"), [
    (GOOD.replace("Hi Maya, the", "The"), ("greets_by_name",)),
    (GOOD.replace("Hi Maya,", "Dear customer,"), ("greets_by_name",)),
    (GOOD.replace("Maya", "Mayank"), ("greets_by_name",)),  # a longer name is not the name
    (GOOD.replace("Hi Maya", "Hi Chloe"), ("greets_by_name",)),
    (GOOD.replace(f"\n{SIGN_OFF}", ""), ("signs_off",)),
    (GOOD.replace(SIGN_OFF, "Best regards,\nSupport"), ("signs_off",)),
    (GOOD.replace(SIGN_OFF, "- The Lumenhive team"), ("signs_off",)),  # a hyphen is not the dash
    (GOOD.replace(SIGN_OFF, f"{SIGN_OFF}\nP.S. see you"), ("signs_off",)),
    (GOOD.replace("Please restart", "pls restart"), ("plain_words",)),
    (GOOD.replace("restart your router", "check router w/ cable"), ("plain_words",)),
    (GOOD.replace("the Hub.", "the Hub within 1h."), ("plain_words",)),
    ("refund processed. 5-7 business days. ticket closed.", ("greets_by_name", "signs_off")),
])
def test_each_way_of_breaking_the_style_is_caught(answer, failed):
    check = check_house_style(answer, "Maya")
    assert not check.ok and check.failed == failed


def test_word_limit_is_strictly_under_80():
    body = " ".join(["word"] * (MAX_WORDS - 6))  # 2 greeting words + body + 4 sign-off words
    exactly_80 = f"Hi Maya, {body}\n{SIGN_OFF}"
    check = check_house_style(exactly_80, "Maya")
    assert check.words == MAX_WORDS and check.failed == ("under_max_words",)
    shorter = exactly_80.replace("word ", "", 1)
    assert check_house_style(shorter, "Maya").words == MAX_WORDS - 1 and check_house_style(shorter, "Maya").ok


def test_plain_words_do_not_trip_the_shorthand_list():
    text = (f"Hi Maya, your subscription renews in 5 days. The sub-menu is under Settings, and info about "
            f"it is on our website; I'd check the d-pad too.\n{SIGN_OFF}")
    assert check_house_style(text, "Maya").plain_words


def test_without_a_name_the_greeting_is_not_judged_and_none_is_never_ok():
    nameless = check_house_style(GOOD.replace("Maya", "Chloe"))
    assert nameless.greets_by_name is None and nameless.ok
    assert not check_house_style(None, "Maya").ok and not check_house_style("", None).ok
    assert greeted_name(GOOD) == "Maya" and greeted_name("Thanks, Maya") is None and greeted_name(None) is None


def test_invented_details_are_numbers_the_prompt_does_not_have():
    prompt = "refund LH-482913 processed. 5-7 business days."
    answer = "Hi Ana, your refund of $14.99 for LH-482913 arrives in 5 to 7 days, by 12 May (ticket 90210)."
    assert invented_details(answer, prompt) == ["$14.99", "12", "90210"]
    assert invented_details("Hi Ana, order LH-111111 is late.", prompt) == ["LH-111111"]
    assert invented_details("Hi Ana, it takes 5 to 7 days.", prompt) == [] and invented_details(None, prompt) == []


def test_scorer_columns_through_evaluate_score():
    examples = [
        {"customer": "Maya", "messages": [{"role": "user", "content": "Rewrite this reply to Maya: wait 3 days"},
                                          {"role": "assistant", "content": GOOD}]},
        {"customer": None, "messages": [{"role": "user", "content": "Rewrite this reply: refund sent"},
                                        {"role": "assistant", "content": "reference"}]},
    ]
    answers = [GOOD, f"Hi Chloe, your refund of $20 is on its way.\n{SIGN_OFF}"]
    scored = evaluate.score(answers, [evaluate.reference_of(ex) for ex in examples], examples,
                            scorers=[house_style_scorer])
    first, second = scored.iloc[0], scored.iloc[1]
    assert first["house_style"] and first["greets_by_name"] and not first["invents_name"]
    assert not first["invented_details"]  # "3" is not in the answer; nothing made up
    assert second["house_style"] and second["greets_by_name"] is None  # no name to check against
    assert second["invents_name"] and second["invented_details"]  # "Chloe" and "$20" come from nowhere


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(7, 10)
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)  # Wilson (1927), 95%
    assert wilson_interval(0, 20)[0] == 0.0 and 0.16 < wilson_interval(0, 20)[1] < 0.17
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    assert wilson_interval(5, 10, confidence=0.99)[0] < wilson_interval(5, 10)[0]


def test_paired_shift_counts_flips_and_tests_them():
    from ftkit.evaluate import paired_shift

    before = [False] * 10 + [True] * 4 + [True, False]
    after = [True] * 9 + [False] + [True] * 4 + [False, False]
    shift = paired_shift(before, after)
    assert shift["n"] == 16 and (shift["gained"], shift["lost"]) == (9, 1)
    assert shift["before"] == 5 / 16 and shift["after"] == 13 / 16
    assert shift["mcnemar_p"] == evaluate.mcnemar_p(9, 1) and round(shift["mcnemar_p"], 4) == 0.0215
    assert shift["after_low"] < 13 / 16 < shift["after_high"]
    assert paired_shift([True, False], [True, False])["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="pair them"):
        paired_shift([True], [True, False])


def test_find_job_reuses_only_a_matching_job_whose_model_still_exists():
    import types

    import httpx
    import openai
    from openai.types.fine_tuning import FineTuningJob

    from ftkit.jobs import find_job
    from ftkit.preference import TONE_SETTINGS

    meta = TONE_SETTINGS["quick"].metadata("dpo")

    def job(id_, status, model="ft:sft", metadata=meta, ft="ft:dpo"):
        return FineTuningJob.construct(id=id_, status=status, model=model, metadata=metadata,
                                       fine_tuned_model=ft if status == "succeeded" else None)

    listed = [job("new-other-settings", "succeeded", metadata={**meta, "recipe": "other"}),
              job("new-other-start", "succeeded", model="ft:another-sft"),
              job("deleted-model", "succeeded", ft="ft:gone"),
              job("running", "running"),
              job("old-good", "succeeded")]

    def retrieve(model):
        if model == "ft:gone":
            request = httpx.Request("GET", "http://x/v1/models/ft:gone")
            raise openai.NotFoundError("gone", response=httpx.Response(404, request=request), body=None)
        return types.SimpleNamespace(id=model)

    client = types.SimpleNamespace(
        fine_tuning=types.SimpleNamespace(jobs=types.SimpleNamespace(list=lambda **kw: iter(listed))),
        models=types.SimpleNamespace(retrieve=retrieve))
    assert find_job(client, meta, model="ft:sft").id == "old-good"
    listed.pop()  # without a finished one, the job under way is the answer
    assert find_job(client, meta, model="ft:sft").id == "running"
    listed.pop()
    assert find_job(client, meta, model="ft:sft") is None
    assert TONE_SETTINGS["quick"].recipe("dpo") != TONE_SETTINGS["full"].recipe("dpo")
    assert TONE_SETTINGS["quick"].recipe("supervised") != TONE_SETTINGS["quick"].recipe("dpo")

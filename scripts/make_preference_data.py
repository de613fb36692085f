"""Make the house-style preference data of notebook 06: DPO pairs and held-out drafts.

    python scripts/make_preference_data.py            # rewrite the files in data/tone/
    python scripts/make_preference_data.py --out DIR  # write somewhere else (the tests compare the two)

Writes, from a fixed seed, for Lumenhive's house style (the same goal and system prompt as
data/tone/train.jsonl, made by scripts/make_data.py):

* tone/preference_train.jsonl       DPO pairs: a terse support draft to rewrite for a named
                                    customer; preferred = the house style, non-preferred = the
                                    same reply breaking it in a realistic way
* tone/preference_validation.jsonl  the same, on other situations
* tone/test.jsonl                   HELD-OUT drafts: situations and customer names that appear in no
                                    training file, with a house-style reference answer
* README.md                         appends its data card section to the card make_data.py wrote
                                    (or replaces it when present), so run this after make_data.py

Every pair is checked here: the preferred answer passes ftkit.preference.check_house_style and
the non-preferred one fails it (except the "no next step" pairs, which the automatic rule cannot
see -- notebook 06 shows them), and every file passes ftkit.data.validate. Synthetic, CC0.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

from ftkit import data as ftd
from ftkit.preference import HOUSE_STYLE_SYSTEM, SIGN_OFF, check_house_style

SEED = 20261127
CHECK_MODEL = "gpt-4o-mini-2024-07-18"

# (key, customer situation (for the multi-turn prompt), terse draft, what happened in plain
# words, one next step). The reply is "Hi {first}, {what} {step}" and the sign-off. Facts stay
# within the draft: a style is not a source of facts.
TRAIN_SCENARIOS = [
    ("sensor-battery", "asked why their motion sensor battery drains so fast",
     "batt drain known w/ 30s polling. set polling to 5 min.",
     "the battery drains fast because the sensor checks in every 30 seconds, which wakes it up all the time.",
     "Set it to check in every 5 minutes in the sensor's settings and the battery will last much longer."),
    ("second-user", "could not add a second person to their account",
     "multi-user = Family plan only. upgrade req.",
     "adding a second person to one account needs the Family plan, and your current plan covers one person.",
     "If you'd like to switch, open Billing in the app and choose Family."),
    ("chime-silent", "reported that the doorbell chime stays silent",
     "chime needs 16V transformer. check wiring pls.",
     "a silent chime usually means the doorbell isn't getting enough power: it needs a 16-volt transformer.",
     "Could you check which transformer is wired in and send us a photo of its label?"),
    ("offline-hub", "asked whether the Hub works without internet",
     "local mode runs automations offline. no remote access/notifs.",
     "yes, the Hub keeps running your automations when the internet is down. You just won't be able to "
     "control things from outside the house or get alerts until it's back.",
     "Nothing to set up: this happens on its own."),
    ("card-declined", "got an error when updating their card",
     "card declined by issuer. retry or use diff card.",
     "your bank declined the card, so the update didn't go through. Nothing was charged.",
     "Please try again, or add a different card under Billing in the app."),
    ("company-invoice", "asked for an invoice with their company name on it",
     "company name editable in billing > details. regen invoice after.",
     "you can add your company name yourself, and new invoices will show it.",
     "Open Billing, choose Details, enter the name, then download the invoice again."),
    ("plug-clicking", "reported a smart plug that keeps clicking on and off",
     "relay cycling = overload. max 10A. pls unplug heater.",
     "the clicking means the plug is switching itself off to protect itself: the heater draws more than "
     "the 10 amps it can carry.",
     "Please plug the heater straight into the wall socket instead."),
    ("camera-retention", "asked how long the camera keeps recordings",
     "retention 30d on Pro, 7d on Basic. export to keep.",
     "recordings are kept for 30 days on the Pro plan and 7 days on Basic, then deleted.",
     "To keep a clip for longer, open it in the app and tap Export."),
    ("change-email", "wants to change the email address on their account",
     "email change in acct settings. verify via link sent to new addr.",
     "you can change the address yourself in the app's account settings.",
     "After you save it, click the link we send to the new address to confirm it."),
    ("daily-logout", "asked why the app logs them out every day",
     "session expiry bug in app 5.2. fixed in 5.3. pls update.",
     "version 5.2 of the app has a bug that signs people out every day, and version 5.3 fixes it.",
     "Please update the app from your app store and you'll stay signed in."),
    ("sensor-warranty", "asked about the warranty on a broken door sensor",
     "2yr warranty. send serial + photo. RMA issued after.",
     "your door sensor is covered by our two-year warranty.",
     "Reply with its serial number and a photo of the sensor, and we'll arrange the replacement."),
    ("double-webhooks", "reported webhooks arriving twice",
     "webhooks at-least-once. dedupe on event id.",
     "our webhooks can be sent more than once, so an occasional duplicate is expected.",
     "Check each event's id and skip any id you have already handled."),
    ("annual-refund", "asked for a refund on an annual plan they never used",
     "annual refundable within 30d. processed. 5-10d.",
     "annual plans can be refunded within 30 days, so we've sent your refund. It can take 5 to 10 days "
     "to reach your account.",
     "If it hasn't arrived by then, just reply to this email."),
    ("pairing-sensor", "could not pair a new door sensor",
     "pairing mode = hold btn 5s till LED blinks blue. keep <3m from hub.",
     "the sensor needs to be in pairing mode and close to the Hub.",
     "Hold its button for five seconds until the light blinks blue, within three metres of the Hub."),
    ("data-selling", "asked whether Lumenhive sells their data",
     "no data sold. see privacy policy sec 4.",
     "no, we never sell your data, to anyone.",
     "Section 4 of our privacy policy explains what we keep and why, if you'd like the details."),
    ("router-change", "reported a camera that went offline after they changed their router",
     "new SSID = re-add cam to wifi. settings > camera > wifi.",
     "the camera is still looking for your old Wi-Fi network.",
     "In the app, open the camera's settings, choose Wi-Fi and connect it to the new network."),
]
VALIDATION_SCENARIOS = [
    ("pause-subscription", "asked to pause their subscription while travelling",
     "pause avail up to 3 mo. done. auto-resumes after.",
     "we've paused your subscription. It can stay paused for up to three months and then starts again "
     "by itself.",
     "If you're back sooner, you can restart it any time from Billing."),
    ("api-401", "asked why an API call returns 401",
     "401 = invalid/expired token. tokens expire 24h. refresh.",
     "a 401 error means the access token was refused, usually because it expired: tokens last 24 hours.",
     "Request a fresh token before each day's calls and the error will stop."),
    ("wrong-colour", "received a doorbell in the wrong colour",
     "wrong item sent. return label emailed. replacement ships on rcpt.",
     "sorry, we sent the wrong colour. We've emailed you a return label.",
     "Once the parcel reaches us, we'll ship the right doorbell straight away."),
    ("share-camera", "asked how to share camera access with a neighbour",
     "guest access via app > camera > share. guest needs acct.",
     "you can give your neighbour guest access to the camera.",
     "They'll need a free Lumenhive account first; then open the camera in the app and tap Share."),
]
# Never in any training file: the measured shift is on these.
TEST_SCENARIOS = [
    ("hub-red-light", "reported that the Hub's light is flashing red",
     "red flash = no internet. check router/cable pls. reboot hub.",
     "a flashing red light means the Hub can't reach the internet.",
     "Please check that the cable to your router is plugged in, then restart the Hub."),
    ("loyalty-discount", "asked for a discount as a long-time customer",
     "no loyalty discounts atm. annual plan = 2 months free.",
     "we don't offer loyalty discounts at the moment, but paying yearly gives you two months free.",
     "You can switch to yearly billing under Billing in the app."),
    ("thermostat-high", "reported a thermostat that reads too warm",
     "temp offset adj in device settings. avoid direct sun.",
     "thermostats in direct sunlight often read a few degrees too warm.",
     "You can correct it with the temperature offset in the thermostat's settings, or move it out of the sun."),
    ("alexa", "asked whether the camera works with Alexa",
     "alexa skill supported. enable skill + link acct.",
     "yes, the camera works with Alexa.",
     "Enable the Lumenhive skill in the Alexa app and sign in with your Lumenhive account to link them."),
    ("charged-after-cancel", "was charged after cancelling",
     "charge was for prev period. no further charges. refund n/a.",
     "the last charge was for the month before you cancelled, so it can't be refunded, but there will be no "
     "more charges.",
     "You don't need to do anything else."),
    ("android-crash", "reported the app crashing on startup on Android",
     "known crash android 15 app 5.4.0. hotfix 5.4.1 rolling out. pls clear cache meanwhile.",
     "version 5.4.0 of the app crashes on some Android 15 phones, and a fix is rolling out now.",
     "Until it reaches you, clearing the app's cache in your phone's settings should get it running."),
    ("delete-account", "asked how to delete their account",
     "acct deletion via settings > privacy > delete. irreversible. 30d grace.",
     "you can delete your account yourself. You'll have 30 days to change your mind; after that it's gone "
     "for good.",
     "Open Settings, then Privacy, and choose Delete account."),
    ("parcel-missing", "has a parcel marked delivered that never arrived",
     "carrier says delivered. open claim w/ carrier. we reship if claim fails.",
     "the courier marks your parcel as delivered, so the first step is a claim with them.",
     "Please open a claim with the courier; if it doesn't work out, we'll send a new one."),
    ("second-hub", "asked to add a second Hub to the same home",
     "multi-hub supported. max 3. pls add via app > home > add hub.",
     "you can have up to three Hubs in one home.",
     "In the app, open Home and tap Add Hub to set up the second one."),
    ("late-notifications", "asked why notifications arrive late",
     "notif delay = battery optimisation on phone. whitelist app.",
     "late alerts usually come from your phone's battery saver, which holds them back.",
     "Turn battery optimisation off for the Lumenhive app in your phone's settings."),
    ("accountant-invoices", "wants their invoices sent to their accountant",
     "invoices can be fwd'd. add billing contact in billing > contacts.",
     "we can email every invoice to your accountant too.",
     "Add them as a billing contact under Billing, then Contacts."),
    ("docs-link", "reported that a link to the API docs is broken",
     "docs moved to docs.lumenhive.dev. old links redirect soon fyi.",
     "our API docs have moved to docs.lumenhive.dev, and old links will forward there soon.",
     "Until then, please use the new address directly."),
]

# Customers of the preference pairs and of the held-out drafts: no name of data/tone/train.jsonl
# (scripts/make_data.py's list) and no name in both sets.
PAIR_NAMES = ["Adele", "Bruno", "Cora", "Dario", "Edith", "Felix", "Greta", "Hugo", "Irene", "Joel", "Klara",
              "Luca", "Mira", "Noel", "Orla", "Paul", "Rhea", "Simon", "Tessa", "Umar", "Vivian", "Wade"]
TEST_NAMES = ["Amara", "Basil", "Celia", "Desmond", "Eva", "Fintan", "Gloria", "Hassan", "Isla", "Jasper", "Kira",
              "Leon", "Marisol", "Nadia", "Omar", "Petra", "Ronan", "Selma", "Teo", "Ursula", "Viktor", "Yasmin"]

# How a reply breaks the style. "no_next_step" breaks the goal but not the automatic rule.
FAILURES = ("no_greeting", "generic_greeting", "wrong_name", "no_sign_off", "other_sign_off", "too_long",
            "shorthand", "no_next_step")
GENERIC_GREETINGS = ["Dear customer,", "Hello there,", "Hi,", "Greetings,"]
OTHER_SIGN_OFFS = ["Best regards,\nCustomer Support", "Thanks,\nLumenhive Support", "Kind regards,\nThe Support Team",
                   "Cheers!"]
PADDING = [
    "First of all, thank you so much for taking the time to reach out to us about this, and please accept our "
    "sincere apologies for any inconvenience or frustration this situation may have caused you.",
    "We truly value you as a customer and we are always working hard behind the scenes to make sure that "
    "every part of your Lumenhive experience is as smooth, reliable and enjoyable as it can possibly be.",
    "Please do not hesitate to get back in touch with our friendly support team at any time, day or night, "
    "if there is anything else at all that we can help you with.",
]
# The ways a draft is handed over: with the customer's name, as data/tone/train.jsonl does.
SINGLE_TURN = ["Rewrite this reply to {first} in our house style:\n\n{draft}",
               "Make this reply to {first} ready to send:\n\n{draft}"]
NAMELESS = "Rewrite this reply in our house style:\n\n{draft}"


def styled(first: str, what: str, step: str) -> str:
    return f"Hi {first}, {what} {step}\n{SIGN_OFF}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def broken(kind: str, first: str, scenario: tuple, rng: random.Random, others: list[str]) -> str:
    """The same reply, breaking the house style in one realistic way."""
    _, _, draft, what, step = scenario
    if kind == "no_greeting":
        return f"{_capital(what)} {step}\n{SIGN_OFF}"
    if kind == "generic_greeting":
        return f"{rng.choice(GENERIC_GREETINGS)} {what} {step}\n{SIGN_OFF}"
    if kind == "wrong_name":
        return styled(rng.choice([n for n in others if n != first]), what, step)
    if kind == "no_sign_off":
        return f"Hi {first}, {what} {step}"
    if kind == "other_sign_off":
        return f"Hi {first}, {what} {step}\n{rng.choice(OTHER_SIGN_OFFS)}"
    if kind == "too_long":
        return f"Hi {first}, {PADDING[0]} {_capital(what)} {PADDING[1]} {step} {PADDING[2]}\n{SIGN_OFF}"
    if kind == "shorthand":
        return f"Hi {first}, {draft}\n{SIGN_OFF}"
    if kind == "no_next_step":
        return f"Hi {first}, {what}\n{SIGN_OFF}"
    raise ValueError(kind)


def prompt(form: str, first: str | None, scenario: tuple) -> list[dict]:
    """The messages before the answer: the draft in the user turn, or (multi-turn, as in
    data/tone/train.jsonl) the customer's situation, the draft as an earlier assistant turn, and
    the request to rewrite it."""
    _, situation, draft, _, _ = scenario
    head = [ftd.system(HOUSE_STYLE_SYSTEM)]
    if form == "multi_turn":
        return head + [ftd.user(f"{first} {situation}. Draft a reply."), ftd.assistant(draft),
                       ftd.user("Now rewrite it in the house style.")]
    if form == "nameless":
        return head + [ftd.user(NAMELESS.format(draft=draft))]
    return head + [ftd.user(SINGLE_TURN[int(form[-1])].format(first=first, draft=draft))]


def preference_pairs(scenarios: list[tuple], rng: random.Random, names: list[str],
                     kinds: list[str]) -> tuple[list[dict], Counter]:
    """Three pairs per situation (two single-turn phrasings and the multi-turn form), each with
    its own customer and its own way of breaking the style (taken in turn from ``kinds``)."""
    pairs, counts = [], Counter()
    for scenario in scenarios:
        for form in ("single_0", "single_1", "multi_turn"):
            first = names[len(pairs) % len(names)]
            kind = kinds[len(pairs) % len(kinds)]
            good = styled(first, scenario[3], scenario[4])
            bad = broken(kind, first, scenario, rng, names)
            check_good, check_bad = check_house_style(good, first), check_house_style(bad, first)
            assert check_good.ok, (scenario[0], good)
            assert check_bad.ok == (kind == "no_next_step"), (scenario[0], kind, check_bad)
            pairs.append(ftd.preference_pair(prompt(form, first, scenario), good, bad))
            counts[kind] += 1
    return pairs, counts


def held_out(rng: random.Random) -> list[dict]:
    """Per held-out situation: two single-turn prompts and one multi-turn prompt, each for a
    different named customer, and one prompt that names nobody. Each line is a chat example (the
    reference is the house-style answer) plus ``id``, ``scenario``, ``form`` and ``customer``."""
    names = list(TEST_NAMES)
    rng.shuffle(names)
    rows, named = [], 0
    for scenario in TEST_SCENARIOS:
        for form in ("single_0", "single_1", "multi_turn", "nameless"):
            first = None
            if form != "nameless":
                first, named = names[named % len(names)], named + 1
            reference = styled(first or "there", scenario[3], scenario[4]).replace("Hi there,", "Hi,")
            messages = prompt(form, first, scenario) + [ftd.assistant(reference)]
            rows.append({"id": f"{scenario[0]}/{form}", "scenario": scenario[0], "form": form, "customer": first,
                         **ftd.chat_example(messages)})
    return rows


def balanced_kinds(n: int, rng: random.Random) -> list[str]:
    kinds = [FAILURES[i % len(FAILURES)] for i in range(n)]
    rng.shuffle(kinds)
    return kinds


CARD_START = "<!-- make_preference_data.py: start -->"
CARD_END = "<!-- make_preference_data.py: end -->"


def card(train_counts: Counter, n_train: int, n_valid: int, test: list[dict]) -> str:
    kinds = ", ".join(f"{k.replace('_', ' ')} {train_counts[k]}" for k in FAILURES)
    named = sum(1 for r in test if r["customer"])
    return f"""{CARD_START}
## House-style preferences and held-out drafts (`tone/`, notebook 06)

Made by [`scripts/make_preference_data.py`](../scripts/make_preference_data.py) (seed {SEED}; run it
after `make_data.py`, whose card this section is appended to). Same goal and system prompt as
`tone/train.jsonl`: Lumenhive's house style (greet by first name, plain words, one next step, under
80 words, sign off `{SIGN_OFF}`), on **other** support situations. The customer's first name is
in every prompt but the name-less ones, so whether an answer greets the right person can be checked.

| file | lines | what |
|---|---:|---|
| `tone/preference_train.jsonl` | {n_train} | DPO pairs on {len(TRAIN_SCENARIOS)} situations x 3 prompts (two single-turn phrasings, one multi-turn with the draft as an earlier assistant turn). Preferred: the house-style reply. Non-preferred: the same reply broken one way -- {kinds} |
| `tone/preference_validation.jsonl` | {n_valid} | the same on {len(VALIDATION_SCENARIOS)} other situations |
| `tone/test.jsonl` | {len(test)} | **held-out** drafts: {len(TEST_SCENARIOS)} situations and {len(TEST_NAMES)} customer names that are in no training file; per situation three prompts for named customers ({named} in all) and one that names nobody. Chat examples whose last assistant message is a house-style reference, plus `id`, `scenario`, `form` (`single_0`, `single_1`, `multi_turn`, `nameless`) and `customer` (the first name, or null). Not for training (`validate` warns about the extra keys) |

The automatic rule notebook 06 measures with is `ftkit.preference.check_house_style`: every
preferred answer passes it, every non-preferred one fails it except the "no next step" ones -- the
rule cannot see a missing next step, which the notebook shows. Replies only use facts that are in
their draft. Every file passes `ftkit.data.validate(path, model="{CHECK_MODEL}")` with no errors.
{CARD_END}
"""


def write_card(section: str, readme: Path) -> None:
    """Append the section to the data card, or replace the one already there."""
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Course data\n"
    pattern = re.compile(re.escape(CARD_START) + r".*?" + re.escape(CARD_END) + r"\n?", re.DOTALL)
    text = pattern.sub("", text).rstrip("\n") + "\n\n" + section
    readme.write_text(text, encoding="utf-8", newline="\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args(argv)
    out: Path = args.out
    rng = random.Random(SEED)
    for scenario in TRAIN_SCENARIOS + VALIDATION_SCENARIOS + TEST_SCENARIOS:
        assert not check_house_style(scenario[2]).plain_words, f"{scenario[0]}: the draft has no shorthand"
    keys = [s[0] for s in TRAIN_SCENARIOS + VALIDATION_SCENARIOS + TEST_SCENARIOS]
    assert len(set(keys)) == len(keys) and not set(PAIR_NAMES) & set(TEST_NAMES)

    train, counts = preference_pairs(TRAIN_SCENARIOS, rng, PAIR_NAMES, balanced_kinds(3 * len(TRAIN_SCENARIOS), rng))
    valid, _ = preference_pairs(VALIDATION_SCENARIOS, rng, PAIR_NAMES[::-1],
                                balanced_kinds(3 * len(VALIDATION_SCENARIOS), rng))
    test = held_out(rng)
    tone = out / "tone"
    ftd.write_jsonl(train, tone / "preference_train.jsonl")
    ftd.write_jsonl(valid, tone / "preference_validation.jsonl")
    ftd.write_jsonl(test, tone / "test.jsonl")
    for name in ("preference_train", "preference_validation", "test"):
        report = ftd.validate(tone / f"{name}.jsonl", model=CHECK_MODEL, min_examples=1)
        assert report.ok, report.summary()
    write_card(card(counts, len(train), len(valid), test), out / "README.md")
    print(f"wrote {len(train)} training pairs, {len(valid)} validation pairs and {len(test)} held-out drafts to {tone}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate the course data in data/ -- seeded, so every run writes the same bytes.

    python scripts/make_data.py            # rewrite data/
    python scripts/make_data.py --out DIR  # write somewhere else (the tests compare the two)

Everything here is synthetic and written by the ftkit project for the course (CC0-1.0): a
fictional smart-home company, "Lumenhive", and its support tickets. See data/README.md.

What it writes:

* tickets/tickets.csv          400 support tickets (id, subject, body, category, urgency,
                               product, split) -- the course's running example
* tickets/{train,validation,test}.jsonl  the same tickets as chat examples (short system prompt)
* tickets/test_ood.csv, test_ood.jsonl  100 out-of-distribution test tickets, written from
                               templates, phrasings and product mentions the 400 never use
* tickets/prompts.json         the short and long system prompts, the labels, few-shot ids
* tickets/tricky.json          the ids of the deliberately ambiguous tickets, and why
* tone/train.jsonl             house-style rewrites (some multi-turn, with weight 0/1)
* dpo/train.jsonl              preference pairs for DPO
* broken/tickets_broken.jsonl  a file with one instance of each common mistake
* broken/EXPECTED.json, broken/EXPECTED.md  which line has which mistake, and the codes
* general/ability.jsonl        short general questions with checkable answers (the forgetting check)
* README.md                    the data card (with the statistics of this run)

The generator checks its own output: no duplicates or near-duplicates among the tickets, no
leakage across splits (the out-of-distribution set included), far less wording shared with the
training tickets in the out-of-distribution set than in the in-distribution test split, and every
file except the broken one passes ftkit.data.validate.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ftkit import data as ftd
from ftkit.tokens import TokenCounter, describe

SEED = 20261121
N_PER_CATEGORY = 80  # 5 categories -> 400 tickets -> about 260 train / 40 validation / 100 test
VALIDATION_SHARE, TEST_SHARE = 0.10, 0.25
CHECK_MODEL = "gpt-4o-mini-2024-07-18"
COMPANY = "Lumenhive"

CATEGORIES = ["billing", "technical", "account", "shipping", "feature_request"]
URGENCIES = ["low", "medium", "high"]
PRODUCTS = ["mobile_app", "web_app", "api", "hardware"]

SHORT_SYSTEM = "Triage the support ticket. Reply with JSON: category, urgency, product."

LONG_SYSTEM = f"""You triage customer-support tickets for {COMPANY}, a smart-home company.
Read the ticket and reply with one line of JSON and nothing else, with the keys in this order:
{{"category": "...", "urgency": "...", "product": "..."}}

category -- what the customer needs:
- billing: charges, refunds, invoices, plans, payment methods
- technical: something is broken or behaves wrongly (crashes, errors, devices offline)
- account: signing in, passwords, two-factor codes, API keys, team members, ownership, deleting the account
- shipping: orders on their way, delivery, damaged or missing items, wrong address
- feature_request: asks for something the product does not do yet

urgency -- how soon it needs action:
- high: something is down or unsafe, money is being lost, the customer is blocked, or they say it is urgent
- medium: a real problem with a workaround, or no sign either way
- low: questions, ideas, "no rush", "whenever you get a chance"

product -- which product the ticket is about:
- mobile_app: the {COMPANY} app on iOS or Android
- web_app: the web dashboard in a browser
- api: the developer API, webhooks, SDKs
- hardware: the Hub, sensors, cameras, doorbells, plugs (and their delivery)

Use exactly these values, in lower case."""

# ---------------------------------------------------------------------------------------------
# Slot values

FIRST = [
    "Ana", "Ben", "Chloe", "Dmitri", "Esther", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Liam", "Maya", "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Aoife", "Bjorn", "Carmen", "Daniel", "Elif", "Femi", "Gustavo",
    "Hannah", "Ivan", "Julia", "Kwame", "Lena", "Mateo", "Nora", "Oscar", "Priya", "Rafael", "Sofia",
    "Tom", "Valentina", "Will", "Yara",
]
LAST = [
    "Okafor", "Schmidt", "Nguyen", "Garcia", "Kowalski", "Haddad", "Tanaka", "Silva", "Murphy",
    "Larsen", "Rossi", "Dubois", "Patel", "Kim", "Novak", "Mensah", "Costa", "Yilmaz", "Brown",
    "Fischer", "Lopez", "Ivanova", "Chen", "Moreau", "Ahmed", "Jensen", "Walsh", "Sato",
]
PLANS = ["Basic", "Plus", "Pro", "Family", "Business"]
AMOUNTS = ["$4.99", "$9.99", "$14.99", "$19.00", "$29.00", "$49.00", "$79.00", "$129.00", "$249.00"]
PHONES = ["iPhone 15", "iPhone 13", "Pixel 8", "Pixel 9", "Galaxy S24", "Galaxy A54", "OnePlus 12", "iPad Air"]
OSES = ["iOS 19.1", "iOS 18.6", "Android 16", "Android 15", "iPadOS 19"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Brave"]
ENDPOINTS = ["/v2/devices", "/v2/events", "/v2/automations", "/v2/homes", "/v2/scenes", "/v2/energy"]
STATUS_CODES = ["500", "502", "503", "504"]
SDKS = ["Python SDK 3.2.1", "Node SDK 5.0.3", "Go SDK 1.8.0", "Python SDK 3.1.0", "Java SDK 2.4.2"]
DEVICES = [
    "Hub Mini", "Hub Pro", "door sensor", "motion sensor", "indoor camera", "outdoor camera",
    "smart plug", "thermostat", "video doorbell", "leak sensor",
]
COURIERS = ["DHL", "UPS", "FedEx", "DPD", "PostNL", "USPS", "Royal Mail", "GLS"]
CITIES = ["Leeds", "Lyon", "Porto", "Denver", "Utrecht", "Graz", "Cork", "Austin", "Malmo", "Turin", "Perth", "Osaka"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
VERSIONS = ["4.12.0", "4.12.1", "4.13.0", "4.11.3", "4.13.2"]
FIRMWARES = ["2.8.1", "2.9.0", "3.0.2", "3.1.0"]
WEB_PAGES = ["Automations", "Energy report", "Devices", "Activity log", "Members", "Billing", "Scenes"]


# The slots filled by picking one value from a list (the others are made up below).
SLOT_VALUES = {
    "plan": PLANS, "amount": AMOUNTS, "phone": PHONES, "os": OSES, "browser": BROWSERS,
    "endpoint": ENDPOINTS, "status": STATUS_CODES, "sdk": SDKS, "device": DEVICES,
    "device2": DEVICES, "courier": COURIERS, "city": CITIES, "weekday": WEEKDAYS,
    "version": VERSIONS, "firmware": FIRMWARES, "page": WEB_PAGES, "first": FIRST,
}


def fill(template: str, rng: random.Random, chosen: dict[str, str] | None = None,
         values: dict[str, list[str]] = SLOT_VALUES) -> str:
    """Replace each {slot} in the template by a random value (from ``values`` where it has the slot).

    A slot used twice gets the same value; pass the same ``chosen`` dict to several calls so
    the sentences of one ticket agree (one plan, one order number).
    """
    chosen = {} if chosen is None else chosen

    def value(slot: str) -> str:
        if slot not in chosen:
            chosen[slot] = _slot(slot, rng, values)
            if slot == "device2":  # "my plug and my plug" reads wrong
                while chosen["device2"] == chosen.get("device"):
                    chosen["device2"] = _slot(slot, rng, values)
        return chosen[slot]

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), template)


def _slot(slot: str, rng: random.Random, values: dict[str, list[str]] = SLOT_VALUES) -> str:
    if slot in values:
        return rng.choice(values[slot])
    if slot == "order":
        return f"LH-{rng.randint(100000, 999999)}"
    if slot == "invoice":
        return f"INV-2026-{rng.randint(10000, 99999)}"
    if slot == "indoor":
        return rng.choice(["indoor camera", "smart plug", "motion sensor", "video doorbell"])
    if slot == "n":
        return str(rng.choice([2, 3, 4, 5, 6, 8, 10, 12]))
    if slot == "days":
        return str(rng.choice([3, 4, 5, 6, 8, 10, 12, 14]))
    if slot == "pct":
        return str(rng.choice([20, 30, 40, 50, 60]))
    if slot == "home":
        return rng.choice(["home", "flat", "office", "holiday house", "shop", "studio"])
    raise KeyError(slot)


# ---------------------------------------------------------------------------------------------
# Ticket templates per (category, product): (subjects separated by "|", body). A body states the
# problem in one or two sentences and names the product plainly, as customers do; its subjects
# fit it. Some tickets get a vague subject instead ("Help", "Question").

T: dict[tuple[str, str], list[tuple[str, str]]] = {}

T["billing", "mobile_app"] = [
    ("Charged twice for {plan} in the app|Double charge on my phone",
     "I upgraded to {plan} from the app on my {phone} and my card was charged {amount} twice."),
    ("Still billed after cancelling in the app|Charged after cancelling",
     "I cancelled my {plan} subscription in the Android app last month but I was billed {amount} again this week."),
    ("Wrong price in the iPhone app|Price mismatch",
     "The app showed {plan} for {amount} a month but the App Store receipt says a higher price."),
    ("Subscription renewed without warning|Auto-renew was off",
     "My subscription renewed through the app on {weekday} even though I turned off auto-renew in the app settings."),
    ("Refund for in-app purchase|Bought the wrong plan in the app",
     "I bought the {plan} upgrade in the mobile app by mistake and would like a refund of {amount}."),
    ("What is this charge?|Unknown app charge",
     "Could you explain the {amount} charge from the app? I don't remember buying anything on my phone."),
    ("Paid but still on free plan|Upgrade not showing in app",
     "The in-app purchase for {plan} went through but the app still shows the free plan."),
]
T["billing", "web_app"] = [
    ("Double charge after upgrading|Charged twice on the dashboard",
     "I upgraded to {plan} on the web dashboard and was charged {amount} twice on the same day."),
    ("Invoice {invoice} is wrong|Too many seats on invoice",
     "Invoice {invoice} in the dashboard charges for {n} seats, but we removed two people from the team last month."),
    ("Need VAT number on invoices|Company details on invoices",
     "I need our company VAT number on the invoices I download from the billing page of the dashboard."),
    ("Card update fails in billing page|Can't change payment card",
     "I tried to update my card on the dashboard billing page and it keeps saying the payment method was declined."),
    ("Downgrade not reflected|Still paying for {plan}",
     "I downgraded from {plan} in the web dashboard but the next invoice still shows the old price of {amount}."),
    ("Download old invoices|Where are my invoices?",
     "Where in the web dashboard can I download all invoices from last year for my accountant?"),
    ("Balance already paid|Bank transfer not recorded",
     "The billing page in the browser shows a balance of {amount} that I already paid by bank transfer."),
]
T["billing", "api"] = [
    ("Unexpected usage bill|API invoice much higher",
     "Our API usage invoice for this month is {amount} higher than usual but our request volume did not change."),
    ("API overage charges|Billed for calls we did not make",
     "We were charged API overage fees for {n} million calls, but our logs show far fewer requests to {endpoint}."),
    ("Credits not applied to API usage|Promo credits missing",
     "The promotional credits we received were not applied to our API usage bill."),
    ("API invoice question|Breakdown of API charges",
     "Can you break down the API charges on invoice {invoice} by endpoint? Finance is asking."),
    ("Usage billed twice|Two API keys, double usage",
     "We have two API keys on one account and it looks like usage from both is billed twice."),
    ("Are webhook retries billed?|Retries on our invoice",
     "How is the API billed when a webhook delivery is retried? Our invoice counts retries as extra calls."),
]
T["billing", "hardware"] = [
    ("Charged twice for my {device}|Double payment for order {order}",
     "I ordered a {device} (order {order}) and my card was charged {amount} twice."),
    ("Refund for returned {device}|Return refund missing",
     "I returned the {device} from order {order} {days} days ago and still have not received the refund."),
    ("Invoice for hardware order {order}|Need a company invoice",
     "I need a proper invoice with my company address for hardware order {order}."),
    ("Price drop after I bought it|Price match request",
     "The {device} I bought last week is now {pct}% cheaper. Can you refund the difference?"),
    ("Payment taken but order cancelled|Cancelled order still charged",
     "Order {order} for a {device} was cancelled but the payment of {amount} was still taken."),
    ("Charged for a bundle|Wrong amount for {device}",
     "I was charged for a {device} bundle but I only ordered the single {device}."),
]
T["technical", "mobile_app"] = [
    ("App crashes on launch|App crashes after update",
     "Since updating to {version}, the app on my {phone} crashes as soon as I open it."),
    ("Notifications stopped|No push notifications",
     "Push notifications from the app stopped arriving on my {phone} after the last update."),
    ("App stuck on loading screen|iOS app won't load",
     "The iOS app sits on the loading screen forever. I have reinstalled it twice on {os}."),
    ("Widget not updating|Widget shows old data",
     "The home screen widget on {os} never updates; it still shows the temperature from yesterday."),
    ("Android app very slow|App freezes",
     "The Android app takes almost a minute to open and freezes when I switch between rooms."),
    ("Camera feed black in app|Live view not working",
     "The live camera view in the app is just a black screen, but recordings play fine."),
    ("App drains my battery|Battery usage",
     "The app uses a lot of battery in the background on my {phone} running {os}."),
    ("Toggle switches back off|{device} won't stay on in app",
     "In the app, the toggle for my {device} flips back to off every time I switch it on."),
]
T["technical", "web_app"] = [
    ("Dashboard charts not loading|Charts stuck on spinner",
     "The charts on the {page} page of the web dashboard never load in {browser}; I just see a spinner."),
    ("Error on {page} page|'Something went wrong' in dashboard",
     "When I open {page} in the dashboard I get a 'Something went wrong' error."),
    ("CSV export broken|Empty export file",
     "Exporting the activity log to CSV from the web dashboard gives an empty file."),
    ("Blank page in {browser}|Dashboard is blank",
     "The dashboard shows a blank white page in {browser} after I sign in."),
    ("Dashboard very slow|{page} takes forever",
     "The web dashboard takes over thirty seconds to load the {page} page."),
    ("Can't save automation|Automation error in dashboard",
     "Saving a new automation in the browser dashboard fails with an error about an invalid schedule."),
    ("Wrong times in activity log|Clock off by an hour",
     "The times in the dashboard activity log are off by one hour since the clocks changed."),
]
T["technical", "api"] = [
    ("{status} errors from {endpoint}|API errors",
     "Calls to {endpoint} have returned {status} errors for about an hour."),
    ("Webhooks not delivered|No webhook events",
     "Our webhooks stopped arriving at our endpoint; the API says they were sent but we receive nothing."),
    ("Getting 429 rate limit errors|Rate limited for no reason",
     "We get 429 rate limit responses from {endpoint} even though we send only a few requests per minute."),
    ("SDK exception|{sdk} error",
     "The {sdk} throws a JSON decode error when calling {endpoint}."),
    ("API returns duplicate events|Pagination bug",
     "Paging through {endpoint} with the cursor returns the same events twice."),
    ("Timeouts on API calls|{endpoint} times out",
     "Requests to {endpoint} time out after 30 seconds, but only for homes with more than {n} devices."),
    ("Timestamps without time zone|Parser broken by API change",
     "The API returns timestamps without a time zone from {endpoint}, which breaks our parser."),
]
T["technical", "hardware"] = [
    ("{device} keeps going offline|Device drops off",
     "My {device} keeps going offline several times a day even though it is close to the Hub."),
    ("Hub won't connect to wifi|New router, Hub offline",
     "The Hub will not connect to my wifi after I changed the router; the light just blinks orange."),
    ("Firmware update stuck|Update stuck at 60%",
     "The firmware update to {firmware} has been stuck at 60% on my {device} since last night."),
    ("{device} not working|{device} seems dead",
     "The {device} no longer detects anything; the test button does nothing."),
    ("Blinking red light on Hub|Hub red light",
     "The Hub has a blinking red light and none of my devices respond."),
    ("Camera night vision blurry|Blurry at night",
     "The night vision on my outdoor camera is completely blurry after the {firmware} firmware update."),
    ("Battery drains fast|{device} battery",
     "The battery in my {device} lasts a week instead of the months you advertise."),
    ("Devices lost after power cut|Hub lost devices",
     "My {device} and my {device2} stopped talking to the Hub after a power cut."),
]
T["account", "mobile_app"] = [
    ("Can't sign in on the app|Password rejected in app",
     "I can't sign in to the app on my {phone}; it says my password is wrong but it works on the website."),
    ("2FA code not arriving|No SMS code",
     "The two-factor code never arrives by SMS when I sign in to the app on my new phone."),
    ("Delete my account|Account deletion",
     "How do I delete my account from the app? I can't find the option anywhere."),
    ("Change email in app|Update my email address",
     "I want to change the email address on my account but the app's profile page greys it out."),
    ("Logged out of app constantly|Keeps signing me out",
     "The app keeps signing me out every few hours on {os} and I have to enter my password again."),
    ("Face ID login not working|Face ID sign-in",
     "Face ID sign-in in the iPhone app stopped working and now it asks for a password I don't remember."),
]
T["account", "web_app"] = [
    ("Password reset email never arrives|No reset email",
     "The password reset email from the website never arrives, not even in spam."),
    ("Locked out of my account|Account locked",
     "I'm locked out of the dashboard after too many sign-in attempts."),
    ("Add a member to our home|Invite my partner",
     "How do I add my partner as a member of our home in the web dashboard?"),
    ("Change account owner|New owner for our account",
     "Our office manager left; we need to make someone else the owner of the account in the dashboard."),
    ("SSO login fails|Single sign-on loop",
     "Signing in to the dashboard with our company SSO sends me back to the sign-in page."),
    ("Remove old user from account|Former employee still a member",
     "Please remove a former employee from the Members page of our dashboard; I don't have the rights to do it."),
    ("Merge two accounts|Duplicate accounts",
     "I have two accounts with different emails and would like to merge them into one on the web dashboard."),
]
T["account", "api"] = [
    ("API key revoked|All requests return 401",
     "Our API key was revoked without notice and now every request returns 401."),
    ("OAuth client secret lost|New client secret",
     "I lost the client secret for our OAuth app; how do I generate a new one for the API?"),
    ("Read-only API key|API key permissions",
     "How can I create an API key that can only read {endpoint} and not change anything?"),
    ("Disable old API key|Contractor still has a key",
     "A former contractor still has an API key for our account. Please disable it."),
    ("Service account access|Service account lost a home",
     "Our service account for the API lost access to one of our homes after a role change."),
]
T["account", "hardware"] = [
    ("Transfer Hub to new owner|Sold my house",
     "I sold my house and need to transfer the Hub and all its sensors to the new owner's account."),
    ("Bought a used {device}|Device registered to someone else",
     "I bought a second-hand {device} and it is still registered to the previous owner's account."),
    ("Share camera access|Access for my parents",
     "How do I give my parents access to the indoor camera without sharing my password?"),
    ("Remove someone's access|Ex-partner still has access",
     "My ex-partner still has access to the {device} in our flat. How do I remove them?"),
]
T["shipping", "hardware"] = [
    ("Where is order {order}?|Tracking not moving",
     "My order {order} was supposed to arrive on {weekday} and the tracking has not moved for {days} days."),
    ("Tracking not updating|Order {order} not shipped?",
     "The {courier} tracking for order {order} still says 'label created' after a week."),
    ("Package damaged|Box arrived crushed",
     "The box for my {device} arrived crushed and the device rattles."),
    ("Wrong item received|Not what I ordered",
     "I ordered a {device} but received a {device2} instead (order {order})."),
    ("Change delivery address|Moving before delivery",
     "Can I change the delivery address for order {order}? I'm moving to {city}."),
    ("Missing power adapter|Missing part in box",
     "My Hub arrived without the power adapter (order {order})."),
    ("Delivered but not received|Parcel not at my door",
     "{courier} says order {order} was delivered, but nothing was left at my door."),
    ("Stuck in customs|Order held at customs",
     "Order {order} with my {device} has been held at customs in {city} for {days} days."),
    ("Only part of my order arrived|Items missing from order {order}",
     "Only one of the {n} {device}s I ordered arrived; order {order}."),
    ("Shipping replacement batteries|Delivery time to {city}",
     "Do you ship replacement batteries for the {device} to {city}, and how long does delivery take?"),
]
T["feature_request", "mobile_app"] = [
    ("Dark mode please|Feature idea: dark mode", "Please add a dark mode to the mobile app."),
    ("Lock screen widget|Widget request",
     "It would be great to have a lock screen widget in the app for arming the alarm."),
    ("Apple Watch app?|Watch support", "Any plans for an Apple Watch version of the app?"),
    ("Tablet layout|iPad version of the app",
     "The app on my iPad is just a stretched phone layout; a proper tablet layout would help."),
    ("Battery overview in the app|Feature idea for the app",
     "Could the app show the battery level of every sensor on one screen?"),
    ("Siri shortcuts|Voice control in the app", "I'd love Siri shortcuts in the iOS app to switch scenes by voice."),
]
T["feature_request", "web_app"] = [
    ("Bulk edit in dashboard|Edit many devices at once",
     "Please let us rename and move devices in bulk in the web dashboard."),
    ("Custom date range for reports|Energy report periods",
     "The energy report in the dashboard only offers fixed periods; a custom date range would help."),
    ("PDF export|Reports as PDF", "Could the dashboard export reports as PDF as well as CSV?"),
    ("Keyboard shortcuts|Dashboard shortcuts",
     "Keyboard shortcuts in the web dashboard would make our daily checks much faster."),
    ("Pin favourite devices|Dashboard idea",
     "It would be useful to pin favourite devices to the top of the dashboard."),
    ("Overview of several homes|Multi-home view",
     "Could the web dashboard show all homes in one overview for people who manage several?"),
]
T["feature_request", "api"] = [
    ("Batch endpoint request|Bulk updates via API",
     "Please add a batch endpoint so we can update many devices in one API call."),
    ("Webhook retry settings|Configurable retries",
     "We would like to configure webhook retries (number and delay) through the API."),
    ("GraphQL API?|GraphQL support", "Is a GraphQL version of the API on the roadmap?"),
    ("OpenAPI spec|Machine-readable API spec",
     "Could you publish an OpenAPI spec for the API so we can generate clients?"),
    ("Hourly energy data via API|API feature request",
     "We need an API endpoint for the energy history at hourly resolution."),
    ("Firmware version in API|Device details in API",
     "It would help if the API returned the firmware version of each device."),
]
T["feature_request", "hardware"] = [
    ("Zigbee support|Support for my bulbs",
     "Please add Zigbee support to the Hub so I can use my existing bulbs."),
    ("Longer power cable|Camera cable too short",
     "The power cable of the indoor camera is too short for most shelves; please offer a longer one."),
    ("Battery backup for the Hub|Hub during power cuts",
     "A battery backup for the Hub would keep the alarm working during power cuts."),
    ("Outdoor version|Weatherproof {indoor}", "Will there be a weatherproof version of the {indoor}?"),
    ("Black colour option|{device} in black", "Could you make the {device} in black as well as white?"),
    ("Replaceable battery|Hardware suggestion",
     "Please make a version of the {device} with a replaceable battery instead of a sealed one."),
]
VAGUE_SUBJECTS = ["Help", "Question", "Problem", "Support request", "Issue", "Hello", "Quick question", "Please help"]

# Extra sentences that add detail without changing the labels.
DETAILS = {
    "billing": [
        "My account email is the one I'm writing from.", "I've attached a screenshot of the statement.",
        "This is the second time this has happened.", "I'm on the {plan} plan.", "My bank shows both charges as pending.",
        "I paid with a Visa card ending in {n}7.",
    ],
    "technical": [
        "I've already restarted everything twice.", "It started after the update on {weekday}.",
        "Nothing changed on our side.", "Logs are available if you need them.",
    ],
    ("technical", "mobile_app"): ["It happens on both of our phones.", "I tried on wifi and on mobile data."],
    ("technical", "hardware"): ["We have {n} devices in the {home}.", "I tried another power socket as well."],
    ("technical", "api"): ["We're on the {sdk}.", "Request ids are in our logs if you need them."],
    ("technical", "web_app"): ["Same thing in a private window.", "Clearing the cache didn't help."],
    "account": [
        "I'm the owner of the account.", "I can verify my identity if needed.", "My username is the email I'm writing from.",
        "I changed my phone number recently.", "We have {n} people in our household using it.",
    ],
    "shipping": [
        "I paid for express delivery.", "I was home all day.", "The order confirmation came by email.",
        "The courier's website has no further details.", "It's for my {home} in {city}.",
    ],
    "feature_request": [
        "Other apps I use already have this.", "Several people in our team asked for it.", "I'd happily test a beta.",
        "It would save us a lot of clicks.", "Otherwise we're very happy with it.",
    ],
}

# Urgency cues. High and low tickets carry one (mostly); medium ones sometimes do.
URGENCY_CUES = {
    "high": [
        "This is urgent.", "Please treat this as urgent.", "I need this fixed today.", "ASAP please!",
        "Urgent: please call me back.", "Please fix this as soon as possible!",
    ],
    "medium": [
        "Could you look into it this week?", "It's annoying but I can work around it for now.",
        "An update in the next few days would be appreciated.", "Not critical, but it keeps happening.",
        "Please get back to me when you can this week.",
    ],
    "low": [
        "No rush at all.", "Whenever you get a chance.", "Just curious.", "Low priority, just flagging it.",
        "Not urgent.", "Totally fine if this takes a while.", "No hurry, whenever you have time.",
    ],
}
# High-urgency reasons that fit the situation: (category, product), "*" for any product.
HIGH_CONTEXT = {
    ("technical", "api"): ["Production is down for us.", "Customers are affected right now.",
                           "Our integration is completely blocked."],
    ("technical", "web_app"): ["Our whole team is blocked.", "We can't monitor any of our sites right now."],
    ("technical", "mobile_app"): ["I can't see my cameras while I'm away.", "I can't disarm the alarm without it."],
    ("technical", "hardware"): ["Our alarm system is not working while we're away.",
                                "I'm travelling tomorrow and the alarm has to work."],
    ("billing", "*"): ["My account is now overdrawn because of this.", "Rent is due tomorrow and I need that money back."],
    ("billing", "api"): ["Finance closes the books tomorrow and needs this fixed."],
    ("account", "*"): ["Someone else may be in my account.", "This is a security concern, please act quickly."],
    ("account", "api"): ["Production is down for us."],
    ("account", "mobile_app"): ["I can't arm the alarm until I can sign in."],
    ("shipping", "*"): ["It's a birthday present for tomorrow.", "The installer comes on {weekday} and needs it.",
                        "I'm travelling tomorrow and the alarm has to work."],
    ("feature_request", "*"): ["Without it we have to switch vendors at renewal next week.",
                               "Our contract renewal depends on this."],
}

OPENINGS = [
    "Hi,", "Hello,", "Hi there,", "Hey team,", "Good morning,", f"Hello {COMPANY} support,", "Dear support team,",
    "Hi support,", "Hello again,", "", "", "",
]
INLINE_OPENINGS = ["Hi!", "Hello.", "Hi there!", "Hey team!", "Good morning.", "Hello again.", "", "", "", ""]
CLOSINGS = [
    "Thanks, {first}", "Thank you!", "Cheers, {first}", "— {first} {last}", "Regards, {first} {last}", "Thanks in advance.",
    "Sent from my phone", "Many thanks, {first}", "Best, {first}", "", "", "",
]


# Hand-written tickets whose labels are defensible but debatable: evaluation should have honest
# errors. (subject, body, category, urgency, product, why it is tricky)
TRICKY = [
    ("App crashed at checkout, charged twice?",
     "The app froze when I tapped Pay and now there are two charges of $49.00 on my card. Please reverse one today.",
     "billing", "high", "mobile_app", "a crash (technical) that caused a double charge (billing)"),
    ("Can't get in since the update",
     "Since this morning's dashboard update my password is rejected in the browser, although it still works in the app.",
     "account", "medium", "web_app", "a sign-in problem that may be a bug (technical) rather than the account"),
    ("Sensor won't pair",
     "Adding my new door sensor fails in the app with 'device not found' even when it's right next to the Hub.",
     "technical", "medium", "hardware", "pairing happens in the app (mobile_app) but the device is the problem"),
    ("Customs fee on my delivery",
     "The courier asked me for a 38 EUR import fee before handing over my Hub Pro. Nobody told me about this at checkout. Will you refund it?",
     "billing", "medium", "hardware", "a delivery (shipping) problem that asks for money back (billing)"),
    ("Dashboard export via API?",
     "Is there a way to get the CSV export from the web dashboard through the API instead? Doing it by hand every week is tedious.",
     "feature_request", "low", "api", "mentions both the dashboard (web_app) and the API"),
    ("oh great",
     "No rush, it's only every motion sensor in our office reporting 'offline' since midnight. Really, take your time.",
     "technical", "high", "hardware", "sarcasm: 'no rush' but the office's sensors are all offline"),
    ("Renewal tomorrow",
     "Not urgent, but my card expired and the Plus subscription renews tomorrow. How do I update it on the website?",
     "billing", "medium", "web_app", "'not urgent' yet there is a deadline tomorrow"),
    ("Copies of invoices",
     "Could I get copies of all of last year's invoices? My accountant needs them by the end of the month.",
     "billing", "low", "web_app", "no product named; invoices live in the web dashboard"),
    ("Want my money back",
     "The outdoor camera never recorded a single clip. I'm done troubleshooting, just cancel it and refund me.",
     "billing", "medium", "hardware", "a hardware fault (technical) but the request is a refund (billing)"),
    ("Notifications for the new owner",
     "We moved out and the new tenants' alarms now notify my phone. Please stop this, it's creepy for both of us.",
     "account", "high", "hardware", "notifications on a phone (mobile_app) caused by ownership of the Hub"),
    ("Two-factor on the API?",
     "Will API keys ever support two-factor or IP allow-lists? Our security team asked during the audit.",
     "feature_request", "medium", "api", "account security topic (account) phrased as a feature request"),
    ("Box arrived open",
     "The parcel with my smart plugs arrived taped shut with different tape and one plug is missing. Was it opened in transit?",
     "shipping", "medium", "hardware", "could be read as a security issue (high) or a missing item"),
    ("Webhook stopped after key change",
     "After I rotated our API key yesterday, webhooks stopped arriving. Did rotating the key disable them?",
     "technical", "high", "api", "a key change (account) that broke webhooks (technical)"),
    ("Return label",
     "How do I print a return label for the thermostat? It doesn't fit our boiler. Happy to wait for the refund.",
     "shipping", "low", "hardware", "a return (shipping) that ends in a refund (billing)"),
    ("Dark mode broke my eyes",
     "Since the app switched to dark mode by itself, half the text is dark grey on black and I can't read the device names.",
     "technical", "medium", "mobile_app", "sounds like a feature request but it is a rendering bug"),
    ("family access",
     "my daughter wants to see the doorbell camera on her phone too. is that possible without a second subscription",
     "account", "low", "mobile_app", "sharing access (account) or a plan question (billing)"),
    ("Slow delivery of replacement",
     "You promised a replacement Hub Mini a week ago under warranty. My home has had no alarm since. When will it ship?",
     "shipping", "high", "hardware", "a warranty (technical) case that is now about shipping"),
    ("Price of Pro for API access",
     "Do I need the Pro plan to use the API, or is it included in Plus? Thinking of upgrading.",
     "billing", "low", "api", "a plan question that could be account or feature_request"),
    ("Please add Matter support!!!",
     "Matter support for the Hub is long overdue. I bought it because you said it was coming 'soon', a year ago.",
     "feature_request", "medium", "hardware", "angry tone suggests high urgency, but nothing is broken"),
    ("Weird login email",
     "I got an email saying someone signed in to my account from Lisbon. I've never been there. I changed my password already.",
     "account", "high", "web_app", "no product named; security makes it high even though the password is changed"),
]

# Exact label counts per category for the templated tickets, so the data set is balanced by design.
PRODUCT_COUNTS = {
    "billing": {"mobile_app": 20, "web_app": 27, "api": 19, "hardware": 14},
    "technical": {"mobile_app": 20, "web_app": 20, "api": 20, "hardware": 20},
    "account": {"mobile_app": 25, "web_app": 28, "api": 16, "hardware": 11},
    "shipping": {"hardware": 80},
    "feature_request": {"mobile_app": 20, "web_app": 20, "api": 20, "hardware": 20},
}
URGENCY_COUNTS = {
    "billing": {"low": 22, "medium": 32, "high": 26},
    "technical": {"low": 14, "medium": 32, "high": 34},
    "account": {"low": 22, "medium": 32, "high": 26},
    "shipping": {"low": 20, "medium": 34, "high": 26},
    "feature_request": {"low": 50, "medium": 24, "high": 6},
}


def label_plan(rng: random.Random) -> list[dict]:
    """One entry per ticket: its labels and whether it is a hand-written tricky one."""
    plan = []
    for category in CATEGORIES:
        tricky = [t for t in TRICKY if t[2] == category]
        products = Counter(PRODUCT_COUNTS[category])
        urgencies = Counter(URGENCY_COUNTS[category])
        for t in tricky:  # the tricky tickets take their share of the counts
            products[t[4]] -= 1
            urgencies[t[3]] -= 1
        assert sum(products.values()) == sum(urgencies.values()) == N_PER_CATEGORY - len(tricky), category
        prods = [p for p in PRODUCTS for _ in range(products[p])]
        urgs = [u for u in URGENCIES for _ in range(urgencies[u])]
        rng.shuffle(prods)
        rng.shuffle(urgs)
        plan += [{"category": category, "urgency": u, "product": p, "tricky": None} for p, u in zip(prods, urgs)]
        plan += [{"category": category, "urgency": t[3], "product": t[4], "tricky": t} for t in tricky]
    rng.shuffle(plan)
    return plan


# ---------------------------------------------------------------------------------------------
# Making one ticket


def typo(text: str, rng: random.Random) -> str:
    """One realistic slip in a random longer word: swapped, dropped or doubled letter."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randint(1, len(w) - 3)
    kind = rng.choice(["swap", "drop", "double"])
    if kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == "drop":
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


@dataclass(frozen=True)
class TicketStyle:
    """Everything that decides how a templated ticket reads: its problem templates per (category,
    product), the slot values, the optional detail sentences, the urgency cues, the greetings and
    sign-offs. The training tickets and the out-of-distribution test tickets share the labels and
    the way a ticket is put together, and nothing of their wording."""

    templates: dict[tuple[str, str], list[tuple[str, str]]]
    slot_values: dict[str, list[str]]
    details: dict
    urgency_cues: dict[str, list[str]]
    high_context: dict[tuple[str, str], list[str]]
    urgent_prefixes: list[str]
    vague_subjects: list[str]
    openings: list[str]
    inline_openings: list[str]
    closings: list[str]
    first_names: list[str]
    last_names: list[str]
    high_cue_rate: float = 0.95  # share of high-urgency tickets that say why (or that it is urgent)
    low_cue_rate: float = 0.85  # share of low-urgency tickets that say there is no hurry


TRAINING_STYLE = TicketStyle(
    templates=T, slot_values=SLOT_VALUES, details=DETAILS, urgency_cues=URGENCY_CUES, high_context=HIGH_CONTEXT,
    urgent_prefixes=["URGENT: ", "Urgent - ", "[urgent] ", ""], vague_subjects=VAGUE_SUBJECTS, openings=OPENINGS,
    inline_openings=INLINE_OPENINGS, closings=CLOSINGS, first_names=FIRST, last_names=LAST,
)


def make_ticket(spec: dict, rng: random.Random, style: TicketStyle = TRAINING_STYLE,
                template: tuple[str, str] | None = None) -> tuple[str, str, bool]:
    """(subject, body, clean) for a templated ticket with the given labels, written in ``style``
    (from ``template`` if given, else from a random template of the ticket's category and product).

    ``clean``: no typo, normal case and a specific subject -- a good few-shot example.
    """
    clean = True
    category, urgency, product = spec["category"], spec["urgency"], spec["product"]
    subjects, body = template or rng.choice(style.templates[category, product])
    if rng.random() < 0.1:
        subject, clean = rng.choice(style.vague_subjects), False
    else:
        subject = rng.choice(subjects.split("|"))
    # Fill subject and body together so they mention the same order, device, endpoint ...
    slots: dict[str, str] = {}
    values = style.slot_values
    subject, first_sentence = fill(subject, rng, slots, values), fill(body, rng, slots, values)
    sentences = [first_sentence]
    if rng.random() < 0.45:
        details = style.details[category] + style.details.get((category, product), [])
        sentences.append(fill(rng.choice(details), rng, slots, values))
    if urgency == "high":
        context = style.high_context.get((category, product), []) + style.high_context.get((category, "*"), [])
        pool = context if context and rng.random() < 0.6 else style.urgency_cues["high"]
        if rng.random() < style.high_cue_rate:
            sentences.append(fill(rng.choice(pool), rng, slots, values))
        if rng.random() < 0.3:
            subject = rng.choice(style.urgent_prefixes) + subject
    elif urgency == "low":
        if rng.random() < style.low_cue_rate:
            sentences.append(rng.choice(style.urgency_cues["low"]))
    elif rng.random() < 0.5:
        sentences.append(rng.choice(style.urgency_cues["medium"]))
    if len(sentences) > 1 and rng.random() < 0.25:
        # Some people lead with the urgency or the context.
        sentences.insert(0, sentences.pop())
    body = " ".join(sentences)
    if rng.random() < 0.15:
        body, clean = typo(body, rng), False
    if rng.random() < 0.05:
        body, clean = body.lower(), False  # written in a hurry
    first, last = rng.choice(style.first_names), rng.choice(style.last_names)
    closing = rng.choice(style.closings).format(first=first, last=last)
    if rng.random() < 0.35:  # greeting and sign-off on lines of their own
        sep, opening = "\n", rng.choice(style.openings)
    else:  # one paragraph
        sep, opening = " ", rng.choice(style.inline_openings)
    parts = [p for p in (opening, body, closing) if p]
    return subject, sep.join(parts), clean


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def generate_tickets(rng: random.Random, max_similarity: float = 0.5) -> pd.DataFrame:
    """The 400 tickets. A candidate too similar to an earlier ticket is redrawn, so no two
    tickets share more than ``max_similarity`` of their word 3-grams (stricter than the 0.8
    that ftkit's leakage check uses)."""
    rows = []
    accepted: list[set[str]] = []
    for number, spec in enumerate(label_plan(rng), start=1):
        for _attempt in range(200):
            if spec["tricky"]:
                subject, body, clean = spec["tricky"][0], spec["tricky"][1], False
            else:
                subject, body, clean = make_ticket(spec, rng)
            sh = _shingles(f"{subject} {body}")
            if all(len(sh & other) / len(sh | other) < max_similarity for other in accepted):
                break
        else:
            raise RuntimeError(f"could not make ticket {number} different enough from the others")
        accepted.append(sh)
        rows.append({
            "id": f"T{number:04d}", "subject": subject, "body": body,
            "category": spec["category"], "urgency": spec["urgency"], "product": spec["product"],
            "tricky": spec["tricky"][5] if spec["tricky"] else "", "clean": clean,
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The out-of-distribution test set: tickets written for it alone
#
# The in-distribution test split above is honest about leakage (no ticket appears twice) but
# not about templates: its tickets are new fillings of the same ~110 problem templates, cues,
# greetings and sign-offs as the training tickets, so a model can score well by recognising
# them. These 100 tickets share only the labels, the answer format and the company with the
# training data: every problem template, product mention, urgency cue, detail sentence,
# greeting, sign-off, name and slot value below was written for this set and is used nowhere
# else. Products are named the way the training tickets never name them ("the iOS application",
# "the web portal", "the REST interface", new devices such as a smoke alarm or a smart lock), and
# some tickets mention a second product in passing. scripts/make_data.py checks the result
# against the training tickets (word 3-gram overlap, nearest neighbour) and the data card
# reports both test sets' figures.

OOD_SIZE = 100
OOD_MAX_SIMILARITY_TO_SEEN = 0.3  # word-3-gram Jaccard to any of the 400 tickets; redrawn above
OOD_PRODUCT_COUNTS = {
    "billing": {"mobile_app": 5, "web_app": 5, "api": 5, "hardware": 5},
    "technical": {"mobile_app": 5, "web_app": 5, "api": 5, "hardware": 5},
    "account": {"mobile_app": 5, "web_app": 5, "api": 5, "hardware": 5},
    "shipping": {"hardware": 20},
    "feature_request": {"mobile_app": 5, "web_app": 5, "api": 5, "hardware": 5},
}
OOD_URGENCY_COUNTS = {
    "billing": {"low": 6, "medium": 7, "high": 7},
    "technical": {"low": 5, "medium": 7, "high": 8},
    "account": {"low": 6, "medium": 7, "high": 7},
    "shipping": {"low": 6, "medium": 8, "high": 6},
    "feature_request": {"low": 10, "medium": 7, "high": 3},
}

OOD_SLOT_VALUES = {
    "plan": PLANS,  # the company's plan names are the same everywhere
    "amount": ["$7.99", "$12.50", "$39.00", "$59.00", "$99.00", "$189.00", "$310.00"],
    "phone": ["Moto G84", "Xperia 10 V", "Fairphone 5", "Redmi Note 13", "iPhone SE", "Nothing Phone 2"],
    "android": ["Moto G84", "Xperia 10 V", "Fairphone 5", "Redmi Note 13", "Nothing Phone 2"],
    "iphone": ["iPhone SE", "iPhone 12 mini"],
    "os": ["Android 13", "Android 14"],  # only after an Android phone
    "browser": ["Opera", "Vivaldi", "Arc", "Chromium"],
    "endpoint": ["/v3/rooms", "/v2/schedules", "/v2/alerts", "/v2/users", "/v3/sensors", "/v2/firmware"],
    "sdk": ["Ruby gem 0.9.4", ".NET client 1.2.0", "Rust crate 0.3.1", "PHP library 2.0.1"],
    "device": ["smoke alarm", "smart lock", "window contact", "siren", "range extender", "water valve",
               "keypad", "floodlight camera", "glass-break detector", "temperature probe"],
    "device2": ["smoke alarm", "smart lock", "window contact", "siren", "range extender", "keypad"],
    "courier": ["Evri", "Chronopost", "Correos", "Canada Post", "InPost", "Poste Italiane", "Australia Post"],
    "city": ["Bergen", "Ghent", "Tallinn", "Valencia", "Boise", "Halifax", "Adelaide", "Kyoto", "Bilbao", "Krakow"],
    "weekday": ["Saturday", "Sunday", "Wednesday"],
    "version": ["5.0.1", "5.1.0", "4.9.8"],
    "firmware": ["4.0.0", "4.1.3", "3.9.9"],
    "home": ["cottage", "apartment", "workshop", "bakery", "clinic", "warehouse"],
}

# (subjects separated by "|", body) per (category, product). Each ticket of a group uses a
# different template while the group has unused ones.
OOD_TEMPLATES: dict[tuple[str, str], list[tuple[str, str]]] = {}
OOD_TEMPLATES["billing", "mobile_app"] = [
    ("Google Play billed me for a tier I never chose|Mystery Play Store payment",
     "Google Play took {amount} for a {plan} upgrade that I never picked in the Android application."),
    ("Family tier price on iOS looks off|Odd price in the iOS application",
     "The iOS application lists the Family tier at one price, yet Apple took {amount} from my account this morning."),
    ("Accidental tap cost me money|Tapped upgrade by accident",
     "My son pressed the upgrade button in the phone application and we paid {amount}; can that be reversed?"),
    ("Trial converted after a week|Free trial cut short",
     "The 30-day trial I started from the smartphone application turned into a paid subscription after only seven days."),
    ("Receipt missing for purchase on my phone|No receipt after upgrading",
     "After paying for {plan} through the mobile application I never got a receipt, and expenses needs one."),
    ("Ended via Apple ID, renewed anyway|Renewal despite ending it",
     "I ended the subscription under Apple ID settings on my {iphone}, yet the phone application renewed it for {amount}."),
]
OOD_TEMPLATES["billing", "web_app"] = [
    ("Receipts show our old company name|Old name on receipts",
     "Receipts downloaded from the web portal still carry our former company name although we renamed it online."),
    ("SEPA debit failed twice|Direct debit trouble",
     "Our SEPA direct debit failed twice according to the portal at lumenhive.com, but the bank says it saw no request."),
    ("Prorated line I cannot explain|Confusing proration",
     "When I switched tiers on the site's account pages, a prorated line of {amount} appeared that nobody here understands."),
    ("Promo code refused at online checkout|Coupon not eligible",
     "The promo code from your newsletter is refused at checkout on lumenhive.com with the words 'not eligible'."),
    ("Move to annual payment|Yearly instead of monthly",
     "Can I move from monthly to annual payment in the browser version, and would the {amount} already paid be credited?"),
    ("Sales tax added twice|Tax appears two times",
     "The statement I opened in {browser} shows sales tax added twice on the {plan} line."),
]
OOD_TEMPLATES["billing", "api"] = [
    ("Sandbox traffic shows as billable|Charged for test calls",
     "Requests we sent to the sandbox environment of the REST interface appear as billable on this month's statement."),
    ("Price of a larger daily quota|Cost of more requests",
     "What does a larger daily request quota on the developer platform cost? We expect about {n} times today's traffic."),
    ("Metered calls disagree with our gateway|Usage count too high",
     "The metered usage report for our integration counts roughly {pct}% more HTTP calls than our own gateway logs."),
    ("Platform fee after retiring integration|Still paying for a retired client",
     "We revoked every developer credential of our old integration last quarter, but the platform fee of {amount} keeps appearing."),
    ("Are event callbacks metered?|Callbacks on the bill",
     "Are event callbacks to our server counted as metered calls? The bill for the REST interface seems to include them."),
    ("Statements in euros|Currency of developer statements",
     "Could statements for our developer platform usage be issued in euros instead of dollars from next month?"),
]
OOD_TEMPLATES["billing", "hardware"] = [
    ("Rental deposit not returned|Deposit for the rental kit",
     "We handed back the rented {device} and {device2} three weeks ago and the deposit of {amount} has not come back."),
    ("Taken in full instead of instalments|Instalment plan ignored",
     "I chose to pay for the {device} in four instalments, but the whole {amount} was collected at once."),
    ("Extended warranty I never ticked|Unwanted warranty fee",
     "There is a {amount} line for an extended warranty on my {device} that I never selected."),
    ("Starter kit discount missing|Paid full price for the kit",
     "The starter kit with a {device} was advertised at {pct}% off, but my card paid the full price."),
    ("Gift card balance ignored|Gift card not used",
     "I paid for a {device} with a gift card plus my debit card, and the gift card balance was ignored."),
    ("Warranty swap was invoiced|Paying for a replacement unit",
     "You sent a replacement {device} under warranty and then invoiced me {amount} for it."),
]
OOD_TEMPLATES["technical", "mobile_app"] = [
    ("Arrive-home routine never fires|Geofencing ignored",
     "The arrive-home routine never runs although location access is set to 'always' for the Android application on my {android}."),
    ("White screen since version {version}|Empty screen on launch",
     "Since version {version} the iOS application shows an empty white screen and nothing loads."),
    ("Alerts reach my phone hours late|Delayed motion alerts",
     "Motion alerts in the phone application reach my {phone} hours after the event, long after the clip was recorded."),
    ("Room list vanishes in landscape|Rotation breaks the layout",
     "Turning my tablet sideways makes the mobile application's room list disappear completely."),
    ("Consumption chart shows zeros|Energy graph empty on phone",
     "The consumption chart in the smartphone application shows zero for every day this month."),
    ("Quits when opening the camera tab|Camera tab closes the application",
     "The Android application quits every time I tap the camera tab on my {android} running {os}."),
]
OOD_TEMPLATES["technical", "web_app"] = [
    ("Floor plan upload fails|413 error on the portal",
     "Uploading a floor plan image on the web portal ends with a 413 error page in {browser}."),
    ("Week view cut off|Scheduling calendar overlaps",
     "In the scheduling calendar of the browser version, entries overlap and the week view is cut off on the right."),
    ("Event history filters reset|Filters don't stick online",
     "Every filter I set on the event history page of lumenhive.com resets as soon as I change the date."),
    ("Printing the device list gives a blank sheet|Print view broken",
     "Printing the device list from the desktop site produces an empty sheet in {browser}."),
    ("Sorting by battery does nothing|Column sort broken",
     "Clicking the battery column to sort devices in the web console has no effect whatsoever."),
    ("Language setting half applied|Menus stay in English",
     "I set the language to German in the online portal, but half of the menus remain in English."),
]
OOD_TEMPLATES["technical", "api"] = [
    ("Callback signatures fail|Signature check broken",
     "Signature verification fails for every event callback since yesterday; we use the signing secret from the developer console."),
    ("{sdk} hangs|Client library timeout",
     "The {sdk} hangs for sixty seconds and then raises a timeout when we list {endpoint}."),
    ("Field renamed without notice|Breaking change in responses",
     "The JSON returned by {endpoint} suddenly calls the field 'temp_c' instead of 'temperature', which broke our integration."),
    ("HTTP 409 on every PATCH|Conflict responses from the REST interface",
     "Every PATCH to {endpoint} now answers HTTP 409 conflict, even on records nobody else touches."),
    ("Empty page halfway through a listing|Listing skips a page",
     "Listing {endpoint} with page_size=100 returns an empty page halfway and then carries on."),
    ("CORS error on the public endpoints|Browser calls to the REST interface blocked",
     "Calls from our own front end to {endpoint} are now rejected with a CORS error, and nothing changed in our code."),
]
OOD_TEMPLATES["technical", "hardware"] = [
    ("Smoke alarm chirps every minute|Chirping smoke alarm",
     "The smoke alarm in the hallway chirps every minute even with a fresh battery."),
    ("Smart lock motor stalls|Lock jams halfway",
     "The smart lock's motor stops halfway when locking, and the bolt stays out."),
    ("Range extender reboots itself|Extender drops the {device}",
     "The range extender reboots itself every twenty minutes, and the {device} behind it falls off the network."),
    ("Siren goes off for no reason|False alarms at night",
     "The siren went off twice last night although no sensor reported anything; the phone application lists no event."),
    ("Water valve stayed open|Valve did not close during a leak",
     "Our automatic water valve did not close when the floor probe got wet, so the kitchen flooded."),
    ("Keypad freezes in the cold|Outdoor keypad unresponsive",
     "Below zero degrees, the outdoor keypad stops reacting to any button."),
    ("Floodlight camera flickers|Flickering after firmware {firmware}",
     "The floodlight camera above the garage flickers on and off all evening since firmware {firmware}."),
]
OOD_TEMPLATES["account", "mobile_app"] = [
    ("Passkey stopped working on iPhone|Passkey sign-in fails",
     "My passkey stopped working for the iOS application after I replaced my {iphone}."),
    ("Second household missing on my phone|Can't switch households",
     "The phone application only shows my own household, not the one my mother invited me to."),
    ("Verification link opens a grey screen|Sign-up confirmation stuck",
     "The confirmation link for my new profile opens the mobile application, which then sits on a grey screen instead of verifying me."),
    ("Authenticator was on the stolen phone|Lost my authenticator",
     "The phone holding my authenticator codes was stolen, and the Android application now wants a code I cannot produce."),
    ("Change my display name|Profile still shows maiden name",
     "How do I change the display name on my profile from the smartphone application? It still shows my maiden name."),
    ("Limited profile for a teenager|Restrict what my son can do",
     "Can my teenager get a profile in the mobile application that switches lights but cannot disarm anything?"),
]
OOD_TEMPLATES["account", "web_app"] = [
    ("Administrator rights for a colleague|Make a colleague an administrator",
     "Please tell me where on the web portal I can grant administrator rights to a colleague."),
    ("Address 'already in use' on sign-up|Can't register on the site",
     "Registering on lumenhive.com fails because my address is 'already in use', though I closed that profile years ago."),
    ("Forgot my security answers|Security questions I can't answer",
     "The site's account pages ask security questions I set up long ago and no longer remember."),
    ("List of recent logins|Who logged into our organisation",
     "Is there a page in the web console that lists recent logins for everyone in our organisation?"),
    ("Move my profile to my work address|Profile to company address",
     "I'd like to move my personal profile to my work address on the online portal without losing its history."),
    ("Sessions never end on the shared computer|Always signed in on the office PC",
     "On the shared office computer the browser version keeps us signed in for weeks; can sessions end automatically?"),
]
OOD_TEMPLATES["account", "api"] = [
    ("Scopes for a new developer token|Token scopes",
     "Which scopes does a developer token need to read {endpoint} without being able to change schedules?"),
    ("Rotating our integration's credentials|Credential rotation",
     "How do we rotate the client credentials of our integration without downtime on the REST interface?"),
    ("Owner of our developer console left|Ownership of the developer console",
     "The engineer who owned our developer console has left; ownership needs to move to our CTO."),
    ("Bearer token leaked in a public repo|Invalidate a leaked token",
     "A bearer token for our integration was pushed to a public repository by mistake; please invalidate it."),
    ("Own credentials for a second developer|Add a developer to our integration",
     "How can a second developer get their own credentials for our integration instead of sharing mine?"),
    ("Developer console invitation expired|New invite needed",
     "The invitation to join our company's developer console expired before I could accept it; could you send a new one?"),
]
OOD_TEMPLATES["account", "hardware"] = [
    ("Lock still paired with the last tenant|Previous tenant can unlock",
     "The smart lock in our new flat is still paired with the previous tenant, who can apparently unlock it."),
    ("Keypad code for the cleaner|Temporary code on Tuesdays",
     "How do I give our cleaner a keypad code that only works on Tuesdays?"),
    ("Flea-market siren tied to another household|Used siren locked",
     "The siren I bought at a flea market is locked to somebody else's household."),
    ("Moving my devices into my partner's household|Combine two households",
     "My partner and I moved in together; how do we move my {device} into her household without pairing it again?"),
    ("Caretaker needs the stairwell alarm|Access for our caretaker",
     "Our building caretaker needs to see the smoke alarm status for the stairwell, and nothing else."),
    ("My late father's devices|Closing a late relative's profile",
     "My late father's smoke alarms and smart lock are still on his profile, and we need them on mine."),
]
OOD_TEMPLATES["shipping", "hardware"] = [
    ("Left with a neighbour I don't know|Parcel handed to a neighbour",
     "The courier handed my {device} parcel (order {order}) to a neighbour, but the card doesn't say which one."),
    ("Parcel returned to your warehouse|Returned to sender",
     "{courier} returned order {order} to your warehouse after one failed attempt; nobody told me."),
    ("Sent to a parcel locker|Locker instead of my address",
     "Tracking says order {order} went to a parcel locker in {city}, although I chose delivery to my door."),
    ("Second half of a split order vanished|Split shipment incomplete",
     "Order {order} was split into two shipments; the first came on {weekday}, the second vanished."),
    ("Box arrived soaked|Water-damaged package",
     "The package with the {device} arrived soaked through and the manual is pulp."),
    ("Swap the colour before dispatch|Change my order before it leaves",
     "Could I swap the {device} in order {order} for the black one before it leaves your warehouse?"),
    ("Delivery estimate slips daily|Estimated arrival keeps moving",
     "The estimated arrival for order {order} has moved back every day this week."),
    ("Delivery to a post office box?|PO box address",
     "Can you deliver a {device} to a post office box in {city}, or does it need a street address?"),
    ("Collect at the depot myself|Pick-up instead of delivery",
     "Can I collect order {order} at the {courier} depot in {city} myself?"),
    ("Wrong house number on the label|Label typo",
     "The shipping label on order {order} has the wrong house number, so {courier} cannot find us."),
    ("No screws in the mounting kit|Incomplete mounting kit",
     "The mounting kit that came with my {device} has no screws or wall plugs in it."),
    ("Sale order still processing|November order not dispatched",
     "I bought a {device} in the November sale and order {order} still says 'processing'."),
    ("Signature needed, nobody home|Can't sign for the parcel",
     "{courier} needs a signature for order {order}, but nobody is home during the day."),
    ("Do you send to Reykjavik?|Delivery to Iceland",
     "Do you send {device}s to Reykjavik, and who pays the import charges?"),
    ("Dead tracking link|Tracking page not found",
     "The tracking link in the dispatch email for order {order} leads to a 'page not found' at {courier}."),
    ("Someone else's package at my door|Package meant for another person",
     "A package addressed to a stranger in {city} arrived here instead of my order {order}."),
]
OOD_TEMPLATES["feature_request", "mobile_app"] = [
    ("Scene shortcut on the Android home screen|One-tap scenes",
     "Please let the Android application put a scene shortcut on the home screen so I can run it with one tap."),
    ("Landscape orientation on tablets|Rotate on tablets",
     "Could the mobile application support landscape orientation on tablets?"),
    ("Wear OS companion?|Smartwatch companion",
     "Is a Wear OS companion for the phone application being considered?"),
    ("Quiet hours for alerts|Mute non-critical alerts at night",
     "Quiet hours in the smartphone application would be welcome, so non-critical alerts stay silent at night."),
    ("Save clips to the photo library|Export clips on iOS",
     "I'd like to save a camera clip straight from the iOS application to my photo library."),
    ("Larger text option|Accessibility: bigger fonts",
     "My father struggles with the small print; could the mobile application offer a larger text option?"),
]
OOD_TEMPLATES["feature_request", "web_app"] = [
    ("Dark theme for the portal|Night theme online",
     "A dark theme for the web portal would be easier on the eyes in our night-shift control room."),
    ("Excel export of the event history|XLSX export",
     "Could the event history on lumenhive.com be exported as an Excel workbook?"),
    ("Map of all our properties|Sites on a map",
     "A map view in the browser version showing every property we manage would spare us hours every week."),
    ("Use the full width on wide monitors|Narrow layout on big screens",
     "On a wide monitor the web console only uses a narrow strip in the middle; please use the full width."),
    ("Saved filter presets|Remember my views",
     "Please let us save filter presets on the online portal's device list."),
    ("Notes on individual events|Comments in the timeline",
     "Our team would like to attach notes to individual events in the desktop site's timeline."),
]
OOD_TEMPLATES["feature_request", "api"] = [
    ("Real-time event stream|WebSocket feed",
     "Could the REST interface offer a WebSocket or server-sent events feed instead of polling {endpoint}?"),
    ("Idempotency keys for writes|Safe retries",
     "Please accept idempotency keys on write requests, so our retries cannot create duplicate schedules."),
    ("Simulated devices for testing|Test environment with fake sensors",
     "A sandbox with simulated sensors would let us test our integration without touching customers' homes."),
    ("Export a whole home in one call|Full configuration export",
     "We would welcome one HTTP call that exports a full home's configuration as JSON."),
    ("Official TypeScript client|TypeScript client library",
     "Is an official TypeScript client library planned for the developer platform?"),
    ("Room filter on {endpoint}|Query parameter for rooms",
     "Could {endpoint} take a room filter, so we don't have to download every device and filter ourselves?"),
]
OOD_TEMPLATES["feature_request", "hardware"] = [
    ("Solar panel for the floodlight camera|Solar charging accessory",
     "A small solar panel accessory for the floodlight camera would spare us climbing ladders to charge it."),
    ("Thread radio in the next hub|Thread support",
     "Please consider adding a Thread radio to the next generation of the hub."),
    ("Slimmer window contacts|Window contact too bulky",
     "The window contacts are too bulky for our sash windows; a slimmer model would sell well."),
    ("Backlit keypad|Illuminated buttons",
     "Could a future keypad have backlit buttons? Ours is impossible to use in the dark."),
    ("Hush button on the smoke alarm|Silence it from the unit",
     "We'd like a button on the smoke alarm itself to silence it while cooking."),
    ("Wall bracket for the siren|Mounting bracket",
     "Please sell a wall bracket for the siren; at the moment it has to stand on a shelf."),
]

OOD_DETAILS = {
    "billing": ["The payment is visible on my credit card statement.", "Our accounts department flagged it.",
                "I've kept the confirmation email.", "We are on the {plan} tier."],
    "technical": ["A restart made no difference.", "It began on {weekday} evening.", "Happy to send diagnostics.",
                  "Several household members see the same thing."],
    ("technical", "mobile_app"): ["Reinstalling did not change anything.", "My partner's {phone} behaves the same."],
    ("technical", "hardware"): ["The unit sits about two metres from the hub.", "New batteries went in last month."],
    ("technical", "api"): ["Our client uses the {sdk}.", "Correlation ids can be shared on request."],
    ("technical", "web_app"): ["Disabling extensions did not help.", "A colleague on another laptop sees it too."],
    "account": ["I can prove who I am with an ID.", "Our household has {n} members.",
                "I'm the person who set everything up."],
    "shipping": ["The confirmation number is in my inbox.", "Someone was at home the entire day.",
                 "I selected next-day delivery.", "It's going to our {home} in {city}."],
    "feature_request": ["Competing products already do this.", "I'd be glad to try an early version.",
                        "Half of our team has asked for it.", "Apart from that we love it."],
}
OOD_URGENCY_CUES = {
    "high": ["We need someone on this within the hour.", "This can't wait until tomorrow.",
             "It's an emergency on our end.", "Please escalate this right away.",
             "Top priority for us, sorry to push."],
    "medium": ["Would be good to have this sorted within a few days.", "Not an emergency, but it's becoming a nuisance.",
               "There's a workaround for now.", "Please have a look when the team has capacity this week."],
    "low": ["There's no deadline on this.", "Whenever someone has a spare moment.", "Purely out of interest.",
            "Answer at your leisure.", "This is not time-sensitive.", "No pressure at all."],
}
OOD_HIGH_CONTEXT = {
    ("technical", "api"): ["Checkout is failing for every one of our customers.",
                           "Our on-call engineer has been paged twice already."],
    ("technical", "web_app"): ["The night shift cannot see a single site."],
    ("technical", "mobile_app"): ["Nobody can check on the house while we're abroad."],
    ("technical", "hardware"): ["The house is empty this week and nothing is being watched.",
                                "My elderly father relies on it and it has stopped working."],
    ("billing", "*"): ["I can't pay my other bills until this is reversed."],
    ("account", "*"): ["I believe somebody else has got into my profile."],
    ("shipping", "*"): ["The new tenants move in on {weekday} and it must be installed by then."],
    ("feature_request", "*"): ["Our board decides on the renewal this Friday, and this is the deciding point."],
}

OOD_STYLE = TicketStyle(
    templates=OOD_TEMPLATES, slot_values=OOD_SLOT_VALUES, details=OOD_DETAILS, urgency_cues=OOD_URGENCY_CUES,
    high_context=OOD_HIGH_CONTEXT, urgent_prefixes=["IMPORTANT: ", "Time-critical - ", "[priority] ", ""],
    vague_subjects=["Assistance needed", "Enquiry", "Support", "Something's wrong", "A question for you", "Trouble"],
    openings=["Greetings,", "To whom it may concern,", "Hey folks,", "Morning!", "Hiya,", "Dear Lumenhive,", "", ""],
    inline_openings=["Greetings.", "Hey folks!", "Morning!", "Hiya!", "", "", ""],
    closings=["Kind regards, {first}", "Much appreciated — {first}", "Yours, {first} {last}", "Talk soon, {first}",
              "With thanks, {first} {last}", "Typed on a tablet, excuse typos", "Warmly, {first}", "", ""],
    first_names=["Aiko", "Bruno", "Celine", "Dario", "Eva", "Filip", "Gita", "Hugo", "Ilse", "Jamal", "Klara", "Luca",
                 "Mira", "Niels", "Orla", "Pavel", "Rania", "Stefan", "Tove", "Ugo", "Vera", "Wiktor", "Yasmin"],
    last_names=["Andersson", "Bianchi", "Castillo", "Dimitrov", "Eriksen", "Fontaine", "Gallagher", "Horvat", "Ito",
                "Jovanovic", "Kaur", "Lindqvist", "Marin", "Nakamura", "Petrov", "Quintero", "Svoboda", "Varga"],
    high_cue_rate=1.0, low_cue_rate=0.9,
)


def ood_label_plan(rng: random.Random) -> list[dict]:
    """One entry per out-of-distribution ticket: its labels, balanced by design (20 per category)."""
    plan = []
    for category in CATEGORIES:
        prods = [p for p in PRODUCTS for _ in range(OOD_PRODUCT_COUNTS[category].get(p, 0))]
        urgs = [u for u in URGENCIES for _ in range(OOD_URGENCY_COUNTS[category][u])]
        assert len(prods) == len(urgs) == OOD_SIZE // len(CATEGORIES), category
        rng.shuffle(prods)
        rng.shuffle(urgs)
        plan += [{"category": category, "urgency": u, "product": p} for p, u in zip(prods, urgs)]
    rng.shuffle(plan)
    return plan


def generate_ood_tickets(seen: list[str], seed: int = SEED, max_similarity: float = 0.5) -> pd.DataFrame:
    """The out-of-distribution test tickets, in ``OOD_STYLE``.

    Its own random generator, so adding it changed none of the other files. A candidate is
    redrawn when it shares ``max_similarity`` or more of its word 3-grams with an earlier
    out-of-distribution ticket, or ``OOD_MAX_SIMILARITY_TO_SEEN`` or more with any of the
    ``seen`` texts (the 400 tickets of the other splits).
    """
    rng = random.Random(f"{seed}-ood")
    seen_shingles = [_shingles(text) for text in seen]
    # Each group walks through its own shuffled templates, so its tickets differ in kind, not
    # only in their fillings (only shipping has more tickets than templates).
    queues: dict[tuple[str, str], list] = {}
    rows, accepted = [], []
    for number, spec in enumerate(ood_label_plan(rng), start=1):
        group = (spec["category"], spec["product"])
        if not queues.get(group):
            queues[group] = rng.sample(OOD_TEMPLATES[group], len(OOD_TEMPLATES[group]))
        template = queues[group].pop()
        for _attempt in range(200):
            subject, body, _clean = make_ticket(spec, rng, OOD_STYLE, template=template)
            sh = _shingles(f"{subject} {body}")
            if (all(len(sh & other) / len(sh | other) < max_similarity for other in accepted)
                    and all(len(sh & other) / len(sh | other) < OOD_MAX_SIMILARITY_TO_SEEN for other in seen_shingles)):
                break
        else:
            raise RuntimeError(f"could not make out-of-distribution ticket {number} different enough")
        accepted.append(sh)
        rows.append({"id": f"OOD{number:03d}", "subject": subject, "body": body, "category": spec["category"],
                     "urgency": spec["urgency"], "product": spec["product"], "split": "test_ood"})
    return pd.DataFrame(rows)


def _word_ngrams(text: str, n: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def trigram_overlap(texts: list[str], reference: list[str]) -> pd.DataFrame:
    """Per text: the share of its word 3-grams found anywhere in ``reference`` (``shared``), its
    word-3-gram Jaccard similarity to the most similar reference text (``nearest``), and whether
    it shares any run of five words with a reference text (``five_gram``)."""
    ref = [_shingles(t) for t in reference]
    pool = set().union(*ref)
    five_pool = set().union(*(_word_ngrams(t, 5) for t in reference))
    rows = []
    for text in texts:
        sh = _shingles(text)
        rows.append({"shared": len(sh & pool) / len(sh), "nearest": max(len(sh & r) / len(sh | r) for r in ref),
                     "five_gram": bool(_word_ngrams(text, 5) & five_pool)})
    return pd.DataFrame(rows)


def stratum(row) -> str:
    """The group a ticket is stratified by in the split: its category and product."""
    return f"{row['category']}/{row['product']}"


def answer(row) -> dict:
    """The assistant's target: compact JSON with the keys in a fixed order."""
    return {"category": row["category"], "urgency": row["urgency"], "product": row["product"]}


USER_TEMPLATE = "Subject: {subject}\n\n{body}"


def chat_examples(frame: pd.DataFrame) -> list[dict]:
    return ftd.build_chat_examples(frame, system=SHORT_SYSTEM, user=USER_TEMPLATE, assistant=answer)


# ---------------------------------------------------------------------------------------------
# Tone (house style) set

TONE_SYSTEM = (
    f"You are {COMPANY}'s support writer. Rewrite draft replies in the house style: greet the customer "
    "by first name, say what happened in plain words, give one clear next step, stay under 80 words, "
    "and sign off with '— The Lumenhive team'."
)

# (customer situation for the multi-turn version, terse draft, house-style rewrite). {first} etc.
# are filled per example.
TONE_SCENARIOS = [
    ("asked where their refund is",
     "refund processed. 5-7 business days. ticket closed.",
     "Hi {first}, good news: we've sent your refund of {amount}. Banks usually take 5 to 7 working days "
     "to show it. If it hasn't arrived by {weekday} next week, just reply here and we'll chase it for you.\n— The Lumenhive team"),
    ("reported a Hub that keeps going offline",
     "known issue w/ fw {firmware}. downgrade not possible. wait for patch.",
     "Hi {first}, thanks for telling us. The {firmware} update has a bug that makes some Hubs drop offline, "
     "and a fix is on its way this week. Until then, restarting the Hub brings it back. We'll email you as soon as the fix is out.\n— The Lumenhive team"),
    ("asked for a password reset email that never came",
     "reset link resent. check spam. links expire 1h.",
     "Hi {first}, we've sent you a fresh password reset link. It can land in spam, so please look there too, "
     "and use it within an hour because it expires after that. Reply here if it still doesn't show up.\n— The Lumenhive team"),
    ("received a damaged parcel",
     "pls send photos of box + device. replacement after review.",
     "Hi {first}, sorry your {device} arrived damaged. Could you reply with a photo of the box and one of the "
     "device? As soon as we have them we'll send a replacement, usually within two working days.\n— The Lumenhive team"),
    ("asked for dark mode in the app",
     "feature req logged. no ETA.",
     "Hi {first}, thanks for the idea. Dark mode is on our list and we've added your vote to it. We can't promise "
     "a date yet, but we'll let you know when it's ready to try.\n— The Lumenhive team"),
    ("was charged twice for an upgrade",
     "dup charge confirmed. 2nd charge voided. pending may show 3d.",
     "Hi {first}, you're right: the upgrade was charged twice. We've cancelled the second charge of {amount}. "
     "Your bank may show it as pending for up to three days before it disappears. No need to do anything.\n— The Lumenhive team"),
    ("hit API rate limits",
     "limit is 600 req/min per key. use backoff. higher limits = Business plan.",
     "Hi {first}, each API key can make 600 requests a minute, and your app went over that at peak times. Adding a "
     "short retry with backoff will smooth it out. If you need more, the Business plan raises the limit.\n— The Lumenhive team"),
    ("wants to transfer the Hub to the new owner of their house",
     "remove hub from acct in settings > devices. new owner adds w/ setup code.",
     "Hi {first}, congratulations on the move! Open Settings, then Devices, and remove the Hub from your account. "
     "The new owner can then add it with the setup code on the bottom of the Hub.\n— The Lumenhive team"),
    ("was waiting for a delayed order",
     "order {order} delayed at carrier. new ETA {weekday}.",
     "Hi {first}, sorry for the wait. Your order {order} was held up by the courier, and it's now due on {weekday}. "
     "We'll keep an eye on it and let you know if anything changes.\n— The Lumenhive team"),
    ("asked how to export the activity log",
     "dashboard > activity > export. csv only. max 90d.",
     "Hi {first}, you can export it from the dashboard: open Activity and choose Export. You'll get a CSV file "
     "covering up to 90 days at a time.\n— The Lumenhive team"),
    ("asked why their camera night vision is blurry",
     "clean lens. disable IR if behind glass. glass reflects IR.",
     "Hi {first}, the usual cause is the window: glass reflects the camera's night light back into the lens. If the "
     "camera sits behind glass, turn night vision off in its settings, or move it outside. A quick lens wipe helps too.\n— The Lumenhive team"),
    ("asked to cancel their subscription",
     "sub cancelled. access until end of period. no refund for partial month.",
     "Hi {first}, we've cancelled your {plan} subscription. You keep everything until the end of this billing "
     "period, and nothing more will be charged after that.\n— The Lumenhive team"),
]


def tone_examples(rng: random.Random) -> list[dict]:
    """36 examples: 3 per scenario, with different names and details; the third is multi-turn
    (an old-style draft kept as context with weight 0, the house-style rewrite trained)."""
    examples = []
    for situation, draft, styled in TONE_SCENARIOS:
        for variant in range(3):
            values = {"first": rng.choice(FIRST), "amount": rng.choice(AMOUNTS), "weekday": rng.choice(WEEKDAYS),
                      "firmware": rng.choice(FIRMWARES), "device": rng.choice(DEVICES), "plan": rng.choice(PLANS),
                      "order": f"LH-{rng.randint(100000, 999999)}"}
            d, s = draft.format(**values), styled.format(**values)
            if variant < 2:
                intro = "Rewrite this reply in our house style:" if variant == 0 else "Make this reply ready to send:"
                messages = [ftd.system(TONE_SYSTEM), ftd.user(f"{intro}\n\n{d}"), ftd.assistant(s)]
            else:
                messages = [
                    ftd.system(TONE_SYSTEM),
                    ftd.user(f"{values['first']} {situation}. Draft a reply."),
                    ftd.assistant(d, weight=0),  # the old terse style: context, not a target
                    ftd.user("Now rewrite it in the house style."),
                    ftd.assistant(s, weight=1),
                ]
            examples.append(ftd.chat_example(messages))
    return examples


# ---------------------------------------------------------------------------------------------
# DPO preference pairs: the preferred answer is the exact compact JSON; the other is a typical
# failure of an untrained model.


def dpo_pairs(train: pd.DataFrame, rng: random.Random, n: int = 40) -> list[dict]:
    pool = train[train["tricky"] == ""].sort_values("id").head(n)
    rows = []
    failures = ["prose", "fence", "wrong_urgency", "wrong_category", "extra_text", "missing_key", "capitalised"]
    for k, (_, row) in enumerate(pool.iterrows()):
        good = answer(row)
        kind = failures[k % len(failures)]
        if kind == "prose":
            bad = f"This ticket is about {row['category'].replace('_', ' ')} for the {row['product'].replace('_', ' ')}, and I'd say the urgency is {row['urgency']}."
        elif kind == "fence":
            bad = "```json\n" + json.dumps(good, indent=2) + "\n```"
        elif kind == "wrong_urgency":
            bad = json.dumps({**good, "urgency": rng.choice([u for u in URGENCIES if u != row["urgency"]])})
        elif kind == "wrong_category":
            bad = json.dumps({**good, "category": rng.choice([c for c in CATEGORIES if c != row["category"]])})
        elif kind == "extra_text":
            bad = "Sure! Here is the triage:\n" + json.dumps(good)
        elif kind == "missing_key":
            bad = json.dumps({"category": good["category"], "urgency": good["urgency"]})
        else:
            bad = json.dumps({"Category": good["category"].title(), "Urgency": good["urgency"].upper(), "Product": good["product"]})
        rows.append({"subject": row["subject"], "body": row["body"], "preferred": json.dumps(good), "non_preferred": bad})
    return ftd.build_preference_pairs(rows, system=SHORT_SYSTEM, user=USER_TEMPLATE, preferred="preferred", non_preferred="non_preferred")


# ---------------------------------------------------------------------------------------------
# The broken file for the validation lesson


def _line(example) -> bytes:
    return json.dumps(example, ensure_ascii=False).encode("utf-8")


def broken_file(train_examples: list[dict]) -> tuple[bytes, list[dict]]:
    """A ~20-line file: mostly good examples, one instance of each common mistake.

    Returns the bytes and the list of planted mistakes: line, codes, what is wrong, the fix.
    """
    good = iter(json.loads(json.dumps(ex)) for ex in train_examples)  # deep copies
    lines: list[bytes] = []
    planted: list[dict] = []

    def plant(raw: bytes, codes: list[str], mistake: str, fix: str) -> None:
        lines.append(raw)
        planted.append({"line": len(lines), "codes": codes, "mistake": mistake, "fix": fix})

    plant(b"\xef\xbb\xbf" + _line(next(good)), ["utf8_bom"],
          "the file starts with a byte-order mark (Windows editors add it)", "save as UTF-8 without BOM")
    lines.append(_line(next(good)))
    plant(_line(next(good))[:-2], ["invalid_json"], "the line was cut off: the closing brackets are missing",
          "restore the closing ]}")
    lines.append(_line(next(good)))
    plant(b"", ["blank_line"], "an empty line between examples", "delete the blank line")
    ex = next(good)
    ex["messages"][2]["role"] = "asistant"
    plant(_line(ex), ["unrecognized_role", "example_missing_assistant_message"], "role misspelled 'asistant'",
          "spell it 'assistant'")
    lines.append(_line(next(good)))
    ex = next(good)
    ex["messages"][2]["weight"] = 2
    plant(_line(ex), ["invalid_weight"], "weight 2 on the assistant message (only 0 or 1 exist)", "use weight 1 (or drop it)")
    ex = next(good)
    ex["messages"][1]["weight"] = 0
    plant(_line(ex), ["weight_not_on_assistant"], "weight on a user message", "remove weight from the user message")
    lines.append(_line(next(good)))
    ex = next(good)
    del ex["messages"][2]
    plant(_line(ex), ["example_missing_assistant_message"], "no assistant answer: nothing to learn",
          "add the answer, or drop the example")
    ex = next(good)
    ex["messages"][1]["content"] = None
    plant(_line(ex), ["missing_content"], "the user's content is null", "fill in the ticket text, or drop the example")
    lines.append(_line(next(good)))
    ex = next(good)
    legacy = {"prompt": ex["messages"][1]["content"] + "\n\n###\n\n", "completion": " " + ex["messages"][2]["content"] + " END"}
    plant(_line(legacy), ["legacy_prompt_completion"], "a legacy prompt/completion line from an old file",
          "convert with ftkit.data.from_prompt_completion")
    ex = next(good)
    ex["messages"][1]["content"] = ex["messages"][1]["content"].rstrip() + " Sent from the café."
    latin1 = _line(ex).replace("é".encode(), b"\xe9")  # as a Latin-1 editor would have saved it
    plant(latin1, ["invalid_utf8"],
          "one line was saved as Latin-1 (the é is the single byte 0xe9)", "decode it as Latin-1, re-encode as UTF-8")
    dup = _line(next(good))
    lines.append(dup)
    plant(dup, ["duplicate_example"], "the previous line pasted twice", "delete the duplicate")
    ex = next(good)
    ex["messages"][2]["content"] = json.loads(ex["messages"][2]["content"])
    plant(_line(ex), ["missing_content"], "the answer is a JSON object, not a string", "json.dumps the object")
    ex = next(good)
    ex["messages"][1] = {"role": "user", "Content": ex["messages"][1]["content"]}
    plant(_line(ex), ["message_unrecognized_key", "message_missing_key"], "'Content' with a capital C",
          "rename the key to 'content'")
    for _ in range(3):
        lines.append(_line(next(good)))
    return b"\n".join(lines) + b"\n", planted


# ---------------------------------------------------------------------------------------------
# General ability: short questions with exact, checkable answers, asked before and after
# fine-tuning to see whether the model lost what it could do (notebooks/05_evaluation.ipynb).

CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"),
    ("Greece", "Athens"), ("Kenya", "Nairobi"), ("Portugal", "Lisbon"), ("Norway", "Oslo"),
    ("Ireland", "Dublin"), ("Peru", "Lima"), ("Austria", "Vienna"),
]
# word -> accepted opposites
OPPOSITES = [
    ("hot", ["cold"]), ("big", ["small", "little"]), ("up", ["down"]), ("fast", ["slow"]),
    ("happy", ["sad", "unhappy"]), ("open", ["closed", "shut"]), ("wet", ["dry"]), ("early", ["late"]),
    ("full", ["empty"]), ("light", ["dark", "heavy"]), ("old", ["new", "young"]), ("tall", ["short"]),
    ("day", ["night"]), ("win", ["lose"]), ("first", ["last"]), ("inside", ["outside"]),
]
# (correct spelling, a common misspelling)
SPELLINGS = [
    ("receive", "recieve"), ("separate", "seperate"), ("definitely", "definately"), ("necessary", "neccessary"),
    ("tomorrow", "tommorow"), ("beginning", "begining"), ("calendar", "calender"), ("weird", "wierd"),
    ("believe", "beleive"), ("government", "goverment"),
]
ABILITY_COUNTS = {"arithmetic": 10, "capital": 8, "opposite": 8, "spelling": 6}


def ability_questions(seed: int = SEED) -> list[dict]:
    """32 short questions (arithmetic, capitals, opposites, spelling), each a chat example (user
    question, assistant answer) plus ``accept`` (answers that count as right), ``reject`` (words
    that make an answer wrong: the misspelling) and ``match`` ("number" or "word").

    Its own random generator, so adding it changed none of the other files."""
    rng = random.Random(f"{seed}-ability")
    out: list[dict] = []

    def add(kind: str, question: str, answer: str, accept: list[str], reject=(), match: str = "word") -> None:
        out.append({"id": f"G{len(out) + 1:02d}", "kind": kind, "match": match, "accept": accept,
                    "reject": list(reject), "messages": [ftd.user(question), ftd.assistant(answer)]})

    ops = ["+"] * 4 + ["-"] * 3 + ["x"] * 3
    for op in ops[: ABILITY_COUNTS["arithmetic"]]:
        if op == "+":
            a, b = rng.randint(11, 49), rng.randint(11, 49)
            question, value = f"What is {a} + {b}?", a + b
        elif op == "-":
            a = rng.randint(30, 99)
            b = rng.randint(11, a - 5)
            question, value = f"What is {a} - {b}?", a - b
        else:
            a, b = rng.randint(3, 9), rng.randint(3, 9)
            question, value = f"What is {a} times {b}?", a * b
        add("arithmetic", question + " Answer with just the number.", str(value), [str(value)], match="number")
    for country, city in rng.sample(CAPITALS, ABILITY_COUNTS["capital"]):
        add("capital", f"What is the capital of {country}? Answer with one word.", city, [city])
    for word, opposites in rng.sample(OPPOSITES, ABILITY_COUNTS["opposite"]):
        add("opposite", f"What is the opposite of '{word}'? Answer with one word.", opposites[0], opposites)
    for right, wrong in rng.sample(SPELLINGS, ABILITY_COUNTS["spelling"]):
        first, second = (right, wrong) if rng.random() < 0.5 else (wrong, right)
        add("spelling", f"Which spelling is correct: '{first}' or '{second}'? Answer with the word.", right,
            [right], reject=[wrong])
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _check(path: Path, expect_ok: bool = True) -> ftd.ValidationReport:
    report = ftd.validate(path, model=CHECK_MODEL)
    if expect_ok and not report.ok:
        raise AssertionError(f"{path} should validate:\n{report.summary()}")
    return report


def _distribution(frame: pd.DataFrame, column: str) -> str:
    table = pd.crosstab(frame[column], frame["split"]).reindex(columns=["train", "validation", "test"])
    table["all"] = table.sum(axis=1)
    lines = [f"| {column} | train | validation | test | all |", "|---|---:|---:|---:|---:|"]
    for label, row in table.iterrows():
        lines.append(f"| {label} | {row['train']} | {row['validation']} | {row['test']} | {row['all']} |")
    return "\n".join(lines)


def _overlap_table(overlap: dict[str, pd.DataFrame]) -> str:
    lines = ["| set | tickets | 3-grams also in training: mean | median | max | nearest training ticket: mean | max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, o in overlap.items():
        lines.append(f"| `{name}` | {len(o)} | {o['shared'].mean():.1%} | {o['shared'].median():.1%} | "
                     f"{o['shared'].max():.1%} | {o['nearest'].mean():.2f} | {o['nearest'].max():.2f} |")
    return "\n".join(lines)


def generate(out: Path) -> dict:
    """Write every file under ``out``; return a few numbers for the summary."""
    rng = random.Random(SEED)
    tickets = generate_tickets(rng)

    # Stratified by category *and* product, so every split sees every kind of ticket.
    parts = ftd.split(tickets, validation=VALIDATION_SHARE, test=TEST_SHARE, seed=SEED, stratify=stratum)
    split_of = {}
    for name, frame in zip(("train", "validation", "test"), parts):
        for ticket_id in frame["id"]:
            split_of[ticket_id] = name
    tickets["split"] = tickets["id"].map(split_of)
    by_split = {name: tickets[tickets["split"] == name] for name in ("train", "validation", "test")}  # in id order
    examples = {name: chat_examples(frame) for name, frame in by_split.items()}

    dupes = ftd.find_duplicates([e for name in examples for e in examples[name]])
    assert dupes.empty, f"duplicate tickets:\n{dupes}"
    leaks = ftd.check_leakage(examples)
    assert leaks.empty, f"leakage across splits:\n{leaks}"

    columns = ["id", "subject", "body", "category", "urgency", "product", "split"]
    csv_text = tickets[columns].to_csv(index=False, lineterminator="\n")
    _write_text(out / "tickets" / "tickets.csv", csv_text)
    for name, exs in examples.items():
        ftd.write_jsonl(exs, out / "tickets" / f"{name}.jsonl")
    tricky = tickets[tickets["tricky"] != ""]
    _write_json(out / "tickets" / "tricky.json",
                [{"id": r["id"], "split": r["split"], "why": r["tricky"]} for _, r in tricky.iterrows()])

    # Few-shot examples: one clean training ticket per category, covering as many products and
    # urgencies as possible (greedy, in id order).
    train = by_split["train"]
    few_shot, seen_labels = [], set()
    for category in CATEGORIES:
        pool = train[(train["category"] == category) & train["clean"]]
        pick = max(pool.itertuples(), key=lambda r: (r.product not in seen_labels) + (r.urgency not in seen_labels))
        few_shot.append(pick.id)
        seen_labels |= {pick.product, pick.urgency}
    _write_json(out / "tickets" / "prompts.json", {
        "short_system": SHORT_SYSTEM,
        "long_system": LONG_SYSTEM,
        "user_template": USER_TEMPLATE,
        "labels": {"category": CATEGORIES, "urgency": URGENCIES, "product": PRODUCTS},
        "few_shot_ids": few_shot,
    })

    tone = tone_examples(rng)
    ftd.write_jsonl(tone, out / "tone" / "train.jsonl")
    dpo = dpo_pairs(train, rng)
    ftd.write_jsonl(dpo, out / "dpo" / "train.jsonl")

    broken, planted = broken_file(examples["train"])
    (out / "broken").mkdir(parents=True, exist_ok=True)
    (out / "broken" / "tickets_broken.jsonl").write_bytes(broken)
    _write_json(out / "broken" / "EXPECTED.json", planted)
    md = ["# What is wrong in tickets_broken.jsonl", "",
          "Each line below has one planted mistake; `ftkit.data.validate` must report exactly these codes",
          "(errors, plus the warnings `blank_line` and `duplicate_example`). Every other line is a valid example.", "",
          "| line | codes | mistake | fix |", "|---:|---|---|---|"]
    md += [f"| {p['line']} | {', '.join(p['codes'])} | {p['mistake']} | {p['fix']} |" for p in planted]
    _write_text(out / "broken" / "EXPECTED.md", "\n".join(md) + "\n")

    ability = ability_questions()
    ftd.write_jsonl(ability, out / "general" / "ability.jsonl")

    # The out-of-distribution test set: its own templates and generator, checked against all
    # 400 tickets (no leak, nothing near) and measured against the training tickets.
    ood = generate_ood_tickets([f"{r.subject} {r.body}" for r in tickets.itertuples()])
    _write_text(out / "tickets" / "test_ood.csv", ood[columns].to_csv(index=False, lineterminator="\n"))
    ood_examples = chat_examples(ood)
    ftd.write_jsonl(ood_examples, out / "tickets" / "test_ood.jsonl")
    every_split = {**examples, "test_ood": ood_examples}
    assert ftd.find_duplicates([e for part in every_split.values() for e in part]).empty
    leaks = ftd.check_leakage(every_split)
    assert leaks.empty, f"leakage across splits:\n{leaks}"
    train_texts = [ftd.example_input_text(e) for e in examples["train"]]
    overlap = {name: trigram_overlap([ftd.example_input_text(e) for e in exs], train_texts)
               for name, exs in (("validation", examples["validation"]), ("test", examples["test"]),
                                 ("test_ood", ood_examples))}
    # The point of the set: far less wording in common with training than the in-distribution test.
    assert overlap["test_ood"]["shared"].mean() < 0.5 * overlap["test"]["shared"].mean(), overlap
    assert not overlap["test_ood"]["five_gram"].any(), "an out-of-distribution ticket repeats training wording"

    # Check everything we wrote.
    reports = {}
    for rel in ["tickets/train.jsonl", "tickets/validation.jsonl", "tickets/test.jsonl", "tickets/test_ood.jsonl",
                "tone/train.jsonl", "dpo/train.jsonl", "general/ability.jsonl"]:
        reports[rel] = _check(out / rel)
    broken_report = _check(out / "broken" / "tickets_broken.jsonl", expect_ok=False)
    found = {}
    for p in broken_report.problems:
        found.setdefault(p.line, []).append(p.code)
    expected = {p["line"]: p["codes"] for p in planted}
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}, (found, expected)

    counter = TokenCounter(CHECK_MODEL)
    train_counts = counter.count_examples(examples["train"])
    train_stats = describe([c.total for c in train_counts])
    user_tokens = [counter.count(USER_TEMPLATE.format(subject=r["subject"], body=r["body"])) for _, r in tickets.iterrows()]
    user_stats = describe(user_tokens)
    in_range = sum(25 <= n <= 80 for n in user_tokens) / len(user_tokens)
    ood_user_stats = describe([counter.count(USER_TEMPLATE.format(subject=r["subject"], body=r["body"]))
                               for _, r in ood.iterrows()])

    card = DATA_CARD.format(
        n=len(tickets), n_train=len(by_split["train"]), n_val=len(by_split["validation"]), n_test=len(by_split["test"]),
        n_tricky=len(tricky), short_system=SHORT_SYSTEM,
        dist_category=_distribution(tickets, "category"), dist_urgency=_distribution(tickets, "urgency"),
        dist_product=_distribution(tickets, "product"),
        user_mean=user_stats["mean"], user_min=user_stats["min"], user_max=user_stats["max"], in_range=100 * in_range,
        train_mean=train_stats["mean"], train_max=train_stats["max"], train_total=sum(c.total for c in train_counts),
        n_tone=len(tone), n_tone_multi=sum(1 for e in tone if len(e["messages"]) > 3),
        n_dpo=len(dpo),
        n_broken_lines=broken.count(b"\n"), n_planted=len(planted), seed=SEED, model=CHECK_MODEL,
        n_ability=len(ability),
        ability_kinds=", ".join(f"{n} {kind}" for kind, n in Counter(q["kind"] for q in ability).items()),
        n_ood=len(ood), n_ood_templates=sum(len(v) for v in OOD_TEMPLATES.values()),
        ood_urgency=", ".join(f"{n} {u}" for u, n in ood["urgency"].value_counts().reindex(URGENCIES).items()),
        ood_product=", ".join(f"{n} {p}" for p, n in ood["product"].value_counts().reindex(PRODUCTS).items()),
        overlap_table=_overlap_table(overlap), id_five_gram=sum(overlap["test"]["five_gram"]),
        ood_user_mean=ood_user_stats["mean"], ood_user_min=ood_user_stats["min"], ood_user_max=ood_user_stats["max"],
    )
    _write_text(out / "README.md", card)
    return {"tickets": len(tickets), "train_tokens_mean": train_stats["mean"], "train_tokens_max": train_stats["max"],
            "user_tokens_in_25_80": in_range}


DATA_CARD = """# Course data

Everything in this folder is **synthetic**: written by the ftkit project for this course and
generated by [`scripts/make_data.py`](../scripts/make_data.py) with a fixed seed ({seed}).
Running `python scripts/make_data.py` rewrites these files byte for byte; `tests/test_course_data.py`
checks that. No real customer, company or person is described; names, order numbers and
invoice numbers are random.

**Licence:** [CC0 1.0](https://creativecommons.org/publicdomain/zero/1.0/) (public domain
dedication) -- use it for anything, no attribution needed. (The code that makes it is MIT, like
the rest of ftkit.)

## The running example: support-ticket triage (`tickets/`)

{n} customer-support tickets for **Lumenhive**, a fictional smart-home company (a mobile app, a
web dashboard, a developer API and hardware: the Hub, sensors, cameras, doorbells, plugs). The
task: read a ticket and answer with one line of JSON, e.g.
`{{"category": "shipping", "urgency": "high", "product": "hardware"}}`.

| file | what |
|---|---|
| `tickets.csv` | one row per ticket: `id, subject, body, category, urgency, product, split` |
| `train.jsonl`, `validation.jsonl`, `test.jsonl` | the same tickets as chat examples, in `id` order (line *i* of `train.jsonl` is the *i*-th `train` row of `tickets.csv`) |
| `test_ood.csv`, `test_ood.jsonl` | the **out-of-distribution test set**: {n_ood} more tickets written from templates and phrasings the 400 never use (same columns, `split` = `test_ood`; same chat format) -- see [Two test sets](#two-test-sets) |
| `prompts.json` | `short_system` (used for fine-tuning), `long_system` (full instructions for the base model's zero-/few-shot baselines), `user_template`, `labels`, `few_shot_ids` (one clear training ticket per category) |
| `tricky.json` | the {n_tricky} hand-written, deliberately ambiguous tickets, with why each is debatable |

**Fields.** `category` ∈ billing, technical, account, shipping, feature_request; `urgency` ∈
low, medium, high; `product` ∈ mobile_app, web_app, api, hardware. Chat examples: system = the
short prompt (`{short_system}`), user = `"Subject: {{subject}}\\n\\n{{body}}"`,
assistant = `json.dumps({{"category": ..., "urgency": ..., "product": ...}})` (keys in that order).

**How it was made.** Each ticket's labels come from a balanced plan (80 per category); its
text from one of ~110 problem templates for that category and product, filled with random
names, order and invoice numbers, devices, versions and dates, plus optional detail, an urgency
cue ("Production is down for us.", "No rush at all.", or none -- medium tickets often have no
cue), an optional greeting and sign-off, and in ~15% a typo. The labels are learnable from the
text: products are named ("the Android app", "the dashboard", "/v2/devices", "the Hub") and
urgency has explicit cues. {n_tricky} tickets (5%) were written by hand to be genuinely
ambiguous (a crash that caused a double charge; "no rush" said sarcastically), so evaluation
has honest errors. A candidate ticket sharing half or more of its word 3-grams with an earlier
one is redrawn, and the generator asserts that `ftkit.data.find_duplicates` and
`ftkit.data.check_leakage` find nothing.

**Splits.** `ftkit.data.split(validation=0.10, test=0.25, seed={seed}, stratify=...)`, stratified
by category and product together (each of the 17 category/product groups keeps its share in
every split): {n_train} train / {n_val} validation / {n_test} test. The {n_ood} out-of-distribution
test tickets are not part of this split (see [Two test sets](#two-test-sets)).

{dist_category}

{dist_urgency}

{dist_product}

**Size.** The user message (subject + body) is {user_mean:.0f} tokens on average (min
{user_min:.0f}, max {user_max:.0f}; {in_range:.0f}% between 25 and 80) with `o200k_base`. A
whole training example, with the system prompt, the answer and the chat framing (an estimate:
3 tokens per message + 3), is {train_mean:.0f} tokens on average and at most {train_max:.0f};
`train.jsonl` holds {train_total:,} tokens per epoch (`ftkit.tokens`, model `{model}`).

## Two test sets

| set | tickets | how it was made | what its score tells you |
|---|---:|---|---|
| `test.jsonl` (**in-distribution**) | {n_test} | the 25% test split of the 400 tickets: new fillings of the *same* problem templates, urgency cues, greetings and sign-offs as the training tickets | how well the model handles tickets like the ones it was trained on -- partly by recognising their wording |
| `test_ood.jsonl` (**out-of-distribution**) | {n_ood} | written for this set alone (below): no template, phrasing or product wording in common with the training tickets | whether what it learnt carries over to tickets worded differently |

**How the out-of-distribution set was made.** {n_ood} tickets, 20 per category, labels balanced
by design (urgency: {ood_urgency}; product: {ood_product} -- shipping is about hardware, as in
training). Each comes from one of {n_ood_templates} problem templates written for this set (six
or more per category and product; within a group every ticket uses a different template, except
shipping's 16 templates for 20 tickets). Every product mention is worded the way no training
ticket words it ("the iOS application", "the Android application", "the web portal",
"lumenhive.com", "the REST interface", "the developer platform", "event callbacks"; devices the
training tickets never name: smoke alarm, smart lock, keypad, siren, water valve ...), and a few
tickets name a second product in passing (a siren's false alarm that the phone application does
not list: still hardware). Its urgency cues ("We need someone on this within the hour.", "There's
no deadline on this."), detail sentences, greetings, sign-offs, names, phones, browsers,
endpoints, SDKs, couriers and cities are its own too; every high-urgency ticket says why or that
it is urgent, 90% of the low ones that there is no hurry. It is made by its own random generator
(no other ticket file changed when it was added), and a candidate sharing 30% or more of its word
3-grams with any of the 400 tickets is redrawn.

**How different it is, measured.** For each ticket, the share of the word 3-grams of its user
message (lower-cased words) that also occur somewhere in the {n_train} training tickets, and its
word-3-gram Jaccard similarity to the single most similar training ticket:

{overlap_table}

What the out-of-distribution tickets still share with training is ordinary English ("how do I",
"as soon as") and the order-number format: not one of them shares a run of five words with a
training ticket, where {id_five_gram} of the {n_test} in-distribution test tickets do. `ftkit.data.check_leakage` finds nothing
between any two of train, validation, test and test_ood, and the generator asserts that the
out-of-distribution set shares less than half as much wording with training as the test split.

**Why both are reported.** The in-distribution score answers "how good is the model on tickets
like its training data?" -- the right question when the training data is a fair sample of real
traffic, and an optimistic one otherwise, because template-filled tickets can be answered by
recognising the template. The out-of-distribution score answers "how much of that survives new
wording?". The gap between the two is the measure of how much the model generalised rather than
recognised; neither number alone is the model's accuracy on your customers.

The user message of an out-of-distribution ticket is {ood_user_mean:.0f} tokens on average (min
{ood_user_min:.0f}, max {ood_user_max:.0f}; `o200k_base`).

## Other sets

| file | examples | what |
|---|---:|---|
| `tone/train.jsonl` | {n_tone} | house style: terse draft replies rewritten in Lumenhive's friendly, concise style. {n_tone_multi} are multi-turn: the old draft stays as context with `weight: 0` and only the rewrite is trained (`weight: 1`) |
| `dpo/train.jsonl` | {n_dpo} | preference pairs (DPO) on training tickets: preferred = the exact compact JSON; non-preferred = a typical failure (prose, a Markdown code fence, a wrong label, extra chatter, a missing key, capitalised keys) |
| `broken/tickets_broken.jsonl` | {n_broken_lines} lines | for the validation lesson: good ticket examples plus {n_planted} planted mistakes, one each (BOM, cut-off JSON, blank line, misspelled role, `weight: 2`, weight on a user message, no assistant message, null content, a legacy prompt/completion line, a Latin-1 byte, a duplicate, an object as content, `Content` with a capital C). `broken/EXPECTED.json` (and `.md`) list line → codes |
| `general/ability.jsonl` | {n_ability} | the **general-ability check** (notebook 05): short questions with one checkable answer ({ability_kinds}), asked before and after fine-tuning to see whether the model lost what it could do. Each line is a chat example (question, answer) plus `id`, `kind`, `match` (`number` or `word`), `accept` (answers that count as right) and `reject` (words that make an answer wrong: the misspelling). Scored by `ftkit.evaluate.ability_scorer`. Not for training (`validate` warns about its extra keys) |

Every file except the broken one passes `ftkit.data.validate(path, model="{model}")` with no
errors.

There is no tool-calling training set: an earlier version shipped 25 tool-calling conversations
that the course never trained on or evaluated -- too few to train on and still hold out enough to
measure tool choice and argument accuracy. Notebook 02 teaches the format of tool-calling examples
by building them itself.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args(argv)
    summary = generate(args.out)
    print(f"wrote {args.out}: {summary['tickets']} tickets; train examples {summary['train_tokens_mean']:.0f} tokens "
          f"on average (max {summary['train_tokens_max']:.0f}); {100 * summary['user_tokens_in_25_80']:.0f}% of "
          "tickets have 25-80 tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())

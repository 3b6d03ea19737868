"""Built-in (deliberately imperfect) support-ticket lexicon of the offline engine.

Category: the lexicon keyword that occurs *earliest* in the ticket wins (longest keyword
on a tie); no keyword means "bug". Urgency: an escalation word gives "high", a
de-escalation word gives "low", otherwise the category's default.

Known gaps, kept on purpose so GEPA has something to fix (flagship tickets):
* INC-002 "Refund still not received ..." -> billing/low (gold billing/medium): billing
  defaults to low.
* INC-005 "CSV export shows incorrect timezone ..." -> feature/low (gold bug/medium):
  "export" is a feature keyword and comes before "incorrect".
* HOLDOUT-01 "Customer cannot update billing address ..." -> billing/low (gold medium).
INC-001, INC-003 and INC-004 come out right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "outage": ("outage", "down", "500", "502", "503", "fails", "failing", "failed", "timeout",
               "crash", "unavailable", "error"),
    "billing": ("refund", "invoice", "charged", "charge", "payment", "billing", "subscription",
                "pricing", "receipt"),
    "feature": ("feature", "requesting", "request", "would like", "export", "add support",
                "integration", "roadmap", "enhancement"),
    "account": ("login", "log in", "locked", "password", "sso", "account", "2fa", "mfa",
                "permission", "access"),
    "bug": ("incorrect", "wrong", "broken", "bug", "glitch", "typo", "mismatch", "inconsistent"),
}
DEFAULT_CATEGORY = "bug"
CATEGORY_URGENCY = {"outage": "high", "account": "high", "bug": "medium", "billing": "low", "feature": "low"}
HIGH_WORDS = ("urgent", "asap", "immediately", "blocked", "blocking", "all users", "multiple users",
              "security", "breach", "data loss", "outage")
LOW_WORDS = ("typo", "cosmetic", "minor", "nice to have", "when possible", "question")

ACTIONS = {
    "outage": "Page the on-call engineer, open an incident and post a status update.",
    "billing": "Route to the billing team to trace the payment and reply to the customer with a date.",
    "feature": "Log the request in the product backlog, link similar requests and tell the customer.",
    "account": "Restore access for the affected users (unlock, check the SSO setup) and confirm with the admin.",
    "bug": "File a bug with reproduction steps and assign it to the owning team.",
}
ROOT_CAUSES: tuple[tuple[str, str], ...] = (
    ("deploy", "A regression shipped in the most recent deploy."),
    ("sso", "The SSO update changed identity-provider settings, so existing logins are rejected."),
    ("timezone", "Timestamps are converted with the server timezone instead of the user's."),
    ("refund", "The refund is stuck between the payment processor and the ledger."),
    ("locked", "The lockout policy is triggering for valid users."),
    ("export", "There is no supported bulk export path for this data yet."),
    ("invoice", "Invoice generation used an outdated price plan."),
    ("password", "The password reset flow is not delivering reset links."),
)
CATEGORY_CAUSES = {
    "outage": "A failing dependency in the request path.",
    "billing": "A mismatch between the billing system and the payment processor.",
    "feature": "The product does not support this workflow yet.",
    "account": "Access policy or identity settings are out of date.",
    "bug": "A defect in the affected component's logic.",
}


def find(text: str, keyword: str) -> int:
    """Position of `keyword` at a word start in `text` (lower-cased), or -1."""
    match = re.search(r"(?<![a-z0-9])" + re.escape(keyword), text)
    return match.start() if match else -1


@dataclass(frozen=True)
class Triage:
    category: str
    keyword: str | None  # the lexicon word that decided the category


def categorize(ticket: str) -> Triage:
    text = ticket.lower()
    best: tuple[int, int, str, str] | None = None  # (position, -len, keyword, category)
    for category, keywords in CATEGORY_KEYWORDS.items():
        for keyword in keywords:
            pos = find(text, keyword)
            if pos >= 0 and (best is None or (pos, -len(keyword)) < best[:2]):
                best = (pos, -len(keyword), keyword, category)
    if best is None:
        return Triage(DEFAULT_CATEGORY, None)
    return Triage(best[3], best[2])


def urgency_for(ticket: str, category: str) -> tuple[str, str]:
    """(urgency, reason) for a ticket already placed in `category`."""
    text = ticket.lower()
    for word in HIGH_WORDS:
        if find(text, word) >= 0:
            return "high", f"it says '{word}'"
    for word in LOW_WORDS:
        if find(text, word) >= 0:
            return "low", f"it says '{word}'"
    default = CATEGORY_URGENCY.get(category, "medium")
    return default, f"{category} tickets default to {default}"


def action_for(ticket: str, category: str) -> str:
    action = ACTIONS.get(category, f"Route the ticket to the {category} team.")
    if category == "outage" and find(ticket.lower(), "deploy") >= 0:
        action = "Page the on-call engineer, roll back the last deploy and post a status update."
    return action


def root_cause_for(ticket: str, category: str) -> str:
    text = ticket.lower()
    for keyword, cause in ROOT_CAUSES:
        if find(text, keyword) >= 0:
            return cause
    return CATEGORY_CAUSES.get(category, "Not enough detail in the ticket to name a cause.")


def keywords_of(category: str) -> tuple[str, ...]:
    return CATEGORY_KEYWORDS.get(category, ())


def all_keywords() -> list[str]:
    return [k for words in CATEGORY_KEYWORDS.values() for k in words]

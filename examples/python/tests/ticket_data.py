"""Flagship tickets and metric shared by the tests (the demo keeps its own copy in Rust)."""

from __future__ import annotations

import dspy

# The flagship tickets (notes section 1.2): id -> (text, category, urgency).
TICKETS: dict[str, tuple[str, str, str]] = {
    "INC-001": ("Checkout fails with a 500 error for EU users after last deploy.", "outage", "high"),
    "INC-002": ("Refund still not received after 10 business days.", "billing", "medium"),
    "INC-003": ("Requesting a bulk export feature for analytics dashboards.", "feature", "low"),
    "INC-004": ("Admin login locked after SSO update; multiple users blocked.", "account", "high"),
    "INC-005": ("CSV export shows incorrect timezone offsets in reports.", "bug", "medium"),
    "HOLDOUT-01": ("Customer cannot update billing address in the portal.", "billing", "medium"),
}
LABELLED = ["INC-001", "INC-002", "INC-003", "INC-004", "INC-005"]
TRIAGE_SIG = "ticket -> category, urgency, action"
INSIGHTS_SIG = "ticket -> summary, root_cause"


def example(ticket_id: str) -> dspy.Example:
    text, category, urgency = TICKETS[ticket_id]
    return dspy.Example(ticket=text, category=category, urgency=urgency).with_inputs("ticket")


def triage_metric(gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
    """The flagship metric: 0.5 per matching field, with textual feedback for GEPA."""
    gc = str(getattr(gold, "category", "")).strip().lower()
    pc = str(getattr(pred, "category", "")).strip().lower()
    gu = str(getattr(gold, "urgency", "")).strip().lower()
    pu = str(getattr(pred, "urgency", "")).strip().lower()
    feedback = []
    if gc != pc:
        feedback.append(f"Category mismatch: expected '{gc}' got '{pc}'.")
    if gu != pu:
        feedback.append(f"Urgency mismatch: expected '{gu}' got '{pu}'.")
    score = 0.5 * (gc == pc) + 0.5 * (gu == pu)
    return dspy.Prediction(score=score, feedback=" ".join(feedback) or "Perfect match. Keep the intent and be concise.")

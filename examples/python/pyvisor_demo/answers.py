"""Decide what the offline engine answers for a parsed DSPy prompt.

* reflection (`new_instruction`) and compression (`shortened_instruction`) requests from
  GEPA go to `reflection.py`;
* every other request is answered field by field, in the signature's order (`reasoning`
  last): rules from the instruction first (`rules.py`), then the built-in value for the
  field name: the triage lexicon for category/urgency/action, ticket-derived text for
  summary/root_cause/reasoning, and a type-shaped placeholder for anything else.
"""

from __future__ import annotations

import re
from typing import Any

from . import lexicon
from .prompt_format import FieldSpec, ParsedPrompt, render
from .reflection import propose_instruction, shorten_instruction
from .rules import parse_rules, rule_value

PLAIN_REPLY = "offline/rules is a simulated LM: it answers DSPy signatures only ({words} words received)."


def _main_text(parsed: ParsedPrompt) -> str:
    if "ticket" in parsed.values:
        return parsed.values["ticket"]
    return next(iter(parsed.values.values()), parsed.user)


def _first_sentence(text: str, limit: int = 120) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".!?")
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "..."


class _Context:
    """Facts about the main input (and the fields resolved so far) for the field builders."""

    def __init__(self, text: str, resolved: dict[str, Any], by_rule: set[str]) -> None:
        self.text = text
        self.resolved = resolved
        self.by_rule = by_rule
        self.triage = lexicon.categorize(text)

    @property
    def category(self) -> str:
        return str(self.resolved.get("category", self.triage.category))

    def urgency(self) -> tuple[str, str]:
        """(urgency, why)."""
        if "urgency" in self.by_rule:
            return str(self.resolved["urgency"]), "a rule in the instruction says so"
        return lexicon.urgency_for(self.text, self.category)


def _builtin(spec: FieldSpec, ctx: _Context) -> Any:
    name = spec.name
    if name == "category":
        return ctx.category
    if name == "urgency":
        return ctx.urgency()[0]
    if name == "action":
        return lexicon.action_for(ctx.text, ctx.category)
    if name == "summary":
        urgency = ctx.urgency()[0]
        return f"{ctx.category.capitalize()} issue, {urgency} urgency: {_first_sentence(ctx.text)}."
    if name == "root_cause":
        return lexicon.root_cause_for(ctx.text, ctx.category)
    if name in {"reasoning", "rationale"}:
        keyword = ctx.triage.keyword
        if "category" in ctx.by_rule:
            evidence = "a rule in the instruction says so"
        else:
            evidence = f"it mentions '{keyword}'" if keyword else "no lexicon keyword matched"
        urgency, why = ctx.urgency()
        article = "an" if ctx.category[:1].lower() in "aeiou" else "a"
        return (f"The input reads as {article} {ctx.category} issue because {evidence}; "
                f"urgency is {urgency} because {why}.")
    snippet = _first_sentence(ctx.text, 60) if ctx.text.strip() else "(no input)"
    if spec.type.replace(" ", "") in {"str", ""}:
        return f"{name.replace('_', ' ')} for: {snippet}"
    return snippet


def answer_fields(parsed: ParsedPrompt) -> dict[str, Any]:
    rules = parse_rules(parsed.system)
    text = _main_text(parsed)
    resolved: dict[str, Any] = {}
    by_rule: set[str] = set()
    order = [f for f in parsed.outputs if f.name != "reasoning"]
    order += [f for f in parsed.outputs if f.name == "reasoning"]
    for spec in order:
        value = rule_value(rules, spec.name, parsed.values, resolved)
        if value is not None:
            by_rule.add(spec.name)
        else:
            value = _builtin(spec, _Context(text, resolved, by_rule))
        resolved[spec.name] = value
    return resolved


def answer(parsed: ParsedPrompt) -> str:
    """The completion text for one request."""
    names = parsed.output_names
    if not names:
        return PLAIN_REPLY.format(words=len((parsed.system + " " + parsed.user).split()))
    values = parsed.values
    if "new_instruction" in names:
        proposed = propose_instruction(values.get("current_instruction", ""), values.get("examples_with_feedback", ""))
        return render(parsed, {"new_instruction": proposed})
    if "shortened_instruction" in names:
        short = shorten_instruction(values.get("instruction", ""), values.get("length_limit", ""))
        return render(parsed, {"shortened_instruction": short})
    return render(parsed, answer_fields(parsed))

"""The rule grammar the offline engine obeys when rules are written into an instruction.

One rule per sentence, case-insensitive, anywhere in the system prompt (DSPy puts the
signature instructions there):

    If the <input> mentions "<text>", <field> is <value>[ and <field> is <value>]...
    If the <field> is <value>, <field> is <value>[ and <field> is <value>]...

* `mentions` may also be written `contains` or `includes`. The quoted text matches at the
  start of a word, ignoring case ("refund" also matches "Refunds"). When <input> is not an
  input field of the signature (e.g. "message"), all input values are searched.
* In the second form the condition names an output field resolved earlier in the
  signature's field order (or an input field, compared by exact value).
* A value is a bare word (`billing`, `3.5`, `high-priority`) or a quoted string.
* Precedence per output field: a matching `mentions` rule beats a matching `is` rule,
  which beats the built-in lexicon; among rules of one kind, the last one wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["mentions", "is"]

_VALUE = r"\"[^\"\n]*\"|'[^'\n]*'|[\w+-]+(?:\.\w+)*"
_HEAD = re.compile(
    rf"\bif\s+the\s+(\w+)\s+(mentions|contains|includes|is)\s+({_VALUE})\s*,\s*(?:then\s+)?",
    re.IGNORECASE,
)
_ASSIGN = re.compile(rf"(?:the\s+)?(\w+)\s+(?:is|should\s+be|must\s+be)\s+({_VALUE})", re.IGNORECASE)
_JOIN = re.compile(r"\s*(?:,\s*and|,|and)\s+", re.IGNORECASE)
_BARE = re.compile(r"[\w+-]+(?:\.\w+)*")


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token


def _quote(value: str, always: bool = False) -> str:
    if not always and _BARE.fullmatch(value):
        return value
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True)
class Rule:
    subject: str  # input field ("ticket") or output field ("category")
    op: Op
    value: str
    assign: tuple[tuple[str, str], ...]

    def render(self) -> str:
        verb = "mentions" if self.op == "mentions" else "is"
        head = f"If the {self.subject} {verb} {_quote(self.value, always=self.op == 'mentions')}"
        body = " and ".join(f"{name} is {_quote(value)}" for name, value in self.assign)
        return f"{head}, {body}."

    def sets(self, name: str) -> str | None:
        for field, value in self.assign:
            if field == name:
                return value
        return None


def parse_rules(text: str) -> list[Rule]:
    """Every rule in `text`, in order of appearance."""
    rules: list[Rule] = []
    for head in _HEAD.finditer(text):
        assign: list[tuple[str, str]] = []
        pos = head.end()
        while True:
            match = _ASSIGN.match(text, pos)
            if not match:
                break
            assign.append((match.group(1).lower(), _unquote(match.group(2))))
            pos = match.end()
            join = _JOIN.match(text, pos)
            if not join:
                break
            pos = join.end()
        if assign:
            op: Op = "is" if head.group(2).lower() == "is" else "mentions"
            rules.append(Rule(head.group(1).lower(), op, _unquote(head.group(3)), tuple(assign)))
    return rules


def mentions(haystack: str, needle: str) -> bool:
    """True when `needle` occurs in `haystack` at the start of a word, ignoring case."""
    if not needle.strip():
        return False
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(needle.strip().lower()), haystack.lower()) is not None


def rule_value(rules: list[Rule], name: str, inputs: dict[str, str], resolved: dict[str, object]) -> str | None:
    """The value the rules give output field `name`, or None when no rule applies."""
    by_mention: str | None = None
    by_condition: str | None = None
    everything = "\n".join(inputs.values())
    for rule in rules:
        value = rule.sets(name)
        if value is None:
            continue
        if rule.op == "mentions":
            if mentions(inputs.get(rule.subject, everything), rule.value):
                by_mention = value
        else:
            current = inputs.get(rule.subject, resolved.get(rule.subject))
            if current is not None and str(current).strip().lower() == rule.value.strip().lower():
                by_condition = value
    return by_mention if by_mention is not None else by_condition

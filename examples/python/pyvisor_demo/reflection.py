"""GEPA reflection for the offline engine: turn metric feedback into instruction rules.

GEPA's InstructionProposer sends `current_instruction` and `examples_with_feedback`, a JSON
list of {"Inputs", "Generated Outputs", "Feedback"}. For every example whose feedback says
`<Field> mismatch: expected '<x>' got '<y>'` this module writes rules in the grammar of
`rules.py`, keyed on a distinctive word of that example's input:

    If the ticket mentions "refund", category is billing and urgency is medium.
    If the category is billing, urgency is medium.

The second (category-level) rule is written when the urgency was wrong and the category is
known: from the feedback, or from the generated output when the feedback did not flag it.
Rules already present in the instruction are not repeated.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from . import lexicon
from .rules import Rule, parse_rules

_MISMATCH = re.compile(r"(\w+) mismatch: expected ['\"](.*?)['\"],? got ['\"](.*?)['\"]", re.IGNORECASE)
_CORRECT = re.compile(r"\bthe correct (\w+) is ['\"]?([\w+-]+)['\"]?", re.IGNORECASE)
STOPWORDS = frozenset(
    "about after again also before being below between both cannot could does doing during each "
    "from have having here into just more most other over same should some still such than that "
    "their them then there these they this those through under until very were what when where "
    "which while with would your users user customer customers please shows since business days "
    "multiple".split()
)


def expected_values(feedback: str) -> dict[str, str]:
    """Field -> expected value, read from metric feedback text."""
    found: dict[str, str] = {}
    for field, expected, _got in _MISMATCH.findall(feedback):
        found[field.lower()] = expected
    for field, expected in _CORRECT.findall(feedback):
        found.setdefault(field.lower(), expected)
    return found


def distinctive_word(text: str, category: str | None) -> str:
    """A word of `text` to key a rule on: a lexicon word of `category` if the text has
    one, else the longest word that no other category uses."""
    words = list(dict.fromkeys(re.findall(r"[a-z][a-z0-9-]*", text.lower())))
    candidates = [w for w in words if len(w) >= 4 and w not in STOPWORDS]
    own = lexicon.keywords_of(category or "")
    for word in candidates:
        if any(word.startswith(k) for k in own if " " not in k):
            return word
    others = lexicon.all_keywords()
    neutral = [w for w in candidates if not any(w.startswith(k) for k in others if " " not in k)]
    for pool in (neutral, candidates, words):
        if pool:
            return max(pool, key=len)  # max keeps the earliest among equals
    return re.sub(r"[\"'\n]", "", text).strip()[:30] or "the"


def _examples(raw: str) -> list[dict[str, Any]]:
    for load in (json.loads, ast.literal_eval):
        try:
            data = load(raw)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            continue
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, list):
            return [d for d in data if isinstance(d, dict)]
    # Unparseable: treat the whole text as one example's feedback.
    return [{"Inputs": {"input": raw}, "Generated Outputs": {}, "Feedback": raw}]


def rules_for(example: dict[str, Any]) -> list[Rule]:
    inputs = example.get("Inputs") or {}
    outputs = example.get("Generated Outputs")
    outputs = outputs if isinstance(outputs, dict) else {}
    expected = expected_values(str(example.get("Feedback", "")))
    if not expected or not isinstance(inputs, dict):
        return []
    text_inputs = {k: v for k, v in inputs.items() if isinstance(v, str)}
    if not text_inputs:
        return []
    subject = "ticket" if "ticket" in text_inputs else next(iter(text_inputs))
    if "category" not in expected and isinstance(outputs.get("category"), str):
        expected = {"category": outputs["category"], **expected}
    ordered = sorted(expected.items(), key=lambda kv: {"category": 0, "urgency": 1}.get(kv[0], 2))
    word = distinctive_word(text_inputs[subject], expected.get("category"))
    rules = [Rule(subject, "mentions", word, tuple(ordered))]
    if "urgency" in expected and "category" in expected:
        rules.append(Rule("category", "is", expected["category"], (("urgency", expected["urgency"]),)))
    return rules


def propose_instruction(current: str, examples_with_feedback: str) -> str:
    """The current instruction with rules learned from the feedback appended."""
    seen = {rule.render().lower() for rule in parse_rules(current)}
    new_lines: list[str] = []
    for example in _examples(examples_with_feedback):
        for rule in rules_for(example):
            line = rule.render()
            if line.lower() not in seen:
                seen.add(line.lower())
                new_lines.append(line)
    base = current.strip() or "Answer every output field."
    return "\n".join([base, *new_lines])


def shorten_instruction(instruction: str, length_limit: str) -> str:
    """Answer for GEPA's CompressInstruction: keep the first line and the newest rules."""
    digits = re.search(r"\d+", length_limit)
    limit = int(digits.group()) if digits else len(instruction)
    lines = [line for line in instruction.strip().splitlines() if line.strip()]
    if not lines:
        return instruction[:limit]
    head, rules = lines[0], [line for line in lines[1:] if parse_rules(line)]
    while rules and len("\n".join([head, *rules])) > limit:
        rules.pop(0)
    text = "\n".join([head, *rules])
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return text

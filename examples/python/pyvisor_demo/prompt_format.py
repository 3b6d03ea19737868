"""Read a DSPy adapter prompt and write an answer in the format that adapter parses.

DSPy's adapters (ChatAdapter, JSONAdapter, XMLAdapter) all describe the task the same
way in the system message: a numbered list of input fields, a numbered list of output
fields with their types (plus a JSON schema note for structured types), the layout of
the exchange, and finally the instructions after "your objective is:". The last user
message carries the input values. This module only parses that text; it never imports
DSPy.
"""

from __future__ import annotations

import json
import re
from xml.sax.saxutils import escape
from dataclasses import dataclass, field
from typing import Any, Literal

Format = Literal["chat", "json", "xml", "plain"]

_FIELD_LINE = re.compile(r"^\s*\d+\.\s+`([^`]+)`\s+\((.+?)\):(?=\s|$)")
_CHAT_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_SCHEMA_NOTE = "# note: the value you produce must adhere to the JSON schema: "
_CHAT_SCHEMA = re.compile(r"^\{(\w+)\}\s+" + re.escape(_SCHEMA_NOTE) + r"(\{.*\})\s*$", re.MULTILINE)
_XML_SKELETON = re.compile(r"^<(\w+)><.*</\1>$", re.MULTILINE)  # nested structure of a typed XML field
_JSON_SCHEMA = re.compile(r'^\s*"(\w+)": "\{\w+\}\s+' + re.escape(_SCHEMA_NOTE) + r'(.*)",?\s*$', re.MULTILINE)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # as DSPy prints it: "str", "int", "Literal['a', 'b']", "list[str]", ...

    @property
    def options(self) -> tuple[str, ...]:
        """Allowed values of a Literal field (empty for any other type)."""
        match = re.fullmatch(r"Literal\[(.*)\]", self.type.strip())
        if not match:
            return ()
        quoted = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", match.group(1))
        return tuple(a or b for a, b in quoted)


@dataclass
class ParsedPrompt:
    fmt: Format
    inputs: list[FieldSpec] = field(default_factory=list)
    outputs: list[FieldSpec] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # input name -> raw text value
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # output name -> JSON schema
    skeletons: dict[str, str] = field(default_factory=dict)  # output name -> nested XML layout
    system: str = ""
    user: str = ""

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]


def _section(system: str, start: str, stops: tuple[str, ...]) -> list[FieldSpec]:
    begin = system.find(start)
    if begin < 0:
        return []
    body = system[begin + len(start):]
    end = min((i for i in (body.find(s) for s in stops) if i >= 0), default=len(body))
    specs = []
    for line in body[:end].splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            specs.append(FieldSpec(match.group(1), match.group(2).strip()))
    return specs


def _detect_format(system: str, user: str, wants_json: bool) -> Format:
    if wants_json or "Respond with a JSON object" in user or "Outputs will be a JSON object" in system:
        return "json"
    if "wrapped in XML tags" in user:
        return "xml"
    if "[[ ## completed ## ]]" in system or "[[ ## " in user:
        return "chat"
    return "plain"


def _chat_values(user: str, names: list[str]) -> dict[str, str]:
    """Input values between `[[ ## name ## ]]` markers; only markers of known input
    fields split the text, so a value may itself contain other markers."""
    values: dict[str, str] = {}
    known = set(names)
    marks = [m for m in _CHAT_MARKER.finditer(user) if not known or m.group(1) in known]
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(user)
        chunk = user[mark.end():end]
        if i + 1 == len(marks):
            cut = chunk.rfind("\n\nRespond with")
            chunk = chunk[:cut] if cut >= 0 else chunk
        values[mark.group(1)] = chunk.strip("\n").strip()
    return values


def _xml_values(user: str, names: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        match = re.search(rf"<{re.escape(name)}>\n?(.*?)\n?</{re.escape(name)}>", user, re.DOTALL)
        if match:
            values[name] = match.group(1).strip()
    return values


def _schemas(system: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, raw in _CHAT_SCHEMA.findall(system):
        found[name] = raw
    for name, escaped in _JSON_SCHEMA.findall(system):
        try:
            found[name] = json.loads(f'"{escaped}"')
        except ValueError:
            continue
    schemas = {}
    for name, raw in found.items():
        try:
            schema = json.loads(raw)
        except ValueError:
            continue
        if isinstance(schema, dict):
            schemas[name] = schema
    return schemas


def parse_prompt(system: str, user: str, wants_json: bool = False) -> ParsedPrompt:
    """Parse the system text and the last user message of a DSPy adapter prompt."""
    inputs = _section(system, "Your input fields are:", ("Your output fields are:",))
    outputs = _section(system, "Your output fields are:", ("All interactions will be structured",))
    fmt = _detect_format(system, user, wants_json) if outputs else "plain"
    if fmt == "xml":
        values = _xml_values(user, [f.name for f in inputs])
    else:
        values = _chat_values(user, [f.name for f in inputs])
    skeletons = {m.group(1): m.group(0) for m in _XML_SKELETON.finditer(system)} if fmt == "xml" else {}
    return ParsedPrompt(fmt, inputs, outputs, values, _schemas(system), skeletons, system, user)


# ---------------------------------------------------------------- rendering


def _union_members(kind: str) -> list[str]:
    """Split "Union[a, b]", "Optional[a]" or "a|b" at the top level (empty if not a union)."""
    if kind.startswith(("Union[", "Optional[")) and kind.endswith("]"):
        body, sep = kind[kind.index("[") + 1:-1], ","
    elif "|" in kind:
        body, sep = kind, "|"
    else:
        return []
    members, depth, current = [], 0, ""
    for ch in body:
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            members.append(current)
            current = ""
        else:
            current += ch
    return [m for m in members + [current] if m]


def from_schema(schema: dict[str, Any], text: str, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A small value that satisfies `schema` (strings are filled with `text`)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if depth > 8:
        return None
    if "$ref" in schema:
        return from_schema(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), text, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            choices = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return from_schema(choices[0], text, defs, depth + 1)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: from_schema(v, k, defs, depth + 1) for k, v in props.items() if k in required}
    if kind == "array":
        items = schema.get("items")
        return [from_schema(items, text, defs, depth + 1)] if isinstance(items, dict) else []
    return {"integer": 1, "number": 0.5, "boolean": True, "null": None}.get(kind, text)


def coerce(spec: FieldSpec, value: Any, schema: dict[str, Any] | None = None) -> Any:
    """Fit a value to the field's declared type so every adapter can parse it."""
    kind = spec.type.replace(" ", "")
    members = _union_members(kind)
    if members:
        first = next((m for m in members if m not in {"None", "NoneType"}), "str")
        return coerce(FieldSpec(spec.name, first), value, schema)
    options = spec.options
    if options:
        text = str(value).strip()
        for option in options:
            if option.lower() == text.lower():
                return option
        return options[0]
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).strip().lower() in {"true", "yes", "1"}
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return int(value) if re.fullmatch(r"\s*-?\d+\s*", str(value)) else len(str(value).split())
    if kind == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.5
    if kind.startswith("list") or kind.startswith("tuple"):
        if isinstance(value, list):
            return value
        inner = kind[kind.find("[") + 1:-1] if "[" in kind else "str"
        return [str(value)] if inner in {"str", "Any", ""} else []
    if kind.startswith("dict"):
        return value if isinstance(value, dict) else {}
    if kind != "str" and schema is not None:
        return from_schema(schema, str(value))
    return value if isinstance(value, str) else str(value)


def _chat_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def render(parsed: ParsedPrompt, answers: dict[str, Any]) -> str:
    """Write the answers for every requested output field, in the adapter's format."""
    fields = parsed.outputs
    typed = {f.name: coerce(f, answers.get(f.name, ""), parsed.schemas.get(f.name)) for f in fields}
    if parsed.fmt == "json":
        return json.dumps(typed, indent=2, ensure_ascii=False)
    if parsed.fmt == "xml":
        parts = []
        for name, value in typed.items():
            skeleton = parsed.skeletons.get(name)
            if isinstance(value, list):
                items = "".join(f"<item>{escape(_chat_text(v))}</item>" for v in value)
                parts.append(f"<{name}>{items}</{name}>")
            elif skeleton:
                # A structured type: fill every leaf with "1", which str, int, float and bool all accept.
                parts.append(skeleton.replace("...", "1"))
            else:
                parts.append(f"<{name}>\n{escape(_chat_text(value))}\n</{name}>")
        return "\n\n".join(parts)
    if parsed.fmt == "chat":
        blocks = [f"[[ ## {name} ## ]]\n{_chat_text(value)}" for name, value in typed.items()]
        return "\n\n".join(blocks + ["[[ ## completed ## ]]"])
    return "\n".join(str(v) for v in answers.values())

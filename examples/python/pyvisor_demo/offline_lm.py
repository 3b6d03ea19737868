"""A deterministic, offline "LM" for DSPy 3.4's engine API.

    lm = dspy.LM("offline/rules", engine=OfflineRulesEngine(), cache=False)   # or offline_lm()

The engine reads the prompt DSPy's adapter built, answers every requested output field in
that adapter's format (ChatAdapter, JSONAdapter or XMLAdapter), follows rules written in
the instruction (grammar in `rules.py`), and, when GEPA asks it to reflect, turns metric
feedback into such rules (`reflection.py`). It is a simulated LM, not a language model:
label it that way in any UI. dspy.LM records every call in `lm.history` as usual.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from .answers import answer
from .prompt_format import parse_prompt

MODEL = "offline/rules"
CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    """Rough token count: one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Message):
        content = content.parts
    return "\n".join(getattr(part, "text", "") or "" for part in content)


class OfflineRulesEngine:
    """Custom dspy.LM engine: `complete(Request) -> Response`, deterministic and fast."""

    model = MODEL

    def complete(self, request: Any) -> Response:
        system = _text_of(request.system)
        messages = [_text_of(m) for m in request.messages]
        user = next((_text_of(m) for m in reversed(request.messages) if m.role == "user"), "")
        wants_json = getattr(request.config, "response_format", None) is not None
        text = answer(parse_prompt(system, user, wants_json))
        prompt_tokens = approx_tokens(system + "".join(messages))
        completion_tokens = approx_tokens(text)
        digest = hashlib.sha1((system + "\x00" + "\x00".join(messages)).encode()).hexdigest()[:16]
        return Response(
            id=f"offline-{digest}",
            model=self.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens),
        )

    def close(self) -> None:
        """Nothing to release: no sockets, no threads, no files."""

    # Lets dspy save and load an LM that uses this engine.
    def dump_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "OfflineRulesEngine":
        return cls()


def offline_lm(**kwargs: Any) -> dspy.LM:
    """A dspy.LM backed by OfflineRulesEngine, with DSPy's disk cache off by default.

    `model` renames the LM (default "offline/rules"); other keyword arguments
    (temperature, max_tokens, cache, ...) go to dspy.LM. The engine ignores sampling
    settings because its answers are deterministic.
    """
    kwargs.setdefault("cache", False)
    model = kwargs.pop("model", MODEL)
    return dspy.LM(model, engine=OfflineRulesEngine(), **kwargs)


def is_offline(lm: Any) -> bool:
    return isinstance(getattr(lm, "engine", None), OfflineRulesEngine)

"""Choose the demo's LM: the offline engine unless a real provider is selected.

Selection (`make_lm(kind)`; kind "auto" defers to the environment):
* DEMO_LM = offline | gemini | openai | <provider/model string>   (default: auto)
* auto: DEMO_MODEL if set, else gemini when GEMINI_API_KEY or GOOGLE_API_KEY is set,
  else openai when OPENAI_API_KEY is set, else the offline engine.
* DEMO_MODEL also replaces the default model of `gemini` / `openai`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dspy

from .offline_lm import MODEL as OFFLINE_MODEL
from .offline_lm import is_offline, offline_lm

DEFAULT_MODELS = {"gemini": "gemini/gemini-2.5-flash", "openai": "openai/gpt-4o-mini"}
OFFLINE_DESCRIPTION = "simulated LM (offline)"


def select_model(kind: str = "auto", env: Mapping[str, str] | None = None) -> str | None:
    """The provider model string to use, or None for the offline engine."""
    env = os.environ if env is None else env
    choice = (kind or "auto").strip()
    if choice.lower() == "auto":
        choice = (env.get("DEMO_LM") or "auto").strip()
    override = (env.get("DEMO_MODEL") or "").strip()
    lowered = choice.lower()
    if lowered == "auto":
        if override:
            return override
        if env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"):
            return DEFAULT_MODELS["gemini"]
        if env.get("OPENAI_API_KEY"):
            return DEFAULT_MODELS["openai"]
        return None
    if lowered in {"offline", OFFLINE_MODEL}:
        return None
    if lowered in DEFAULT_MODELS:
        return override or DEFAULT_MODELS[lowered]
    if "/" in choice:
        return choice
    raise ValueError(f"unknown LM selection {choice!r}: use auto, offline, gemini, openai or provider/model")


def make_lm(kind: str = "auto", **kwargs: Any) -> dspy.LM:
    """A dspy.LM for the demo; keyword arguments go to dspy.LM (e.g. temperature)."""
    model = select_model(kind)
    if model is None or model == OFFLINE_MODEL:
        return offline_lm(**kwargs)
    return dspy.LM(model, **kwargs)


def describe_lm(lm: Any) -> str:
    """"simulated LM (offline)" for the offline engine, else the LM's model string."""
    if is_offline(lm):
        return OFFLINE_DESCRIPTION
    return str(getattr(lm, "model", lm))

"""LM selection from DEMO_LM / DEMO_MODEL / provider keys."""

from __future__ import annotations

import pytest

from pyvisor_demo import describe_lm, make_lm, select_model

KEYS = ("DEMO_LM", "DEMO_MODEL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY")


@pytest.mark.parametrize(
    ("kind", "env", "expected"),
    [
        ("auto", {}, None),
        ("auto", {"GEMINI_API_KEY": "k"}, "gemini/gemini-2.5-flash"),
        ("auto", {"GOOGLE_API_KEY": "k", "OPENAI_API_KEY": "k"}, "gemini/gemini-2.5-flash"),
        ("auto", {"OPENAI_API_KEY": "k"}, "openai/gpt-4o-mini"),
        ("auto", {"DEMO_MODEL": "anthropic/claude-x"}, "anthropic/claude-x"),
        ("auto", {"DEMO_LM": "offline", "GEMINI_API_KEY": "k"}, None),
        ("auto", {"DEMO_LM": "openai", "DEMO_MODEL": "openai/gpt-4.1"}, "openai/gpt-4.1"),
        ("auto", {"DEMO_LM": "ollama_chat/llama3"}, "ollama_chat/llama3"),
        ("offline", {"OPENAI_API_KEY": "k"}, None),
        ("gemini", {}, "gemini/gemini-2.5-flash"),
    ],
)
def test_select_model(kind: str, env: dict[str, str], expected: str | None) -> None:
    assert select_model(kind, env) == expected


def test_unknown_selection_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown LM selection"):
        select_model("auto", {"DEMO_LM": "local"})


def test_make_lm_builds_a_provider_lm_without_calling_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    lm = make_lm()
    assert lm.model == "openai/gpt-4o-mini"
    assert describe_lm(lm) == "openai/gpt-4o-mini"
    monkeypatch.setenv("DEMO_LM", "offline")
    assert describe_lm(make_lm()) == "simulated LM (offline)"


@pytest.mark.parametrize("kind", ["offline", "auto"])
def test_make_lm_offline(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)
    lm = make_lm(kind, temperature=0.2)
    assert describe_lm(lm) == "simulated LM (offline)"
    assert lm.kwargs.get("temperature") == 0.2

"""The pool's policy: which modules requests may name, and whether eval/exec may run.

``PYVISOR_ALLOW_MODULES`` (comma-separated; unset or empty = every module) limits the modules that
``CALL``, ``GET_ATTR`` on a module and ``CONTEXT`` may name: a listed module, or a module inside a
listed package. ``builtins`` must be listed to be reached. ``builtins.eval``, ``builtins.exec`` and
``builtins.compile`` also need ``PYVISOR_ALLOW_EVAL=1``. This guards against mistakes and confused
callers; it is not a sandbox.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Tuple

__all__ = ["EVAL_FUNCTIONS", "NotAllowed", "Policy"]

EVAL_FUNCTIONS = frozenset({"eval", "exec", "compile"})


class NotAllowed(Exception):
    """The policy forbids the module or function; the message says which."""


class Policy:
    """An allowlist of modules (``None`` = every module) and the eval switch."""

    __slots__ = ("allow_modules", "allow_eval")

    def __init__(self, allow_modules: Optional[Iterable[str]] = None,
                 allow_eval: bool = False) -> None:
        modules: Optional[Tuple[str, ...]] = None
        if allow_modules is not None:
            modules = tuple(m.strip() for m in allow_modules if m.strip())
            if not modules:
                modules = None  # an empty list means "no allowlist", like the unset variable
        self.allow_modules = modules
        self.allow_eval = allow_eval

    @classmethod
    def from_env(cls) -> "Policy":
        raw = os.environ.get("PYVISOR_ALLOW_MODULES")
        return cls(raw.split(",") if raw else None,
                   os.environ.get("PYVISOR_ALLOW_EVAL", "").strip() == "1")

    def module_allowed(self, module: str) -> bool:
        if self.allow_modules is None:
            return True
        return any(module == m or module.startswith(m + ".") for m in self.allow_modules)

    def check(self, module: str, name: Optional[str] = None) -> None:
        """Raise ``NotAllowed`` unless ``module`` (and its attribute ``name``, maybe dotted) may be used."""
        if self.allow_modules is None and module != "builtins":
            return  # the common case, decided without a call
        if not self.module_allowed(module):
            raise NotAllowed(f"module {module!r} is not allowed: it is not in PYVISOR_ALLOW_MODULES")
        if name is not None and module == "builtins" and not self.allow_eval:
            head = name.split(".", 1)[0]
            if head in EVAL_FUNCTIONS:
                raise NotAllowed(f"'builtins.{head}' is not allowed: it needs PYVISOR_ALLOW_EVAL=1")

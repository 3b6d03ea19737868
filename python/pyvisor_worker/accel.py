"""Whether a worker uses the C accelerator of the plain path (``_plainc``, see
``docs/decisions.md``, "Worker C accelerator").

``_plainc.call`` runs the common plain ``CALL`` (``plain.py``) without a Python frame and hands
back the complete reply frame. It is optional: a worker without the compiled extension, with
``PYVISOR_WORKER_PURE=1`` in its environment, or with a module allowlist (the C path does not
check one) runs the same requests on the Python paths, which answer alike.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from .policy import Policy
from .protocol import OK

__all__ = ["Accelerator", "PURE_ENV", "Splitter", "available", "select", "splitter"]

PURE_ENV = "PYVISOR_WORKER_PURE"
"""Set to ``1``: never use the C accelerator."""

Accelerator = Callable[[Any, int, Dict[str, List[Any]], int], Any]
"""``call(body, request_id, contexts, max_frame)``: ``None``, a reply frame (``bytes``),
``(True, result, session)`` or ``(False, exception, session)``."""

Splitter = Callable[[bytes], Optional[Tuple[int, int, bytes]]]
"""``split(payload)``: ``protocol.split_envelope``'s answer for a small payload in the host's
envelope shape, else ``None`` (``split_envelope`` then decides)."""


# Imported with this module, so that a template (template.py) has loaded it before it forks.
try:
    from . import _plainc  # type: ignore[attr-defined]
except ImportError:  # not built: no compiler or headers where the package was installed
    _plainc = None


def available() -> Optional[Accelerator]:
    """``_plainc.call`` if the extension is built and speaks this protocol, else ``None``."""
    if _plainc is None or getattr(_plainc, "OK", None) != OK:  # a stale build: wrong frames
        return None
    call: Accelerator = _plainc.call
    return call


def pure() -> bool:
    """Whether ``PYVISOR_WORKER_PURE=1`` turns the accelerator off."""
    return os.environ.get(PURE_ENV, "").strip() == "1"


def splitter() -> Optional[Splitter]:
    """``_plainc.split`` unless the extension is unavailable or turned off."""
    if pure() or available() is None:
        return None
    split: Splitter = _plainc.split
    return split


def select(policy: Policy) -> Optional[Accelerator]:
    """The accelerator a worker with ``policy`` uses: ``None`` when ``PYVISOR_WORKER_PURE=1``,
    when the policy has a module allowlist, or when the extension is not available."""
    if pure() or policy.allow_modules is not None:
        return None
    return available()

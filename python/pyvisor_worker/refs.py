"""The ref registry: live objects handed out to the host as refs (``docs/values.md``, "Refs").

One registry per worker process. Ids come from a process-local counter and are never reused.
Entries are kept in least-recently-used order; ``PYVISOR_MAX_REFS`` bounds how many there are (all
sessions together) and ``PYVISOR_REF_TTL`` how long one may stay unused. Both limits are enforced
when a ref is created and when one is resolved.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Optional

__all__ = [
    "DEFAULT_MAX_REFS",
    "RefError",
    "RefNotFound",
    "RefSessionMismatch",
    "Registry",
    "current",
    "identity_from_env",
    "size",
]

DEFAULT_MAX_REFS = 10000

Payload = Dict[str, Any]


class RefError(Exception):
    """A ref in a request cannot be used; ``kind`` is its protocol error kind."""

    kind = ""


class RefNotFound(RefError):
    """The id is unknown to this worker: released, evicted, or never issued."""

    kind = "ref_not_found"

    def __init__(self, ref_id: Any) -> None:
        super().__init__(
            f"ref {ref_id} is not known to this worker (released, evicted or never issued)")
        self.ref_id = ref_id


class RefSessionMismatch(RefError):
    """The ref belongs to another session than the request's."""

    kind = "ref_session_mismatch"

    def __init__(self, ref_id: int, owner: Optional[str], session: Optional[str]) -> None:
        super().__init__(
            f"ref {ref_id} belongs to session {owner!r}, not to the request's session {session!r}")
        self.ref_id = ref_id
        self.owner = owner
        self.session = session


class _Entry:
    __slots__ = ("obj", "session", "last_access")

    def __init__(self, obj: Any, session: Optional[str], last_access: float) -> None:
        self.obj = obj
        self.session = session
        self.last_access = last_access


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default


def identity_from_env() -> Dict[str, Any]:
    """``pool``, ``slot`` and ``generation`` of this worker, from ``PYVISOR_POOL``/``_SLOT``/``_GENERATION``."""
    return {
        "pool": os.environ.get("PYVISOR_POOL", ""),
        "slot": max(0, _env_int("PYVISOR_SLOT", 0)),
        "generation": max(0, _env_int("PYVISOR_GENERATION", 0)),
    }


def limits_from_env() -> "tuple[int, float]":
    """``(max_refs, ttl)`` from ``PYVISOR_MAX_REFS`` and ``PYVISOR_REF_TTL`` (``0.0`` = no TTL)."""
    max_refs = _env_int("PYVISOR_MAX_REFS", DEFAULT_MAX_REFS)
    if max_refs < 1:
        max_refs = DEFAULT_MAX_REFS
    try:
        ttl = float(os.environ.get("PYVISOR_REF_TTL", "").strip() or 0.0)
    except ValueError:
        ttl = 0.0
    if not ttl > 0.0 or ttl == float("inf"):  # NaN, negative, 0 and inf all mean "no TTL"
        ttl = 0.0
    return max_refs, ttl


class Registry:
    """Live objects by ref id, in least-recently-used order."""

    def __init__(self, max_refs: int = DEFAULT_MAX_REFS, ttl: float = 0.0,
                 identity: Optional[Dict[str, Any]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_refs < 1:
            raise ValueError("max_refs must be at least 1")
        self.max_refs = max_refs
        self.ttl = ttl
        self._identity = dict(identity) if identity is not None else {
            "pool": "", "slot": 0, "generation": 0}
        self._clock = clock
        self._entries: "OrderedDict[int, _Entry]" = OrderedDict()
        self._next_id = 1

    @classmethod
    def from_env(cls) -> "Registry":
        max_refs, ttl = limits_from_env()
        return cls(max_refs, ttl, identity_from_env())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ref_id: object) -> bool:
        return ref_id in self._entries

    def ids(self) -> "list[int]":
        """Every id held, least recently used first."""
        return list(self._entries)

    def _expire(self, now: float) -> None:
        if not self.ttl:
            return
        cutoff = now - self.ttl
        entries = self._entries
        while entries:
            ref_id, entry = next(iter(entries.items()))
            if entry.last_access > cutoff:
                return
            del entries[ref_id]

    def register(self, obj: Any, session: Optional[str], stream: bool = False) -> Payload:
        """Hold ``obj`` for ``session`` under a new id and return the ref payload map.

        ``stream`` only documents the caller's intent (the payload is the same for ``REF`` and
        ``STREAM_REF``). The least recently used refs beyond ``max_refs`` are evicted.
        """
        now = self._clock()
        self._expire(now)
        ref_id = self._next_id
        self._next_id = ref_id + 1
        entries = self._entries
        entries[ref_id] = _Entry(obj, session, now)
        while len(entries) > self.max_refs:
            entries.popitem(last=False)
        cls = type(obj)
        return {
            "id": ref_id,
            "session": session,
            "pool": self._identity["pool"],
            "slot": self._identity["slot"],
            "generation": self._identity["generation"],
            "type": getattr(cls, "__qualname__", cls.__name__),
            "module": getattr(cls, "__module__", None) or "",
        }

    def lookup(self, payload: Any) -> "tuple[int, Any, Optional[str]]":
        """``(id, obj, owning session)`` of the ref ``payload`` (a payload map or a bare id).

        Marks the ref as used. Raises ``RefNotFound``; the session is checked by the caller.
        """
        ref_id = payload.get("id") if type(payload) is dict else payload
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(ref_id) if type(ref_id) is int else None
        if entry is None:
            raise RefNotFound(ref_id)
        entry.last_access = now
        self._entries.move_to_end(ref_id)
        return ref_id, entry.obj, entry.session

    def resolve(self, payload: Any, session: Optional[str]) -> Any:
        """The live object of the ref ``payload``, which must belong to ``session``."""
        ref_id, obj, owner = self.lookup(payload)
        if owner != session:
            raise RefSessionMismatch(ref_id, owner, session)
        return obj

    def release(self, session: Optional[str], ids: Optional[Iterable[Any]] = None) -> int:
        """Drop the refs ``ids`` of ``session`` (all of them when ``ids`` is ``None``).

        Ids that are unknown or owned by another session are ignored. Returns how many were dropped.
        """
        entries = self._entries
        if ids is None:
            doomed = [ref_id for ref_id, entry in entries.items() if entry.session == session]
        else:
            doomed = []
            for ref_id in ids:
                entry = entries.get(ref_id) if type(ref_id) is int else None
                if entry is not None and entry.session == session:
                    doomed.append(ref_id)
        dropped = 0
        for ref_id in doomed:
            if entries.pop(ref_id, None) is not None:
                dropped += 1
        return dropped

    def discard(self, ids: Iterable[int]) -> None:
        """Drop ``ids`` whatever their session (rolling back a failed encoding)."""
        entries = self._entries
        for ref_id in ids:
            entries.pop(ref_id, None)


_current: Optional[Registry] = None


def current() -> Registry:
    """The registry of this worker process (made from the environment on first use)."""
    global _current
    if _current is None:
        _current = Registry.from_env()
    return _current


def size() -> int:
    """How many refs this worker process holds (for diagnostics and tests)."""
    return len(current())

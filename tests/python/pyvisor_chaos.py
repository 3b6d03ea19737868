"""Python fixtures of the reliability tests (tests/reliability_chaos.rs, tests/reliability_orphans.rs).

* Session state: ``chaos_init`` stores a per-session token, ``chaos_call`` checks it on every later
  call before doing its work, and raises ``StateLost`` when the token is not there — the proof that
  a call was answered by an interpreter that does not hold the session's state. A session that
  holds a context (``holding(token)``, pushed with ``Session::push_context``) also has its call
  check that the context is around it.
* Orphans: every process these fixtures create (the worker itself at a slow import, forked
  ``multiprocessing`` children) is recorded as a file named by its pid in ``$PYVISOR_ORPHAN_DIR``,
  so that the test can check every one of them by pid after the host is killed.

Environment (set per pool with ``PoolConfig::env``):

``PYVISOR_CHAOS_IMPORT_SLEEP``
    seconds to sleep while this module is imported (as a preload: a worker that takes a moment to
    start); the worker's pid is recorded first.
``PYVISOR_ORPHAN_DIR``
    directory where pids are recorded (nothing is recorded when unset).
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import os
import time
from typing import Any, Dict, Iterator, List

_tokens: Dict[str, str] = {}
_children: List[Any] = []
_held: "contextvars.ContextVar[str | None]" = contextvars.ContextVar("held", default=None)


class StateLost(Exception):
    """The session's token is not on this interpreter (or another one is)."""


def _record(pid: int, what: str) -> None:
    directory = os.environ.get("PYVISOR_ORPHAN_DIR")
    if not directory:
        return
    path = os.path.join(directory, f"{pid}")
    with open(path + ".tmp", "w") as f:
        f.write(what)
    os.replace(path + ".tmp", path)


_import_sleep = float(os.environ.get("PYVISOR_CHAOS_IMPORT_SLEEP", "0") or 0)
if _import_sleep > 0:
    _record(os.getpid(), "worker-starting")
    time.sleep(_import_sleep)


# ----- session state under chaos ------------------------------------------------------------


def chaos_init(key: str, token: str) -> int:
    """Stores the session's token (first call of a session incarnation); returns the pid."""
    _tokens[key] = token
    return os.getpid()


@contextlib.contextmanager
def holding(token: str) -> Iterator[None]:
    """A session context (``Session::push_context``): ``chaos_call(.., in_context=True)`` checks
    that it is around the call."""
    reset = _held.set(token)
    try:
        yield
    finally:
        _held.reset(reset)


def chaos_call(key: str, token: str, action: str, ms: int, in_context: bool = False) -> list:
    """Checks the session's token (and, ``in_context``, its context), then works: ``short``
    returns at once, ``long`` sleeps ``ms`` milliseconds, ``raise`` raises ``ValueError``.
    Returns ``[pid, token]``."""
    found = _tokens.get(key)
    if found != token:
        raise StateLost(f"session {key}: expected token {token!r}, found {found!r} in pid {os.getpid()}")
    if in_context and _held.get() != token:
        raise StateLost(f"session {key}: its context {token!r} is not around the call, found {_held.get()!r}")
    if action == "long":
        time.sleep(ms / 1000.0)
    elif action == "raise":
        raise ValueError(f"chaos: {key} raised on purpose")
    return [os.getpid(), found]


# ----- processes of their own ---------------------------------------------------------------


def _sleeper(seconds: float) -> None:
    time.sleep(seconds)


def spawn_sleeper(seconds: float = 60.0) -> int:
    """Starts a ``multiprocessing`` child (forked: it stays in the worker's process group) that
    sleeps; records and returns its pid. The worker keeps the handle (it is not joined)."""
    child = multiprocessing.get_context("fork").Process(target=_sleeper, args=(seconds,))
    child.start()
    _children.append(child)
    _record(child.pid, "multiprocessing-child")
    return child.pid


def record_self() -> int:
    """Records this worker's pid; returns it."""
    _record(os.getpid(), "worker")
    return os.getpid()


def busy_sleep(seconds: float) -> int:
    """Records the pid, then sleeps (a worker busy in a call); returns the pid."""
    _record(os.getpid(), "worker-busy")
    time.sleep(seconds)
    return os.getpid()



def spawn_subprocess_sleeper(seconds: float = 60.0) -> int:
    """Starts a child with ``subprocess`` (fork + exec in C: no Python at-fork hook runs in it)
    that sleeps; records and returns its pid."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({seconds})"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _children.append(child)
    _record(child.pid, "subprocess-child")
    return child.pid


def spawn_sleeper_from_thread(seconds: float = 60.0, linger: float = 0.2, watch: float = 0.5) -> list:
    """Starts a ``multiprocessing`` child from a short-lived helper thread (which lingers
    ``linger`` seconds, then ends), then watches the child for ``watch`` seconds. Returns
    ``[pid, exitcode]``: ``exitcode`` is ``None`` while the child runs, ``-9`` if it was SIGKILLed."""
    import threading

    box: Dict[str, Any] = {}

    def starter() -> None:
        child = multiprocessing.get_context("fork").Process(target=_sleeper, args=(seconds,))
        child.start()
        _children.append(child)
        _record(child.pid, "multiprocessing-child")
        box["child"] = child
        time.sleep(linger)

    thread = threading.Thread(target=starter)
    thread.start()
    thread.join()
    child = box["child"]
    child.join(timeout=watch)
    return [child.pid, child.exitcode]

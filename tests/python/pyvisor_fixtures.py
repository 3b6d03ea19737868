"""Python functions the Rust integration tests call in real workers."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from typing import Any, Iterator, Optional

_state: dict[str, Any] = {}


def pid() -> int:
    """The worker's OS pid."""
    return os.getpid()


def minor_faults() -> int:
    """Page faults this worker has taken so far that needed no I/O (fresh pages mostly)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def state_set(key: str, value: Any) -> int:
    """Stores per-process state (what a session keeps on its worker); returns the pid."""
    _state[key] = value
    return os.getpid()


def state_get(key: str) -> Any:
    """Reads per-process state; raises KeyError on a fresh interpreter."""
    return _state[key]


_tag: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("pyvisor_fixtures_tag", default=None)


@contextlib.contextmanager
def tagged(tag: str) -> Iterator[None]:
    """A context-manager factory for ``Session.push_context``: ``current_tag()`` is ``tag`` while
    it is entered (the worker enters it around every later request of the session)."""
    token = _tag.set(tag)
    try:
        yield
    finally:
        _tag.reset(token)


def current_tag() -> Optional[str]:
    """The tag of the ``tagged`` context the request runs in, or ``None`` outside any."""
    return _tag.get()


_log: list[str] = []


def log_append(tag: str) -> list[str]:
    """Appends ``tag`` to this process's call log; returns the log so far (the order calls ran)."""
    _log.append(tag)
    return list(_log)


def spam(lines: int, marker: str) -> int:
    """Prints `lines` lines to stdout and to stderr, some without newline flush tricks."""
    for i in range(lines):
        print(f"{marker} out {i}")
        print(f"{marker} err {i}", file=sys.stderr)
    sys.stdout.write(f"{marker} partial")
    sys.stdout.flush()
    print()
    return lines


def gate(path: str, timeout: float = 30.0) -> int:
    """Blocks until `path` exists (the test opens the gate), then returns the pid."""
    marker = path + ".started"
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.005)
    return os.getpid()


def sleep(seconds: float) -> int:
    """Sleeps, then returns the pid."""
    time.sleep(seconds)
    return os.getpid()


def fail(message: str) -> None:
    """Raises a ValueError from a nested function (for traceback checks)."""

    def inner() -> None:
        raise ValueError(message)

    inner()


def big_bytes(size: int) -> bytes:
    """A bytes object of `size` bytes."""
    return b"x" * size


def echo(value: Any) -> Any:
    """Returns its argument."""
    return value


# ----- object bridge fixtures -------------------------------------------------------------

import re
from collections import OrderedDict


class Opaque:
    """An object with no value form: it always comes back as a ref."""

    def __init__(self, label: str = "opaque") -> None:
        self.label = label

    def shout(self, suffix: str = "!") -> str:
        return self.label.upper() + suffix


def validators() -> list:
    """A1: three dicts whose `pattern` is a compiled regex."""
    return [
        {"name": "email", "pattern": re.compile(r"[^@]+@[^@]+"), "error_message": "bad email", "required": True},
        {"name": "zip", "pattern": re.compile(r"\d{5}"), "error_message": "bad zip", "required": False},
        {"name": "phone", "pattern": re.compile(r"\+?\d+"), "error_message": "bad phone", "required": False},
    ]


def mixed() -> Any:
    """A2: refs only at the leaves."""
    p = re.compile("x")
    return {
        "list": [1, p, 3],
        "map": {"a": 1, "b": p, "c": "hello"},
        "deep": {"l1": {"l2": {"l3": [1, 2, re.compile("y"), 4]}}},
    }


def three_patterns() -> list:
    """A3: three different objects, three refs."""
    return [re.compile("a"), 1, re.compile("b"), 2, re.compile("c")]


def tuple_with_ref() -> tuple:
    """A4."""
    return (1, re.compile("t"), 3)


def with_stream() -> dict:
    """A5: a generator inside a dict."""
    return {"stream": (i * i for i in range(5)), "status": "ok"}


async def _agen():
    yield 1


def async_things() -> dict:
    """A10: async generators are plain refs."""
    return {"agen": _agen(), "gen": (i for i in range(2))}


def same_twice() -> list:
    """A11: one object twice, another once."""
    p = re.compile("same")
    return [p, p, re.compile("other")]


def cycles() -> dict:
    """A8: a self-referencing list, two dicts pointing at each other, a 10-deep chain."""
    selfish: list = [1, 2]
    selfish.append(selfish)
    a: dict = {"name": "a"}
    b: dict = {"name": "b", "peer": a}
    a["peer"] = b
    root: dict = {"depth": 0}
    node = root
    for depth in range(1, 10):
        child: dict = {"depth": depth}
        node["next"] = child
        node = child
    node["next"] = root
    return {"selfish": selfish, "pair": a, "chain": root}


def too_deep(depth: int = 5000) -> list:
    """A9: nesting beyond the recursion limit."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def history_like() -> list:
    """A7: an LM history entry: only `response` has no value form."""
    return [{
        "model": "offline/rules",
        "response": Opaque("response"),
        "cost": 0.0,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}],
    }]


def ordered() -> OrderedDict:
    """dict subclasses are data."""
    return OrderedDict([("b", 1), ("a", 2)])


def registry_size() -> int:
    """How many refs this worker holds."""
    from pyvisor_worker import refs

    return refs.size()


def count_to(n: int):
    """A generator of 0..n."""
    yield from range(n)


def fail_after(n: int):
    """A generator that raises after n items."""
    yield from range(n)
    raise RuntimeError(f"stream broke after {n}")


def describe(value: Any) -> Any:
    """What Python received: (type name, repr) — for checking what Rust values become."""
    return [type(value).__name__, repr(value)]


def key_types(d: dict) -> list:
    """The type names of a dict's keys, in order."""
    return [type(k).__name__ for k in d]


def ndarray_info(a: Any) -> list:
    """dtype, shape, checksum, and whether the array views the message buffer (read-only)."""
    return [a.dtype.str, list(a.shape), float(a.sum()), not a.flags.writeable]


def make_array(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64) * 0.5

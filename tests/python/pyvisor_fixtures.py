"""Python functions the Rust integration tests call in real workers."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

_state: dict[str, Any] = {}


def pid() -> int:
    """The worker's OS pid."""
    return os.getpid()


def state_set(key: str, value: Any) -> int:
    """Stores per-process state (what a session keeps on its worker); returns the pid."""
    _state[key] = value
    return os.getpid()


def state_get(key: str) -> Any:
    """Reads per-process state; raises KeyError on a fresh interpreter."""
    return _state[key]


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

"""Functions the tests call inside real workers (this directory is on the worker's PYTHONPATH)."""

import os
import sys
import threading
import time


class Outer:
    class Boom(Exception):
        pass


def boom(message):
    raise Outer.Boom(message)


def interrupt():
    raise KeyboardInterrupt


def echo(*args, **kwargs):
    return [list(args), kwargs]


def spam(lines):
    """Write a lot to stdout and stderr, through Python and straight to fds 1 and 2."""
    for i in range(lines):
        print(f"stdout line {i}", "\x00\xff binary-ish", [1, 2, 3])
        print(f"stderr line {i}", file=sys.stderr)
    print("no newline at the end", end="")
    sys.stdout.flush()
    os.write(1, b"\x00\x00\x00\x10raw bytes on fd 1 that look like a frame header\n")
    os.write(2, b"\x93\x02\x01\xc0 raw bytes on fd 2\n")
    return "done"


def exit_now(code):
    sys.exit(code)


def returns_set():
    return {1, 2}


def returns_nested_unencodable():
    return [1, {"a": object()}]


def big_string(n):
    return "x" * n


def fd_inheritable(variable):
    return os.get_inheritable(int(os.environ[variable]))


def is_loaded(name):
    return name in sys.modules


def on_main_thread():
    return threading.current_thread() is threading.main_thread()


def leave_thread_running():
    """Start a non-daemon thread that never ends: it must not keep a stopped worker alive."""
    threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
    return True


def boom_big(n):
    """Raise with an n-character message (and so a traceback of at least that size)."""
    raise Outer.Boom("z" * n)


# -- object bridge ---------------------------------------------------------------------------------

import contextlib
import re

SETTING = "default"
ENTERED = []


@contextlib.contextmanager
def setting(value):
    """Set the module global SETTING for the duration (single use, like dspy.context)."""
    global SETTING
    old = SETTING
    SETTING = value
    ENTERED.append(value)
    try:
        yield value
    finally:
        SETTING = old


def get_setting():
    return SETTING


def entered():
    return list(ENTERED)


@contextlib.contextmanager
def broken_context():
    raise RuntimeError("cannot enter")
    yield  # pragma: no cover


def not_a_context():
    return 42


def pattern(text):
    return re.compile(text)


def patterns_in_data(*texts):
    return [{"name": t, "re": re.compile(t), "n": len(t)} for t in texts]


class Box:
    def __init__(self, content=None):
        self.content = content

    def get(self):
        return self.content

    def __repr__(self):
        return f"Box({self.content!r})"


def count(n):
    for i in range(n):
        yield i


def count_then_fail(n):
    for i in range(n):
        yield i
    raise ValueError(f"failed after {n}")


def stream_in_a_dict(n):
    return {"stream": count(n), "status": "ok"}


def same_twice():
    obj = Box("shared")
    return [obj, {"again": obj}]


def iter_patterns(*texts):
    return iter([re.compile(t) for t in texts])

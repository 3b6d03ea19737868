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

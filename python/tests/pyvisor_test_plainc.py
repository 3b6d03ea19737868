"""Functions and module-level objects the tests of the C accelerator call (``test_plain.py``,
``test_plainc.py``), in process and in real workers."""

import sys
import types
from typing import Any, List, Tuple

CONST_FLOAT = 12345.678
CONST_STR = "a module-level string"
CONST_BIG = 2 ** 100
CONST_LIST = [1, 2.5, "three"]
CONST_DICT = {"k": [1, 2]}


class KeptError(Exception):
    """The class of ``KEPT_ERROR``."""


KEPT_ERROR = KeptError("raised again and again")
KEPT: List[Tuple[Tuple[Any, ...], dict]] = []
GETATTR_CALLS: List[str] = []
"""The names the module ``__getattr__`` was asked for, in order."""


def ident(x):
    return x


def plus(a, b):
    return a + b


def const_float():
    return CONST_FLOAT


def const_str():
    return CONST_STR


def const_big():
    return CONST_BIG


def const_list():
    return CONST_LIST


def raise_kept():
    raise KEPT_ERROR


def keep(*args, **kwargs):
    """Keep the arguments (their reference counts are then the tests' business)."""
    KEPT.append((args, kwargs))


def nothing(*args, **kwargs):
    return None


def surrogate():
    return "\ud800"


def sized_str(n, char="x"):
    return char * n


def sized_bytes(n):
    return b"x" * n


def returns_object():
    return object()


def system_exit():
    raise SystemExit(3)


def interrupt():
    raise KeyboardInterrupt


RAN: List[str] = []
"""Names ``record`` was called with: whether a call ran at all."""


def record(name="ran"):
    RAN.append(name)
    return name


NS = types.SimpleNamespace(record=record)
"""``record`` behind a dotted name, ``NS.record``."""


class Str(str):
    """A str subclass: not an exact scalar, so the encoder decides."""


class Int(int):
    """An int subclass."""


class Float(float):
    """A float subclass."""


def sub_str():
    return Str("sub")


def sub_int():
    return Int(7)


def sub_float():
    return Float(2.5)


def const_dict():
    return CONST_DICT


def caller():
    """The name of the Python function that called this one: ``handle`` when the C accelerator
    ran the call (no Python frame of its own), ``_apply`` on the Python paths."""
    return sys._getframe(1).f_code.co_name


def __getattr__(name):
    GETATTR_CALLS.append(name)
    if name == "lazy":
        return ident
    if name == "lazy_fails":
        raise ValueError("__getattr__ failed")
    if name == "lazy_interrupt":
        raise KeyboardInterrupt
    raise AttributeError(f"__getattr__ has no {name}")

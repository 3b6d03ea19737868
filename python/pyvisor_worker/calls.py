"""Running a ``CALL``: resolving ``module`` + dotted ``function``, parsing request fields and
building error maps."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple

from .policy import NotAllowed, Policy
from .protocol import KIND_BAD_REQUEST, KIND_EXCEPTION, KIND_NOT_ALLOWED

__all__ = [
    "BadRequest", "CALL_FIELDS", "ErrorMap", "call_map", "error_map", "exception_error",
    "parse_call", "parse_args",
    "parse_session", "resolve", "execute", "user_traceback",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

ErrorMap = Dict[str, str]

_EMPTY_KWARGS: Dict[str, Any] = {}
_NO_ARGS: List[Any] = []  # only ever unpacked with *, never mutated


class BadRequest(Exception):
    """The body of a request is malformed (not a map, missing key, wrong type)."""


def error_map(kind: str, type_name: str = "", module: str = "", message: str = "",
              traceback_text: str = "") -> ErrorMap:
    """An ``ERROR`` body: every key is always present, ``""`` when it does not apply."""
    return {
        "kind": kind,
        "type": type_name,
        "module": module,
        "message": message,
        "traceback": traceback_text,
    }


def _safe_str(obj: Any) -> str:
    try:
        return str(obj)
    except Exception:  # a broken __str__ must not take the worker down
        try:
            return repr(obj)
        except Exception:
            return f"<unprintable {type(obj).__name__} object>"


def user_traceback(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` without its leading frames in this package: where the worker handed over to user
    code. A traceback entirely inside the package (``getattr`` on a ref, a builtin function)
    keeps its last frame, the one that raised."""
    last = tb
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if os.path.dirname(os.path.abspath(filename)) != _PACKAGE_DIR:
            return tb
        last = tb
        tb = tb.tb_next
    return last


def exception_error(exc: BaseException, tb: Optional[TracebackType] = None) -> ErrorMap:
    """The ``exception`` error map of ``exc``.

    ``tb`` is the traceback to format (default: ``exc.__traceback__``); pass a later frame to leave
    the worker's own frames out.
    """
    cls = type(exc)
    if tb is None:
        tb = exc.__traceback__
    try:
        text = "".join(traceback.format_exception(cls, exc, tb))
    except Exception:  # pragma: no cover - formatting user objects can fail in odd ways
        text = f"{cls.__qualname__}: {_safe_str(exc)}\n(traceback could not be formatted)\n"
    return error_map(KIND_EXCEPTION, cls.__qualname__, cls.__module__ or "", _safe_str(exc), text)


CALL_FIELDS = ("module", "function", "args", "kwargs", "session")
"""The fields of a ``CALL`` body, in the order of its positional form."""


def call_map(body: List[Any]) -> Dict[str, Any]:
    """The map form of the positional ``CALL`` body ``[module, function, args, kwargs, session]``
    (what the host sends), or ``BadRequest``.

    # Examples

    >>> call_map(["math", "sqrt", [2.0], None, None])["function"]
    'sqrt'
    """
    if len(body) != len(CALL_FIELDS):
        raise BadRequest(
            f"CALL body array must have {len(CALL_FIELDS)} elements "
            f"[module, function, args, kwargs, session], not {len(body)}")
    return dict(zip(CALL_FIELDS, body))


def parse_call(body: Any, op: str = "CALL") -> Tuple[str, str, List[Any], Dict[str, Any]]:
    """``(module, function, args, kwargs)`` of a ``CALL`` body, or ``BadRequest``.

    ``module`` and ``function`` are required; ``args``, ``kwargs`` and ``session`` may be nil or
    absent (no positional arguments, no keyword arguments, no session).
    """
    if type(body) is not dict:
        raise BadRequest(f"{op} body must be a map, not {type(body).__name__}")
    module = parse_name(body, "module", op)
    function = parse_name(body, "function", op)
    args, kwargs = parse_args(body, op)
    parse_session(body, op)
    return module, function, args, kwargs


def parse_name(body: Dict[Any, Any], key: str, op: str) -> str:
    """The non-empty string ``body[key]``, or ``BadRequest``."""
    name = body.get(key)
    if type(name) is not str or not name:
        raise BadRequest(_field_problem(body, key, "a non-empty string", op))
    return name


def parse_args(body: Dict[Any, Any], op: str = "CALL") -> Tuple[List[Any], Dict[str, Any]]:
    """``(args, kwargs)`` of a request body; nil or absent means none."""
    args = body.get("args")
    if args is None:
        args = _NO_ARGS  # the Rust host serialises `()` (no arguments) as nil
    elif type(args) is not list:
        raise BadRequest(_field_problem(body, "args", "an array or nil", op))
    kwargs = body.get("kwargs")
    if kwargs is None:
        kwargs = _EMPTY_KWARGS
    elif type(kwargs) is not dict:
        raise BadRequest(_field_problem(body, "kwargs", "a map or nil", op))
    elif kwargs:
        for key in kwargs:
            if type(key) is not str:
                raise BadRequest(f"{op} kwargs keys must be strings, not {type(key).__name__}")
    return args, kwargs


def parse_session(body: Any, op: str = "CALL") -> Optional[str]:
    """The ``session`` of a request body (nil or absent: ``None``), or ``BadRequest``."""
    if type(body) is not dict:
        return None
    session = body.get("session")
    if session is not None and type(session) is not str:
        raise BadRequest(_field_problem(body, "session", "a string or nil", op))
    return session


def _field_problem(body: Dict[Any, Any], key: str, expected: str, op: str = "CALL") -> str:
    if key not in body:
        return f"{op} body has no {key!r}"
    return f"{op} {key!r} must be {expected}, not {type(body[key]).__name__}"


def resolve(module_name: str, function: str) -> Callable[..., Any]:
    """Import ``module_name`` and look up the dotted ``function`` in it.

    A missing module raises ``ModuleNotFoundError`` (from the import system); a missing attribute
    raises ``AttributeError`` naming the module and the attribute path.
    """
    module = sys.modules.get(module_name)
    if module is None:
        module = importlib.import_module(module_name)
    obj: Any = module
    if "." not in function:
        try:
            return getattr(obj, function)
        except AttributeError:
            raise AttributeError(
                f"module {module_name!r} has no attribute {function!r}"
            ) from None
    parts = function.split(".")
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = module_name if i == 0 else f"{module_name}.{'.'.join(parts[:i])}"
            raise AttributeError(
                f"module {module_name!r} has no attribute {function!r}: "
                f"{owner!r} has no attribute {part!r}"
            ) from None
    return obj


def execute(body: Any, policy: Optional[Policy] = None) -> Tuple[bool, Any]:
    """Run one ``CALL`` body: ``(True, result)``, or ``(False, error map)``.

    ``policy`` (default: none) is checked before the module is imported. Nothing the call does
    escapes as an exception, ``SystemExit`` included (it is reported like any other exception and
    the worker keeps serving); only ``KeyboardInterrupt`` propagates.
    """
    try:
        module, function, args, kwargs = parse_call(body)
    except BadRequest as exc:
        return False, error_map(KIND_BAD_REQUEST, message=str(exc))
    if policy is not None:
        try:
            policy.check(module, function)
        except NotAllowed as exc:
            return False, error_map(KIND_NOT_ALLOWED, message=str(exc))
    try:
        return True, resolve(module, function)(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        try:
            return False, exception_error(exc, user_traceback(tb))
        finally:
            # Break the frame <-> traceback cycle now, so the call's locals are freed at once.
            tb = None

"""Running a ``CALL``: resolving ``module`` + dotted ``function`` and building error maps."""

from __future__ import annotations

import importlib
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple

from .protocol import KIND_BAD_REQUEST, KIND_EXCEPTION

__all__ = ["BadRequest", "ErrorMap", "error_map", "exception_error", "parse_call", "resolve", "execute"]

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


def parse_call(body: Any) -> Tuple[str, str, List[Any], Dict[str, Any]]:
    """``(module, function, args, kwargs)`` of a ``CALL`` body, or ``BadRequest``.

    ``module`` and ``function`` are required; ``args``, ``kwargs`` and ``session`` may be nil or
    absent (no positional arguments, no keyword arguments, no session).
    """
    if type(body) is not dict:
        raise BadRequest(f"CALL body must be a map, not {type(body).__name__}")
    module = body.get("module")
    if type(module) is not str or not module:
        raise BadRequest(_field_problem(body, "module", "a non-empty string"))
    function = body.get("function")
    if type(function) is not str or not function:
        raise BadRequest(_field_problem(body, "function", "a non-empty string"))
    args = body.get("args")
    if args is None:
        args = _NO_ARGS  # the Rust host serialises `()` (no arguments) as nil
    elif type(args) is not list:
        raise BadRequest(_field_problem(body, "args", "an array or nil"))
    kwargs = body.get("kwargs")
    if kwargs is None:
        kwargs = _EMPTY_KWARGS
    elif type(kwargs) is not dict:
        raise BadRequest(_field_problem(body, "kwargs", "a map or nil"))
    elif kwargs:
        for key in kwargs:
            if type(key) is not str:
                raise BadRequest(f"kwargs keys must be strings, not {type(key).__name__}")
    session = body.get("session")
    if session is not None and type(session) is not str:
        raise BadRequest(_field_problem(body, "session", "a string or nil"))
    return module, function, args, kwargs


def _field_problem(body: Dict[Any, Any], key: str, expected: str) -> str:
    if key not in body:
        return f"CALL body has no {key!r}"
    return f"CALL {key!r} must be {expected}, not {type(body[key]).__name__}"


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


def execute(body: Any) -> Tuple[bool, Any]:
    """Run one ``CALL`` body: ``(True, result)``, or ``(False, error map)``.

    Nothing the call does escapes as an exception, ``SystemExit`` included (it is reported like any
    other exception and the worker keeps serving); only ``KeyboardInterrupt`` propagates.
    """
    try:
        module, function, args, kwargs = parse_call(body)
    except BadRequest as exc:
        return False, error_map(KIND_BAD_REQUEST, message=str(exc))
    try:
        return True, resolve(module, function)(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        try:
            # Leave out this frame: the traceback starts where the worker handed over to the call.
            return False, exception_error(exc, tb.tb_next if tb is not None and tb.tb_next else tb)
        finally:
            # Break the frame <-> traceback cycle now, so the call's locals are freed at once.
            tb = None

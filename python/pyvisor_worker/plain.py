"""The plain path: a ``CALL`` made only of plain values, parsed without the general machinery.

Most calls are a module function applied to MessagePack-native arguments, in a session with no
contexts. ``plain_call`` recognises exactly those with one C-level decode and a few type tests,
and answers ``None`` for everything else: a ref or any other ext value, a malformed or unusual
body, a session with contexts. (msgpack's own timestamp, ext -1, never reaches an ``ext_hook``:
both paths decode it to the same ``msgpack.Timestamp``.) ``None`` is never an error: the caller
then takes the general path (``Ops``), which decodes again and gives every error its usual kind
and message. Nothing here runs user code, so falling back loses nothing.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import msgpack

__all__ = ["PlainCall", "plain_call"]

PlainCall = Tuple[str, str, Sequence[Any], Dict[str, Any], Optional[str]]
"""``(module, function, args, kwargs, session)`` of a ``CALL`` whose fields have their usual
types (a plain tuple: a named one costs a Python-level constructor per call)."""

_unpackb = msgpack.unpackb
_NO_ARGS: Sequence[Any] = ()
_NO_KWARGS: Dict[str, Any] = {}  # only ever unpacked with **, never mutated


class _NotPlain(Exception):
    """Raised by the decoder at the first ext value: the general path decodes those."""


def _no_ext(code: int, data: bytes) -> Any:
    raise _NotPlain


def plain_call(raw: Any, contexts: Mapping[str, List[Any]]) -> Optional[PlainCall]:
    """The fields of the ``CALL`` body ``raw`` if it is plain, else ``None``.

    Plain: one MessagePack value without ext values or non-string keys in maps, either the
    positional ``[module, function, args, kwargs, session]`` the host sends or the map with those
    keys; non-empty string ``module`` and ``function``, ``args`` an array or nil, ``kwargs`` a
    map with string keys or nil, ``session`` a string or nil, and no contexts (``contexts``) for
    that session.

    # Examples

    >>> import msgpack
    >>> plain_call(msgpack.packb(["math", "sqrt", [2.0], None, "s1"]), {})
    ('math', 'sqrt', [2.0], {}, 's1')
    >>> body = msgpack.packb({"module": "math", "function": "sqrt", "args": [2.0]})
    >>> plain_call(body, {})
    ('math', 'sqrt', [2.0], {}, None)
    >>> plain_call(msgpack.packb({"module": "math"}), {}) is None
    True
    """
    try:
        body = _unpackb(raw, raw=False, ext_hook=_no_ext)
    except Exception:  # an ext value, a non-string key, malformed input: the general path says
        return None
    if type(body) is list:
        if len(body) != 5:
            return None
        module, function, args, kwargs, session = body
    elif type(body) is dict:  # the map form, accepted too
        get = body.get
        module, function = get("module"), get("function")
        args, kwargs, session = get("args"), get("kwargs"), get("session")
    else:
        return None
    if type(module) is not str or type(function) is not str or not module or not function:
        return None
    if args is None:
        args = _NO_ARGS
    elif type(args) is not list:
        return None
    if kwargs is None:
        kwargs = _NO_KWARGS
    elif type(kwargs) is not dict:
        return None
    elif kwargs:
        for key in kwargs:
            if type(key) is not str:  # bytes keys pass the decoder's strict_map_key
                return None
    if session is not None and (type(session) is not str or session in contexts):
        return None
    return module, function, args, kwargs, session

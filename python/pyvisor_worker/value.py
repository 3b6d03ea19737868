"""The value codec: Python objects to and from MessagePack.

This module is the single place the codec lives. Protocol version 1 carries only
MessagePack-native values: ``None``, ``bool``, ``int`` (signed or unsigned 64-bit), ``float``,
``str``, ``bytes`` (``bin``; ``bytearray`` and ``memoryview`` encode as ``bin`` too), ``list`` and
``tuple`` (array; both decode as ``list``) and ``dict`` (map with any keys, insertion order kept).

The next protocol revision (the object bridge) adds MessagePack ext types here: refs to objects
that stay in the worker, and exact tuples/sets. Encoding and decoding must not be done anywhere
else, so that change stays local to this module.
"""

from __future__ import annotations

from typing import Any, Optional

import msgpack

__all__ = ["EncodeError", "encode", "decode"]


class EncodeError(Exception):
    """A value has no MessagePack form.

    ``type_name`` is the qualified name of the offending type (which may be nested inside the value
    that was being encoded), ``type_module`` its module.
    """

    def __init__(self, type_name: str, type_module: str = "", reason: Optional[str] = None) -> None:
        self.type_name = type_name
        self.type_module = type_module
        if reason is None:
            reason = f"cannot encode a value of type {type_name!r}"
        super().__init__(reason)


def _type_names(obj: Any) -> "tuple[str, str]":
    cls = type(obj)
    return getattr(cls, "__qualname__", cls.__name__), getattr(cls, "__module__", "") or ""


def _unsupported(obj: Any) -> Any:
    # msgpack calls this for every object it cannot pack natively (and for ints out of the
    # 64-bit range), so the error names the innermost offending value's type.
    name, module = _type_names(obj)
    if isinstance(obj, int):
        raise EncodeError(name, module, f"integer {obj} does not fit in 64 bits")
    raise EncodeError(name, module)


def encode(obj: Any) -> bytes:
    """The MessagePack bytes of ``obj``; raises ``EncodeError`` if it has no MessagePack form."""
    try:
        return msgpack.packb(obj, use_bin_type=True, default=_unsupported)
    except EncodeError:
        raise
    except UnicodeEncodeError as exc:
        raise EncodeError("str", "builtins", f"string cannot be encoded as UTF-8: {exc}") from None
    except Exception as exc:  # e.g. ValueError for self-referencing containers
        name, module = _type_names(obj)
        raise EncodeError(name, module, f"cannot encode a value of type {name!r}: {exc}") from None


def _hashable_keys(pairs: "list[tuple[Any, Any]]") -> "dict[Any, Any]":
    return {_freeze(k): v for k, v in pairs}


def _freeze(key: Any) -> Any:
    if type(key) is list:
        return tuple(_freeze(k) for k in key)
    if type(key) is dict:  # a map used as a key: its items, in order
        return tuple((_freeze(k), _freeze(v)) for k, v in key.items())
    return key


def decode(data: bytes) -> Any:
    """The Python value of the MessagePack bytes ``data`` (exactly one value).

    Map keys may be of any type. Arrays used as map keys decode as tuples, since a list cannot be
    a ``dict`` key; everywhere else arrays decode as lists.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except TypeError:
        # An unhashable key (an array or a map): rare, so only then pay for a Python hook per map.
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False, object_pairs_hook=_hashable_keys
        )

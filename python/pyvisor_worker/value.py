"""The value codec: Python objects to and from MessagePack (``docs/values.md``).

This module is the single place the codec lives. MessagePack-native values travel as themselves;
the Python types MessagePack has no form for travel as **ext types** (never as magic map keys):

=====  ==============  ===========================================================
code   name            ext data
=====  ==============  ===========================================================
1      ``TUPLE``       MessagePack array of the items
2      ``SET``         MessagePack array of the items
3      ``FROZENSET``   MessagePack array of the items
4      ``BIGINT``      ASCII decimal text (an int beyond the 64-bit ranges)
5      ``COMPLEX``     MessagePack array ``[real, imag]``
6      ``DATETIME``    ``isoformat()`` text (UTF-8), with offset when aware
7      ``DATE``        ``isoformat()`` text
8      ``TIME``        ``isoformat()`` text, with offset when aware
9      ``NDARRAY``     MessagePack array ``[dtype.str, shape, bin of C-order data]``
10     ``REF``         MessagePack map, the ref payload (``refs.Registry.register``)
11     ``STREAM_REF``  the same, for a generator or iterator
=====  ==============  ===========================================================

``encode`` is *graceful*: containers are kept and only the leaves that have no value form become
refs, registered in the ``refs`` registry it is given (see ``Encoder``).
"""

from __future__ import annotations

import datetime as _dt
import io
import re
import struct
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgpack
from msgpack import ExtType

__all__ = [
    "TUPLE", "SET", "FROZENSET", "BIGINT", "COMPLEX", "DATETIME", "DATE", "TIME", "NDARRAY",
    "REF", "STREAM_REF", "DecodeError", "EncodeError", "Encoder", "RefHandle", "array_header",
    "decode", "encode", "encode_scalar", "ext_header", "is_stream", "map_header",
]

TUPLE = 1
SET = 2
FROZENSET = 3
BIGINT = 4
COMPLEX = 5
DATETIME = 6
DATE = 7
TIME = 8
NDARRAY = 9
REF = 10
STREAM_REF = 11

_INT_MIN = -(2 ** 63)
_UINT_MAX = 2 ** 64 - 1
_NDARRAY_KINDS = "biufc"
_DECIMAL = re.compile(r"-?[0-9]+")

# --------------------------------------------------------------------------------------------------
# decoding


class DecodeError(ValueError):
    """A value in a message is malformed (a bad ext payload, an unknown ext type)."""


class RefHandle:
    """A ref decoded without a resolver: its payload map, and whether it is a stream ref."""

    __slots__ = ("payload", "stream")

    def __init__(self, payload: Dict[str, Any], stream: bool) -> None:
        self.payload = payload
        self.stream = stream

    @property
    def id(self) -> Any:
        return self.payload.get("id")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RefHandle) and self.payload == other.payload
                and self.stream == other.stream)

    def __hash__(self) -> int:
        return hash((self.id, self.stream))

    def __repr__(self) -> str:
        kind = "StreamRef" if self.stream else "Ref"
        return f"{kind}({self.payload!r})"


ResolveRef = Callable[[Dict[str, Any]], Any]


def _freeze(key: Any) -> Any:
    """The hashable form of a decoded map key or set element."""
    t = type(key)
    if t is list:
        return tuple(_freeze(k) for k in key)
    if t is dict:  # a map used as a key: its items, in order
        return tuple((_freeze(k), _freeze(v)) for k, v in key.items())
    if t is set:
        return frozenset(key)
    return key


def _hashable_keys(pairs: List[Tuple[Any, Any]]) -> Dict[Any, Any]:
    return {_freeze(k): v for k, v in pairs}


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} ext payload is not UTF-8 text") from None


class _Decoder:
    __slots__ = ("resolve_ref", "pairs_hook")

    def __init__(self, resolve_ref: Optional[ResolveRef], pairs_hook: Any) -> None:
        self.resolve_ref = resolve_ref
        self.pairs_hook = pairs_hook

    def unpack(self, data: Any) -> Any:
        if self.pairs_hook is None:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self.ext_hook)
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self.ext_hook,
                               object_pairs_hook=self.pairs_hook)

    def items(self, data: bytes, what: str) -> List[Any]:
        try:
            items = self.unpack(data)
        except (DecodeError, TypeError):
            raise
        except ValueError as exc:
            raise DecodeError(f"{what} ext payload is not one MessagePack value: {exc}") from None
        if type(items) is not list:
            raise DecodeError(f"{what} ext payload must be an array, not {type(items).__name__}")
        return items

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == TUPLE:
            return tuple(self.items(data, "TUPLE"))
        if code == SET:
            return {_freeze(x) for x in self.items(data, "SET")}
        if code == FROZENSET:
            return frozenset(_freeze(x) for x in self.items(data, "FROZENSET"))
        if code == REF or code == STREAM_REF:
            try:
                payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except ValueError as exc:
                raise DecodeError(f"ref payload is not one MessagePack value: {exc}") from None
            if type(payload) is not dict:
                raise DecodeError("ref payload must be a map")
            if self.resolve_ref is None:
                return RefHandle(payload, code == STREAM_REF)
            return self.resolve_ref(payload)
        if code == BIGINT:
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            if not _DECIMAL.fullmatch(text):
                raise DecodeError(f"BIGINT ext payload is not decimal digits: {data[:40]!r}")
            try:
                return int(text)
            except ValueError as exc:  # beyond sys.get_int_max_str_digits()
                raise DecodeError(f"BIGINT: {exc}") from None
        if code == COMPLEX:
            parts = self.items(data, "COMPLEX")
            if len(parts) != 2 or not all(type(p) in (float, int) for p in parts):
                raise DecodeError("COMPLEX ext payload must be [real, imag]")
            return complex(parts[0], parts[1])
        if code == DATETIME:
            return self._iso(_dt.datetime, data, "DATETIME")
        if code == DATE:
            return self._iso(_dt.date, data, "DATE")
        if code == TIME:
            return self._iso(_dt.time, data, "TIME")
        if code == NDARRAY:
            return _decode_ndarray(data)
        raise DecodeError(f"unknown ext type {code}")

    @staticmethod
    def _iso(cls: Any, data: bytes, what: str) -> Any:
        text = _text(data, what)
        try:
            return cls.fromisoformat(text)
        except ValueError as exc:
            raise DecodeError(f"{what} ext payload {text[:60]!r}: {exc}") from None


def _ndarray_header(data: bytes) -> Tuple[Any, Any, int, int]:
    """``(dtype, shape, data offset, data length)`` of an NDARRAY payload, without copying data."""
    if not data or data[0] != 0x93:
        raise DecodeError("NDARRAY ext payload must be [dtype, shape, data]")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(memoryview(data)[1:4097])  # dtype and shape are small; data is not copied
    try:
        dtype = unpacker.unpack()
        shape = unpacker.unpack()
    except msgpack.OutOfData:
        raise DecodeError("NDARRAY ext payload: dtype and shape do not fit in 4 KiB") from None
    except ValueError as exc:
        raise DecodeError(f"NDARRAY ext payload: {exc}") from None
    pos = 1 + unpacker.tell()
    marker = data[pos] if pos < len(data) else None
    if marker == 0xC4 and pos + 2 <= len(data):
        size, start = data[pos + 1], pos + 2
    elif marker == 0xC5 and pos + 3 <= len(data):
        size, start = int.from_bytes(data[pos + 1:pos + 3], "big"), pos + 3
    elif marker == 0xC6 and pos + 5 <= len(data):
        size, start = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
    else:
        raise DecodeError("NDARRAY ext payload: data must be a bin")
    if start + size != len(data):
        raise DecodeError("NDARRAY ext payload: data length does not match the payload")
    return dtype, shape, start, size


def _decode_ndarray(data: bytes) -> Any:
    dtype_text, shape, start, size = _ndarray_header(data)
    if type(dtype_text) is not str:
        raise DecodeError("NDARRAY dtype must be a string")
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
        raise DecodeError("NDARRAY shape must be an array of uints")
    import numpy as np  # only when an array arrives

    try:
        dtype = np.dtype(dtype_text)
    except TypeError as exc:
        raise DecodeError(f"NDARRAY dtype {dtype_text!r}: {exc}") from None
    if dtype.kind not in _NDARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DecodeError(f"NDARRAY dtype {dtype_text!r} is not bool, int, uint, float or complex")
    try:
        # A read-only view on the message buffer: no per-element work, no copy.
        return np.frombuffer(memoryview(data)[start:start + size], dtype=dtype).reshape(shape)
    except ValueError as exc:
        raise DecodeError(f"NDARRAY data does not match dtype {dtype_text!r} and shape "
                          f"{shape!r}: {exc}") from None


def decode(data: Any, resolve_ref: Optional[ResolveRef] = None) -> Any:
    """The Python value of the MessagePack bytes ``data`` (exactly one value).

    Ext types decode as ``docs/values.md`` says. ``REF``/``STREAM_REF`` become
    ``resolve_ref(payload)`` (which raises for an unusable ref), or a ``RefHandle`` when no
    resolver is given. Map keys may be of any type; arrays used as map keys or set elements decode
    as tuples, the only hashable form. Raises ``DecodeError`` for a malformed ext payload and
    msgpack's own ``ValueError`` subclasses for malformed MessagePack.
    """
    try:
        return _Decoder(resolve_ref, None).unpack(data)
    except TypeError:
        # An unhashable key (an array or a map): rare, so only then pay for a Python hook per map.
        return _Decoder(resolve_ref, _hashable_keys).unpack(data)


# --------------------------------------------------------------------------------------------------
# encoding: reused packers


class _Packers(threading.local):
    """This thread's idle ``msgpack.Packer``s, and the encoder their ``default`` hook serves.

    A ``Packer`` mallocs a 256 KiB buffer when it is made, and ``msgpack.packb`` makes one per
    call: a worker that did so for every reply paid fresh pages on every call
    (``docs/benchmarks.md``, finding 1). Packers are therefore kept and reused: per thread, so
    that the interpreter thread and the watch thread never share one, and one per pack in
    progress, because a ``default`` hook that packs again (a tuple inside a tuple) must not
    write into the buffer of the pack that called it.
    """

    def __init__(self) -> None:
        self.idle: List[msgpack.Packer] = []
        self.encoder: Optional["Encoder"] = None


_PACKERS = _Packers()
_KEEP_IDLE = 4
"""Idle packers kept per thread; deeper nesting makes packers that are then dropped."""
_KEEP_BYTES = 16 << 20
"""A packer whose output was larger is dropped rather than kept: its buffer grew with it."""


def _hook(obj: Any) -> Any:
    """The ``default`` of every shared packer: the stand-in of the encoder that packs."""
    encoder = _PACKERS.encoder
    if encoder is None:
        raise TypeError(f"can not serialize {type(obj).__name__!r} object")
    return encoder._default(obj)


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=True, default=_hook)


def _pack(obj: Any, encoder: Optional["Encoder"] = None) -> bytes:
    """The MessagePack bytes of ``obj`` from one of this thread's packers (``strict_types``).

    Types that are not exactly MessagePack-native go to ``encoder._default``; without an
    encoder they raise ``TypeError``. A packer whose pack raised is dropped, never reused: its
    buffer may hold a partial value (msgpack resets it, but that is not its contract) and may
    have grown without bound before the failure.
    """
    state = _PACKERS
    idle = state.idle
    packer = idle.pop() if idle else _new_packer()
    outer = state.encoder
    state.encoder = encoder
    try:
        data: bytes = packer.pack(obj)
    finally:
        state.encoder = outer
    if len(data) <= _KEEP_BYTES and len(idle) < _KEEP_IDLE:
        idle.append(packer)
    return data


_U16 = struct.Struct(">BH")
_FLOAT64 = struct.Struct(">Bd")
_U32 = struct.Struct(">BI")
_EXT_U8 = struct.Struct(">BBb")
_EXT_U16 = struct.Struct(">BHb")
_EXT_U32 = struct.Struct(">BIb")
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _container_header(size: int, fix: int, marker16: int) -> bytes:
    if size < 16:
        return bytes((fix | size,))
    if size <= 0xFFFF:
        return _U16.pack(marker16, size)
    return _U32.pack(marker16 + 1, size)


def array_header(size: int) -> bytes:
    """The MessagePack header of an array of ``size`` items."""
    return _container_header(size, 0x90, 0xDC)


def map_header(size: int) -> bytes:
    """The MessagePack header of a map of ``size`` pairs."""
    return _container_header(size, 0x80, 0xDE)


def ext_header(code: int, size: int) -> bytes:
    """The MessagePack header of an ext value of type ``code`` with ``size`` bytes of data."""
    fix = _FIXEXT.get(size)
    if fix is not None:
        return bytes((fix, code))
    if size <= 0xFF:
        return _EXT_U8.pack(0xC7, size, code)
    if size <= 0xFFFF:
        return _EXT_U16.pack(0xC8, size, code)
    return _EXT_U32.pack(0xC9, size, code)


# --------------------------------------------------------------------------------------------------
# encoding: values


class EncodeError(Exception):
    """A value has no MessagePack form and there is no ref registry to hand it out as a ref.

    ``type_name`` is the qualified name of the offending type (which may be nested inside the value
    that was being encoded), ``type_module`` its module.
    """

    def __init__(self, type_name: str, type_module: str = "", reason: Optional[str] = None) -> None:
        self.type_name = type_name
        self.type_module = type_module
        if reason is None:
            reason = f"cannot encode a value of type {type_name!r}"
        super().__init__(reason)


def _type_names(obj: Any) -> Tuple[str, str]:
    cls = type(obj)
    return getattr(cls, "__qualname__", cls.__name__), getattr(cls, "__module__", "") or ""


def is_stream(obj: Any) -> bool:
    """A generator or iterator that is not a file or other context manager: a ``STREAM_REF``."""
    cls = type(obj)
    return (hasattr(cls, "__next__") and hasattr(cls, "__iter__")
            and not hasattr(cls, "__enter__") and not isinstance(obj, io.IOBase))


def _bin_header(size: int) -> bytes:
    if size <= 0xFF:
        return bytes((0xC4, size))
    if size <= 0xFFFF:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def _ndarray_ext(np: Any, arr: Any) -> ExtType:
    shape = list(arr.shape)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # may add a dimension to a 0-d array: shape is kept above
    data = memoryview(arr.reshape(-1).view(np.uint8))  # the raw bytes, whatever the byte order
    body = b"".join((b"\x93", _pack(arr.dtype.str), _pack(shape), _bin_header(data.nbytes), data))
    return ExtType(NDARRAY, body)


class Encoder:
    """Graceful serialization of results (``docs/values.md``), for one reply.

    Values are encoded as values; every other leaf becomes a ``REF`` (a generator or iterator a
    ``STREAM_REF``) registered in ``refs`` for ``session``. Within one encoder the same object
    (by ``id``) always gets the same ref id. A container met again while it is being encoded (a
    back-edge) becomes a ref to that container. If encoding a value fails anywhere, the refs it
    created are dropped from the registry and the whole value becomes one ref.

    Without a registry (``refs=None``) a value that would need a ref raises ``EncodeError``.
    """

    def __init__(self, refs: Optional[Any] = None, session: Optional[str] = None) -> None:
        self._refs = refs
        self._session = session
        self._memo: Dict[int, Tuple[Any, ExtType, int]] = {}
        self._active: Dict[int, Any] = {}
        self.created: List[int] = []
        """Ids of the refs registered by this encoder, in creation order."""

    # -- public ------------------------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        """The MessagePack bytes of ``obj``."""
        mark = len(self.created)
        try:
            # Fast path: one C-level pack; the hook only sees what is not plain MessagePack. It
            # cannot place back-edge refs, so any failure (a cycle hits the nesting limit) retries
            # on the slow path, which can.
            return _pack(obj, self)
        except EncodeError:
            if self._refs is None:
                raise
            self._rollback(mark)
        except Exception:
            self._rollback(mark)
        try:
            out: List[bytes] = []
            self._active.clear()
            self._walk(obj, out)
            return b"".join(out)
        except Exception as exc:
            self._rollback(mark)
            self._active.clear()
            if self._refs is None:
                if isinstance(exc, EncodeError):
                    raise
                name, module = _type_names(obj)
                raise EncodeError(name, module,
                                  f"cannot encode a value of type {name!r}: {exc}") from None
        return _pack(self._ref(obj))

    def rollback(self) -> None:
        """Drop every ref this encoder created (e.g. the reply turned out too large to send)."""
        self._rollback(0)

    # -- refs --------------------------------------------------------------------------------------

    def _ref(self, obj: Any) -> ExtType:
        key = id(obj)
        hit = self._memo.get(key)
        if hit is not None:
            return hit[1]
        if self._refs is None:
            name, module = _type_names(obj)
            raise EncodeError(name, module)
        stream = is_stream(obj)
        payload = self._refs.register(obj, self._session, stream)
        ref_id = payload["id"]
        self.created.append(ref_id)
        ext = ExtType(STREAM_REF if stream else REF, _pack(payload, self))
        self._memo[key] = (obj, ext, ref_id)  # holding obj keeps its id from being reused
        return ext

    def _rollback(self, mark: int) -> None:
        doomed = self.created[mark:]
        if not doomed:
            return
        del self.created[mark:]
        if self._refs is not None:
            self._refs.discard(doomed)
        gone = set(doomed)
        self._memo = {k: v for k, v in self._memo.items() if v[2] not in gone}

    # -- leaves and the fast path ------------------------------------------------------------------

    def _default(self, obj: Any) -> Any:
        """A packable stand-in for ``obj``, which is not an exact MessagePack-native type."""
        if isinstance(obj, dict):
            return dict(obj)
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, tuple):
            return ExtType(TUPLE, _pack(list(obj), self))
        if isinstance(obj, frozenset):
            return ExtType(FROZENSET, _pack(list(obj), self))
        if isinstance(obj, set):
            return ExtType(SET, _pack(list(obj), self))
        return self._leaf(obj)

    def _leaf(self, obj: Any) -> Any:
        """The packable form (an exact native value or an ``ExtType``) of a non-container."""
        if isinstance(obj, int):  # bool is exact-native and never gets here
            value = int.__int__(obj)
            if _INT_MIN <= value <= _UINT_MAX:
                return value
            return ExtType(BIGINT, str(value).encode("ascii"))
        if isinstance(obj, float):
            return float.__float__(obj)
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return memoryview(obj).tobytes()
        if isinstance(obj, complex):
            return ExtType(COMPLEX, _pack([float(obj.real), float(obj.imag)]))
        if isinstance(obj, _dt.datetime):
            return ExtType(DATETIME, obj.isoformat().encode("utf-8"))
        if isinstance(obj, _dt.date):
            return ExtType(DATE, obj.isoformat().encode("utf-8"))
        if isinstance(obj, _dt.time):
            return ExtType(TIME, obj.isoformat().encode("utf-8"))
        np = sys.modules.get("numpy")
        if np is not None:
            if type(obj) is np.ndarray and obj.dtype.kind in _NDARRAY_KINDS \
                    and obj.dtype.fields is None:
                return _ndarray_ext(np, obj)
            if isinstance(obj, np.generic):
                item = obj.item()
                if type(item) is not type(obj) and not isinstance(item, np.generic):
                    t = type(item)
                    if t is bool or t is float or t is str or t is bytes or item is None:
                        return item
                    return self._default(item)
        return self._ref(obj)

    # -- the slow path -----------------------------------------------------------------------------

    def _walk(self, obj: Any, out: List[bytes]) -> None:
        """Append the encoding of ``obj`` to ``out``, placing refs at back-edges."""
        if isinstance(obj, (list, dict, tuple, set, frozenset)):
            key = id(obj)
            active = self._active
            if key in active:  # a back-edge: the container is being encoded further up
                out.append(_pack(self._ref(obj)))
                return
            active[key] = obj
            try:
                self._container(obj, out)
            finally:
                del active[key]
            return
        t = type(obj)
        if obj is None or t is bool or t is float or t is str or t is bytes:
            out.append(_pack(obj))
        else:
            out.append(_pack(self._leaf(obj), self))

    def _container(self, obj: Any, out: List[bytes]) -> None:
        walk = self._walk
        if isinstance(obj, dict):
            items = obj.items() if type(obj) is dict else dict(obj).items()
            out.append(map_header(len(items)))
            for k, v in items:
                walk(k, out)
                walk(v, out)
            return
        if isinstance(obj, list):
            seq = obj if type(obj) is list else list(obj)
            out.append(array_header(len(seq)))
            for item in seq:
                walk(item, out)
            return
        if isinstance(obj, tuple):
            code = TUPLE
        elif isinstance(obj, frozenset):
            code = FROZENSET
        else:
            code = SET
        seq = list(obj)
        inner = [array_header(len(seq))]
        for item in seq:
            walk(item, inner)
        out.append(ext_header(code, sum(map(len, inner))))
        out.extend(inner)


def encode_scalar(obj: Any) -> Optional[bytes]:
    """The MessagePack bytes of ``obj`` if it is a float, an int in the 64-bit ranges, a string,
    bytes, a bool or ``None``; else ``None`` (``Encoder`` then encodes it). Exact types only: the
    same bytes ``encode`` gives, without an encoder.

    # Examples

    >>> encode_scalar(1.5) == encode(1.5)
    True
    >>> encode_scalar([1.5]) is None
    True
    """
    t = type(obj)
    if t is float:
        return _FLOAT64.pack(0xCB, obj)  # what msgpack writes for a float, without a packer
    if t is str or t is bool or obj is None or t is bytes \
            or (t is int and _INT_MIN <= obj <= _UINT_MAX):
        try:
            return _pack(obj)
        except (UnicodeEncodeError, ValueError):  # lone surrogates, or 4 GiB and more
            return None  # the encoder decides: an error or a ref
    return None


def encode(obj: Any, refs: Optional[Any] = None, session: Optional[str] = None) -> bytes:
    """The MessagePack bytes of ``obj``, serialized gracefully (see ``Encoder``).

    Without a registry (``refs=None``) a value that would need a ref raises ``EncodeError``.
    """
    return Encoder(refs, session).encode(obj)

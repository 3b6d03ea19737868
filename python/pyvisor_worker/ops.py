"""Running requests on the interpreter thread: decode the body, resolve refs, run the op inside the
session's contexts, encode the result (``docs/protocol.md``, "Operations").

``Ops.handle`` turns one request ``(op, id, raw body)`` into a reply: ``(True, OK body bytes)``,
``(False, error map)`` or ``(None, complete OK frame)``. A ``CALL`` made only of plain values
takes the C accelerator first when the worker has it (``accel.py``: the common case, without a
Python frame, answered with the whole reply frame), then the plain path (``plain.plain_call``: one
decode, no request object, a scalar result packed directly); anything else, or anything unusual,
is decoded again here before user code runs, so all paths answer the same request alike. Nothing
a request does escapes as an exception except ``KeyboardInterrupt`` and ``ProtocolError`` (a body
that is not one well-formed MessagePack value: the worker exits 3).
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import msgpack

from . import accel, calls, value
from .calls import BadRequest, error_map, exception_error, parse_args, parse_name, parse_session
from .plain import plain_call
from .policy import NotAllowed, Policy
from .protocol import (
    CALL,
    CALL_METHOD,
    CONTEXT,
    DEFAULT_MAX_FRAME,
    GET_ATTR,
    KIND_BAD_REQUEST,
    KIND_FRAME_TOO_LARGE,
    KIND_NOT_ALLOWED,
    KIND_UNKNOWN_OP,
    OK,
    RELEASE,
    SET_ATTR,
    STREAM_NEXT,
    ProtocolError,
    envelope_header,
)
from .refs import RefError, RefSessionMismatch, Registry

__all__ = ["Ops", "OP_NAMES"]

OP_NAMES = {
    CALL: "CALL",
    CALL_METHOD: "CALL_METHOD",
    GET_ATTR: "GET_ATTR",
    SET_ATTR: "SET_ATTR",
    RELEASE: "RELEASE",
    STREAM_NEXT: "STREAM_NEXT",
    CONTEXT: "CONTEXT",
}

Reply = Tuple[Optional[bool], Any]
"""``(True, OK body)``, ``(False, error map)``, or ``(None, OK frame)`` (the C accelerator's, whole:
length prefix, envelope and body)."""

_AUTO: Any = object()
"""``Ops(accelerator=...)`` default: ``accel.select(policy)`` decides."""

_ENVELOPE_MAX = 1 + 2 + 9
"""The longest envelope header ``[op, id,``: array marker, op (up to uint 8), id (up to uint 64)."""


class _Factory:
    """A context-manager factory of a session: ``module.function(*args, **kwargs)``."""

    __slots__ = ("module", "function", "args", "kwargs")

    def __init__(self, module: str, function: str, args: List[Any], kwargs: Dict[str, Any]) -> None:
        self.module = module
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def create(self) -> Any:
        return calls.resolve(self.module, self.function)(*self.args, **self.kwargs)


class _Batch:
    """A ``STREAM_NEXT`` result: encoded as ``{items: [...], done: bool}``, item by item."""

    __slots__ = ("items", "done")

    def __init__(self, items: List[Any], done: bool) -> None:
        self.items = items
        self.done = done


class _Request:
    """A decoded request: its body, session, and the refs it carried."""

    __slots__ = ("op", "body", "session", "resolved")

    def __init__(self, op: int, body: Any, session: Optional[str],
                 resolved: List[Tuple[Any, int]]) -> None:
        self.op = op
        self.body = body
        self.session = session
        self.resolved = resolved

    @property
    def name(self) -> str:
        return OP_NAMES[self.op]

    def ref_id_of(self, obj: Any) -> Optional[int]:
        """The id of the ref that decoded to ``obj``, or ``None`` if ``obj`` came as a value."""
        for live, ref_id in self.resolved:
            if live is obj:
                return ref_id
        return None

    def target_ref(self) -> Tuple[Any, int]:
        """``(target object, ref id)``; the target must be a ref."""
        body = self.body
        if "target" not in body:
            raise BadRequest(f"{self.name} body has no 'target'")
        target = body["target"]
        ref_id = self.ref_id_of(target)
        if ref_id is None:
            raise BadRequest(f"{self.name} 'target' must be a ref, not {type(target).__name__}")
        return target, ref_id


class Ops:
    """The request handlers of one worker: its ref registry, policy and session contexts."""

    def __init__(self, registry: Optional[Registry] = None, policy: Optional[Policy] = None,
                 max_frame: int = DEFAULT_MAX_FRAME,
                 accelerator: Optional[accel.Accelerator] = _AUTO) -> None:
        """``accelerator``: the C path for plain calls (``accel.py``); by default the one the
        environment and the policy allow, ``None`` for the Python paths only. A policy with a
        module allowlist never uses one: the C path does not check the allowlist."""
        self.registry = registry if registry is not None else Registry()
        self.policy = policy if policy is not None else Policy()
        self.max_frame = max_frame
        if accelerator is _AUTO:
            accelerator = accel.select(self.policy)
        elif self.policy.allow_modules is not None:
            accelerator = None
        self.accelerator = accelerator
        self.contexts: Dict[str, List[_Factory]] = {}
        self._pending: Dict[int, BaseException] = {}
        """Exceptions a stream raised after it had produced items of the same batch, by ref id."""
        self._handlers: Dict[int, Callable[[_Request], Any]] = {
            CALL: self._call,
            CALL_METHOD: self._call_method,
            GET_ATTR: self._get_attr,
            SET_ATTR: self._set_attr,
            RELEASE: self._release,
            STREAM_NEXT: self._stream_next,
            CONTEXT: self._context,
        }

    # -- the request cycle -------------------------------------------------------------------------

    def handle(self, op: int, request_id: int, raw: Any) -> Reply:
        """The reply to one request whose body is the MessagePack bytes ``raw``."""
        if op == CALL:
            fast = self.accelerator
            if fast is not None:
                answer = fast(raw, request_id, self.contexts, self.max_frame)
                if answer is not None:
                    if type(answer) is bytes:
                        return None, answer
                    ok, result, session = answer
                    answer = None
                    if ok:
                        return self._encode(request_id, result, session)
                    return self._accelerated_failure(result)
            plain = plain_call(raw, self.contexts)
            if plain is not None:
                module, function, args, kwargs, session = plain
                plain = None
                try:
                    result = self._apply(module, function, args, kwargs)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    return self._failure(exc)
                finally:
                    args = kwargs = None  # type: ignore[assignment]
                return self._encode(request_id, result, session)
        handler = self._handlers.get(op)
        if handler is None:
            return False, error_map(KIND_UNKNOWN_OP, message=f"unknown op {op}")
        try:
            request = self._decode(op, raw)
        except RefError as exc:
            return False, error_map(exc.kind, message=str(exc))
        except BadRequest as exc:
            return False, error_map(KIND_BAD_REQUEST, message=str(exc))
        session = request.session
        factories = self.contexts.get(session) if self._in_contexts(request) else None  # type: ignore[arg-type]
        try:
            result = self._run(handler, request, factories)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return self._failure(exc)
        finally:
            request = None  # type: ignore[assignment]
        return self._encode(request_id, result, session)

    @staticmethod
    def _failure(exc: BaseException) -> Reply:
        """The error reply of a request that raised ``exc`` (not ``KeyboardInterrupt``)."""
        if isinstance(exc, BadRequest):
            return False, error_map(KIND_BAD_REQUEST, message=str(exc))
        if isinstance(exc, NotAllowed):
            return False, error_map(KIND_NOT_ALLOWED, message=str(exc))
        tb = exc.__traceback__
        try:
            return False, exception_error(exc, calls.user_traceback(tb))
        finally:
            tb = None

    def _accelerated_failure(self, exc: BaseException) -> Reply:
        """The error reply of a call the C accelerator ran, which raised ``exc``.

        An exception raised by C code with no Python frame of its own (``math.sqrt(-1.0)``) has
        no traceback yet; on the Python path it passes through ``_apply``, whose frame then
        starts it (and is the one ``calls.user_traceback`` keeps). It gets that same entry here,
        so both paths report it alike. Every other exception already carries its user frames.
        """
        if exc.__traceback__ is None and _APPLY_ENTRY is not None:
            exc.__traceback__ = _APPLY_ENTRY
        return self._failure(exc)

    def _decode(self, op: int, raw: Any) -> _Request:
        resolved: List[Tuple[Any, int, Optional[str]]] = []
        lookup = self.registry.lookup

        def resolve_ref(payload: Dict[str, Any]) -> Any:
            ref_id, obj, owner = lookup(payload)
            resolved.append((obj, ref_id, owner))
            return obj

        name = OP_NAMES[op]
        try:
            body = value.decode(raw, resolve_ref)
        except RefError:
            raise
        except value.DecodeError as exc:
            raise BadRequest(f"{name} body: {exc}") from None
        except (RecursionError, msgpack.StackError):
            raise BadRequest(f"{name} body is nested too deeply") from None
        except (ValueError, msgpack.UnpackException) as exc:
            # ExtraData, FormatError, truncated input, invalid UTF-8: not one MessagePack value.
            raise ProtocolError(f"malformed frame: {exc}") from None
        except Exception as exc:
            raise BadRequest(f"{name} body cannot be decoded: {exc}") from None
        if op == CALL and type(body) is list:
            body = calls.call_map(body)
        if type(body) is not dict:
            shape = "an array or a map" if op == CALL else "a map"
            raise BadRequest(f"{name} body must be {shape}, not {type(body).__name__}")
        session = parse_session(body, name)
        for _, ref_id, owner in resolved:
            if owner != session:
                raise RefSessionMismatch(ref_id, owner, session)
        return _Request(op, body, session, [(obj, ref_id) for obj, ref_id, _ in resolved])

    @staticmethod
    def _in_contexts(request: _Request) -> bool:
        if request.session is None or request.op == RELEASE:
            return False
        return not (request.op == CONTEXT and request.body.get("module") is None)

    @staticmethod
    def _run(handler: Callable[[_Request], Any], request: _Request,
             factories: Optional[List[_Factory]]) -> Any:
        if not factories:
            return handler(request)
        result = None
        with contextlib.ExitStack() as stack:
            for factory in list(factories):
                stack.enter_context(factory.create())
            result = handler(request)
        return result

    def _encode(self, request_id: int, result: Any, session: Optional[str]) -> Reply:
        body = value.encode_scalar(result)
        encoder = None
        if body is None:
            encoder = value.Encoder(self.registry, session)
            if type(result) is _Batch:
                body = self._encode_batch(encoder, result)
            else:
                body = encoder.encode(result)
        # The envelope header takes at most 12 bytes: build it only when that bound does not fit.
        if len(body) + _ENVELOPE_MAX <= self.max_frame:
            return True, body
        size = len(envelope_header(OK, request_id)) + len(body)
        if size <= self.max_frame:
            return True, body
        if encoder is not None:
            encoder.rollback()  # the host never sees these refs
        shown = result.items if type(result) is _Batch else result
        cls = type(shown)
        return False, error_map(
            KIND_FRAME_TOO_LARGE, cls.__qualname__, cls.__module__ or "",
            f"the result ({cls.__qualname__}) encodes to a {size}-byte frame, above the "
            f"{self.max_frame}-byte limit")

    @staticmethod
    def _encode_batch(encoder: value.Encoder, batch: _Batch) -> bytes:
        parts = [b"\x82\xa5items", value.array_header(len(batch.items))]
        for item in batch.items:
            parts.append(encoder.encode(item))  # each item falls back to one ref on its own
        parts.append(b"\xa4done")
        parts.append(b"\xc3" if batch.done else b"\xc2")
        return b"".join(parts)

    # -- the ops -----------------------------------------------------------------------------------

    def _call(self, request: _Request) -> Any:
        return self._apply(*calls.parse_call(request.body))

    def _apply(self, module: str, function: str, args: Sequence[Any],
               kwargs: Dict[str, Any]) -> Any:
        self.policy.check(module, function)
        return calls.resolve(module, function)(*args, **kwargs)

    def _call_method(self, request: _Request) -> Any:
        target, _ = request.target_ref()
        method = parse_name(request.body, "method", request.name)
        args, kwargs = parse_args(request.body, request.name)
        return getattr(target, method)(*args, **kwargs)

    def _get_attr(self, request: _Request) -> Any:
        body = request.body
        if "target" not in body:
            raise BadRequest("GET_ATTR body has no 'target'")
        target = body["target"]
        name = parse_name(body, "name", request.name)
        if request.ref_id_of(target) is not None:
            return getattr(target, name)
        if type(target) is not str or not target:
            raise BadRequest(
                f"GET_ATTR 'target' must be a ref or a module name, not {type(target).__name__}")
        self.policy.check(target, name)
        return calls.resolve(target, name)

    def _set_attr(self, request: _Request) -> None:
        target, _ = request.target_ref()
        name = parse_name(request.body, "name", request.name)
        if "value" not in request.body:
            raise BadRequest("SET_ATTR body has no 'value'")
        setattr(target, name, request.body["value"])
        return None

    def _release(self, request: _Request) -> int:
        refs = request.body.get("refs")
        if refs is None:
            self.contexts.pop(request.session, None)  # type: ignore[arg-type]
            return self.registry.release(request.session, None)
        if type(refs) is not list or not all(type(r) is int for r in refs):
            raise BadRequest("RELEASE 'refs' must be an array of ids or nil")
        return self.registry.release(request.session, refs)

    def _stream_next(self, request: _Request) -> _Batch:
        target, ref_id = request.target_ref()
        limit = request.body.get("max")
        if limit is None:
            limit = 1
        elif type(limit) is not int or limit < 0:
            raise BadRequest(f"STREAM_NEXT 'max' must be a uint, not {limit!r}")
        limit = max(1, limit)
        items: List[Any] = []
        append = items.append
        done = False
        if not hasattr(type(target), "__next__"):
            raise BadRequest(
                f"STREAM_NEXT 'target' is not an iterator: {type(target).__qualname__}")
        pending = self._pending
        if pending:
            for stale in [i for i in pending if i not in self.registry]:
                del pending[stale]  # released or evicted meanwhile
            failure = pending.pop(ref_id, None)
            if failure is not None:
                raise failure
        while len(items) < limit:
            try:
                append(next(target))
            except StopIteration:
                done = True
                break
            except Exception as exc:
                if not items:
                    raise
                # Send what came before the failure now; the failure is the next reply.
                pending[ref_id] = exc
                break
        if done:
            self.registry.discard([ref_id])
        return _Batch(items, done)

    def _context(self, request: _Request) -> None:
        body = request.body
        session = request.session
        if session is None:
            raise BadRequest("CONTEXT needs a session")
        if body.get("module") is None:
            self.contexts.pop(session, None)
            return None
        module = parse_name(body, "module", request.name)
        function = parse_name(body, "function", request.name)
        args, kwargs = parse_args(body, request.name)
        self.policy.check(module, function)
        factory = _Factory(module, function, list(args), dict(kwargs))
        with factory.create():  # must work once before it is kept
            pass
        self.contexts.setdefault(session, []).append(factory)
        return None


def _apply_entry() -> Optional[TracebackType]:
    """The traceback entry ``Ops._apply`` adds to an exception that C code raised in the call
    (``Ops._accelerated_failure``), recorded once from a real call of ``_apply``. Its frame is
    cleared: only its code and position are needed to format it."""
    probe = Ops.__new__(Ops)
    probe.policy = Policy()
    try:
        probe._apply("builtins", "divmod", (1, 0), {})
    except ZeroDivisionError as exc:
        entry = exc.__traceback__
    else:  # pragma: no cover - divmod(1, 0) always raises
        return None
    finally:
        probe = None  # type: ignore[assignment]
    while entry is not None and entry.tb_next is not None:
        entry = entry.tb_next
    if entry is None or entry.tb_frame.f_code is not Ops._apply.__code__:
        return None  # pragma: no cover - _apply changed shape: failures then have no entry
    entry.tb_frame.clear()
    return entry


_APPLY_ENTRY = _apply_entry()

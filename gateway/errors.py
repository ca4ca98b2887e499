"""The one place where failures become gRPC statuses, with a counter per kind.

Handlers stay thin: they raise InvalidArgument (caller misuse), let `Refused` (the scripts'
answer) and Redis errors (the peer is unreachable) propagate, and `from_bytes`, which wraps
every served method (gateway/registration.py), turns each into its status. A decline is not a
failure: it is a normal AuthorizeResponse.

The server hands the wrapper the request's bytes. Before it parses them it asks who calls
(gateway/callers.py: UNAUTHENTICATED, PERMISSION_DENIED for the method, RESOURCE_EXHAUSTED over
the caller's rate) and admits the call (admission control); it then parses them inside the
same mapping, so a malformed message is one more INVALID_ARGUMENT, checks the request's
merchant, channel and product against the caller's lists, and runs the handler with the
caller's name and merchant scope set for the scripts (limits.client.CALLER).
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION and ALREADY_EXISTS carry the
google.rpc error details (`grpc-status-details-bin`) that a program reads instead of the
message. Failures on our side (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL) are logged once per
interval and kind with a count, never once per call.

Every call is named: its request id (the caller's `x-request-id` when it is valid, else one made
here) and the trace id of a valid W3C `traceparent` are set in gateway.logs' REQUEST_ID and
TRACE_ID for the call, so every log line it causes names them, and the request id is sent back
as `x-request-id` in the trailing metadata of every answer and refusal alike. Trailing, not
initial: initial metadata sent by the handler costs gRPC a batch of its own per call, the
trailing metadata travels with the status (docs/operations.md). Each call is counted by method
and status, and timed (gateway/metrics.py), refusals included.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import re
import time
from collections.abc import Callable

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.gateway import callers as callers_
from creditgate.gateway import metrics
from creditgate.gateway.admission import Overloaded
from creditgate.gateway.callers import PermissionDenied, QuotaExceeded, Unauthenticated
from creditgate.gateway.logs import REQUEST_ID, TRACE_ID
from creditgate.hotpath import InvalidArgument
from creditgate.limits.client import CALLER, DEADLINE_MS
from creditgate.limits.constants import REQUEST_ID_LENGTH_MAX
from creditgate.limits.reasons import ScriptError
from creditgate.limits.replies import Refused

log = logging.getLogger("creditgate.gateway")

# How many calls ended in each status kind, for metrics and tests.
counts: collections.Counter[str] = collections.Counter()

_REFUSALS: dict[ScriptError, tuple[grpc.StatusCode, str]] = {
    ScriptError.IDEMPOTENCY_MISMATCH: (
        grpc.StatusCode.ALREADY_EXISTS,
        "idempotency_key: already used for a different request; use a new key for a new one",
    ),
    ScriptError.HOLD_NOT_FOUND: (grpc.StatusCode.NOT_FOUND, "hold_id: no such hold"),
    ScriptError.HOLD_EXPIRED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "hold_id: the hold expired: its TTL passed and it was released at {detail} (Unix ms); "
        "nothing was changed",
    ),
    ScriptError.HOLD_VOIDED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "hold_id: the hold was voided at {detail} (Unix ms); nothing was changed",
    ),
    ScriptError.HOLD_CAPTURED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "hold_id: the hold was captured in full and closed at {detail} (Unix ms); "
        "nothing was changed",
    ),
    ScriptError.CAPTURE_EXCEEDS_HELD: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "amount_minor: more than the {detail} minor units the hold may still capture (what "
        "it holds, plus the product's capture tolerance); nothing was captured",
    ),
    ScriptError.HOLD_REVERSED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "hold_id: the hold was reversed at {detail} (Unix ms); nothing was changed",
    ),
    ScriptError.CAPTURE_EXCEEDS_CREDIT: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "amount_minor: the part beyond what the hold holds does not fit the available credit "
        "of level {detail}; nothing was captured",
    ),
    ScriptError.HOLD_STILL_OPEN: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "original_hold_id: the hold is still open until {detail} (Unix ms): capture it "
        "instead; nothing was posted",
    ),
    ScriptError.HOLD_OF_OTHER_CUSTOMER: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "original_hold_id: the hold belongs to another customer; nothing was posted",
    ),
    ScriptError.ALREADY_FORCE_CAPTURED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "original_hold_id: the hold was already force captured as hold {detail}; another force "
        "capture would post the purchase twice; nothing was posted",
    ),
    ScriptError.CUSTOMER_UNKNOWN: (grpc.StatusCode.NOT_FOUND, "customer_id: unknown customer"),
    ScriptError.REFUND_EXCEEDS_CAPTURED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "amount_minor: more than the {detail} minor units captured and not yet refunded; "
        "nothing was refunded",
    ),
    ScriptError.INCREMENT_NOT_ALLOWED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "hold_id: the hold's product does not allow incremental authorization; "
        "nothing was changed",
    ),
    ScriptError.RAISE_EXPIRES_IN_PAST: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "expires_at_ms: must be after now ({detail} Unix ms, Redis clock); nothing was changed",
    ),
    ScriptError.RAISE_TOO_LONG: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "expires_at_ms: a temporary raise ends at the latest at {detail} (Unix ms); "
        "nothing was changed",
    ),
    ScriptError.DEADLINE_PASSED: (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "the call's deadline ({detail} Unix ms, Redis clock) passed before its script ran; "
        "nothing was changed; the same call again is safe",
    ),
}

# Where one RPC must say more than the code's general message, keyed by (handler, code).
_RPC_REFUSALS: dict[tuple[str, ScriptError], tuple[grpc.StatusCode, str]] = {
    ("ForceCapture", ScriptError.HOLD_CAPTURED): (
        grpc.StatusCode.FAILED_PRECONDITION,
        "original_hold_id: the hold's purchase was captured at {detail} (Unix ms); a force "
        "capture would post it twice; nothing was posted",
    ),
}


# ErrorInfo's domain: the reasons it names are creditgate's.
ERROR_DOMAIN = "creditgate.v1"
# QuotaFailure's subject: a full Redis, or a process refusing more calls than it can finish.
LIMIT_STORE = "limit-store"
GATEWAY_PROCESS = "gateway-process"
CALLER_SUBJECT = "caller:"  # and the caller's name: a caller over its own rate
# How long a full Redis's RetryInfo asks a caller to wait: memory comes back as holds expire
# and the sweeper releases them.
OUT_OF_MEMORY_RETRY_MS = 1_000
# A failure kind's repeats within this long are summed into one log line.
FAILURE_LOG_INTERVAL_S = 10.0

# PreconditionFailure's type, by the script's refusal: what the caller must look at again.
_PRECONDITION_TYPES: dict[ScriptError, str] = {
    ScriptError.HOLD_EXPIRED: "HOLD_STATE",
    ScriptError.HOLD_VOIDED: "HOLD_STATE",
    ScriptError.HOLD_CAPTURED: "HOLD_STATE",
    ScriptError.HOLD_REVERSED: "HOLD_STATE",
    ScriptError.HOLD_STILL_OPEN: "HOLD_STATE",
    ScriptError.ALREADY_FORCE_CAPTURED: "HOLD_STATE",
    ScriptError.CAPTURE_EXCEEDS_HELD: "HOLD_AMOUNT",
    ScriptError.REFUND_EXCEEDS_CAPTURED: "HOLD_AMOUNT",
    ScriptError.CAPTURE_EXCEEDS_CREDIT: "CREDIT",
    ScriptError.INCREMENT_NOT_ALLOWED: "PRODUCT_RULE",
}
# Every refusal answered FAILED_PRECONDITION names its type.
assert {error for error, (code, _) in [*_REFUSALS.items(),
                                       *((e, r) for (_, e), r in _RPC_REFUSALS.items())]
        if code == grpc.StatusCode.FAILED_PRECONDITION} <= set(_PRECONDITION_TYPES)


# The metadata that names a call, in and out.
REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"
# A caller's request id: visible ASCII, no space (it goes into log lines and exemplars as is).
_REQUEST_ID = re.compile(rf"[!-~]{{1,{REQUEST_ID_LENGTH_MAX}}}")
# W3C Trace Context: version-traceid-parentid-flags in lower-case hex; version ff is invalid,
# a later version may add fields after the flags, and all-zero ids are invalid.
_TRACEPARENT = re.compile(r"([0-9a-e][0-9a-f]|f[0-9a-e])-([0-9a-f]{32})-([0-9a-f]{16})-"
                          r"[0-9a-f]{2}(-.*)?")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16
# Made request ids: this process's random tag and a count, unique across processes and
# restarts without a system call per call.
_PROCESS_TAG = os.urandom(6).hex()
_made = itertools.count(1)


def name_call(metadata) -> tuple[str, str]:
    """A call's (request id, trace id) from its invocation metadata: the caller's
    `x-request-id` if valid, else a new one; the trace id of a valid `traceparent`, else ""."""
    request_id = traceparent = ""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            request_id = value
        elif key == TRACEPARENT_KEY:
            traceparent = value
    if not (request_id and _REQUEST_ID.fullmatch(request_id)):
        request_id = f"{_PROCESS_TAG}-{next(_made):x}"
    return request_id, trace_id(traceparent) if traceparent else ""


def trace_id(traceparent: str) -> str:
    """The trace id of a W3C traceparent header, or "" if it is not a valid one."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or (match[1] == "00" and match[4] is not None) or \
            match[2] == _ZERO_TRACE or match[3] == _ZERO_PARENT:
        return ""
    return match[2]


class NotFound(Exception):
    """A read found nothing: NOT_FOUND with a message naming the field."""


class Late(Exception):
    """The call's deadline passed before it started: nothing was done."""


# The refusals that shed a call before any work, by the cause creditgate_shed_calls_total names.
SHED_CAUSES: dict[type, str] = {Overloaded: "admission", QuotaExceeded: "quota", Late: "late"}


def status_of(error: BaseException, rpc: str = "") -> tuple[grpc.StatusCode, str]:
    """The status of a failure of `rpc` (a handler's name; some refusals say more there)."""
    if isinstance(error, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, (Overloaded, QuotaExceeded)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(error)
    if isinstance(error, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, Late):
        return (grpc.StatusCode.DEADLINE_EXCEEDED,
                "the call's deadline passed before it started; nothing was done")
    if isinstance(error, Refused):
        refusal = _RPC_REFUSALS.get((rpc, error.code)) or _REFUSALS.get(error.code)
        if refusal is not None:
            code, message = refusal
            return code, message.format(detail=error.detail)
        # BAD_ARGUMENT: the script rejected arguments the gateway validated: our bug.
        return grpc.StatusCode.INTERNAL, f"internal error ({error})"
    if isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError)):
        return (grpc.StatusCode.UNAVAILABLE,
                "limit store unavailable; retry with the same idempotency key")
    # redis-py raises OutOfMemoryError for Redis' OOM (and strips "OOM" from the message).
    if isinstance(error, OutOfMemoryError) or (
            isinstance(error, ResponseError) and str(error).startswith("OOM")):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "limit store is out of memory"
    # Any other Redis error (a script's runtime error) is our own bug, not the caller's.
    return grpc.StatusCode.INTERNAL, "internal error"


def from_bytes(method, parse: Callable[[bytes], Message]):
    """The gRPC handler of a servicer's method (a bound `async def (request, context)`),
    taking the request's bytes.

    `parse` turns the bytes into the request or raises InvalidArgument; it runs inside the
    failure mapping, once per call. Only the bytes are known before it: a check that must not
    pay for parsing (admission) goes first in `handle`.
    """
    servicer, rpc = method.__self__, method.__name__
    calls = servicer.c.metrics.method(rpc)

    async def handle(data: bytes, context: grpc.aio.ServicerContext):
        entered_s = time.perf_counter()
        metadata = context.invocation_metadata()
        request_id, trace = name_call(metadata)
        named = REQUEST_ID.set(request_id), TRACE_ID.set(trace)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        c = servicer.c
        try:
            try:
                caller = identify(c.callers, rpc, context, metadata)
                started_s, deadline_ms = admit(c, rpc, context)
            except (Unauthenticated, PermissionDenied, QuotaExceeded, Overloaded, Late) as error:
                await refuse(context, rpc, error, None, calls, entered_s)
            request = None
            token = DEADLINE_MS.set(deadline_ms)
            caller_token = CALLER.set((caller.name, caller.merchant_scope))
            try:
                request = parse(data)
                caller.check(rpc, request)
                response = await method(request, context)
            except Exception as error:  # noqa: BLE001 - the one place that maps them all
                await refuse(context, rpc, error, request, calls, entered_s)
            finally:
                CALLER.reset(caller_token)
                DEADLINE_MS.reset(token)
                c.admission.done(started_s)
        except asyncio.CancelledError:  # the caller went away: the call ends unanswered
            calls.ended(grpc.StatusCode.CANCELLED.name, time.perf_counter() - entered_s,
                        request_id, trace)
            raise
        finally:
            REQUEST_ID.reset(named[0])
            TRACE_ID.reset(named[1])
        counts["OK"] += 1
        calls.answered(time.perf_counter() - entered_s, request_id, trace)
        return response

    return handle


def identify(callers: callers_.Callers, rpc: str, context: grpc.aio.ServicerContext,
             metadata) -> callers_.Caller:
    """Who calls, before anything else: known (Unauthenticated), within its rate
    (QuotaExceeded), allowed to call `rpc` (PermissionDenied). No parse, no Redis."""
    caller = callers.identify(*callers_.credentials(context, metadata))
    caller.take()  # first: a caller looping on a method it may not call is limited too
    caller.permit(rpc)
    return caller


def admit(c, rpc: str, context: grpc.aio.ServicerContext) -> tuple[float, int]:
    """Admission, before the request is parsed: (when the call was admitted, its deadline in
    ms by the scripts' clock, 0 for none). A call whose deadline has passed is never started
    (Late); a call beyond the process's limit is refused at once (Overloaded)."""
    remaining_s = context.time_remaining()
    if remaining_s is not None and remaining_s <= 0:
        raise Late()
    started_s = c.admission.admit(rpc)
    return started_s, c.redis_clock.deadline_ms(remaining_s, c.limits.clock_offset_ms)


async def refuse(context: grpc.aio.ServicerContext, rpc: str, error: BaseException,
                 request: Message | None = None, calls=metrics.NOTHING,
                 entered_s: float | None = None) -> None:
    """End the call with the status of `error`: counted (in `calls`, timed from `entered_s`),
    logged when the fault is ours, with error details for the codes that carry them and the
    request id in the trailing metadata. Never returns."""
    code, message = status_of(error, rpc)
    counts[code.name] += 1
    cause = SHED_CAUSES.get(type(error))
    if cause is not None:
        calls.shed(cause)
    request_id = REQUEST_ID.get()
    calls.ended(code.name, 0.0 if entered_s is None else time.perf_counter() - entered_s,
                request_id, TRACE_ID.get())
    if code in LOGGED:
        failures.failed(rpc, code, error)
    trailing = ((REQUEST_ID_KEY, request_id),) if request_id else ()
    status = rich_status(code, message, error, request)
    if status is None:
        await context.abort(code, message, trailing)
    else:
        await context.abort(status.code, status.details, trailing + status.trailing_metadata)


def rich_status(code: grpc.StatusCode, message: str, error: BaseException | None = None,
                request: Message | None = None) -> grpc.Status | None:
    """`code` and `message` (unchanged) with the google.rpc details that a program reads in
    place of the message, in `grpc-status-details-bin`; None for a code that carries none."""
    build = _DETAILS.get(code)
    if build is None:
        return None
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in build(message, error, request):
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def _error_info(error: BaseException | None) -> list[Message]:
    """The script's refusal by name, for a program that tells refusals apart."""
    if isinstance(error, Refused):
        return [error_details_pb2.ErrorInfo(reason=error.code.name, domain=ERROR_DOMAIN)]
    return []


def _bad_request(message: str, error, request) -> list[Message]:
    """BadRequest naming the field: every INVALID_ARGUMENT message starts with it."""
    field, _, description = message.partition(": ")
    if isinstance(error, InvalidArgument):
        field = error.field
    violation = error_details_pb2.BadRequest.FieldViolation(field=field,
                                                            description=description)
    return [error_details_pb2.BadRequest(field_violations=[violation]), *_error_info(error)]


def _quota_failure(message: str, error, request) -> list[Message]:
    """QuotaFailure naming what ran out, and RetryInfo saying when to try again: the
    caller's own rate, the process's admission limit, or a full Redis."""
    retry_after_ms = getattr(error, "retry_after_ms", None)
    if isinstance(error, QuotaExceeded):
        subject = f"{CALLER_SUBJECT}{error.caller}"
    else:
        subject = LIMIT_STORE if retry_after_ms is None else GATEWAY_PROCESS
    violation = error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(OUT_OF_MEMORY_RETRY_MS if retry_after_ms is None else retry_after_ms)
    return [error_details_pb2.QuotaFailure(violations=[violation]),
            error_details_pb2.RetryInfo(retry_delay=delay)]


def _precondition_failure(message: str, error, request) -> list[Message]:
    """PreconditionFailure: what kind of state refused the call, and the hold it is about."""
    kind = _PRECONDITION_TYPES.get(error.code) if isinstance(error, Refused) else None
    hold_id = getattr(request, "hold_id", "") or getattr(request, "original_hold_id", "")
    violation = error_details_pb2.PreconditionFailure.Violation(
        type=kind or "PRECONDITION", subject=hold_id, description=message)
    return [error_details_pb2.PreconditionFailure(violations=[violation]), *_error_info(error)]


def _already_exists(message: str, error, request) -> list[Message]:
    """The idempotency key already answered a different request."""
    key = getattr(request, "idempotency_key", "")
    return [error_details_pb2.ErrorInfo(reason=ScriptError.IDEMPOTENCY_MISMATCH.name,
                                        domain=ERROR_DOMAIN,
                                        metadata={"field": "idempotency_key"}),
            error_details_pb2.ResourceInfo(resource_type="idempotency_key", resource_name=key,
                                           description=message)]


def _permission_denied(message: str, error, request) -> list[Message]:
    """Which rule refused the call, for the caller's operators."""
    metadata = {"caller": error.caller, "rule": error.rule} \
        if isinstance(error, PermissionDenied) else {}
    return [error_details_pb2.ErrorInfo(reason="PERMISSION_DENIED", domain=ERROR_DOMAIN,
                                        metadata=metadata)]


def _unauthenticated(message: str, error, request) -> list[Message]:
    """Why no caller was found: NO_IDENTITY, UNKNOWN_IDENTITY or BAD_API_KEY."""
    reason = error.reason if isinstance(error, Unauthenticated) else "UNAUTHENTICATED"
    return [error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)]


_DETAILS = {
    grpc.StatusCode.PERMISSION_DENIED: _permission_denied,
    grpc.StatusCode.UNAUTHENTICATED: _unauthenticated,
    grpc.StatusCode.INVALID_ARGUMENT: _bad_request,
    grpc.StatusCode.RESOURCE_EXHAUSTED: _quota_failure,
    grpc.StatusCode.FAILED_PRECONDITION: _precondition_failure,
    grpc.StatusCode.ALREADY_EXISTS: _already_exists,
}
# The statuses logged (once per interval and kind): something wrong on our side, a caller
# knocking at a door it may not open, or bad input (so that the caller sending it can be found;
# at INFO: it harms no one else). The others are the caller's own business.
LOGGED = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                     grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
                     grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT})
# The level of a logged status's lines; WARNING for the others.
_LOG_LEVELS = {grpc.StatusCode.INTERNAL.name: logging.ERROR,
               grpc.StatusCode.INVALID_ARGUMENT.name: logging.INFO}


_INDEX = re.compile(r"\[\d+\]")  # "requests[3].amount_minor": an item of a batch


def _who(error: BaseException) -> str:
    """A failure's kind as the log names it: its type, and for a refused caller its name and
    rule, or why no caller was found (ids from the callers file; never a key)."""
    kind = type(error).__name__
    if isinstance(error, PermissionDenied):
        return f"{kind}, caller {error.caller}, {error.rule}"
    if isinstance(error, QuotaExceeded):
        return f"{kind}, caller {error.caller}"
    if isinstance(error, Unauthenticated):
        return f"{kind}, {error.reason}"
    if isinstance(error, InvalidArgument):
        # The field, never its value; a batch item's index is dropped (kinds stay bounded).
        return f"{kind}, field {_INDEX.sub('[]', error.field)}"
    if isinstance(error, Refused):
        return f"{kind}, {error.code.name}"
    return kind


class FailureLog:
    """Logs each failure kind (rpc, status, error type) once per interval, with a count.

    The first failure of a kind is logged at once; its repeats within the interval are
    counted and summed in one line when the interval ends (at the kind's next failure, or the
    flush the event loop runs then). A kind that stays quiet for an interval is forgotten, so
    its next failure is logged at once again. Lines name the rpc, status and error type, and
    a refused caller's name and rule, never a request's values.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = FAILURE_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        # Bounded by the kinds there are: rpcs x logged statuses x error types (x callers, for
        # refused callers); a kind quiet for an interval is forgotten.
        self._windows: dict[tuple[str, str, str], list] = {}  # kind: [started_s, repeats]
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def failed(self, rpc: str, code: grpc.StatusCode, error: BaseException) -> None:
        kind = (rpc, code.name, _who(error))
        now = self.clock()
        window = self._windows.get(kind)
        if window is not None and now - window[0] >= self.interval_s:
            window = self._summarize(kind, window, now)
            self._schedule_flush(now)
        if window is not None:
            window[1] += 1
            return
        self._windows[kind] = [now, 0]
        if code == grpc.StatusCode.INTERNAL:
            # Script errors name the script and line; requests' values are not logged.
            self.logger.error("%s failed: %s", rpc, str(error)[:300], exc_info=error)
        else:
            self.logger.log(_LOG_LEVELS.get(code.name, logging.WARNING), "%s failed: %s (%s)",
                            rpc, code.name, kind[2])
        self._schedule_flush(now)

    def flush(self) -> None:
        """Sum up every kind whose interval has ended."""
        now = self.clock()
        for kind, window in list(self._windows.items()):
            if now - window[0] >= self.interval_s:
                self._summarize(kind, window, now)

    def _summarize(self, kind: tuple[str, str, str], window: list, now: float) -> list | None:
        """Log a window's repeats and start the next; a quiet window ends."""
        started_s, repeats = window
        if not repeats:
            del self._windows[kind]
            return None
        # A sum of many calls names none of them, even when one call's failure ends it.
        self.logger.log(_LOG_LEVELS.get(kind[1], logging.WARNING),
                        "%s failed %d more times in %.1f s: %s (%s)", kind[0], repeats,
                        now - started_s, kind[1], kind[2],
                        extra={"request_id": "", "trace_id": ""})
        window[0], window[1] = now, 0
        return window

    def _schedule_flush(self, now: float) -> None:
        """Have the running loop flush when the earliest window ends."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the kind's next failure sums up its window
            return
        if not self._windows or self._timer is not None and self._timer_loop is loop:
            return
        ends_s = min(started_s for started_s, _ in self._windows.values()) + self.interval_s
        self._timer_loop = loop
        self._timer = loop.call_later(max(ends_s - now, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()
        if self._windows:
            self._schedule_flush(self.clock())


failures = FailureLog(log)


class RedactUndecodableMetadata(logging.Filter):
    """gRPC's Python layer logs, with a traceback, every metadata value it cannot decode as
    UTF-8, value included: an API key with one bad byte would be written to the log, once per
    call a peer cares to send. This filter (on the `grpc._cython.cygrpc` logger) withholds
    the value and lets one such line through per interval, with the count of the others."""

    def __init__(self, interval_s: float = FAILURE_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last_s: float | None = None
        self._withheld = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "encoding" not in str(record.msg):
            return True
        now = self.clock()
        if self._last_s is not None and now - self._last_s < self.interval_s:
            self._withheld += 1
            return False
        more = f" ({self._withheld} more in the last interval)" if self._withheld else ""
        record.msg = ("a call's metadata held a value that is not valid UTF-8; the call was "
                      "refused, the value is withheld from the log" + more)
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        self._last_s, self._withheld = now, 0
        return True


def redact_grpc_metadata_logs() -> None:
    """Install RedactUndecodableMetadata once (every gateway in this process shares it)."""
    grpc_log = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, RedactUndecodableMetadata) for f in grpc_log.filters):
        grpc_log.addFilter(RedactUndecodableMetadata())

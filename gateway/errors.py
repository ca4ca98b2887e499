"""The one place where failures become gRPC statuses, with a counter per kind.

Handlers stay thin: they raise InvalidArgument (caller misuse), let `Refused` (the scripts'
answer) and Redis errors (the peer is unreachable) propagate, and `unary` turns each into its
status. A decline is not a failure: it is a normal AuthorizeResponse.
"""

from __future__ import annotations

import collections
import functools
import logging

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from creditgate.hotpath import InvalidArgument
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
}

# Where one RPC must say more than the code's general message, keyed by (handler, code).
_RPC_REFUSALS: dict[tuple[str, ScriptError], tuple[grpc.StatusCode, str]] = {
    ("ForceCapture", ScriptError.HOLD_CAPTURED): (
        grpc.StatusCode.FAILED_PRECONDITION,
        "original_hold_id: the hold's purchase was captured at {detail} (Unix ms); a force "
        "capture would post it twice; nothing was posted",
    ),
}


class NotFound(Exception):
    """A read found nothing: NOT_FOUND with a message naming the field."""


def status_of(error: BaseException, rpc: str = "") -> tuple[grpc.StatusCode, str]:
    """The status of a failure of `rpc` (a handler's name; some refusals say more there)."""
    if isinstance(error, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(error)
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


def unary(handler):
    """Wrap a grpc.aio unary handler: every failure leaves as one counted status."""

    @functools.wraps(handler)
    async def wrapped(self, request, context: grpc.aio.ServicerContext):
        try:
            response = await handler(self, request, context)
        except Exception as error:  # noqa: BLE001 - this is the one place that maps them all
            code, message = status_of(error, handler.__name__)
            counts[code.name] += 1
            if code == grpc.StatusCode.INTERNAL:
                # Script errors name the script and line; requests' values are not logged.
                log.error("%s failed: %s", handler.__name__, str(error)[:300], exc_info=error)
            elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                log.warning("%s failed: %s (%s)", handler.__name__, code.name,
                            type(error).__name__)
            await context.abort(code, message)
        counts["OK"] += 1
        return response

    return wrapped

"""AuthorizeBatch: many purchases in one call, each answered as its own unary Authorize.

Each item runs `gateway.service.authorize` — the same plan, the same single reserve script call
and the same response as a unary call. The items run concurrently, so the script runner puts
their calls into the same loop tick's pipeline: one Redis round trip (or a few, past
BATCH_SIZE_MAX) for the whole batch. An item's failure becomes that item's BatchItemError with
the status the unary call would have answered (gateway.errors.status_of); its neighbours keep
their answers. Only a batch that is empty or too large fails as a whole (INVALID_ARGUMENT).

Duplicate idempotency keys inside one batch behave as sequential unary calls in item order:
every item reaches the runner in the same tick and in item order (`authorize` plans
synchronously and queues its script call before its first suspension; the tasks' first steps
run in creation order), and the runner's calls reach Redis in the order they were queued
(limits.scripts.ScriptRunner), so the later item gets the earlier one's decision, as a unary
retry would, or ALREADY_EXISTS if its payload differs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from gateway import errors, service  # service imports this module too: names used at call time
from gateway.pb import creditgate_pb2 as pb
from hotpath import InvalidArgument
from limits.constants import AUTHORIZE_BATCH_SIZE_MAX

if TYPE_CHECKING:
    from gateway.service import Context

log = logging.getLogger("creditgate.gateway")


def check_size(request: pb.AuthorizeBatchRequest) -> None:
    count = len(request.requests)
    if count == 0:
        raise InvalidArgument("requests", "at least one AuthorizeRequest is required")
    if count > AUTHORIZE_BATCH_SIZE_MAX:
        raise InvalidArgument("requests", f"at most {AUTHORIZE_BATCH_SIZE_MAX} AuthorizeRequests "
                              f"in one call, got {count}; split the batch")


async def authorize_batch(c: Context, request: pb.AuthorizeBatchRequest
                          ) -> pb.AuthorizeBatchResponse:
    """The items' outcomes in request order; raises only for the batch's own size."""
    check_size(request)
    # gather makes one task per item, in item order: each item's first step (plan, queue its
    # script call) runs in the next loop tick, all of them before the runner flushes.
    outcomes = await asyncio.gather(*[service.authorize(c, item) for item in request.requests],
                                    return_exceptions=True)
    response = pb.AuthorizeBatchResponse()
    items = response.items
    failed: dict[grpc.StatusCode, BaseException] = {}
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            code, message = errors.status_of(outcome)
            errors.counts[code.name] += 1
            failed.setdefault(code, outcome)
            items.add(error=pb.BatchItemError(code=code.value[0], message=message))
        elif isinstance(outcome, BaseException):  # cancellation: the whole call ends
            raise outcome
        else:
            items.add().response.CopyFrom(outcome)  # cheaper than add(response=outcome)
    if failed:
        _log_failures(failed)
    return response


def _log_failures(failed: dict[grpc.StatusCode, BaseException]) -> None:
    """One line per failure kind and batch, as `errors.unary` logs a unary call's failure: a
    Redis outage fails every item of a batch, which must not become hundreds of lines."""
    for code, error in failed.items():
        if code == grpc.StatusCode.INTERNAL:
            log.error("AuthorizeBatch item failed: %s", str(error)[:300], exc_info=error)
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            log.warning("AuthorizeBatch item failed: %s (%s)", code.name, type(error).__name__)

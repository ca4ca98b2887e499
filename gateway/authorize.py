"""Authorize and AuthorizeBatch: the hot path's plan (validation and product rules, no I/O),
one reserve script call (coalesced with the loop tick's other calls into one Redis round trip),
the response. A unary call and each batch item run the same two halves, `reserve` and
`answer`.

AuthorizeBatch: many purchases in one call, each answered as its own unary Authorize. Each
item runs the two halves of `authorize` — the same plan, the same single
reserve script call and the same response as a unary call. Every item is planned and its call
queued first, in item order and before the handler's first suspension, so the script runner
puts the whole batch into one loop tick's pipeline: one Redis round trip (or a few, past
BATCH_SIZE_MAX). Then the replies are awaited in item order; they arrive together, so all but
the first are usually ready and awaiting them does not suspend. An item's failure becomes that
item's BatchItemError with the status the unary call would have answered
(gateway.errors.status_of); its neighbours keep their answers. Only a batch that is empty or too
large fails as a whole (INVALID_ARGUMENT).

Duplicate idempotency keys inside one batch behave as sequential unary calls in item order:
the items' calls are queued in item order, and the runner's calls reach Redis in the order they
were queued (limits.transport.ScriptRunner), so the later item gets the earlier one's decision, as
a unary retry would, or ALREADY_EXISTS if its payload differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc

from creditgate import hotpath
from creditgate.gateway import errors
from creditgate.gateway.catalogs import LiveCatalog
from creditgate.gateway.context import Context
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.responses import authorization_response
from creditgate.hotpath import InvalidArgument
from creditgate.limits.constants import AUTHORIZE_BATCH_SIZE_MAX
from creditgate.limits.contracts import REPLAY_NONE
from creditgate.limits.replies import decode_authorization

# The fields plan_authorize checks against the catalog in force: a request it refuses for one
# of them may be the retry of a purchase an earlier catalog decided (a hot reload or a rolling
# upgrade in between), whose decision its key keeps.
CATALOG_FIELDS = frozenset({"product_id", "currency", "installment_months"})
_NONE = REPLAY_NONE + "|"
_NONE_BYTES = _NONE.encode()


def reserve(c: Context, live: LiveCatalog, request: pb.AuthorizeRequest) -> Awaitable:
    """The first half of an authorization, done at once: the hot path's plan with the
    catalog the call took when it started, and its reserve script call queued for this loop
    tick's round trip. The awaitable resolves to the script's reply, which `answer` turns into
    the response. Raises InvalidArgument as the hot path does. With a shadow catalog, a
    sampled call's read-only shadow is queued just before it (gateway/shadow.py).

    A request the catalog in force refuses for a field it decides (CATALOG_FIELDS), and that
    is well-formed otherwise (hotpath.plan_replay), queues the read-only replay script
    instead: the decision its idempotency key already has for this payload (a retry across a
    reload), or none, and then the awaitable raises the InvalidArgument. Nothing is written
    either way; a malformed request raises at once, with no Redis call."""
    try:
        keys_, args = hotpath.plan_authorize(request, live.rules, c.partitions)
    except InvalidArgument as error:
        if error.field not in CATALOG_FIELDS:
            raise
        try:
            replay_keys, replay_args = hotpath.plan_replay(request, c.partitions)
        except InvalidArgument:
            raise error from None
        # A task, so that AuthorizeBatch can cancel it as it cancels a queued call; the
        # replay's call is queued in this loop tick all the same.
        return asyncio.ensure_future(_replayed(c.limits.replay(replay_keys, replay_args),
                                               error))
    shadow = c.shadow
    if shadow is not None:  # a candidate catalog beside the live one (gateway/shadow.py)
        return shadow.reserve(c.limits, live, request, keys_, args)
    return c.limits.reserve(keys_, args)


async def _replayed(call: Awaitable, error: InvalidArgument):
    """The replay's reply (reserve's reply to the retry), or `error` where the key has no
    decision for this payload."""
    reply = await call
    if reply.startswith(_NONE_BYTES if isinstance(reply, bytes) else _NONE):
        raise error
    return reply


def answer(c: Context, live: LiveCatalog, request: pb.AuthorizeRequest, reply,
           response: pb.AuthorizeResponse | None = None) -> pb.AuthorizeResponse:
    """The second half: the response of the reserve script's reply (Refused if it refused),
    written into `response` if given, and the decision counted (gateway/metrics.py adds it to
    the process's tally, by reason, product and channel: no write per item)."""
    result = decode_authorization(reply)
    product = live.products.get(request.product_id)
    c.metrics.decisions.decided(result, request, product is not None)
    return authorization_response(result, product, response)


async def authorize(c: Context, request: pb.AuthorizeRequest) -> pb.AuthorizeResponse:
    """One authorization: the hot path's plan, one reserve script call (coalesced with the
    loop tick's other calls into one Redis round trip), the response, all with the catalog in
    force when it started. Raises as the handlers do (InvalidArgument, Refused, Redis
    errors); AuthorizeBatch runs the same two halves per item."""
    live = c.catalog
    return answer(c, live, request, await reserve(c, live, request))


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
    requests = request.requests
    # No task per item: the items' calls are the runner's plain futures, awaited one by one
    # (a task per item, or a gather of the futures, costs more CPU per authorization:
    # docs/benchmarks.md).
    calls: list[Awaitable | Exception] = []
    live = c.catalog  # one catalog for every item
    for item in requests:
        try:
            calls.append(reserve(c, live, item))
        except Exception as error:  # noqa: BLE001 - the item's own failure (InvalidArgument)
            calls.append(error)
    response = pb.AuthorizeBatchResponse()
    items = response.items
    failed: dict[grpc.StatusCode, BaseException] = {}
    try:
        for request_item, call in zip(requests, calls, strict=True):
            item = items.add()
            try:
                if isinstance(call, Exception):
                    raise call
                answer(c, live, request_item, await call, item.response)  # in place
            except Exception as error:  # noqa: BLE001 - each becomes its item's status
                code, message = errors.status_of(error)
                errors.counts[code.name] += 1
                failed.setdefault(code, error)
                # The outcome is one of the two: the error replaces any part of a response.
                item.error.code = code.value[0]
                item.error.message = message
    except BaseException:
        # Cancelled: the whole call ends, and its calls still waiting to be written are not
        # sent (on the runner's own connection, which skips a done future; the redis-py
        # pipeline path sends the tick's calls anyway). Only a cancellation in the very loop
        # tick that queued them comes after the runner wrote them: the items run, as sent
        # calls do. cancel() on an item already failed (a timeout in the runner's backlog)
        # changes nothing but marks its error retrieved, so asyncio does not log it when the
        # future is collected (tests/gateway/test_batch_cost.py).
        for call in calls:
            if isinstance(call, asyncio.Future):
                call.cancel()
        raise
    if failed:
        _log_failures(failed)
    return response


def _log_failures(failed: dict[grpc.StatusCode, BaseException]) -> None:
    """Each failure kind of the batch's items once, through the log that sums repeats per
    interval (errors.failures): a Redis outage fails every item of every batch, which must
    not become a line per batch."""
    for code, error in failed.items():
        if code in errors.LOGGED:
            errors.failures.failed("AuthorizeBatch", code, error)

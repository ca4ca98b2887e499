"""Plans of IncrementAuthorization and SetTemporaryRaise: validate the request (bad input raises
InvalidArgument naming the field, before any Redis call) and build what the script needs, as
gateway.service.plan_refund does for Refund. Both calls are rare: no compiled twin."""

from __future__ import annotations

import msgspec

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from creditgate.limits.constants import CAP_MINOR_MAX, NODE_NAME_LENGTH_MAX


class RaisePlan(msgspec.Struct, frozen=True):
    customer_id: str
    node: str
    raise_minor: int  # 0 removes the raise
    expires_at_ms: int  # Unix ms; the script checks it against Redis' clock


def hold_amount_call(request, partitions: int) -> tuple[str, str]:
    """(partition base, amount) of a call that moves an amount on one hold (Refund,
    IncrementAuthorization): its idempotency key, hold id and amount checked in proto order."""
    hotpath.check_id("idempotency_key", request.idempotency_key)
    hotpath.check_id("hold_id", request.hold_id)
    partition = keys.partition_of_hold(request.hold_id, partitions)
    if partition is None:
        raise hotpath.InvalidArgument("hold_id", "not a hold id issued by this gateway")
    hotpath.check_amount("amount_minor", request.amount_minor)
    return keys.base(partition), str(request.amount_minor)


def plan_increment(request: pb.IncrementAuthorizationRequest,
                   partitions: int) -> tuple[list[str], list[str]]:
    """The increment script's (keys, args) of a valid IncrementAuthorizationRequest."""
    base, amount = hold_amount_call(request, partitions)
    return ([keys.hold(base, request.hold_id),
             keys.idempotency_increment(base, request.hold_id, request.idempotency_key),
             keys.due(base), keys.outbox(base)],
            [base, request.hold_id, hotpath.fingerprint("increment", amount), amount])


def plan_set_raise(request: pb.SetTemporaryRaiseRequest) -> RaisePlan:
    """A valid SetTemporaryRaiseRequest. Whether expires_at_ms lies in the future (and not too
    far) is the script's check: only Redis' clock may say what now is."""
    hotpath.check_id("customer_id", request.customer_id)
    node = request.node
    if not node:
        raise hotpath.InvalidArgument("node", "required")
    if not catalog.NODE_NAME.match(node) or len(node) > NODE_NAME_LENGTH_MAX:
        raise hotpath.InvalidArgument(
            "node", f"bad node name {node[:NODE_NAME_LENGTH_MAX]!r}: dotted lower-case words, "
            f"at most {NODE_NAME_LENGTH_MAX} characters")
    if not 0 <= request.raise_minor <= CAP_MINOR_MAX:
        raise hotpath.InvalidArgument(
            "raise_minor", f"must be within 0..{CAP_MINOR_MAX} (integer minor units; 0 removes "
            "the raise)")
    if request.raise_minor > 0 and request.expires_at_ms <= 0:
        raise hotpath.InvalidArgument("expires_at_ms", "required: when the raise ends (Unix ms)")
    if request.expires_at_ms < 0:
        raise hotpath.InvalidArgument("expires_at_ms", "must be a Unix time in ms, not negative")
    return RaisePlan(request.customer_id, node, request.raise_minor, request.expires_at_ms)

"""Every bound of creditgate in one place, with the relations between them asserted at import.

Names carry their unit last (`_minor` for integer minor units of money, `_s`, `_ms`, `_max`).
"""

from __future__ import annotations

# Ids: idempotency keys, customer, merchant, product and hold ids.
ID_LENGTH_MAX = 64
# Limit-node names ("total", "consumer.qr_scan") are hash-field suffixes in Redis.
NODE_NAME_LENGTH_MAX = 48
PRODUCT_NODES_MAX = 8  # levels one product draws on, channel node included
CUSTOMER_CAPS_MAX = 64  # caps one customer may have

# Money. Lua numbers are doubles: every sum the scripts form must stay exact (< 2**53).
AMOUNT_MINOR_MAX = 100_000_000_000  # one transaction: 1 billion CNY in fen
CAP_MINOR_MAX = 10_000_000_000_000  # one level of one customer
VELOCITY_COUNT_MAX = 1_000_000
VELOCITY_AMOUNT_MINOR_MAX = CAP_MINOR_MAX  # one velocity window's amount limit

# Lifecycle bounds.
CAPTURE_TOLERANCE_BPS_MAX = 10_000  # over-capture up to twice the authorized amount
INSTALLMENT_MONTHS_MAX = 60
INSTALLMENT_TERMS_MAX = 12  # terms one product offers
INSTALLMENT_FEE_BPS_MAX = 1_000  # 10 % of the principal per month
RAISE_DURATION_S_MAX = 366 * 24 * 3600  # a temporary raise ends within a year
# Balance paths one repayment walks: one per product and channel the customer has used.
REPAY_PATHS_MAX = 64
AUTHORIZE_BATCH_SIZE_MAX = 256  # purchases in one AuthorizeBatch call

# Partitions: every key of one customer carries the hash tag {p:NNN} of its partition.
PARTITIONS_DEFAULT = 256
PARTITIONS_MAX = 1000  # the tag is three decimal digits

# Holds and idempotency records.
HOLD_TTL_S_MIN = 1
HOLD_TTL_S_MAX = 30 * 24 * 3600
CLOSED_HOLD_RETENTION_S = 35 * 24 * 3600  # a closed hold answers Capture/Void clearly this long
IDEMPOTENCY_TTL_S = 35 * 24 * 3600  # a retry within this long returns the first answer
HOLD_TOKEN_LENGTH = 16  # random base32 characters after the partition in a hold id

# Work one script call may do: expiring a customer's due holds is bounded per call; the
# sweeper and later calls release the rest.
EXPIRE_PER_CALL_MAX = 64

# Gateway.
BATCH_SIZE_MAX = 256  # requests coalesced into one Redis round trip
SWEEP_INTERVAL_S = 1.0
SWEEP_CUSTOMERS_PER_PARTITION_MAX = 128
DRAIN_GRACE_S = 10.0
# A request, and a response: a full AuthorizeBatch of the largest valid items fits one message
# each way (the sizes are measured by tests/gateway/test_authorize_batch.py).
GRPC_MESSAGE_BYTES_MAX = 96 * 1024
GRPC_RESPONSE_BYTES_MAX = 512 * 1024
AUTHORIZE_REQUEST_BYTES_MAX = 320  # the largest valid AuthorizeRequest, encoded
AUTHORIZE_RESPONSE_BYTES_MAX = 1_600  # the largest AuthorizeResponse: 8 levels, 12 plans
# Calls one process holds at once; beyond it gRPC answers RESOURCE_EXHAUSTED at once rather
# than queueing without bound.
GRPC_CONCURRENT_RPCS_MAX = 4096
REDIS_CONNECTIONS_MAX = 64  # per gateway process; batches wait for a free one
REDIS_WAIT_S = 5.0  # how long a batch waits for a connection before failing UNAVAILABLE

# Timezones: the UTC-offset schedule stored with a customer covers this many years ahead.
TZ_SCHEDULE_YEARS = 30
TZ_DEFAULT = "Asia/Shanghai"

assert AMOUNT_MINOR_MAX <= CAP_MINOR_MAX
# held + used + amount on one node, and a velocity window's total, stay exact in Lua doubles.
assert 3 * CAP_MINOR_MAX + AMOUNT_MINOR_MAX < 2**53
# A temporary raise is bounded by CAP_MINOR_MAX too: cap + raise + held + used + amount.
assert 5 * CAP_MINOR_MAX + AMOUNT_MINOR_MAX < 2**53
# Over-capture: amount * (10000 + bps) and an installment fee product stay exact.
assert AMOUNT_MINOR_MAX * (10_000 + CAPTURE_TOLERANCE_BPS_MAX) < 2**53
assert AMOUNT_MINOR_MAX * INSTALLMENT_FEE_BPS_MAX * INSTALLMENT_MONTHS_MAX < 2**53
assert AUTHORIZE_BATCH_SIZE_MAX <= BATCH_SIZE_MAX * 4
# Framing per item: a tag and a 2-byte length per level of nesting (the response nests twice).
assert AUTHORIZE_BATCH_SIZE_MAX * (AUTHORIZE_REQUEST_BYTES_MAX + 3) <= GRPC_MESSAGE_BYTES_MAX
assert AUTHORIZE_BATCH_SIZE_MAX * (AUTHORIZE_RESPONSE_BYTES_MAX + 6) <= GRPC_RESPONSE_BYTES_MAX
assert VELOCITY_AMOUNT_MINOR_MAX + AMOUNT_MINOR_MAX < 2**53
assert PARTITIONS_DEFAULT <= PARTITIONS_MAX <= 1000
assert HOLD_TTL_S_MAX < CLOSED_HOLD_RETENTION_S
# A retry that arrives while the hold is open or still retained gets the first answer.
assert HOLD_TTL_S_MAX < IDEMPOTENCY_TTL_S
assert 4 + HOLD_TOKEN_LENGTH <= ID_LENGTH_MAX
assert 0 < EXPIRE_PER_CALL_MAX <= 1000
assert 0 < BATCH_SIZE_MAX <= 10_000
assert BATCH_SIZE_MAX <= GRPC_CONCURRENT_RPCS_MAX

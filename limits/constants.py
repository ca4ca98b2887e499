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
# Distinct product-rule texts (a product on a channel, per catalog version) the scripts keep
# parsed between calls; past it they start over, so catalog reloads cannot grow it.
PRODUCT_RULES_KEPT_MAX = 4096
# The latest time a product's effective dates may name: 9999-12-31T00:00:00Z, in ms.
EFFECTIVE_MS_MAX = 253_402_214_400_000

# Gateway.
BATCH_SIZE_MAX = 256  # requests coalesced into one Redis round trip
SWEEP_INTERVAL_S = 1.0
SWEEP_CUSTOMERS_PER_PARTITION_MAX = 128
DRAIN_GRACE_S = 10.0
# From SIGTERM, readiness answers NOT_SERVING while calls are still answered for this long
# (`serve --drain-notice-s`), so that balancers and clients that watch health stop sending
# before the port stops: gRPC cancels (CANCELLED) calls that reach a stopping server.
DRAIN_NOTICE_S = 1.0
DRAIN_NOTICE_S_MAX = 60.0
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
# `--durability wait:N` without a time: how long WAIT waits for the replicas (ms).
DURABILITY_WAIT_MS_DEFAULT = 500
# Redis Cluster (limits/cluster.py). A call answered TRYAGAIN or CLUSTERDOWN is sent again
# after these pauses, the last repeated, until REDIS_WAIT_S has passed since it was queued;
# MOVED and ASK are followed at most CLUSTER_REDIRECTS_MAX times per call (more is a map in
# flux); refreshes of the slot map that failed calls ask for are at least
# CLUSTER_MAP_REFRESH_INTERVAL_S_MIN apart; the runner logs what it followed and what failed
# at most once per CLUSTER_LOG_INTERVAL_S.
CLUSTER_RETRY_PAUSES_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
CLUSTER_REDIRECTS_MAX = 5
CLUSTER_MAP_REFRESH_INTERVAL_S_MIN = 0.1
CLUSTER_LOG_INTERVAL_S = 10.0
# On a cluster the ledger worker's reads do not block (one XREADGROUP per stream): an empty
# read is tried again after this pause.
LEDGER_CLUSTER_POLL_S = 0.05
# Streams one HTTP/2 connection may hold open: enough for a switch multiplexing thousands of
# terminals on one connection (a burst of 2,000 meets admission control, not HTTP/2 refusing
# its streams), and half of what a process holds, so one connection of requests that never
# finish sending cannot take every call slot of a process.
GRPC_STREAMS_PER_CONNECTION_MAX = GRPC_CONCURRENT_RPCS_MAX // 2
# Calls gRPC core has read but the server loop has not yet taken. Beyond it core cancels new
# calls (the caller sees CANCELLED, not a refusal it can act on), so it holds every stream of a
# full connection; the server loop then admits or refuses each one.
GRPC_PENDING_CALLS_MAX = 2 * GRPC_CONCURRENT_RPCS_MAX
# Connections (docs/operations.md). The server pings a connection that has been silent this
# long, which keeps a terminal's NAT mapping alive, and closes it if no ack comes in time.
GRPC_KEEPALIVE_TIME_MS = 30_000
GRPC_KEEPALIVE_TIMEOUT_MS = 10_000
# Clients may ping this often without sending calls; faster pingers are sent GOAWAY.
GRPC_CLIENT_PING_INTERVAL_MS_MIN = 10_000
GRPC_CONNECTION_IDLE_MS = 10 * 60_000  # a connection with no call this long is closed (GOAWAY)
# A connection must finish its TLS (or plaintext HTTP/2) handshake within this long, or it is
# closed: connections that never do would hold the file descriptors new terminals need.
GRPC_HANDSHAKE_TIMEOUT_MS = 5_000
# Every connection is closed after this long (gRPC adds jitter), so clients rebalance over new
# processes and a stream that never finishes sending is dropped; calls in flight at that moment
# get the grace to finish.
GRPC_CONNECTION_AGE_MS = 30 * 60_000
GRPC_CONNECTION_AGE_GRACE_MS = 30_000
# Readiness re-reads Redis's maxmemory-policy this often (NOT_SERVING while it may evict).
EVICTION_CHECK_INTERVAL_S = 5.0
# Readiness follows Redis's reachability too: a PING this often, given up after the timeout;
# after this many failures in a row health answers NOT_SERVING, after one success SERVING.
REDIS_PING_INTERVAL_S = 0.5
REDIS_PING_TIMEOUT_S = 0.25
REDIS_PING_FAILURES_MAX = 3
# Metrics (gateway/metrics.py): what a process counted reaches prometheus_client this often.
METRICS_FLUSH_INTERVAL_S = 1.0
# A caller's x-request-id is kept when it is 1 to this many visible ASCII characters; any other
# is replaced by one the gateway makes.
REQUEST_ID_LENGTH_MAX = 64
# `serve --processes N`: a server process that dies is replaced at once the first time, then
# after a delay doubling from the minimum to the maximum while its replacements keep dying; a
# process that lived this long resets the delay.
RESTART_DELAY_S_MIN = 0.5
RESTART_DELAY_S_MAX = 30.0
RESTART_RESET_AFTER_S = 60.0

# Timezones: the UTC-offset schedule stored with a customer covers this many years ahead.
TZ_SCHEDULE_YEARS = 30
TZ_DEFAULT = "Asia/Shanghai"

assert AMOUNT_MINOR_MAX <= CAP_MINOR_MAX
assert max(CLUSTER_RETRY_PAUSES_S) < REDIS_WAIT_S
assert DURABILITY_WAIT_MS_DEFAULT < REDIS_WAIT_S * 1000
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
assert GRPC_STREAMS_PER_CONNECTION_MAX <= GRPC_PENDING_CALLS_MAX
assert GRPC_CONCURRENT_RPCS_MAX <= GRPC_PENDING_CALLS_MAX
# The server allows clients the ping rate it uses itself, and a ping is answered or given up on
# before the next one is due.
assert GRPC_CLIENT_PING_INTERVAL_MS_MIN <= GRPC_KEEPALIVE_TIME_MS
assert GRPC_KEEPALIVE_TIMEOUT_MS < GRPC_KEEPALIVE_TIME_MS
# A dead peer is found by keepalive long before the idle or age limit would close it.
assert GRPC_KEEPALIVE_TIME_MS + GRPC_KEEPALIVE_TIMEOUT_MS < GRPC_CONNECTION_IDLE_MS
assert GRPC_CONNECTION_IDLE_MS <= GRPC_CONNECTION_AGE_MS
# Calls on an aged connection get at least the drain grace of a stopping process.
assert DRAIN_GRACE_S * 1000 <= GRPC_CONNECTION_AGE_GRACE_MS
assert 0 <= DRAIN_NOTICE_S <= DRAIN_NOTICE_S_MAX
assert 0 < RESTART_DELAY_S_MIN <= RESTART_DELAY_S_MAX < RESTART_RESET_AFTER_S
# A PING is given up before the next is due, so checks never pile up.
assert 0 < REDIS_PING_TIMEOUT_S < REDIS_PING_INTERVAL_S
assert REDIS_PING_FAILURES_MAX >= 1
# A request id, with its label name and a trace id's, fits an OpenMetrics exemplar (128).
assert len("request_id") + REQUEST_ID_LENGTH_MAX + len("trace_id") + 32 <= 128

# Admission control (gateway/admission.py): a concurrency limit per process that follows
# latency. The target is well inside the deadlines terminals give (a few hundred ms), so an
# admitted call finishes in time; the limit moves once per window.
ADMISSION_TARGET_MS = 50.0
ADMISSION_WINDOW_S = 0.1
ADMISSION_LAG_SAMPLE_S = 0.01
ADMISSION_LIMIT_MIN = 64
ADMISSION_LIMIT_INITIAL = 256
ADMISSION_LIMIT_MAX = 2048
# A window outlasts the target, so calls admitted in it are answered in it.
assert 0 < ADMISSION_LAG_SAMPLE_S < ADMISSION_TARGET_MS / 1000 < ADMISSION_WINDOW_S
assert ADMISSION_LIMIT_MIN <= ADMISSION_LIMIT_INITIAL <= ADMISSION_LIMIT_MAX
assert ADMISSION_LIMIT_MAX <= GRPC_CONCURRENT_RPCS_MAX
# How often a gateway samples Redis' TIME for the offset that moves callers' deadlines to the
# scripts' clock (limits/clock.py).
CLOCK_SAMPLE_INTERVAL_S = 1.0

# Callers (gateway/callers.py): the callers file's bounds. A caller's quota is a token bucket
# per gateway process (a caller's connection is served by one process).
CALLERS_MAX = 100_000
CALLER_NAME_LENGTH_MAX = 64
# A caller's merchants travel in the header of every script call it makes, so a switch with
# many merchants lists their common prefixes ("ACQ-*") rather than every id.
CALLER_MERCHANTS_MAX = 64
CALLER_PRODUCTS_MAX = 64
CALLER_RATE_PER_S_MAX = 1_000_000.0
CALLER_BURST_MAX = 1_000_000
# How often each gateway process looks whether its callers file changed (a revoked caller is
# refused within this long).
CALLERS_CHECK_INTERVAL_S = 1.0
# A caller's name travels into every event it causes, like an id.
assert CALLER_NAME_LENGTH_MAX <= ID_LENGTH_MAX

# The ledger's metrics (ledger/metrics.py): the worker reads its consumer group's lag and
# pending count on every partition's outbox stream this often, in one pipelined round trip;
# reconcile gives a Pushgateway this long to take its result.
LEDGER_BACKLOG_POLL_INTERVAL_S = 5.0
METRICS_PUSH_TIMEOUT_S = 10.0
assert 0 < LEDGER_BACKLOG_POLL_INTERVAL_S <= 60.0

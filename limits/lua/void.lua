-- void.lua: cancel an open hold; whatever it still holds is released at every level it drew
-- on. What was captured before stays used.
--
-- KEYS[1] hold              the hold (hash)
-- KEYS[2] idempotency       the idempotency record
-- KEYS[3] due               the partition's due set
-- KEYS[4] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] hold_id           the hold id
-- ARGV[7] fingerprint       the request fingerprint
-- Reply: OK|state|released_minor|captured_total_minor|decided_at_ms, or ERR|code|detail|at_ms
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, hold_id, fingerprint = ARGV[ARG_BASE], ARGV[ARG_HOLD_ID], ARGV[ARG_FINGERPRINT]

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[KEY_HOLD], ARGV[ARG_MERCHANT_SCOPE], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[KEY_HOLD], owner, base, hold_id,
  KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
if refusal then return refusal end

-- After this point the void must succeed.
local released = tonumber(h[2]) - tonumber(h[3])
local customer_key = base .. K_CUSTOMER .. customer_id
ensure_layout(customer_key)
change_levels(customer_key, split(h[4], ','), -released, 0)
local seq = tonumber(h[5]) + 1
close_hold(KEYS[KEY_HOLD], 'voided', seq, now)
local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
redis.call('ZREM', holds_key, hold_id)
update_due(holds_key, KEYS[KEY_DUE], customer_id)
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'voided', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'released_minor', fmt(released),
  'captured_total_minor', h[3], 'at_ms', fmt(now), 'caller', ARGV[ARG_CALLER])
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, 'OK|voided|' .. fmt(released) .. '|'
  .. h[3] .. '|' .. fmt(now))

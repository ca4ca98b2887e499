-- refund.lua: give back some or all of what a hold captured (a merchant's refund), never more
-- than was captured less what was already refunded. What the purchase still owes on its path
-- (the path's balance, `b:<path>`) is restored at once: it leaves `used` at every level the
-- purchase drew on. What the customer had already repaid (the refund exceeds the balance) is
-- owed back to the customer: it goes to the credit balance `cr`.
--
-- KEYS[1] hold              the hold (hash)
-- KEYS[2] idempotency       the idempotency record
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] hold_id           the hold id
-- ARGV[7] fingerprint       the request fingerprint
-- ARGV[8] amount_minor      the amount to refund, minor units (1..AMOUNT_MINOR_MAX)
-- Reply: OK|refunded_minor|refunded_total_minor|refundable_minor|restored_minor|decided_at_ms,
--   or ERR|code|detail|at_ms (refundable_minor: what may still be refunded after the call).
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, hold_id, fingerprint = ARGV[ARG_BASE], ARGV[ARG_HOLD_ID], ARGV[ARG_FINGERPRINT]
local amount = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
if not amount then return err(E_BAD_ARGUMENT, 'refund', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local _, hidden = hold_owner(KEYS[KEY_HOLD], ARGV[ARG_MERCHANT_SCOPE], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

local h = redis.call('HMGET', KEYS[KEY_HOLD], H_CUSTOMER, H_CAPTURED, H_REFUNDED, H_NODES,
  H_SEQ, H_PRODUCT, H_MERCHANT, H_CURRENCY, H_EXPIRES)
if not h[1] then return err(E_HOLD_NOT_FOUND, '', now) end
h[4] = hold_nodes(base, h[4])
local refunded = tonumber(h[3]) or 0
local refundable = tonumber(h[2]) - refunded
if amount > refundable then return err(E_REFUND_EXCEEDS_CAPTURED, fmt(refundable), now) end
local customer_key = base .. K_CUSTOMER .. h[1]
local balance = tonumber(redis.call('HGET', customer_key, F_BALANCE .. h[4])) or 0
local restored = math.min(amount, balance)
local overpaid = amount - restored

-- After this point the refund must succeed.
if restored > 0 then
  ensure_layout(customer_key)
  change_levels(customer_key, split(h[4], ','), 0, -restored)
  add_balance(customer_key, h[4], -restored)
end
if overpaid > 0 then redis.call('HINCRBY', customer_key, F_CREDIT_BALANCE, overpaid) end
local seq = tonumber(h[5]) + 1
redis.call('HSET', KEYS[KEY_HOLD], H_REFUNDED, fmt(refunded + amount), H_SEQ, fmt(seq))
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'refunded', 'event_id', hold_event_id(hold_id, h[9], seq),
  'customer_id', h[1], 'hold_id', hold_id, 'product_id', h[6], 'merchant_id', h[7],
  'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'restored_minor', fmt(restored), 'overpaid_minor', fmt(overpaid),
  'refunded_total_minor', fmt(refunded + amount), 'at_ms', fmt(now),
  'caller', ARGV[ARG_CALLER])
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, 'OK|' .. fmt(amount) .. '|'
  .. fmt(refunded + amount) .. '|' .. fmt(refundable - amount) .. '|' .. fmt(restored) .. '|'
  .. fmt(now))

-- force_capture.lua: post a late clearing the network settled without a live hold (the hold
-- expired, or was never made). It is posted even if it takes a level over its cap, and says
-- which levels: `used` and the path's balance grow by the amount, and a new hold is written
-- already closed as `captured` (`fc` = 1, `oh` = the original), so it can be refunded like
-- any other. Velocity windows do not count it: nothing was approved.
--
-- An original is posted at most once: one captured by Capture is refused (HOLD_CAPTURED), and
-- a force capture marks its original (`fx` = the new hold's id), so a second one naming it is
-- refused (ALREADY_FORCE_CAPTURED) whatever its idempotency key.
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] idempotency       the idempotency record (`if:`)
-- KEYS[3] outbox            the partition's outbox (stream)
-- KEYS[4] hold              the new hold (hash)
-- KEYS[5] original_hold     the original hold (the new hold's key again if none)
-- KEYS[6] customer_holds    the customer's open holds (sorted set, by expiry ms)
-- KEYS[7] due               the partition's due set
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- ARGV[7] hold_id           the new hold's id
-- ARGV[8] fingerprint       the request fingerprint
-- ARGV[9] product_id        the product id
-- ARGV[10] amount_minor     the amount, minor units (1..AMOUNT_MINOR_MAX)
-- ARGV[11] merchant_id      the merchant id
-- ARGV[12] mcc              the merchant category code
-- ARGV[13] channel          the channel
-- ARGV[14] currency         the currency
-- ARGV[15] original_hold_id the original hold's id ("" if none)
-- ARGV[16..] nodes          the product's limit nodes for the channel, root first
-- Reply: OK|hold_id|over_limit_levels|decided_at_ms{|node|cap_minor|held_minor|used_minor},
--   or ERR|code|detail|at_ms (over_limit_levels: the over-limit nodes, comma-joined;
--   cap_minor: the cap plus any live raise).
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local customer_id, hold_id, fingerprint, product_id =
  ARGV[ARG_CUSTOMER_ID], ARGV[ARG_HOLD_ID], ARGV[ARG_FINGERPRINT], ARGV[ARG_PRODUCT_ID]
local amount = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
local original_id = ARGV[ARG_ORIGINAL_HOLD_ID]
local nodes = {}
for i = ARG_NODES, #ARGV do nodes[#nodes + 1] = ARGV[i] end
if not (amount and original_id and #nodes >= 1) then
  return err(E_BAD_ARGUMENT, 'force_capture', now)
end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

-- What had expired is released first, as Capture and Void do: the customer's due holds and
-- the original itself (if it is this customer's), so that the original counts as expired and
-- the over-limit check sees what is really held. Each release is a complete change of its own.
local base = ARGV[ARG_BASE]
release_expired(base, customer_id, KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
-- An original of a merchant outside the caller's scope is treated as one that is gone: it is
-- neither released, checked nor marked, so the answer does not tell that it exists.
local owner = false
if original_id ~= '' then
  local o = redis.call('HMGET', KEYS[KEY_ORIGINAL_HOLD], H_CUSTOMER, H_MERCHANT)
  if in_scope(ARGV[ARG_MERCHANT_SCOPE], o[2]) then owner = o[1] end
end
if owner == customer_id then
  release_if_due(base, customer_id, original_id, KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
end

-- Refusals, in order. Any status may be force captured: the purchase already happened.
ensure_layout(KEYS[KEY_CUSTOMER])
if redis.call('HEXISTS', KEYS[KEY_CUSTOMER], F_STATUS) == 0 then
  return err(E_CUSTOMER_UNKNOWN, '', now)
end
if owner then
  -- An original that is gone (never made, or dropped after its retention) is no obstacle.
  -- A voided, reversed or expired one may be force captured once.
  local o = redis.call('HMGET', KEYS[KEY_ORIGINAL_HOLD], H_STATE, H_EXPIRES, H_CLOSED_AT,
    H_FORCE_CAPTURED_AS)
  if owner ~= customer_id then return err(E_HOLD_OF_OTHER_CUSTOMER, '', now) end
  if o[1] == 'open' then return err(E_HOLD_STILL_OPEN, o[2], now) end
  if o[1] == 'captured' then return err(E_HOLD_CAPTURED, o[3], now) end
  if o[4] then return err(E_ALREADY_FORCE_CAPTURED, o[4], now) end
end

local caps, helds, useds, over = {}, {}, {}, {}
for i, node in ipairs(nodes) do
  local cap, held, used, raise = level_texts(redis.call('HGET', KEYS[KEY_CUSTOMER],
    F_LEVEL .. node))
  caps[i], helds[i], useds[i] = level_cap(cap, raise, now), tonumber(held), tonumber(used)
  if helds[i] + useds[i] + amount > caps[i] then over[#over + 1] = node end
end

-- After this point the force capture must succeed.
local node_list = table.concat(nodes, ',')
local over_list = table.concat(over, ',')
local levels = {}
change_levels(KEYS[KEY_CUSTOMER], nodes, 0, amount)
for i, node in ipairs(nodes) do
  levels[#levels + 1] = '|' .. node .. '|' .. fmt(caps[i]) .. '|' .. fmt(helds[i]) .. '|'
    .. fmt(useds[i] + amount)
end
add_balance(KEYS[KEY_CUSTOMER], node_list, amount)
redis.call('HSET', KEYS[KEY_HOLD], H_CUSTOMER, customer_id, H_PRODUCT, product_id,
  H_AMOUNT, fmt(amount), H_CAPTURED, fmt(amount), H_NODES, node_list,
  H_MERCHANT, ARGV[ARG_MERCHANT_ID], H_CURRENCY, ARGV[ARG_CURRENCY], H_CREATED_AT, fmt(now),
  H_FORCE_CAPTURE, '1')
if original_id ~= '' then redis.call('HSET', KEYS[KEY_HOLD], H_ORIGINAL_HOLD, original_id) end
-- The original keeps its retention (HSET leaves its expiry); one that is gone gets no mark.
if owner then redis.call('HSET', KEYS[KEY_ORIGINAL_HOLD], H_FORCE_CAPTURED_AS, hold_id) end
close_hold(KEYS[KEY_HOLD], 'captured', 1, now)
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'force_captured', 'event_id', hold_id .. ':1',
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[ARG_MERCHANT_ID], 'mcc', ARGV[ARG_MCC], 'channel', ARGV[ARG_CHANNEL],
  'currency', ARGV[ARG_CURRENCY],
  'nodes', node_list, 'amount_minor', fmt(amount), 'over_limit', over_list,
  'original_hold_id', original_id, 'at_ms', fmt(now), 'caller', ARGV[ARG_CALLER])
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, 'OK|' .. hold_id .. '|' .. over_list
  .. '|' .. fmt(now) .. table.concat(levels))

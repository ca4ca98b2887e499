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
-- KEYS[1] customer hash   KEYS[2] idempotency record (`if:`)   KEYS[3] partition outbox
-- KEYS[4] the new hold (hash)   KEYS[5] the original hold (KEYS[4] again if none)
-- KEYS[6] the customer's open holds (sorted set, by expiry ms)   KEYS[7] partition due set
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base "cg:{p:NNN}:"
-- ARGV[3] customer id   ARGV[4] new hold id   ARGV[5] request fingerprint   ARGV[6] product id
-- ARGV[7] amount minor  ARGV[8] merchant id   ARGV[9] mcc   ARGV[10] channel
-- ARGV[11] currency     ARGV[12] original hold id ("" if none)
-- ARGV[13..] the product's limit nodes for the channel, root first
-- Returns "OK|hold id|over-limit nodes (comma-joined)|now ms{|node|cap + raise|held|used}"
-- or "ERR|code|detail|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local customer_id, hold_id, fingerprint, product_id = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local amount = int_arg(ARGV[7], 1, AMOUNT_MINOR_MAX)
local original_id = ARGV[12]
local nodes = {}
for i = 13, #ARGV do nodes[#nodes + 1] = ARGV[i] end
if not (amount and original_id and #nodes >= 1) then
  return err(E_BAD_ARGUMENT, 'force_capture', now)
end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

-- What had expired is released first, as Capture and Void do: the customer's due holds and
-- the original itself (if it is this customer's), so that the original counts as expired and
-- the over-limit check sees what is really held. Each release is a complete change of its own.
local base = ARGV[2]
release_expired(base, customer_id, KEYS[7], KEYS[3], now)
local owner = original_id ~= '' and redis.call('HGET', KEYS[5], 'c')
if owner == customer_id then
  release_if_due(base, customer_id, original_id, KEYS[7], KEYS[3], now)
end

-- Refusals, in order. Any status may be force captured: the purchase already happened.
if redis.call('HEXISTS', KEYS[1], F_STATUS) == 0 then
  return err(E_CUSTOMER_UNKNOWN, '', now)
end
if owner then
  -- An original that is gone (never made, or dropped after its retention) is no obstacle.
  -- A voided, reversed or expired one may be force captured once.
  local o = redis.call('HMGET', KEYS[5], 'st', 'x', 'cl', 'fx')
  if owner ~= customer_id then return err(E_HOLD_OF_OTHER_CUSTOMER, '', now) end
  if o[1] == 'open' then return err(E_HOLD_STILL_OPEN, o[2], now) end
  if o[1] == 'captured' then return err(E_HOLD_CAPTURED, o[3], now) end
  if o[4] then return err(E_ALREADY_FORCE_CAPTURED, o[4], now) end
end

local caps, helds, useds, over = {}, {}, {}, {}
for i, node in ipairs(nodes) do
  local v = redis.call('HMGET', KEYS[1], F_CAP .. node, F_RAISE .. node, F_HELD .. node,
    F_USED .. node)
  caps[i] = effective_cap(tonumber(v[1]) or 0, v[2], now)
  helds[i] = tonumber(v[3]) or 0
  useds[i] = tonumber(v[4]) or 0
  if helds[i] + useds[i] + amount > caps[i] then over[#over + 1] = node end
end

-- After this point the force capture must succeed.
local node_list = table.concat(nodes, ',')
local over_list = table.concat(over, ',')
local levels = {}
for i, node in ipairs(nodes) do
  redis.call('HINCRBY', KEYS[1], F_USED .. node, amount)
  levels[#levels + 1] = '|' .. node .. '|' .. fmt(caps[i]) .. '|' .. fmt(helds[i]) .. '|'
    .. fmt(useds[i] + amount)
end
add_balance(KEYS[1], node_list, amount)
redis.call('HSET', KEYS[4], 'c', customer_id, 'p', product_id, 'a', fmt(amount),
  'cp', fmt(amount), 'n', node_list, 'm', ARGV[8], 'cur', ARGV[11], 't', fmt(now), 'fc', '1')
if original_id ~= '' then redis.call('HSET', KEYS[4], 'oh', original_id) end
-- The original keeps its retention (HSET leaves its expiry); one that is gone gets no mark.
if owner then redis.call('HSET', KEYS[5], 'fx', hold_id) end
close_hold(KEYS[4], 'captured', 1, now)
redis.call('XADD', KEYS[3], '*', 'type', 'force_captured', 'event_id', hold_id .. ':1',
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[8], 'mcc', ARGV[9], 'channel', ARGV[10], 'currency', ARGV[11],
  'nodes', node_list, 'amount_minor', fmt(amount), 'over_limit', over_list,
  'original_hold_id', original_id, 'at_ms', fmt(now))
return remember(KEYS[2], fingerprint, 'OK|' .. hold_id .. '|' .. over_list .. '|' .. fmt(now)
  .. table.concat(levels))

-- capture.lua: capture some or all of an open hold. The captured amount moves from held to
-- used at every level the hold drew on and onto the balance of the hold's path; a final
-- capture releases what stays held. With the product's capture tolerance on the hold (`tb`,
-- tips), the captures may total up to a + floor(a * tb / 10000): the part of a capture beyond
-- what is still held (the excess) is new credit, so it must fit every level's free credit.
--
-- KEYS[1] the hold (hash)   KEYS[2] idempotency record
-- KEYS[3] partition due set KEYS[4] partition outbox (stream)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base "cg:{p:NNN}:"
-- ARGV[3] hold id   ARGV[4] request fingerprint   ARGV[5] amount minor   ARGV[6] final (0/1)
-- Returns "OK|state|captured|captured total|released|held after|over-captured|now ms"
-- or "ERR|code|detail|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local base, hold_id, fingerprint = ARGV[2], ARGV[3], ARGV[4]
local amount = int_arg(ARGV[5], 1, AMOUNT_MINOR_MAX)
local final = int_arg(ARGV[6], 0, 1)
if not (amount and final) then return err(E_BAD_ARGUMENT, 'capture', now) end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[1], base, hold_id, KEYS[3], KEYS[4], now)
if refusal then return refusal end
local authorized, captured_before = tonumber(h[2]), tonumber(h[3])
local held = authorized - captured_before
local tolerance_bps = tonumber(redis.call('HGET', KEYS[1], 'tb')) or 0
local capturable = authorized + math.floor(authorized * tolerance_bps / 10000) - captured_before
if amount > capturable then return err(E_CAPTURE_EXCEEDS_HELD, fmt(capturable), now) end

local customer_key = base .. K_CUSTOMER .. customer_id
local nodes = split(h[4], ',')
local excess = math.max(0, amount - held)
if excess > 0 then
  -- The excess adds to held + used at every level: it must fit each one's free credit.
  for _, node in ipairs(nodes) do
    local v = redis.call('HMGET', customer_key, F_CAP .. node, F_RAISE .. node, F_HELD .. node,
      F_USED .. node)
    local free = effective_cap(tonumber(v[1]) or 0, v[2], now) - (tonumber(v[3]) or 0)
      - (tonumber(v[4]) or 0)
    if excess > free then return err(E_CAPTURE_EXCEEDS_CREDIT, node, now) end
  end
end

-- After this point the capture must succeed.
local released = 0
if final == 1 then released = held - (amount - excess) end
local held_after = held - (amount - excess) - released
local captured_total = captured_before + amount
for _, node in ipairs(nodes) do
  redis.call('HINCRBY', customer_key, F_HELD .. node, -(amount - excess + released))
  redis.call('HINCRBY', customer_key, F_USED .. node, amount)
end
add_balance(customer_key, h[4], amount)
local seq = tonumber(h[5]) + 1
local state = 'open'
redis.call('HSET', KEYS[1], 'cp', fmt(captured_total), 'sq', fmt(seq))
if held_after == 0 then
  state = 'captured'
  close_hold(KEYS[1], state, seq, now)
  local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
  redis.call('ZREM', holds_key, hold_id)
  update_due(holds_key, KEYS[3], customer_id)
end
redis.call('XADD', KEYS[4], '*', 'type', 'captured', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'released_minor', fmt(released), 'excess_minor', fmt(excess),
  'captured_total_minor', fmt(captured_total), 'final', fmt(final), 'at_ms', fmt(now))
return remember(KEYS[2], fingerprint, 'OK|' .. state .. '|' .. fmt(amount) .. '|'
  .. fmt(captured_total) .. '|' .. fmt(released) .. '|' .. fmt(held_after) .. '|'
  .. fmt(excess) .. '|' .. fmt(now))

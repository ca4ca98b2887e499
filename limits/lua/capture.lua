-- capture.lua: capture some or all of an open hold. The captured amount moves from held to
-- used at every level the hold drew on; a final capture releases what stays held.
--
-- KEYS[1] the hold (hash)   KEYS[2] idempotency record
-- KEYS[3] partition due set KEYS[4] partition outbox (stream)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base "cg:{p:NNN}:"
-- ARGV[3] hold id   ARGV[4] request fingerprint   ARGV[5] amount minor   ARGV[6] final (0/1)
-- Returns "OK|state|captured|captured total|released|held after|now ms"
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
local held = tonumber(h[2]) - tonumber(h[3])
if amount > held then return err(E_CAPTURE_EXCEEDS_HELD, fmt(held), now) end

-- After this point the capture must succeed.
local released = 0
if final == 1 then released = held - amount end
local captured_total = tonumber(h[3]) + amount
local customer_key = base .. K_CUSTOMER .. customer_id
for _, node in ipairs(split(h[4], ',')) do
  redis.call('HINCRBY', customer_key, F_HELD .. node, -(amount + released))
  redis.call('HINCRBY', customer_key, F_USED .. node, amount)
end
local seq = tonumber(h[5]) + 1
local state = 'open'
redis.call('HSET', KEYS[1], 'cp', fmt(captured_total), 'sq', fmt(seq))
if held - amount - released == 0 then
  state = 'captured'
  close_hold(KEYS[1], state, seq, now)
  local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
  redis.call('ZREM', holds_key, hold_id)
  update_due(holds_key, KEYS[3], customer_id)
end
redis.call('XADD', KEYS[4], '*', 'type', 'captured', 'event_id', hold_id .. ':' .. fmt(seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'released_minor', fmt(released), 'captured_total_minor', fmt(captured_total),
  'final', fmt(final), 'at_ms', fmt(now))
return remember(KEYS[2], fingerprint, 'OK|' .. state .. '|' .. fmt(amount) .. '|'
  .. fmt(captured_total) .. '|' .. fmt(released) .. '|' .. fmt(held - amount - released)
  .. '|' .. fmt(now))

-- void.lua: cancel an open hold; whatever it still holds is released at every level it drew
-- on. What was captured before stays used.
--
-- KEYS[1] the hold (hash)   KEYS[2] idempotency record
-- KEYS[3] partition due set KEYS[4] partition outbox (stream)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base "cg:{p:NNN}:"
-- ARGV[3] hold id   ARGV[4] request fingerprint
-- Returns "OK|state|released|captured total|now ms" or "ERR|code|detail|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local base, hold_id, fingerprint = ARGV[2], ARGV[3], ARGV[4]

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[1], base, hold_id, KEYS[3], KEYS[4], now)
if refusal then return refusal end

-- After this point the void must succeed.
local released = tonumber(h[2]) - tonumber(h[3])
local customer_key = base .. K_CUSTOMER .. customer_id
for _, node in ipairs(split(h[4], ',')) do
  redis.call('HINCRBY', customer_key, F_HELD .. node, -released)
end
local seq = tonumber(h[5]) + 1
close_hold(KEYS[1], 'voided', seq, now)
local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
redis.call('ZREM', holds_key, hold_id)
update_due(holds_key, KEYS[3], customer_id)
redis.call('XADD', KEYS[4], '*', 'type', 'voided', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'released_minor', fmt(released),
  'captured_total_minor', h[3], 'at_ms', fmt(now))
return remember(KEYS[2], fingerprint, 'OK|voided|' .. fmt(released) .. '|' .. h[3] .. '|'
  .. fmt(now))

-- set_raise.lua: SetTemporaryRaise: raise one level's cap until a time, or remove the raise.
-- While it lasts, every check uses the effective cap = cap + raise (effective_cap in
-- _lib.lua); once it lapses the level's cap alone counts again, even if that leaves the level
-- above its cap. Appends the `limit_raised` event (docs/lifecycle.md).
--
-- KEYS[1] customer hash   KEYS[2] partition outbox (stream)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] customer id   ARGV[3] node
-- ARGV[4] raise minor (0..CAP_MINOR_MAX; 0 removes the raise)
-- ARGV[5] expires at ms (Unix ms; after now and at most RAISE_DURATION_MS_MAX ahead; ignored
--         when the raise is 0)
-- Returns "OK|cap|raise|held|used|now ms" (the level after the change), or
-- "ERR|code|detail|now ms": CUSTOMER_UNKNOWN; RAISE_EXPIRES_IN_PAST (detail: now);
-- RAISE_TOO_LONG (detail: the latest expiry allowed).
local now = redis_now_ms(tonumber(ARGV[1]))
local customer_id, node = ARGV[2], ARGV[3]
local raise = int_arg(ARGV[4], 0, CAP_MINOR_MAX)
local expires = int_arg(ARGV[5], 0, 2 ^ 63)
if not (raise and expires and node ~= '') then return err(E_BAD_ARGUMENT, 'set_raise', now) end

if redis.call('EXISTS', KEYS[1]) == 0 then return err(E_CUSTOMER_UNKNOWN, '', now) end
-- Removing a raise (0) needs no expiry; a raise must end in the future, within bounds.
if raise > 0 and expires <= now then return err(E_RAISE_EXPIRES_IN_PAST, fmt(now), now) end
if raise > 0 and expires > now + RAISE_DURATION_MS_MAX then
  return err(E_RAISE_TOO_LONG, fmt(now + RAISE_DURATION_MS_MAX), now)
end

-- After this point the change must succeed.
local seq = redis.call('HINCRBY', KEYS[1], F_EVENT_SEQ, 1)
if raise > 0 then
  redis.call('HSET', KEYS[1], F_RAISE .. node, fmt(raise) .. ':' .. fmt(expires))
else
  expires = 0
  redis.call('HDEL', KEYS[1], F_RAISE .. node)
end
redis.call('XADD', KEYS[2], '*', 'type', 'limit_raised',
  'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
  'node', node, 'raise_minor', fmt(raise), 'expires_at_ms', fmt(expires), 'at_ms', fmt(now))
local v = redis.call('HMGET', KEYS[1], F_CAP .. node, F_HELD .. node, F_USED .. node)
return 'OK|' .. (v[1] or '0') .. '|' .. fmt(raise) .. '|' .. (v[2] or '0') .. '|'
  .. (v[3] or '0') .. '|' .. fmt(now)

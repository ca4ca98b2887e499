-- set_raise.lua: SetTemporaryRaise: raise one level's cap until a time, or remove the raise.
-- While it lasts, every check uses the effective cap = cap + raise (effective_cap in
-- _lib.lua); once it lapses the level's cap alone counts again, even if that leaves the level
-- above its cap. Appends the `limit_raised` event (docs/lifecycle.md).
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] customer_id       the customer id
-- ARGV[6] node              the level to raise
-- ARGV[7] raise_minor       the raise, minor units (0..CAP_MINOR_MAX; 0 removes the raise)
-- ARGV[8] expires_at_ms     when the raise ends (Unix ms; after now and at most
--                           RAISE_DURATION_MS_MAX ahead; ignored when the raise is 0)
-- Reply: OK|cap_minor|raise_minor|held_minor|used_minor|decided_at_ms|raise_before_minor|raise_before_expires_at_ms
--   (the level after the change, then the raise stored before it, lapsed or not, 0|0 for
--   none: for the audit log), or ERR|code|detail|at_ms: CUSTOMER_UNKNOWN;
--   RAISE_EXPIRES_IN_PAST (detail: now); RAISE_TOO_LONG (detail: the latest expiry allowed).
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local customer_id, node = ARGV[ARG_CUSTOMER_ID], ARGV[ARG_NODE]
local raise = int_arg(ARGV[ARG_RAISE_MINOR], 0, CAP_MINOR_MAX)
local expires = int_arg(ARGV[ARG_EXPIRES_AT_MS], 0, 2 ^ 63)
if not (raise and expires and node ~= '') then return err(E_BAD_ARGUMENT, 'set_raise', now) end

if redis.call('EXISTS', KEYS[KEY_CUSTOMER]) == 0 then return err(E_CUSTOMER_UNKNOWN, '', now) end
-- Removing a raise (0) needs no expiry; a raise must end in the future, within bounds.
if raise > 0 and expires <= now then return err(E_RAISE_EXPIRES_IN_PAST, fmt(now), now) end
if raise > 0 and expires > now + RAISE_DURATION_MS_MAX then
  return err(E_RAISE_TOO_LONG, fmt(now + RAISE_DURATION_MS_MAX), now)
end

ensure_layout(KEYS[KEY_CUSTOMER])
local stored = redis.call('HGET', KEYS[KEY_CUSTOMER], F_LEVEL .. node)
local cap, held, used, before = level_texts(stored)
local before_raise, before_expires = '0', '0'
if before ~= '' then before_raise, before_expires = string.match(before, '^:(%d+):(%d+)$') end

local seq = redis.call('HINCRBY', KEYS[KEY_CUSTOMER], F_EVENT_SEQ, 1)
if raise > 0 then
  redis.call('HSET', KEYS[KEY_CUSTOMER], F_LEVEL .. node,
    cap .. ':' .. held .. ':' .. used .. ':' .. fmt(raise) .. ':' .. fmt(expires))
else
  expires = 0
  if stored then
    redis.call('HSET', KEYS[KEY_CUSTOMER], F_LEVEL .. node, cap .. ':' .. held .. ':' .. used)
  end
end
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'limit_raised',
  'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
  'node', node, 'raise_minor', fmt(raise), 'expires_at_ms', fmt(expires), 'at_ms', fmt(now),
  'caller', ARGV[ARG_CALLER])
if cap == '' then cap = '0' end
return 'OK|' .. cap .. '|' .. fmt(raise) .. '|' .. held .. '|' .. used .. '|' .. fmt(now) .. '|'
  .. before_raise .. '|' .. before_expires

-- Layout 1's set_raise.lua as commit 4e479d1 assembled it (limits/lua_source.py of
-- that commit), frozen: tests/limits/test_layout_upgrade.py writes customers with it.
-- generated from limits/lua/_lib.lua and set_raise.lua by limits/lua_source.py
-- _lib.lua: the prelude of every creditgate script. limits/lua_source.py prepends to a script
-- the functions of this file that it calls, and writes every shared constant as its value:
-- K_* key kinds, F_* customer-hash fields, H_* hold-hash fields (keys.HOLD_FIELDS), R_* decline
-- reasons, E_* script errors, and bounds (generated from limits/keys.py, limits/reasons.py and
-- limits/constants.py), and the script's own KEYS and ARGV indices by name (limits/contracts.py).
-- limits/model.py is the pure-Python reading of every function here. A function that appends
-- an event reads the caller's name from the call header (limits/contracts.py): every event names
-- who made the change, and every script that can run such a function has the header.

-- Redis reads a script's globals through its protected global table, a metamethod call per
-- read (bench/script_cost.py measures what it costs): the globals every call uses are taken
-- into locals once.
local redis, math, string, table = redis, math, string, table
local tonumber, ipairs, unpack = tonumber, ipairs, unpack

local function fmt(n)
  -- Integers as plain digits: Lua's tostring would switch to exponent form above 1e14.
  return string.format('%d', n)
end

local function redis_now_ms(offset_ms)
  -- Time comes from Redis, never from a gateway's clock; offset_ms is 0 outside tests.
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + offset_ms
end

local function int_arg(value, low, high)
  -- An integer argument within [low, high], or nil (`n % 1` is NaN for inf and NaN).
  local n = tonumber(value)
  if n == nil or n % 1 ~= 0 or n < low or n > high then return nil end
  return n
end

local function err(code, detail, now)
  -- A refusal: nothing the call asked for was changed. Never stored for idempotency, so a
  -- retry is checked again (hold states only move forward, so it is refused again).
  return 'ERR|' .. code .. '|' .. detail .. '|' .. fmt(now)
end

local function call_time(offset_text, deadline_text)
  -- Now by Redis' clock (plus the tests' offset), and the refusal of a call whose caller's
  -- deadline passed before the script ran: a late call leaves nothing. Called before
  -- anything else by every script that changes state.
  local now = redis_now_ms(tonumber(offset_text))
  local deadline = tonumber(deadline_text) or 0
  if deadline > 0 and now >= deadline then
    return now, err(18, fmt(deadline), now)
  end
  return now, nil
end

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
-- ARGV[7] raise_minor       the raise, minor units (0..10000000000000; 0 removes the raise)
-- ARGV[8] expires_at_ms     when the raise ends (Unix ms; after now and at most
--                           31622400000 ahead; ignored when the raise is 0)
-- Reply: OK|cap_minor|raise_minor|held_minor|used_minor|decided_at_ms|raise_before_minor|raise_before_expires_at_ms
--   (the level after the change, then the raise stored before it, lapsed or not, 0|0 for
--   none: for the audit log), or ERR|code|detail|at_ms: CUSTOMER_UNKNOWN;
--   RAISE_EXPIRES_IN_PAST (detail: now); RAISE_TOO_LONG (detail: the latest expiry allowed).
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local customer_id, node = ARGV[5], ARGV[6]
local raise = int_arg(ARGV[7], 0, 10000000000000)
local expires = int_arg(ARGV[8], 0, 2 ^ 63)
if not (raise and expires and node ~= '') then return err(8, 'set_raise', now) end

if redis.call('EXISTS', KEYS[1]) == 0 then return err(7, '', now) end
-- Removing a raise (0) needs no expiry; a raise must end in the future, within bounds.
if raise > 0 and expires <= now then return err(13, fmt(now), now) end
if raise > 0 and expires > now + 31622400000 then
  return err(16, fmt(now + 31622400000), now)
end

local before = redis.call('HGET', KEYS[1], 'tr:' .. node)
local before_raise, before_expires = '0', '0'
if before then
  local colon = string.find(before, ':', 1, true)
  before_raise, before_expires = string.sub(before, 1, colon - 1), string.sub(before, colon + 1)
end

-- After this point the change must succeed.
local seq = redis.call('HINCRBY', KEYS[1], 'sq', 1)
if raise > 0 then
  redis.call('HSET', KEYS[1], 'tr:' .. node, fmt(raise) .. ':' .. fmt(expires))
else
  expires = 0
  redis.call('HDEL', KEYS[1], 'tr:' .. node)
end
redis.call('XADD', KEYS[2], '*', 'type', 'limit_raised',
  'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
  'node', node, 'raise_minor', fmt(raise), 'expires_at_ms', fmt(expires), 'at_ms', fmt(now),
  'caller', ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'cap:' .. node, 'h:' .. node, 'u:' .. node)
return 'OK|' .. (v[1] or '0') .. '|' .. fmt(raise) .. '|' .. (v[2] or '0') .. '|'
  .. (v[3] or '0') .. '|' .. fmt(now) .. '|' .. before_raise .. '|' .. before_expires

-- Layout 1's put_customer.lua as commit 4e479d1 assembled it (limits/lua_source.py of
-- that commit), frozen: tests/limits/test_layout_upgrade.py writes customers with it.
-- generated from limits/lua/_lib.lua and put_customer.lua by limits/lua_source.py
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

local function bytes_less(a, b)
  -- Byte order, as Python sorts ASCII: Lua's `<` follows the server's collation locale.
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
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

-- put_customer.lua: create or replace a customer's status, timezone and caps. Usage (held
-- and used) is kept, so replacing the limits of a customer with open holds loses nothing;
-- caps that the new set does not name are removed (no cap: nothing to spend there).
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] outbox            the partition's outbox (stream)
-- KEYS[3] timezones         the partition's timezone schedules (hash: zone -> schedule,
--                           shared by its customers)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] customer_id       the customer id
-- ARGV[6] status            active, frozen, closed or overdue
-- ARGV[7] timezone          the IANA timezone
-- ARGV[8] schedule          its UTC-offset schedule (limits/calendar.py)
-- ARGV[9..] node            node, cap minor (0..10000000000000), node, cap minor, ...
-- Reply: OK|decided_at_ms|status_before|caps_before, or ERR|code|detail|at_ms
--   (the customer before the change, for the audit log: its status, "" if it is new, and its
--   caps as "node=cap" joined by ',' in byte order)
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local status = ARGV[6]
if status ~= 'active' and status ~= 'frozen' and status ~= 'closed' and status ~= 'overdue' then
  return err(8, 'status', now)
end
local new_caps, caps_text, pairs_ = {}, {}, {}
for i = 9, #ARGV, 2 do
  local cap = int_arg(ARGV[i + 1], 0, 10000000000000)
  if not cap then return err(8, 'caps_minor', now) end
  new_caps['cap:' .. ARGV[i]] = true
  caps_text[#caps_text + 1] = ARGV[i] .. '=' .. fmt(cap)
  pairs_[#pairs_ + 1] = 'cap:' .. ARGV[i]
  pairs_[#pairs_ + 1] = fmt(cap)
end

local fields = redis.call('HGETALL', KEYS[1])
local status_before, caps_before, dropped = '', {}, {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == 'st' then status_before = fields[i + 1] end
  if string.sub(field, 1, #'cap:') == 'cap:' then
    caps_before[#caps_before + 1] = string.sub(field, #'cap:' + 1) .. '=' .. fields[i + 1]
    if not new_caps[field] then dropped[#dropped + 1] = field end
  end
end
table.sort(caps_before, bytes_less)

-- After this point the change must succeed.
if #dropped > 0 then redis.call('HDEL', KEYS[1], unpack(dropped)) end
local seq = redis.call('HINCRBY', KEYS[1], 'sq', 1)
redis.call('HSET', KEYS[1], 'st', status, 'tz', ARGV[7])
-- The newest schedule of a zone replaces the older: both start two days before their put.
redis.call('HSET', KEYS[3], ARGV[7], ARGV[8])
if #pairs_ > 0 then redis.call('HSET', KEYS[1], unpack(pairs_)) end
redis.call('XADD', KEYS[2], '*', 'type', 'customer_put',
  'event_id', 'c:' .. ARGV[5] .. ':' .. fmt(seq),
  'customer_id', ARGV[5], 'status', status,
  'timezone', ARGV[7], 'caps', table.concat(caps_text, ','), 'at_ms', fmt(now),
  'caller', ARGV[3])
return 'OK|' .. fmt(now) .. '|' .. status_before .. '|' .. table.concat(caps_before, ',')

-- Layout 1's capture.lua as commit 4e479d1 assembled it (limits/lua_source.py of
-- that commit), frozen: tests/limits/test_layout_upgrade.py writes customers with it.
-- generated from limits/lua/_lib.lua and capture.lua by limits/lua_source.py
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

local function split(text, separator)
  -- The non-empty parts of `text` between single-character separators. A plain find loop:
  -- string.gmatch would build a pattern and an iterator closure on every call.
  local parts, start, length = {}, 1, #text
  while start <= length do
    local at = string.find(text, separator, start, true) or length + 1
    if at > start then parts[#parts + 1] = string.sub(text, start, at - 1) end
    start = at + 1
  end
  return parts
end

local function update_due(holds_key, due_key, customer_id)
  -- The partition's due set holds each customer with open holds at its earliest expiry.
  local first = redis.call('ZRANGE', holds_key, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', due_key, first[2], customer_id)
  else
    redis.call('ZREM', due_key, customer_id)
  end
end

local function hold_nodes(base, stored)
  -- A hold's nodes, comma-joined, from its `n` field (a path id or the list itself).
  if string.sub(stored, 1, 1) ~= '#' then return stored end
  return redis.call('HGET', base .. 'paths', stored)
end

local function effective_cap(cap, raise_text, now)
  -- A level's cap plus its temporary raise while the raise lasts ("<raise>:<expires ms>").
  if not raise_text then return cap end
  local colon = string.find(raise_text, ':', 1, true)
  if tonumber(string.sub(raise_text, colon + 1)) <= now then return cap end
  return cap + tonumber(string.sub(raise_text, 1, colon - 1))
end

local function add_balance(customer_key, path, amount)
  -- The balance drawn on one path (captured, not refunded or repaid); a zero balance goes.
  if amount == 0 then return end
  local left = redis.call('HINCRBY', customer_key, 'b:' .. path, amount)
  if left == 0 then redis.call('HDEL', customer_key, 'b:' .. path) end
end

local function hold_event_id(hold_id, expires, seq)
  -- "<hold id>:<expiry ms>:<seq>": the expiry names the hold's generation, because a hold id
  -- derives from its idempotency key, which a terminal may use again once the old hold and
  -- its records are gone; a force capture's hold (no expiry, random id) is "<hold id>:<seq>".
  if expires then return hold_id .. ':' .. expires .. ':' .. fmt(seq) end
  return hold_id .. ':' .. fmt(seq)
end

local function close_hold(hold_key, state, seq, now)
  redis.call('HSET', hold_key, 'st', state, 'sq', fmt(seq), 'cl', fmt(now))
  -- The record stays to answer late Capture/Void calls clearly, then goes.
  redis.call('PEXPIRE', hold_key, 3024000000)
end

local function expire_hold(base, customer_id, hold_id, outbox_key, now)
  -- Release one open hold whose TTL has passed: what it still holds leaves every level it
  -- drew on, it closes, and its `expired` event is appended. 1 if released, else 0. The
  -- event names 'sweeper', not the call that happened to find the hold due: the TTL
  -- made this change.
  local customer_key = base .. 'c:' .. customer_id
  local hold_key = base .. 'h:' .. hold_id
  local h = redis.call('HMGET', hold_key, 'st', 'a', 'cp', 'n', 'sq',
    'p', 'm', 'cur', 'x')
  if h[1] ~= 'open' then return 0 end
  h[4] = hold_nodes(base, h[4])
  local released = tonumber(h[2]) - tonumber(h[3])
  for _, node in ipairs(split(h[4], ',')) do
    redis.call('HINCRBY', customer_key, 'h:' .. node, -released)
  end
  local seq = tonumber(h[5]) + 1
  close_hold(hold_key, 'expired', seq, now)
  redis.call('XADD', outbox_key, '*', 'type', 'expired', 'event_id', hold_event_id(hold_id, h[9], seq),
    'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
    'merchant_id', h[7], 'currency', h[8], 'nodes', h[4],
    'released_minor', fmt(released), 'captured_total_minor', h[3], 'at_ms', fmt(now),
    'caller', 'sweeper')
  return 1
end

local function release_expired(base, customer_id, due_key, outbox_key, now)
  -- Release the customer's holds whose TTL has passed, at most 64 of them
  -- (the sweeper and later calls release the rest). Each release is a complete change of its
  -- own with its own event, so it may precede the caller's checks. Returns how many.
  local holds_key = base .. 'x:' .. customer_id
  local due = redis.call('ZRANGE', holds_key, '-inf', fmt(now), 'BYSCORE',
    'LIMIT', 0, 64)
  local released = 0
  for _, hold_id in ipairs(due) do
    released = released + expire_hold(base, customer_id, hold_id, outbox_key, now)
    redis.call('ZREM', holds_key, hold_id)
  end
  if #due > 0 then update_due(holds_key, due_key, customer_id) end
  return released
end

local function release_if_due(base, customer_id, hold_id, due_key, outbox_key, now)
  -- The hold a Capture or Void names is released if its TTL has passed, even when more
  -- than 64 of the customer's holds were due before it.
  local hold_key = base .. 'h:' .. hold_id
  local h = redis.call('HMGET', hold_key, 'st', 'x')
  if h[1] == 'open' and tonumber(h[2]) <= now then
    expire_hold(base, customer_id, hold_id, outbox_key, now)
    local holds_key = base .. 'x:' .. customer_id
    redis.call('ZREM', holds_key, hold_id)
    update_due(holds_key, due_key, customer_id)
  end
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

local function idempotent_replay(record_key, fingerprint, now)
  -- The stored first answer, an error if the key was used with another payload, or nil.
  -- A reversal's tombstone answers every payload with its stored REVERSED decline.
  local prior = redis.call('GET', record_key)
  if not prior then return nil end
  local newline = string.find(prior, '\n', 1, true)
  local stored = string.sub(prior, 1, newline - 1)
  if stored ~= fingerprint and stored ~= 'reversed' then
    return err(1, '', now)
  end
  return string.sub(prior, newline + 1)
end

local function remember(record_key, fingerprint, reply)
  redis.call('SET', record_key, fingerprint .. '\n' .. reply, 'EX', 3024000)
  return reply
end

local function in_scope(scope, merchant)
  -- Whether a hold of `merchant` (false: it names none) is within a caller's merchant scope
  -- (limits/keys.merchant_scope): "" is every merchant; else "=<id>" and "^<prefix>"
  -- entries separated by one space. One plain find answers an exact entry.
  if scope == '' then return true end
  if not merchant or merchant == '' then return false end
  local spaced = ' ' .. scope .. ' '
  if string.find(spaced, ' ' .. '=' .. merchant
      .. ' ', 1, true) then
    return true
  end
  if not string.find(scope, '^', 1, true) then return false end
  for _, entry in ipairs(split(scope, ' ')) do
    if string.sub(entry, 1, 1) == '^'
        and string.sub(merchant, 1, #entry - 1) == string.sub(entry, 2) then
      return true
    end
  end
  return false
end

local function hold_owner(hold_key, scope, now)
  -- The customer of the hold a call names (nil if there is none), read before the call's
  -- idempotent replay; or (nil, HOLD_NOT_FOUND) if the hold is of a merchant outside the
  -- caller's scope, or gone and the caller is bound to merchants. Such a caller cannot tell
  -- another merchant's hold from one that never existed: the same answer, nothing replayed,
  -- nothing written.
  local h = redis.call('HMGET', hold_key, 'c', 'm')
  if scope ~= '' and not in_scope(scope, h[2]) then
    return nil, err(2, '', now)
  end
  return h[1], nil
end

local function open_hold(hold_key, customer_id, base, hold_id, due_key, outbox_key, now)
  -- Capture's and Void's common start, for the hold of `customer_id` (hold_owner's answer):
  -- (customer id, the hold's fields) of an open hold, after releasing what had expired; or
  -- (nil, nil, refusal).
  if not customer_id then return nil, nil, err(2, '', now) end
  release_expired(base, customer_id, due_key, outbox_key, now)
  release_if_due(base, customer_id, hold_id, due_key, outbox_key, now)
  local h = redis.call('HMGET', hold_key, 'st', 'a', 'cp', 'n', 'sq',
    'p', 'm', 'cur', 'cl', 'x')
  local closed = {expired = 3, voided = 4, captured = 5,
    reversed = 10}
  if closed[h[1]] then return nil, nil, err(closed[h[1]], h[9], now) end
  h[4] = hold_nodes(base, h[4])
  return customer_id, h, nil
end
-- capture.lua: capture some or all of an open hold. The captured amount moves from held to
-- used at every level the hold drew on and onto the balance of the hold's path; a final
-- capture releases what stays held. With the product's capture tolerance on the hold (`tb`,
-- tips), the captures may total up to a + floor(a * tb / 10000): the part of a capture beyond
-- what is still held (the excess) is new credit, so it must fit every level's free credit.
--
-- KEYS[1] hold              the hold (hash)
-- KEYS[2] idempotency       the idempotency record
-- KEYS[3] due               the partition's due set
-- KEYS[4] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] hold_id           the hold id
-- ARGV[7] fingerprint       the request fingerprint
-- ARGV[8] amount_minor      the amount to capture, minor units (1..100000000000)
-- ARGV[9] final             1 to release what stays held, else 0
-- Reply: OK|state|captured_minor|captured_total_minor|released_minor|held_minor|over_captured_minor|decided_at_ms,
--   or ERR|code|detail|at_ms (held_minor: what the hold still holds after the call).
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, hold_id, fingerprint = ARGV[5], ARGV[6], ARGV[7]
local amount = int_arg(ARGV[8], 1, 100000000000)
local final = int_arg(ARGV[9], 0, 1)
if not (amount and final) then return err(8, 'capture', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[1], ARGV[4], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[1], owner, base, hold_id,
  KEYS[3], KEYS[4], now)
if refusal then return refusal end
local authorized, captured_before = tonumber(h[2]), tonumber(h[3])
local held = authorized - captured_before
local tolerance_bps = tonumber(redis.call('HGET', KEYS[1], 'tb')) or 0
local capturable = authorized + math.floor(authorized * tolerance_bps / 10000) - captured_before
if amount > capturable then return err(6, fmt(capturable), now) end

local customer_key = base .. 'c:' .. customer_id
local nodes = split(h[4], ',')
local excess = math.max(0, amount - held)
if excess > 0 then
  -- The excess adds to held + used at every level: it must fit each one's free credit.
  for _, node in ipairs(nodes) do
    local v = redis.call('HMGET', customer_key, 'cap:' .. node, 'tr:' .. node, 'h:' .. node,
      'u:' .. node)
    local free = effective_cap(tonumber(v[1]) or 0, v[2], now) - (tonumber(v[3]) or 0)
      - (tonumber(v[4]) or 0)
    if excess > free then return err(11, node, now) end
  end
end

-- After this point the capture must succeed.
local released = 0
if final == 1 then released = held - (amount - excess) end
local held_after = held - (amount - excess) - released
local captured_total = captured_before + amount
for _, node in ipairs(nodes) do
  redis.call('HINCRBY', customer_key, 'h:' .. node, -(amount - excess + released))
  redis.call('HINCRBY', customer_key, 'u:' .. node, amount)
end
add_balance(customer_key, h[4], amount)
local seq = tonumber(h[5]) + 1
local state = 'open'
redis.call('HSET', KEYS[1], 'cp', fmt(captured_total), 'sq', fmt(seq))
if held_after == 0 then
  state = 'captured'
  close_hold(KEYS[1], state, seq, now)
  local holds_key = base .. 'x:' .. customer_id
  redis.call('ZREM', holds_key, hold_id)
  update_due(holds_key, KEYS[3], customer_id)
end
redis.call('XADD', KEYS[4], '*', 'type', 'captured', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'released_minor', fmt(released), 'excess_minor', fmt(excess),
  'captured_total_minor', fmt(captured_total), 'final', fmt(final), 'at_ms', fmt(now),
  'caller', ARGV[3])
return remember(KEYS[2], fingerprint, 'OK|' .. state .. '|' .. fmt(amount) .. '|'
  .. fmt(captured_total) .. '|' .. fmt(released) .. '|' .. fmt(held_after) .. '|'
  .. fmt(excess) .. '|' .. fmt(now))

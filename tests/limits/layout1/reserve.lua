-- Layout 1's reserve.lua as commit 4e479d1 assembled it (limits/lua_source.py of
-- that commit), frozen: tests/limits/test_layout_upgrade.py writes customers with it.
-- generated from limits/lua/_lib.lua and reserve.lua by limits/lua_source.py
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

local function utc_offset_s(schedule, now_s)
  -- The offset of "<offset>[,<from s>,<offset>]..." in force at now_s, read up to the first
  -- transition still to come (a schedule holds years of them).
  local comma = string.find(schedule, ',', 1, true)
  if not comma then return tonumber(schedule) end
  local offset = tonumber(string.sub(schedule, 1, comma - 1))
  while comma do
    local middle = string.find(schedule, ',', comma + 1, true)
    if now_s < tonumber(string.sub(schedule, comma + 1, middle - 1)) then break end
    comma = string.find(schedule, ',', middle + 1, true)
    offset = tonumber(string.sub(schedule, middle + 1, (comma or 0) - 1))
  end
  return offset
end

local function civil_from_days(days)
  -- (year, month) of a day number counted from 1970-01-01 (H. Hinnant's algorithm).
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local year = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  if month <= 2 then year = year + 1 end
  return year, month
end

local function window_numbers(schedule, now_ms)
  -- (local day number, local month number = year * 12 + month - 1).
  local now_s = math.floor(now_ms / 1000)
  local day = math.floor((now_s + utc_offset_s(schedule, now_s)) / 86400)
  local year, month = civil_from_days(day)
  return day, year * 12 + month - 1
end

local function zone_schedule(base, zone)
  -- The UTC-offset schedule of a customer's timezone: one copy per zone and partition, in
  -- the partition's `tz` hash (put_customer writes it).
  return redis.call('HGET', base .. 'tz', zone) or '0'
end

local function window_usage(stored, window)
  -- (amount, count) of a stored "<window>:<amount>:<count>" if it is the current window.
  if not stored then return 0, 0 end
  local stored_window, amount, count = string.match(stored, '^(%d+):(%d+):(%d+)$')
  if tonumber(stored_window) ~= window then return 0, 0 end
  return tonumber(amount), tonumber(count)
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

local function derived_hold_id(base, record_key, epoch)
  -- An approval's hold id (limits/keys.derived_hold_id): the partition "NNN" of the base
  -- "cg:{p:NNN}:", then the first hex digits of SHA-1 of "<record key>|<epoch>".
  return string.sub(base, 2 + 5, 2 + 7) .. '-'
    .. string.sub(redis.sha1hex(record_key .. '|' .. fmt(epoch)), 1, 16)
end

local function approval_hold(base, record_key, now)
  -- The hold an approval with this record key made: its id in this idempotency epoch or the
  -- one before, if that hold exists (a retry finds it for at least 3024000); else
  -- the id a new approval takes now. Returns (hold id, whether it exists).
  local epoch = math.floor(now / (3024000 * 1000))
  local current = derived_hold_id(base, record_key, epoch)
  local current_key = base .. 'h:' .. current
  local previous = derived_hold_id(base, record_key, epoch - 1)
  -- One EXISTS of both keys answers the usual case (a new purchase: neither exists).
  if redis.call('EXISTS', current_key, base .. 'h:' .. previous) == 0 then
    return current, false
  end
  if redis.call('EXISTS', current_key) == 1 then return current, true end
  return previous, true
end

local function path_id(base, node_list)
  -- The short id a hold stores for its nodes: "#" and 10 hex digits of SHA-1 of the list, kept
  -- in the partition's `paths` hash. If the id is taken by another list, the list itself.
  local id = '#' .. string.sub(redis.sha1hex(node_list), 1, 10)
  local known = redis.call('HGET', base .. 'paths', id)
  if not known then
    redis.call('HSET', base .. 'paths', id, node_list)
    return id
  end
  if known == node_list then return id end
  return node_list
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

local function read_levels(customer_key, fields, nodes, amount, now)
  -- One HMGET of the customer hash: the leading `fields` (the table grows by the rest), then
  -- each node's cap, raise, held and used. Returns the values and, per node (root first), the
  -- effective cap (cap plus a live raise), held, used and free credit; the least free credit;
  -- the first node where `amount` does not fit (nil if it fits everywhere); and the fields.
  local leading = #fields
  for i, node in ipairs(nodes) do
    local at = leading + 4 * (i - 1)
    fields[at + 1] = 'cap:' .. node
    fields[at + 2] = 'tr:' .. node
    fields[at + 3] = 'h:' .. node
    fields[at + 4] = 'u:' .. node
  end
  local values = redis.call('HMGET', customer_key, unpack(fields))
  local caps, helds, useds, frees, available, short = {}, {}, {}, {}, nil, nil
  for i, node in ipairs(nodes) do
    local at = leading + 4 * (i - 1)
    local cap = tonumber(values[at + 1]) or 0
    if values[at + 2] then cap = effective_cap(cap, values[at + 2], now) end
    local held, used = tonumber(values[at + 3]) or 0, tonumber(values[at + 4]) or 0
    local free = cap - held - used
    if free < 0 then free = 0 end
    caps[i], helds[i], useds[i], frees[i] = cap, held, used, free
    if available == nil or free < available then available = free end
    if short == nil and amount > free then short = node end
  end
  return values, caps, helds, useds, frees, available, short, fields
end

local function counter_offer(nodes, frees, day_max, day_amount, month_max, month_amount)
  -- (offer, its level): the least of every node's free credit (root first), then the room
  -- left in the day's and the month's amount windows (0: not limited); the level is the first
  -- candidate that holds the least (limits/model.py counter_offer).
  local offer, level = nil, ''
  for i, node in ipairs(nodes) do
    if offer == nil or frees[i] < offer then offer, level = frees[i], node end
  end
  if day_max > 0 and math.max(0, day_max - day_amount) < offer then
    offer, level = math.max(0, day_max - day_amount), 'velocity.day'
  end
  if month_max > 0 and math.max(0, month_max - month_amount) < offer then
    offer, level = math.max(0, month_max - month_amount), 'velocity.month'
  end
  return offer, level
end

local function levels_read(nodes, values, leading, caps, held_texts)
  -- The replies' "|node|cap + raise|held|used" for every node, from the texts read_levels got
  -- (`leading` values before the nodes'): a cap without a raise, a held (unless `held_texts`
  -- has a new one) and a used are sent as stored, with no number-to-text conversion (a large
  -- part of a script's own work).
  local parts = {}
  for i, node in ipairs(nodes) do
    local at = leading + 4 * (i - 1)
    local cap_text = values[at + 1]
    if values[at + 2] or not cap_text then cap_text = fmt(caps[i]) end
    parts[i] = '|' .. node .. '|' .. cap_text .. '|'
      .. (held_texts and held_texts[i] or values[at + 3] or '0') .. '|'
      .. (values[at + 4] or '0')
  end
  return table.concat(parts)
end

local function installment_plan(principal, months, fee_bps)
  -- limits/installments.py: equal installments rounded down, the remainder in the first; a
  -- flat monthly fee on the principal, rounded half up. "months:first:each:fee:bps".
  local each = math.floor(principal / months)
  local first = principal - each * (months - 1)
  local fee = math.floor((principal * fee_bps + 5000) / 10000)
  return fmt(months) .. ':' .. fmt(first) .. ':' .. fmt(each) .. ':' .. fmt(fee) .. ':'
    .. fmt(fee_bps)
end

local function authorization_reply(reason, level, hold_id, available, now, expires, approved,
                                   partial, offer, offer_level, plan, levels)
  -- reserve's and increment's reply (limits/client.decode_authorization):
  -- "OK|reason|level|hold id|available|now|expires|approved amount|partial 0/1|counter-offer
  -- amount|counter-offer level|installment plan{|node|cap + raise|held|used}".
  return 'OK|' .. reason .. '|' .. level .. '|' .. hold_id .. '|' .. fmt(available) .. '|'
    .. fmt(now) .. '|' .. fmt(expires) .. '|' .. fmt(approved) .. '|' .. partial .. '|'
    .. fmt(offer) .. '|' .. offer_level .. '|' .. plan .. levels
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

-- reserve.lua: authorize one purchase: check every limit level (cap plus any live temporary
-- raise) and velocity window of the customer and, only if all pass, hold the amount at every
-- level, record the hold and the idempotency key, and append the `authorized` event to the
-- partition's outbox. A decline about the amount carries a counter-offer; with partial
-- approval asked and allowed, the counter-offer is approved instead (docs/lifecycle.md).
--
-- KEYS[1] customer                 the customer hash
-- KEYS[2] customer_holds           the customer's open holds (zset, score = expiry ms)
-- KEYS[3] due                      the partition's due set (zset)
-- KEYS[4] outbox                   the partition's outbox (stream)
-- KEYS[5] idempotency              the idempotency record (a decline's or a reversal's
--                                  tombstone). An approval's hold key derives from it
--                                  (derived_hold_id: same partition, so the same slot).
-- ARGV[1] clock_offset_ms          ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms              the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller                   the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope           ignored: no hold is named
-- ARGV[5] base                     the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id              the customer id
-- ARGV[7] fingerprint              the request fingerprint
-- ARGV[8] product_id               the product id
-- ARGV[9] amount_minor             the amount, minor units (1..100000000000)
-- ARGV[10] hold_ttl_ms             the hold's TTL, ms
-- ARGV[11] rule_decline            product-rule decline reason decided by the hot path (0: none)
-- ARGV[12] merchant_id             the merchant id
-- ARGV[13] mcc                     the merchant category code
-- ARGV[14] channel                 the channel
-- ARGV[15] currency                the currency
-- ARGV[16] day_amount_max_minor    day amount max, minor units (0: no limit)
-- ARGV[17] day_count_max           day count max (0: no limit)
-- ARGV[18] month_amount_max_minor  month amount max, minor units (0: no limit)
-- ARGV[19] month_count_max         month count max (0: no limit)
-- ARGV[20] amount_min_minor        the product's amount min, minor units
-- ARGV[21] amount_max_minor        the product's amount max, minor units
-- ARGV[22] partial_approval        1 if the product allows it and the request asked for it
-- ARGV[23] capture_tolerance_bps   the product's capture tolerance, bps
--                                  (0..10000)
-- ARGV[24] incremental             1 if the product allows incremental authorization
-- ARGV[25] installment_months      installment months (0: pay in full)
-- ARGV[26] installment_fee_bps     the product's monthly installment fee, bps
-- ARGV[27..] nodes                 the product's limit nodes for this channel, root first
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}, or ERR|code|detail|at_ms
--   (authorization_reply, limits/lua/_lib.lua; a level's cap_minor is its cap plus any live
--   raise). A retry of an approval answers its first decision with the levels as they stand
--   now.
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, customer_id, fingerprint =
  ARGV[5], ARGV[6], ARGV[7]
local product_id = ARGV[8]
local amount = int_arg(ARGV[9], 1, 100000000000)
local ttl_ms = int_arg(ARGV[10], 1, 2592000000)
local rule_decline = int_arg(ARGV[11], 0, 7)
local day_amount_max = int_arg(ARGV[16], 0, 10000000000000)
local day_count_max = int_arg(ARGV[17], 0, 10000000000000)
local month_amount_max = int_arg(ARGV[18], 0, 10000000000000)
local month_count_max = int_arg(ARGV[19], 0, 10000000000000)
local amount_min = int_arg(ARGV[20], 0, 100000000000)
local amount_max = int_arg(ARGV[21], 0, 100000000000)
local allow_partial = int_arg(ARGV[22], 0, 1)
local tolerance_bps = int_arg(ARGV[23], 0, 10000)
local incremental = int_arg(ARGV[24], 0, 1)
local months = int_arg(ARGV[25], 0, 60)
local fee_bps = int_arg(ARGV[26], 0, 1000)
local nodes = {unpack(ARGV, 27)}
if not (amount and ttl_ms and rule_decline and day_amount_max and day_count_max
    and month_amount_max and month_count_max and amount_min and amount_max
    and allow_partial and tolerance_bps and incremental and months and months ~= 1
    and fee_bps and #nodes >= 1) then
  return err(8, 'reserve', now)
end

local replay = idempotent_replay(KEYS[5], fingerprint, now)
if replay then return replay end
-- An approval keeps no record: its hold, whose id derives from the record's key, holds the
-- fingerprint, so an open hold costs one key.
local hold_id, retried = approval_hold(base, KEYS[5], now)
local hold_key = base .. 'h:' .. hold_id
local prior
if retried then
  prior = redis.call('HMGET', hold_key, 'fp', 'x', 'a', 'a0',
    'pa', 'im')
  if prior[1] ~= fingerprint then return err(1, '', now) end
else
  -- Holds whose TTL has passed are released before the levels are read (a retry changes
  -- nothing, so it reads the levels as they stand).
  release_expired(base, customer_id, KEYS[3], KEYS[4], now)
end

-- One read of the customer hash: status, timezone, windows, then every level.
-- caps[i] is the effective cap: the cap plus the node's temporary raise while it lasts.
local values, caps, helds, useds, frees, available, short_level, fields = read_levels(
  KEYS[1],
  {'st', 'tz', 'vd:' .. product_id, 'vm:' .. product_id}, nodes,
  amount, now)
local status = values[1]

-- Checks, in the documented order (limits/reasons.py). Nothing is written before the point
-- marked below, except the release of holds that had already expired.
if not status then
  return remember(KEYS[5], fingerprint, authorization_reply(1,
    '', '', 0, now, 0, 0, 0, 0, '', '', ''))
end

if retried then
  -- A retry of an approval: the first decision (amount before any increment, partial
  -- approval and its binding level, plan), with the levels and availability of now.
  -- The decision's time is the expiry less the product's hold TTL (an increment keeps the
  -- expiry): the hold stores no creation time, to stay within one allocation class.
  local approved = tonumber(prior[4] or prior[3])
  local plan = ''
  if prior[6] then
    local terms = split(prior[6], ':')
    plan = installment_plan(approved, tonumber(terms[1]), tonumber(terms[5]))
  end
  local partial = 0
  if prior[5] then partial = 1 end
  local expires = tonumber(prior[2])
  return authorization_reply(0, '', hold_id, available, expires - ttl_ms, expires, approved,
    partial, 0, prior[5] or '', plan, levels_read(nodes, values, 4, caps))
end

local function decline(reason, level, offer, offer_level)
  return remember(KEYS[5], fingerprint, authorization_reply(reason, level, '',
    available, now, 0, 0, 0, offer, offer_level, '', levels_read(nodes, values, 4, caps)))
end

if status == 'frozen' then return decline(2, '', 0, '') end
if status == 'closed' then return decline(3, '', 0, '') end
if status == 'overdue' then return decline(11, '', 0, '') end
if rule_decline > 0 then return decline(rule_decline, '', 0, '') end

local day_window, month_window, day_amount, day_count, month_amount, month_count
local has_velocity = day_amount_max + day_count_max + month_amount_max + month_count_max > 0
local amount_reason = 0  -- VELOCITY_AMOUNT_EXCEEDED or INSUFFICIENT_CREDIT, if either applies
if has_velocity then
  day_window, month_window = window_numbers(zone_schedule(base, values[2]), now)
  day_amount, day_count = window_usage(values[3], day_window)
  month_amount, month_count = window_usage(values[4], month_window)
  if (day_count_max > 0 and day_count + 1 > day_count_max)
      or (month_count_max > 0 and month_count + 1 > month_count_max) then
    return decline(8, '', 0, '')
  end
  if (day_amount_max > 0 and day_amount + amount > day_amount_max)
      or (month_amount_max > 0 and month_amount + amount > month_amount_max) then
    amount_reason = 9
  end
end
if amount_reason == 0 and short_level then amount_reason = 10 end

local approved, partial, offer_level = amount, 0, ''
if amount_reason > 0 then
  -- The counter-offer: the least of every node's free credit (root first), then the room
  -- left in the day's and the month's amount windows; its level is the first candidate that
  -- holds it. Below the product's minimum nothing is offered (the level is still named).
  local offer
  offer, offer_level = counter_offer(nodes, frees, day_amount_max, day_amount,
    month_amount_max, month_amount)
  if offer < math.max(1, amount_min) then offer = 0 end
  if allow_partial == 0 or offer == 0 then
    local level = ''
    if amount_reason == 10 then level = short_level end
    return decline(amount_reason, level, offer, offer_level)
  end
  approved, partial = offer, 1
end

-- After this point the reservation must succeed.
local node_list = table.concat(nodes, ',')
local expires = fmt(now + ttl_ms)
local approved_text, now_text = fmt(approved), fmt(now)
local plan = ''
if months > 0 then plan = installment_plan(approved, months, fee_bps) end
-- One write of the customer hash: every level's held (as read above, plus the approval) and
-- the velocity windows. The field names are the ones read_levels asked for.
local customer, held_texts = {}, {}
for i = 1, #nodes do
  held_texts[i] = fmt(helds[i] + approved)
  customer[2 * i - 1] = fields[4 * i + 3]
  customer[2 * i] = held_texts[i]
end
if has_velocity then
  customer[#customer + 1] = fields[3]
  customer[#customer + 1] = fmt(day_window) .. ':' .. fmt(day_amount + approved) .. ':'
    .. fmt(day_count + 1)
  customer[#customer + 1] = fields[4]
  customer[#customer + 1] = fmt(month_window) .. ':' .. fmt(month_amount + approved) .. ':'
    .. fmt(month_count + 1)
end
redis.call('HSET', KEYS[1], unpack(customer))
-- The optional fields are written only when they apply: an open hold stays small.
local hold = {'st', 'open', 'c', customer_id, 'p', product_id,
  'a', approved_text, 'cp', '0', 'n', path_id(base, node_list),
  'x', expires, 'sq', '1', 'm', ARGV[12],
  'cur', ARGV[15], 'fp', fingerprint}
if partial == 1 then
  hold[#hold + 1] = 'pa'
  hold[#hold + 1] = offer_level
end
if tolerance_bps > 0 then
  hold[#hold + 1] = 'tb'
  hold[#hold + 1] = fmt(tolerance_bps)
end
if incremental == 1 then
  hold[#hold + 1] = 'ix'
  hold[#hold + 1] = fmt(amount_max)
  hold[#hold + 1] = 'vx'
  hold[#hold + 1] = fmt(day_amount_max) .. ':' .. fmt(month_amount_max)
end
if plan ~= '' then
  hold[#hold + 1] = 'im'
  hold[#hold + 1] = plan
end
redis.call('HSET', hold_key, unpack(hold))
redis.call('ZADD', KEYS[2], expires, hold_id)
redis.call('ZADD', KEYS[3], 'LT', expires, customer_id)
local event = {'type', 'authorized', 'event_id', hold_event_id(hold_id, expires, 1),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[12], 'mcc', ARGV[13], 'channel', ARGV[14],
  'currency', ARGV[15],
  'nodes', node_list, 'amount_minor', approved_text, 'expires_at_ms', expires,
  'at_ms', now_text, 'caller', ARGV[3]}
if partial == 1 then
  event[#event + 1] = 'requested_minor'
  event[#event + 1] = fmt(amount)
  event[#event + 1] = 'partial'
  event[#event + 1] = '1'
end
if plan ~= '' then
  event[#event + 1] = 'installment_plan'
  event[#event + 1] = plan
end
redis.call('XADD', KEYS[4], '*', unpack(event))
-- A partial approval names its binding level in the counter-offer level (the amount is 0).
-- The reply's levels reuse the texts read (caps without a live raise, used) and written (held).
return 'OK|0||' .. hold_id .. '|' .. fmt(available - approved) .. '|' .. now_text .. '|'
  .. expires .. '|' .. approved_text .. '|' .. (partial == 1 and '1' or '0') .. '|0|'
  .. offer_level .. '|' .. plan .. levels_read(nodes, values, 4, caps, held_texts)

#!lua name=creditgate_v2
-- generated from limits/lua/ by limits/lua_source.py
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
local function standard_globals()
  return redis, math, string, table, tonumber, ipairs, unpack
end
local loading_redis = redis
local redis, math, string, table, tonumber, ipairs, unpack
-- The product rules already read (product_rules), by their text, and how many. In a Functions
-- library they last as long as the library; in a script run by EVAL, one call.
local rules_kept, rules_kept_count = {}, 0
-- The levels read_levels fills, seven values per node, root first (at = 7 * (i - 1)): at + 1
-- the effective cap, at + 2 held, at + 3 free credit (numbers); at + 4 cap, at + 5 held, at + 6
-- used, at + 7 raise (texts, as level_texts reads them). One table, filled anew by each call
-- that reads levels (a call's levels never outlive it): no table is built per call.
local levels_kept = {}
-- The last local day number window_numbers saw and its month number.
local month_of_day = {}
-- What a retry of an approval reads of its hold (reserve.lua); every approval's hold has the
-- first.
local prior_fields = {'fp', 'x', 'a', 'a0', 'pa',
  'im'}

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
  if day ~= month_of_day[1] then
    local year, month = civil_from_days(day)
    month_of_day[1], month_of_day[2] = day, year * 12 + month - 1
  end
  return day, month_of_day[2]
end

local function zone_schedule(base, zone)
  -- The UTC-offset schedule of a customer's timezone: one copy per zone and partition, in
  -- the partition's `tz` hash (put_customer writes it).
  return redis.call('HGET', base .. 'tz', zone) or '0'
end

local function windows_usage(stored, day, month)
  -- (day amount, day count, month amount, month count) of a velocity field "<day>:<amount>:
  -- <count>:<month>:<amount>:<count>": a window other than the current one counts nothing.
  if not stored then return 0, 0, 0, 0 end
  local d, day_amount, day_count, m, month_amount, month_count =
    string.match(stored, '^(%d+):(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if tonumber(d) == day then
    day_amount, day_count = tonumber(day_amount), tonumber(day_count)
  else
    day_amount, day_count = 0, 0
  end
  if tonumber(m) == month then
    month_amount, month_count = tonumber(month_amount), tonumber(month_count)
  else
    month_amount, month_count = 0, 0
  end
  return day_amount, day_count, month_amount, month_count
end

local function windows_text(day, day_amount, day_count, month, month_amount, month_count)
  -- A velocity field's text, formatted at once: each string a call builds costs it again in
  -- Lua's garbage collector.
  return string.format('%d:%d:%d:%d:%d:%d', day, day_amount, day_count, month, month_amount,
    month_count)
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

local function approval_hold(base, record_key, now, fields)
  -- The hold an approval with this record key made: its id in this idempotency epoch or the
  -- one before, if that hold exists (a retry finds it for at least 3024000); else
  -- the id a new approval takes now. Returns (hold id, whether it exists, and with `fields`,
  -- whose first every approval's hold has, their values in the hold found).
  local epoch = math.floor(now / (3024000 * 1000))
  local current = derived_hold_id(base, record_key, epoch)
  local previous = derived_hold_id(base, record_key, epoch - 1)
  local current_key = base .. 'h:' .. current
  -- One EXISTS of both keys answers the usual case (a new purchase: neither exists).
  if redis.call('EXISTS', current_key, base .. 'h:' .. previous) == 0 then
    return current, false
  end
  if fields then
    local values = redis.call('HMGET', current_key, unpack(fields))
    if values[1] then return current, true, values end
    return previous, true, redis.call('HMGET', base .. 'h:' .. previous, unpack(fields))
  end
  if redis.call('EXISTS', current_key) == 1 then return current, true end
  return previous, true
end

local function path_hash(node_list)
  -- "#" and 10 hex digits of SHA-1 of a node list: the id path_id tries first.
  return '#' .. string.sub(redis.sha1hex(node_list), 1, 10)
end

local function path_id(base, node_list, id)
  -- The short id a hold stores for its nodes: `id` (path_hash of the list), kept in the
  -- partition's `paths` hash. If the id is taken by another list, the list itself.
  local known = redis.call('HGET', base .. 'paths', id)
  if not known then
    redis.call('HSET', base .. 'paths', id, node_list)
    return id
  end
  if known == node_list then return id end
  return node_list
end

local function product_rules(text)
  -- reserve's product rules (limits/contracts.PRODUCT_RULES) read from their text and checked
  -- (nil if any field is out of bounds), with what every call of them derives: the nodes,
  -- the field names, the path's id. Read once per text and kept; a kept table never changes.
  local kept = rules_kept[text]
  if kept then return kept end
  local p = split(text, '|')
  if #p ~= 14 then return nil end
  local r = {product_id = p[1], channel = p[2],
    currency = p[3], node_list = p[14],
    ttl_ms = int_arg(p[4], 1, 2592000000),
    day_amount_max = int_arg(p[5], 0, 10000000000000),
    day_count_max = int_arg(p[6], 0, 10000000000000),
    month_amount_max = int_arg(p[7], 0, 10000000000000),
    month_count_max = int_arg(p[8], 0, 10000000000000),
    amount_min = int_arg(p[9], 0, 100000000000),
    amount_max = int_arg(p[10], 0, 100000000000),
    tolerance_bps = int_arg(p[11], 0, 10000),
    incremental = int_arg(p[12], 0, 1),
    fee_bps = int_arg(p[13], 0, 1000),
    nodes = split(p[14], ',')}
  if not (r.ttl_ms and r.day_amount_max and r.day_count_max and r.month_amount_max
      and r.month_count_max and r.amount_min and r.amount_max and r.tolerance_bps
      and r.incremental and r.fee_bps and #r.nodes >= 1) then
    return nil
  end
  r.has_velocity = r.day_amount_max + r.day_count_max + r.month_amount_max
    + r.month_count_max > 0
  r.path_hash = path_hash(r.node_list)
  -- The texts a hold keeps of the rules (reserve.lua's optional hold fields).
  r.tolerance_text, r.amount_max_text = fmt(r.tolerance_bps), fmt(r.amount_max)
  r.velocity_max_text = fmt(r.day_amount_max) .. ':' .. fmt(r.month_amount_max)
  -- The fields reserve reads: status, timezone, the product's windows, then every level.
  r.read_fields, r.level_fields = {'s', 'tz', 'v:' .. r.product_id}, {}
  for i, node in ipairs(r.nodes) do
    r.level_fields[i] = 'l:' .. node
    r.read_fields[3 + i] = r.level_fields[i]
  end
  if rules_kept_count >= 4096 then rules_kept, rules_kept_count = {}, 0 end
  rules_kept[text], rules_kept_count = r, rules_kept_count + 1
  return r
end

local function hold_nodes(base, stored)
  -- A hold's nodes, comma-joined, from its `n` field (a path id or the list itself).
  if string.sub(stored, 1, 1) ~= '#' then return stored end
  return redis.call('HGET', base .. 'paths', stored)
end

local function level_texts(text)
  -- The texts of a level field "<cap>:<held>:<used>[:<raise>:<expires ms>]" (limits/keys.py
  -- FIELD_LEVEL): cap ('' for none), held, used, and the raise part ('' or ":<raise>:<expires
  -- ms>"). An absent field is a level with nothing in it.
  if not text then return '', '0', '0', '' end
  return string.match(text, '^(%d*):(%-?%d+):(%-?%d+)(.*)$')
end

local function level_cap(cap_text, raise, now)
  -- A level's effective cap: its cap plus its temporary raise while the raise lasts.
  local cap = tonumber(cap_text) or 0
  if raise == '' then return cap end
  local amount, expires = string.match(raise, '^:(%d+):(%d+)$')
  if tonumber(expires) <= now then return cap end
  return cap + tonumber(amount)
end

local function upgrade_customer(customer_key)
  -- A customer written by layout 1 (its status in 'st', a field per number) is rewritten
  -- in this layout by the first script that touches it, before that script reads it: true if
  -- the customer was one. Balances, the event sequence and the timezone keep their fields.
  local all = redis.call('HGETALL', customer_key)
  local status, old, nodes, levels, products, windows = nil, {}, {}, {}, {}, {}
  local slot = {['cap:'] = 1, ['h:'] = 2, ['u:'] = 3, ['tr:'] = 4,
    ['vd:'] = 1, ['vm:'] = 2}
  for i = 1, #all, 2 do
    local field, value = all[i], all[i + 1]
    local kind, name = string.match(field, '^(%a+:)(.*)$')
    if field == 'st' then
      status, old[#old + 1] = value, field
    elseif kind == 'cap:' or kind == 'h:' or kind == 'u:' or kind == 'tr:' then
      if not levels[name] then levels[name], nodes[#nodes + 1] = {'', '0', '0', ''}, name end
      if kind == 'tr:' then value = ':' .. value end
      levels[name][slot[kind]], old[#old + 1] = value, field
    elseif kind == 'vd:' or kind == 'vm:' then
      if not windows[name] then
        windows[name], products[#products + 1] = {'0:0:0', '0:0:0'}, name
      end
      windows[name][slot[kind]], old[#old + 1] = value, field
    end
  end
  if not status then return false end
  local new = {'s', status, 'lv', '2'}
  for _, node in ipairs(nodes) do
    local l = levels[node]
    new[#new + 1] = 'l:' .. node
    new[#new + 1] = l[1] .. ':' .. l[2] .. ':' .. l[3] .. l[4]
  end
  for _, product in ipairs(products) do
    local w = windows[product]
    new[#new + 1] = 'v:' .. product
    new[#new + 1] = w[1] .. ':' .. w[2]
  end
  redis.call('HDEL', customer_key, unpack(old))
  redis.call('HSET', customer_key, unpack(new))
  return true
end

local function ensure_layout(customer_key)
  -- Every script upgrades a layout-1 customer before it reads or writes its levels.
  if redis.call('HEXISTS', customer_key, 'st') == 1 then upgrade_customer(customer_key) end
end

local function change_levels(customer_key, nodes, held_by, used_by)
  -- Adds held_by and used_by to the level of every node of `nodes` (a node listed twice, twice):
  -- one HMGET and one HSET of the customer hash. A level not kept yet starts with no cap.
  local fields = {}
  for i, node in ipairs(nodes) do fields[i] = 'l:' .. node end
  local values = redis.call('HMGET', customer_key, unpack(fields))
  local changed, writes = {}, {}
  for i, field in ipairs(fields) do
    local cap, held, used, raise = level_texts(changed[field] or values[i])
    local text = cap .. ':' .. fmt(tonumber(held) + held_by) .. ':'
      .. fmt(tonumber(used) + used_by) .. raise
    changed[field] = text
    writes[#writes + 1] = field
    writes[#writes + 1] = text
  end
  redis.call('HSET', customer_key, unpack(writes))
end

local function read_levels(values, leading, nodes, amount, now)
  -- The levels of `nodes` (root first) from `values`, an HMGET of the customer hash whose
  -- level fields follow `leading` others, into levels_kept (the texts are kept: a reply or a
  -- write reuses them, a conversion being a large part of a script's own work). Returns
  -- levels_kept, the least free credit and the first node where `amount` does not fit (nil if
  -- it fits everywhere).
  local levels, available, short = levels_kept, nil, nil
  for i, node in ipairs(nodes) do
    local at = 7 * (i - 1)
    local cap_text, held_text, used_text, raise = level_texts(values[leading + i])
    local cap, held = tonumber(cap_text) or 0, tonumber(held_text)
    if raise ~= '' then cap = level_cap(cap_text, raise, now) end
    local free = cap - held - tonumber(used_text)
    if free < 0 then free = 0 end
    levels[at + 1], levels[at + 2], levels[at + 3], levels[at + 4] = cap, held, free, cap_text
    levels[at + 5], levels[at + 6], levels[at + 7] = held_text, used_text, raise
    if available == nil or free < available then available = free end
    if short == nil and amount > free then short = node end
  end
  return levels, available, short
end

local function counter_offer(nodes, levels, day_max, day_amount, month_max, month_amount)
  -- (offer, its level): the least of every node's free credit (root first, from read_levels),
  -- then the room left in the day's and the month's amount windows (0: not limited); the
  -- level is the first candidate that holds the least (limits/model.py counter_offer).
  local offer, level = nil, ''
  for i, node in ipairs(nodes) do
    local free = levels[7 * i - 4]
    if offer == nil or free < offer then offer, level = free, node end
  end
  if day_max > 0 and math.max(0, day_max - day_amount) < offer then
    offer, level = math.max(0, day_max - day_amount), 'velocity.day'
  end
  if month_max > 0 and math.max(0, month_max - month_amount) < offer then
    offer, level = math.max(0, month_max - month_amount), 'velocity.month'
  end
  return offer, level
end

local function levels_reply(nodes, levels, held_texts)
  -- The replies' "|node|cap + raise|held|used" for every node of `levels` (read_levels): a cap
  -- without a raise, a held (unless `held_texts` has a new one) and a used are sent as read.
  local parts = {}
  for i, node in ipairs(nodes) do
    local at = 7 * (i - 1)
    local cap_text = levels[at + 4]
    if levels[at + 7] ~= '' or cap_text == '' then cap_text = fmt(levels[at + 1]) end
    parts[i] = '|' .. node .. '|' .. cap_text .. '|'
      .. (held_texts and held_texts[i] or levels[at + 5]) .. '|' .. levels[at + 6]
  end
  return table.concat(parts)
end

local function bytes_less(a, b)
  -- Byte order, as Python sorts ASCII: Lua's `<` follows the server's collation locale.
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function add_balance(customer_key, path, amount)
  -- The balance drawn on one path (captured, not refunded or repaid); a zero balance goes.
  if amount == 0 then return end
  local left = redis.call('HINCRBY', customer_key, 'b:' .. path, amount)
  if left == 0 then redis.call('HDEL', customer_key, 'b:' .. path) end
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
  -- amount|counter-offer level|installment plan{|node|cap + raise|held|used}", formatted at
  -- once (windows_text says why).
  return string.format('OK|%d|%s|%s|%d|%d|%d|%d|%d|%d|%s|%s%s', reason, level, hold_id,
    available, now, expires, approved, partial, offer, offer_level, plan, levels)
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
  ensure_layout(customer_key)
  change_levels(customer_key, split(h[4], ','), -released, 0)
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
  -- own with its own event, so it may precede the caller's checks. Returns how many. The due
  -- set holds a customer with open holds at or before its earliest expiry (reserve's ZADD LT,
  -- update_due): a customer it holds later than now, or not at all, has none to release.
  local due_at = redis.call('ZSCORE', due_key, customer_id)
  if not due_at or tonumber(due_at) > now then return 0 end
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
  -- anything else by every script that changes state. "0" is read without a conversion.
  local now = redis_now_ms(offset_text == '0' and 0 or tonumber(offset_text))
  local deadline = deadline_text ~= '0' and tonumber(deadline_text) or 0
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

-- reserve.lua
local function reserve_script(KEYS, ARGV)
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
-- ARGV[8] amount_minor             the amount, minor units (1..100000000000)
-- ARGV[9] rule_decline             product-rule decline reason decided by the hot path (0: none)
-- ARGV[10] partial_approval        1 if the product allows it and the request asked for it
-- ARGV[11] installment_months      installment months (0: pay in full)
-- ARGV[12] merchant_id             the merchant id
-- ARGV[13] mcc                     the merchant category code
-- ARGV[14] rules                   the product's rules on the request's channel, one text
--                                  (limits/contracts.PRODUCT_RULES, '|'-joined): product id,
--                                  channel, currency, hold TTL ms, day amount max, day count
--                                  max, month amount max, month count max (minor units or
--                                  counts, 0: no limit), amount min, amount max, capture
--                                  tolerance bps, incremental 0/1, installment fee bps, and
--                                  the limit nodes root first (','-joined)
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}, or ERR|code|detail|at_ms
--   (authorization_reply, limits/lua/_lib.lua; a level's cap_minor is its cap plus any live
--   raise). A retry of an approval answers its first decision with the levels as they stand
--   now.
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, customer_id, fingerprint =
  ARGV[5], ARGV[6], ARGV[7]
-- The product's rules are read once per text and kept (product_rules); the small numbers are
-- compared as text in their usual value, a conversion costing more than the comparison.
local rules = product_rules(ARGV[14])
local amount = int_arg(ARGV[8], 1, 100000000000)
local rule_decline, allow_partial, months = 0, nil, 0
if ARGV[9] ~= '0' then
  rule_decline = int_arg(ARGV[9], 0, 7)
end
if ARGV[10] == '0' then allow_partial = 0
elseif ARGV[10] == '1' then allow_partial = 1 end
if ARGV[11] ~= '0' then
  months = int_arg(ARGV[11], 0, 60)
end
if not (rules and amount and rule_decline and allow_partial and months and months ~= 1) then
  return err(8, 'reserve', now)
end
local nodes, product_id = rules.nodes, rules.product_id

local replay = idempotent_replay(KEYS[5], fingerprint, now)
if replay then return replay end
-- An approval keeps no record: its hold, whose id derives from the record's key, holds the
-- fingerprint, so an open hold costs one key.
-- A retry reads its fingerprint, expiry, amounts, partial level and plan (prior_fields).
local hold_id, retried, prior = approval_hold(base, KEYS[5], now, prior_fields)
local hold_key = base .. 'h:' .. hold_id
if retried then
  if prior[1] ~= fingerprint then return err(1, '', now) end
else
  -- Holds whose TTL has passed are released before the levels are read (a retry changes
  -- nothing, so it reads the levels as they stand).
  release_expired(base, customer_id, KEYS[3], KEYS[4], now)
end

-- One read of the customer hash: status, timezone, the product's windows, then every level
-- (the field names come with the product's rules). A customer of layout 1 has no status
-- field of this layout: it is upgraded and read again.
local values = redis.call('HMGET', KEYS[1], unpack(rules.read_fields))
if not values[1] and upgrade_customer(KEYS[1]) then
  values = redis.call('HMGET', KEYS[1], unpack(rules.read_fields))
end
local status = values[1]

-- Checks, in the documented order (limits/reasons.py). Nothing is written before the point
-- marked below, except the release of holds that had already expired.
if not status then
  return remember(KEYS[5], fingerprint, authorization_reply(1,
    '', '', 0, now, 0, 0, 0, 0, '', '', ''))
end
-- A level's cap is the effective one: the cap plus the node's temporary raise while it lasts.
local levels, available, short_level = read_levels(values, 3, nodes, amount, now)

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
  return authorization_reply(0, '', hold_id, available, expires - rules.ttl_ms, expires,
    approved, partial, 0, prior[5] or '', plan, levels_reply(nodes, levels))
end

local function decline(reason, level, offer, offer_level)
  return remember(KEYS[5], fingerprint, authorization_reply(reason, level, '',
    available, now, 0, 0, 0, offer, offer_level, '', levels_reply(nodes, levels)))
end

if status == 'frozen' then return decline(2, '', 0, '') end
if status == 'closed' then return decline(3, '', 0, '') end
if status == 'overdue' then return decline(11, '', 0, '') end
if rule_decline > 0 then return decline(rule_decline, '', 0, '') end

local day_window, month_window, day_amount, day_count, month_amount, month_count
local day_amount_max, month_amount_max = rules.day_amount_max, rules.month_amount_max
local day_count_max, month_count_max = rules.day_count_max, rules.month_count_max
local amount_reason = 0  -- VELOCITY_AMOUNT_EXCEEDED or INSUFFICIENT_CREDIT, if either applies
if rules.has_velocity then
  day_window, month_window = window_numbers(zone_schedule(base, values[2]), now)
  day_amount, day_count, month_amount, month_count =
    windows_usage(values[3], day_window, month_window)
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
  offer, offer_level = counter_offer(nodes, levels, day_amount_max, day_amount,
    month_amount_max, month_amount)
  if offer < math.max(1, rules.amount_min) then offer = 0 end
  if allow_partial == 0 or offer == 0 then
    local level = ''
    if amount_reason == 10 then level = short_level end
    return decline(amount_reason, level, offer, offer_level)
  end
  approved, partial = offer, 1
end

-- After this point the reservation must succeed.
local node_list = rules.node_list
local expires = fmt(now + rules.ttl_ms)
local approved_text, now_text = fmt(approved), fmt(now)
local plan = ''
if months > 0 then plan = installment_plan(approved, months, rules.fee_bps) end
-- One write of the customer hash: every level with its held (as read above, plus the
-- approval), and the product's velocity windows.
local customer, held_texts, level_fields = {}, {}, rules.level_fields
for i = 1, #nodes do
  local at = 7 * (i - 1)
  held_texts[i] = fmt(levels[at + 2] + approved)
  customer[2 * i - 1] = level_fields[i]
  customer[2 * i] = levels[at + 4] .. ':' .. held_texts[i] .. ':' .. levels[at + 6]
    .. levels[at + 7]
end
if rules.has_velocity then
  customer[#customer + 1] = rules.read_fields[3]
  customer[#customer + 1] = windows_text(day_window, day_amount + approved, day_count + 1,
    month_window, month_amount + approved, month_count + 1)
end
redis.call('HSET', KEYS[1], unpack(customer))
-- The optional fields are written only when they apply: an open hold stays small.
local hold = {'st', 'open', 'c', customer_id, 'p', product_id,
  'a', approved_text, 'cp', '0', 'n', path_id(base, node_list, rules.path_hash),
  'x', expires, 'sq', '1', 'm', ARGV[12],
  'cur', rules.currency, 'fp', fingerprint}
if partial == 1 then
  hold[#hold + 1] = 'pa'
  hold[#hold + 1] = offer_level
end
if rules.tolerance_bps > 0 then
  hold[#hold + 1] = 'tb'
  hold[#hold + 1] = rules.tolerance_text
end
if rules.incremental == 1 then
  hold[#hold + 1] = 'ix'
  hold[#hold + 1] = rules.amount_max_text
  hold[#hold + 1] = 'vx'
  hold[#hold + 1] = rules.velocity_max_text
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
  'merchant_id', ARGV[12], 'mcc', ARGV[13], 'channel', rules.channel,
  'currency', rules.currency,
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
  .. offer_level .. '|' .. plan .. levels_reply(nodes, levels, held_texts)

end
loading_redis.register_function('reserve_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return reserve_script(KEYS, ARGV)
end)

-- increment.lua
local function increment_script(KEYS, ARGV)
-- increment.lua: IncrementAuthorization (hotel, fuel): raise an open hold by an increment.
-- Every level the hold drew on (cap plus any live temporary raise) and the product's
-- amount windows are checked for the increment only; if all pass, the increment is held at
-- every level, the hold's amount (and its installment plan, if any) grows, and the
-- `incremented` event is appended. The hold's expiry does not change (docs/lifecycle.md).
--
-- KEYS[1] hold              the hold (hash)
-- KEYS[2] idempotency       the idempotency record (ii:)
-- KEYS[3] due               the partition's due set
-- KEYS[4] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] hold_id           the hold id
-- ARGV[7] fingerprint       the request fingerprint
-- ARGV[8] amount_minor      the increment, minor units (1..100000000000)
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}|hold_held_minor, or ERR|code|detail|at_ms
--   (authorization_reply, limits/lua/_lib.lua, with approved_amount_minor = the hold's amount
--   after the call, then hold_held_minor = what the hold still holds). A decline carries a
--   counter-offer: the largest increment that fits now.
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, hold_id, fingerprint = ARGV[5], ARGV[6], ARGV[7]
local increment = int_arg(ARGV[8], 1, 100000000000)
if not increment then return err(8, 'increment', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[1], ARGV[4], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

-- Refusals (nothing is remembered): the hold is unknown, closed, or not incremental.
local customer_id, h, refusal = open_hold(KEYS[1], owner, base, hold_id,
  KEYS[3], KEYS[4], now)
if refusal then return refusal end
local hold = redis.call('HMGET', KEYS[1], 'ix', 'vx', 'im', 'x')
if not hold[1] then return err(12, '', now) end
local amount, captured, product_id = tonumber(h[2]), tonumber(h[3]), h[6]
local amount_max, expires = tonumber(hold[1]), tonumber(hold[4])
local velocity_max = split(hold[2], ':')
local day_max, month_max = tonumber(velocity_max[1]), tonumber(velocity_max[2])

local customer_key = base .. 'c:' .. customer_id
local nodes = split(h[4], ',')
ensure_layout(customer_key)
local fields = {'s', 'tz', 'v:' .. product_id}
for i, node in ipairs(nodes) do fields[3 + i] = 'l:' .. node end
-- A level's cap is the effective one: the cap plus the node's temporary raise while it lasts.
local values = redis.call('HMGET', customer_key, unpack(fields))
local read, available, short_level = read_levels(values, 3, nodes, increment, now)
local function levels(extra)
  if extra == 0 then return levels_reply(nodes, read) end
  local held_texts = {}
  for i = 1, #nodes do held_texts[i] = fmt(read[7 * i - 5] + extra) end
  return levels_reply(nodes, read, held_texts)
end
local plan = hold[3] or ''

local function decline(reason, level, offer, offer_level)
  return remember(KEYS[2], fingerprint, authorization_reply(reason, level,
    hold_id, available, now, expires, amount, 0, offer, offer_level, plan, levels(0))
    .. '|' .. fmt(amount - captured))
end

-- Declines, in the documented order; each is remembered for idempotency.
local status = values[1]
if not status then return decline(1, '', 0, '') end
local status_decline = {frozen = 2, closed = 3,
  overdue = 11}
if status_decline[status] then return decline(status_decline[status], '', 0, '') end

-- The windows count the increment's amount (not a purchase) when the product keeps them.
local track = day_max + month_max > 0 or values[3] ~= false
local day_window, month_window, day_amount, day_count, month_amount, month_count
if track then
  day_window, month_window = window_numbers(zone_schedule(base, values[2]), now)
  day_amount, day_count, month_amount, month_count =
    windows_usage(values[3], day_window, month_window)
end
local reason = 0
if amount + increment > amount_max then
  reason = 7
elseif (day_max > 0 and day_amount + increment > day_max)
    or (month_max > 0 and month_amount + increment > month_max) then
  reason = 9
elseif short_level then
  reason = 10
end
if reason > 0 then
  -- The counter-offer: the least of every node's free credit (root first), the room left in
  -- the day's and the month's amount windows and under the product's maximum.
  local offer, offer_level = counter_offer(nodes, read, day_max, day_amount, month_max,
    month_amount)
  if math.max(0, amount_max - amount) < offer then
    offer, offer_level = math.max(0, amount_max - amount), 'amount_max'
  end
  local level = ''
  if reason == 10 then level = short_level end
  return decline(reason, level, offer, offer_level)
end

-- After this point the increment must succeed.
local total = amount + increment
-- One write of the customer hash: every level with its held (as read above, plus the
-- increment), and the product's velocity windows.
local customer = {}
for i = 1, #nodes do
  customer[2 * i - 1] = fields[3 + i]
  local at = 7 * (i - 1)
  customer[2 * i] = read[at + 4] .. ':' .. fmt(read[at + 2] + increment) .. ':'
    .. read[at + 6] .. read[at + 7]
end
if track then
  customer[#customer + 1] = fields[3]
  customer[#customer + 1] = windows_text(day_window, day_amount + increment, day_count,
    month_window, month_amount + increment, month_count)
end
redis.call('HSET', customer_key, unpack(customer))
local seq = tonumber(h[5]) + 1
redis.call('HSET', KEYS[1], 'a', fmt(total), 'sq', fmt(seq))
-- The first approved amount answers a retry of the original authorization.
redis.call('HSETNX', KEYS[1], 'a0', fmt(amount))
local event = {'type', 'incremented', 'event_id', hold_event_id(hold_id, hold[4], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(increment),
  'amount_total_minor', fmt(total), 'at_ms', fmt(now), 'caller', ARGV[3]}
if plan ~= '' then
  -- The plan is recomputed for the new principal, with the same term and fee.
  local old = split(plan, ':')
  plan = installment_plan(total, tonumber(old[1]), tonumber(old[5]))
  redis.call('HSET', KEYS[1], 'im', plan)
  event[#event + 1] = 'installment_plan'
  event[#event + 1] = plan
end
redis.call('XADD', KEYS[4], '*', unpack(event))
return remember(KEYS[2], fingerprint, authorization_reply(0, '', hold_id,
  available - increment, now, expires, total, 0, 0, '', plan, levels(increment)) .. '|'
  .. fmt(total - captured))

end
loading_redis.register_function('increment_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return increment_script(KEYS, ARGV)
end)

-- capture.lua
local function capture_script(KEYS, ARGV)
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
ensure_layout(customer_key)
if excess > 0 then
  -- The excess adds to held + used at every level: it must fit each one's free credit.
  for _, node in ipairs(nodes) do
    local cap, held_text, used, raise = level_texts(redis.call('HGET', customer_key,
      'l:' .. node))
    local free = level_cap(cap, raise, now) - tonumber(held_text) - tonumber(used)
    if excess > free then return err(11, node, now) end
  end
end

-- After this point the capture must succeed.
local released = 0
if final == 1 then released = held - (amount - excess) end
local held_after = held - (amount - excess) - released
local captured_total = captured_before + amount
change_levels(customer_key, nodes, -(amount - excess + released), amount)
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

end
loading_redis.register_function('capture_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return capture_script(KEYS, ARGV)
end)

-- void.lua
local function void_script(KEYS, ARGV)
-- void.lua: cancel an open hold; whatever it still holds is released at every level it drew
-- on. What was captured before stays used.
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
-- Reply: OK|state|released_minor|captured_total_minor|decided_at_ms, or ERR|code|detail|at_ms
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, hold_id, fingerprint = ARGV[5], ARGV[6], ARGV[7]

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[1], ARGV[4], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[1], owner, base, hold_id,
  KEYS[3], KEYS[4], now)
if refusal then return refusal end

-- After this point the void must succeed.
local released = tonumber(h[2]) - tonumber(h[3])
local customer_key = base .. 'c:' .. customer_id
ensure_layout(customer_key)
change_levels(customer_key, split(h[4], ','), -released, 0)
local seq = tonumber(h[5]) + 1
close_hold(KEYS[1], 'voided', seq, now)
local holds_key = base .. 'x:' .. customer_id
redis.call('ZREM', holds_key, hold_id)
update_due(holds_key, KEYS[3], customer_id)
redis.call('XADD', KEYS[4], '*', 'type', 'voided', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'released_minor', fmt(released),
  'captured_total_minor', h[3], 'at_ms', fmt(now), 'caller', ARGV[3])
return remember(KEYS[2], fingerprint, 'OK|voided|' .. fmt(released) .. '|'
  .. h[3] .. '|' .. fmt(now))

end
loading_redis.register_function('void_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return void_script(KEYS, ARGV)
end)

-- refund.lua
local function refund_script(KEYS, ARGV)
-- refund.lua: give back some or all of what a hold captured (a merchant's refund), never more
-- than was captured less what was already refunded. What the purchase still owes on its path
-- (the path's balance, `b:<path>`) is restored at once: it leaves `used` at every level the
-- purchase drew on. What the customer had already repaid (the refund exceeds the balance) is
-- owed back to the customer: it goes to the credit balance `cr`.
--
-- KEYS[1] hold              the hold (hash)
-- KEYS[2] idempotency       the idempotency record
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] hold_id           the hold id
-- ARGV[7] fingerprint       the request fingerprint
-- ARGV[8] amount_minor      the amount to refund, minor units (1..100000000000)
-- Reply: OK|refunded_minor|refunded_total_minor|refundable_minor|restored_minor|decided_at_ms,
--   or ERR|code|detail|at_ms (refundable_minor: what may still be refunded after the call).
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, hold_id, fingerprint = ARGV[5], ARGV[6], ARGV[7]
local amount = int_arg(ARGV[8], 1, 100000000000)
if not amount then return err(8, 'refund', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local _, hidden = hold_owner(KEYS[1], ARGV[4], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

local h = redis.call('HMGET', KEYS[1], 'c', 'cp', 'rf', 'n',
  'sq', 'p', 'm', 'cur', 'x')
if not h[1] then return err(2, '', now) end
h[4] = hold_nodes(base, h[4])
local refunded = tonumber(h[3]) or 0
local refundable = tonumber(h[2]) - refunded
if amount > refundable then return err(9, fmt(refundable), now) end
local customer_key = base .. 'c:' .. h[1]
local balance = tonumber(redis.call('HGET', customer_key, 'b:' .. h[4])) or 0
local restored = math.min(amount, balance)
local overpaid = amount - restored

-- After this point the refund must succeed.
if restored > 0 then
  ensure_layout(customer_key)
  change_levels(customer_key, split(h[4], ','), 0, -restored)
  add_balance(customer_key, h[4], -restored)
end
if overpaid > 0 then redis.call('HINCRBY', customer_key, 'cr', overpaid) end
local seq = tonumber(h[5]) + 1
redis.call('HSET', KEYS[1], 'rf', fmt(refunded + amount), 'sq', fmt(seq))
redis.call('XADD', KEYS[3], '*', 'type', 'refunded', 'event_id', hold_event_id(hold_id, h[9], seq),
  'customer_id', h[1], 'hold_id', hold_id, 'product_id', h[6], 'merchant_id', h[7],
  'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'restored_minor', fmt(restored), 'overpaid_minor', fmt(overpaid),
  'refunded_total_minor', fmt(refunded + amount), 'at_ms', fmt(now),
  'caller', ARGV[3])
return remember(KEYS[2], fingerprint, 'OK|' .. fmt(amount) .. '|'
  .. fmt(refunded + amount) .. '|' .. fmt(refundable - amount) .. '|' .. fmt(restored) .. '|'
  .. fmt(now))

end
loading_redis.register_function('refund_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return refund_script(KEYS, ARGV)
end)

-- reverse.lua
local function reverse_script(KEYS, ARGV)
-- reverse.lua: ISO 8583 0400. A terminal that got no answer reverses its authorization by
-- the ORIGINAL request's idempotency key. If the original was approved and its hold is still
-- open, the hold's remainder is released at every level and the hold closes as `reversed`.
-- If the original was never seen, a tombstone takes its idempotency record, so the original
-- arriving late (with any payload) and every retry of it are declined REVERSED. The first
-- answer is stored in the reversal's own record and returned to every repeat.
--
-- A caller bound to merchants sees only its merchants' originals: an approved original whose
-- hold is another merchant's, or a stored answer naming such a hold, is answered as an
-- original never seen (`tombstoned`) and nothing is written: a tombstone or a record here
-- would answer the original's own merchant (docs/lifecycle.md, "Merchant binding").
--
-- KEYS[1] customer                   the customer hash
-- KEYS[2] customer_holds             the customer's open holds (zset)
-- KEYS[3] due                        the partition's due set
-- KEYS[4] outbox                     the partition's outbox (stream)
-- KEYS[5] original_idempotency       the original's authorize idempotency record (`ia:`): a
--                                    decline's, or a tombstone; an approval has none, its
--                                    hold's id derives from this key (derived_hold_id)
-- KEYS[6] reversal                   the reversal's record (`iz:`)
-- ARGV[1] clock_offset_ms            ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms                the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller                     the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope             the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base                       the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id                the customer id
-- ARGV[7] original_idempotency_key   the original's idempotency key
-- Reply: OK|outcome|hold_id|released_minor|decided_at_ms, outcome one of released,
--   already_closed, original_declined, tombstoned.
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local base, customer_id, original_key =
  ARGV[5], ARGV[6], ARGV[7]
-- A reversal has no payload of its own: every repeat is the same request.
local REVERSAL = 'reverse'
local scope = ARGV[4]
local unseen = 'OK|tombstoned||0|' .. fmt(now)

local replay = idempotent_replay(KEYS[6], REVERSAL, now)
if replay then
  local named = string.match(replay, '^OK|[%a_]+|([^|]+)|')
  if scope == '' or not named
      or in_scope(scope, redis.call('HGET', base .. 'h:' .. named, 'm')) then
    return replay
  end
  return unseen
end

local outcome, hold_id, released = 'tombstoned', '', 0
local product_id, merchant_id, currency, nodes = '', '', '', ''
local h = nil
-- A release is an event of the hold's; anything else is named by the reversal and its time.
local event_id = 'z:' .. customer_id .. '|' .. original_key .. ':' .. fmt(now)
local original = redis.call('GET', KEYS[5])
local approved_id, approval_exists = approval_hold(base, KEYS[5], now)
local hold_key = base .. 'h:' .. approved_id
if original and string.sub(original, 1, #'reversed' + 1) ~= 'reversed' .. '\n' then
  outcome = 'original_declined'  -- only declines keep a record
elseif not original and approval_exists then
  local owner, hidden = hold_owner(hold_key, scope, now)
  if hidden then return unseen end
  hold_id = approved_id
  -- Releases what had expired first (each a complete change with its own event); a hold
  -- that is closed is refused, which here means closed.
  local _, open, refusal = open_hold(hold_key, owner, base, hold_id, KEYS[3],
    KEYS[4], now)
  if refusal then outcome = 'already_closed' else outcome, h = 'released', open end
end
-- (An earlier reversal's tombstone whose own record has gone answers tombstoned again.)

-- After this point the reversal must succeed.
if outcome == 'tombstoned' and not original then
  remember(KEYS[5], 'reversed', authorization_reply(12, '', '', 0,
    now, 0, 0, 0, 0, '', '', ''))
elseif outcome == 'released' then
  event_id = hold_event_id(hold_id, h[10], tonumber(h[5]) + 1)
  released = tonumber(h[2]) - tonumber(h[3])
  nodes, product_id, merchant_id, currency = h[4], h[6], h[7], h[8]
  ensure_layout(KEYS[1])
  change_levels(KEYS[1], split(nodes, ','), -released, 0)
  close_hold(hold_key, 'reversed', tonumber(h[5]) + 1, now)
  redis.call('ZREM', KEYS[2], hold_id)
  update_due(KEYS[2], KEYS[3], customer_id)
end
redis.call('XADD', KEYS[4], '*', 'type', 'reversed',
  'event_id', event_id, 'customer_id', customer_id,
  'hold_id', hold_id, 'product_id', product_id, 'merchant_id', merchant_id,
  'currency', currency, 'nodes', nodes, 'outcome', outcome,
  'released_minor', fmt(released), 'at_ms', fmt(now), 'caller', ARGV[3])
local reply = 'OK|' .. outcome .. '|' .. hold_id .. '|' .. fmt(released) .. '|' .. fmt(now)
-- The answer never outlives what it is about: a reversal of a declined original or of a
-- closed hold is forgotten with that record or hold, so a key used again later for a new
-- purchase is reversed afresh.
local about = nil
if outcome == 'original_declined' then about = KEYS[5] end
if outcome == 'already_closed' then about = hold_key end
local left_ms = -1
if about then left_ms = redis.call('PTTL', about) end
if left_ms > 0 then
  redis.call('SET', KEYS[6], REVERSAL .. '\n' .. reply, 'PX', left_ms)
  return reply
end
return remember(KEYS[6], REVERSAL, reply)

end
loading_redis.register_function('reverse_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return reverse_script(KEYS, ARGV)
end)

-- force_capture.lua
local function force_capture_script(KEYS, ARGV)
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
-- KEYS[1] customer          the customer hash
-- KEYS[2] idempotency       the idempotency record (`if:`)
-- KEYS[3] outbox            the partition's outbox (stream)
-- KEYS[4] hold              the new hold (hash)
-- KEYS[5] original_hold     the original hold (the new hold's key again if none)
-- KEYS[6] customer_holds    the customer's open holds (sorted set, by expiry ms)
-- KEYS[7] due               the partition's due set
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    the caller's merchants ("": all); others' holds are not found
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- ARGV[7] hold_id           the new hold's id
-- ARGV[8] fingerprint       the request fingerprint
-- ARGV[9] product_id        the product id
-- ARGV[10] amount_minor     the amount, minor units (1..100000000000)
-- ARGV[11] merchant_id      the merchant id
-- ARGV[12] mcc              the merchant category code
-- ARGV[13] channel          the channel
-- ARGV[14] currency         the currency
-- ARGV[15] original_hold_id the original hold's id ("" if none)
-- ARGV[16..] nodes          the product's limit nodes for the channel, root first
-- Reply: OK|hold_id|over_limit_levels|decided_at_ms{|node|cap_minor|held_minor|used_minor},
--   or ERR|code|detail|at_ms (over_limit_levels: the over-limit nodes, comma-joined;
--   cap_minor: the cap plus any live raise).
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local customer_id, hold_id, fingerprint, product_id =
  ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local amount = int_arg(ARGV[10], 1, 100000000000)
local original_id = ARGV[15]
local nodes = {}
for i = 16, #ARGV do nodes[#nodes + 1] = ARGV[i] end
if not (amount and original_id and #nodes >= 1) then
  return err(8, 'force_capture', now)
end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

-- What had expired is released first, as Capture and Void do: the customer's due holds and
-- the original itself (if it is this customer's), so that the original counts as expired and
-- the over-limit check sees what is really held. Each release is a complete change of its own.
local base = ARGV[5]
release_expired(base, customer_id, KEYS[7], KEYS[3], now)
-- An original of a merchant outside the caller's scope is treated as one that is gone: it is
-- neither released, checked nor marked, so the answer does not tell that it exists.
local owner = false
if original_id ~= '' then
  local o = redis.call('HMGET', KEYS[5], 'c', 'm')
  if in_scope(ARGV[4], o[2]) then owner = o[1] end
end
if owner == customer_id then
  release_if_due(base, customer_id, original_id, KEYS[7], KEYS[3], now)
end

-- Refusals, in order. Any status may be force captured: the purchase already happened.
ensure_layout(KEYS[1])
if redis.call('HEXISTS', KEYS[1], 's') == 0 then
  return err(7, '', now)
end
if owner then
  -- An original that is gone (never made, or dropped after its retention) is no obstacle.
  -- A voided, reversed or expired one may be force captured once.
  local o = redis.call('HMGET', KEYS[5], 'st', 'x', 'cl',
    'fx')
  if owner ~= customer_id then return err(15, '', now) end
  if o[1] == 'open' then return err(14, o[2], now) end
  if o[1] == 'captured' then return err(5, o[3], now) end
  if o[4] then return err(17, o[4], now) end
end

local caps, helds, useds, over = {}, {}, {}, {}
for i, node in ipairs(nodes) do
  local cap, held, used, raise = level_texts(redis.call('HGET', KEYS[1],
    'l:' .. node))
  caps[i], helds[i], useds[i] = level_cap(cap, raise, now), tonumber(held), tonumber(used)
  if helds[i] + useds[i] + amount > caps[i] then over[#over + 1] = node end
end

-- After this point the force capture must succeed.
local node_list = table.concat(nodes, ',')
local over_list = table.concat(over, ',')
local levels = {}
change_levels(KEYS[1], nodes, 0, amount)
for i, node in ipairs(nodes) do
  levels[#levels + 1] = '|' .. node .. '|' .. fmt(caps[i]) .. '|' .. fmt(helds[i]) .. '|'
    .. fmt(useds[i] + amount)
end
add_balance(KEYS[1], node_list, amount)
redis.call('HSET', KEYS[4], 'c', customer_id, 'p', product_id,
  'a', fmt(amount), 'cp', fmt(amount), 'n', node_list,
  'm', ARGV[11], 'cur', ARGV[14], 't', fmt(now),
  'fc', '1')
if original_id ~= '' then redis.call('HSET', KEYS[4], 'oh', original_id) end
-- The original keeps its retention (HSET leaves its expiry); one that is gone gets no mark.
if owner then redis.call('HSET', KEYS[5], 'fx', hold_id) end
close_hold(KEYS[4], 'captured', 1, now)
redis.call('XADD', KEYS[3], '*', 'type', 'force_captured', 'event_id', hold_id .. ':1',
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[11], 'mcc', ARGV[12], 'channel', ARGV[13],
  'currency', ARGV[14],
  'nodes', node_list, 'amount_minor', fmt(amount), 'over_limit', over_list,
  'original_hold_id', original_id, 'at_ms', fmt(now), 'caller', ARGV[3])
return remember(KEYS[2], fingerprint, 'OK|' .. hold_id .. '|' .. over_list
  .. '|' .. fmt(now) .. table.concat(levels))

end
loading_redis.register_function('force_capture_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return force_capture_script(KEYS, ARGV)
end)

-- repay.lua
local function repay_script(KEYS, ARGV)
-- repay.lua: the billing system reports a customer's repayment. The amount pays the
-- customer's path balances (`b:<path>`, captured and not refunded or repaid) greedily in the
-- allocation order the gateway passes (every path of the catalog: products by repayment
-- priority then id, each product's channels in catalog order), then the customer's other
-- paths by name. Each allocation leaves `used` at every level of its path at once and is one
-- `repaid` event; what exceeds every balance is owed back to the customer (`cr`, one
-- `overpaid` event). Any status may repay, and the status does not change.
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] idempotency       the idempotency record (`ip:`)
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline, ms, this clock (0: none): refused past it
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- ARGV[7] fingerprint       the request fingerprint
-- ARGV[8] amount_minor      the amount repaid, minor units (1..100000000000)
-- ARGV[9..] paths           the allocation order: at most 64 paths (nodes root
--                           first, joined by ',')
-- Reply: OK|repaid_minor|overpaid_minor|outstanding_minor|decided_at_ms{|path|amount_minor},
--   or ERR|code|detail|at_ms (repaid + overpaid is the amount; outstanding_minor: the sum of
--   the path balances after the call).
local now, late = call_time(ARGV[1], ARGV[2])
if late then return late end
local customer_id, fingerprint = ARGV[6], ARGV[7]
local amount = int_arg(ARGV[8], 1, 100000000000)
if not amount or #ARGV - (9 - 1) > 64 then
  return err(8, 'repay', now)
end

local replay = idempotent_replay(KEYS[2], fingerprint, now)
if replay then return replay end

ensure_layout(KEYS[1])
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return err(7, '', now) end

local balances, outstanding = {}, 0
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #'b:') == 'b:' then
    balances[string.sub(fields[i], #'b:' + 1)] = tonumber(fields[i + 1])
    outstanding = outstanding + tonumber(fields[i + 1])
  end
end
local walk, listed, others = {}, {}, {}
for i = 9, #ARGV do
  if not listed[ARGV[i]] then
    listed[ARGV[i]] = true
    walk[#walk + 1] = ARGV[i]
  end
end
for path in pairs(balances) do
  if not listed[path] then others[#others + 1] = path end
end
table.sort(others, bytes_less)
for _, path in ipairs(others) do walk[#walk + 1] = path end

-- At most 64 allocations (each is one event): the walk's work is bounded.
local left, allocations = amount, {}
for _, path in ipairs(walk) do
  if left == 0 or #allocations == 64 then break end
  local balance = balances[path] or 0
  if balance > 0 then
    local paid = math.min(left, balance)
    allocations[#allocations + 1] = {path, paid}
    left = left - paid
  end
end

-- After this point the repayment must succeed.
local function event(kind, nodes, value)
  local seq = redis.call('HINCRBY', KEYS[1], 'sq', 1)
  redis.call('XADD', KEYS[3], '*', 'type', kind,
    'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
    'nodes', nodes, 'amount_minor', fmt(value), 'at_ms', fmt(now), 'caller', ARGV[3])
end
local reply = {}
for _, allocation in ipairs(allocations) do
  local path, paid = allocation[1], allocation[2]
  change_levels(KEYS[1], split(path, ','), 0, -paid)
  add_balance(KEYS[1], path, -paid)
  event('repaid', path, paid)
  reply[#reply + 1] = '|' .. path .. '|' .. fmt(paid)
end
if left > 0 then
  redis.call('HINCRBY', KEYS[1], 'cr', left)
  event('overpaid', '', left)
end
return remember(KEYS[2], fingerprint, 'OK|' .. fmt(amount - left) .. '|'
  .. fmt(left) .. '|' .. fmt(outstanding - (amount - left)) .. '|' .. fmt(now)
  .. table.concat(reply))

end
loading_redis.register_function('repay_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return repay_script(KEYS, ARGV)
end)

-- set_raise.lua
local function set_raise_script(KEYS, ARGV)
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

ensure_layout(KEYS[1])
local stored = redis.call('HGET', KEYS[1], 'l:' .. node)
local cap, held, used, before = level_texts(stored)
local before_raise, before_expires = '0', '0'
if before ~= '' then before_raise, before_expires = string.match(before, '^:(%d+):(%d+)$') end

local seq = redis.call('HINCRBY', KEYS[1], 'sq', 1)
if raise > 0 then
  redis.call('HSET', KEYS[1], 'l:' .. node,
    cap .. ':' .. held .. ':' .. used .. ':' .. fmt(raise) .. ':' .. fmt(expires))
else
  expires = 0
  if stored then
    redis.call('HSET', KEYS[1], 'l:' .. node, cap .. ':' .. held .. ':' .. used)
  end
end
redis.call('XADD', KEYS[2], '*', 'type', 'limit_raised',
  'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
  'node', node, 'raise_minor', fmt(raise), 'expires_at_ms', fmt(expires), 'at_ms', fmt(now),
  'caller', ARGV[3])
if cap == '' then cap = '0' end
return 'OK|' .. cap .. '|' .. fmt(raise) .. '|' .. held .. '|' .. used .. '|' .. fmt(now) .. '|'
  .. before_raise .. '|' .. before_expires

end
loading_redis.register_function('set_raise_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return set_raise_script(KEYS, ARGV)
end)

-- put_customer.lua
local function put_customer_script(KEYS, ARGV)
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
local new_caps, caps_text, named = {}, {}, {}
for i = 9, #ARGV, 2 do
  local cap = int_arg(ARGV[i + 1], 0, 10000000000000)
  if not cap then return err(8, 'caps_minor', now) end
  if not new_caps[ARGV[i]] then named[#named + 1] = ARGV[i] end
  new_caps[ARGV[i]] = fmt(cap)
  caps_text[#caps_text + 1] = ARGV[i] .. '=' .. fmt(cap)
end

ensure_layout(KEYS[1])
local fields = redis.call('HGETALL', KEYS[1])
local status_before, caps_before, kept, writes, dropped = '', {}, {}, {}, {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if field == 's' then status_before = fields[i + 1] end
  if string.sub(field, 1, #'l:') == 'l:' then
    -- A level keeps its usage and raise under its new cap; a level left without a cap goes
    -- once nothing else is in it.
    local node = string.sub(field, #'l:' + 1)
    local cap, held, used, raise = level_texts(fields[i + 1])
    if cap ~= '' then caps_before[#caps_before + 1] = node .. '=' .. cap end
    local new_cap = new_caps[node] or ''
    kept[node] = true
    if new_cap == '' and held == '0' and used == '0' and raise == '' then
      dropped[#dropped + 1] = field
    elseif new_cap ~= cap then
      writes[#writes + 1] = field
      writes[#writes + 1] = new_cap .. ':' .. held .. ':' .. used .. raise
    end
  end
end
table.sort(caps_before, bytes_less)
for _, node in ipairs(named) do
  if not kept[node] then
    writes[#writes + 1] = 'l:' .. node
    writes[#writes + 1] = new_caps[node] .. ':0:0'
  end
end

if #dropped > 0 then redis.call('HDEL', KEYS[1], unpack(dropped)) end
local seq = redis.call('HINCRBY', KEYS[1], 'sq', 1)
redis.call('HSET', KEYS[1], 's', status, 'tz', ARGV[7],
  'lv', '2', unpack(writes))
redis.call('HSET', KEYS[3], ARGV[7], ARGV[8])
redis.call('XADD', KEYS[2], '*', 'type', 'customer_put',
  'event_id', 'c:' .. ARGV[5] .. ':' .. fmt(seq),
  'customer_id', ARGV[5], 'status', status,
  'timezone', ARGV[7], 'caps', table.concat(caps_text, ','), 'at_ms', fmt(now),
  'caller', ARGV[3])
return 'OK|' .. fmt(now) .. '|' .. status_before .. '|' .. table.concat(caps_before, ',')

end
loading_redis.register_function('put_customer_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return put_customer_script(KEYS, ARGV)
end)

-- expire.lua
local function expire_script(KEYS, ARGV)
-- expire.lua: release the customer's holds whose TTL has passed (the gateway's sweeper calls
-- it for the customers the partition's due set names; every other script does the same
-- lazily for the customer it touches). A hold is released exactly once: only an open hold is
-- released, and it is closed in the same step.
--
-- KEYS[1] customer_holds    the customer's open holds (zset)
-- KEYS[2] due               the partition's due set
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline (ignored: no caller waits on this script)
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- Reply: released|now_ms (released: how many holds were released)
local now = redis_now_ms(tonumber(ARGV[1]))
local released = release_expired(ARGV[5], ARGV[6], KEYS[2],
  KEYS[3], now)
if released == 0 then
  -- Nothing was due: the due entry was early (the hold was captured or voided meanwhile).
  update_due(KEYS[1], KEYS[2], ARGV[6])
end
return fmt(released) .. '|' .. fmt(now)

end
loading_redis.register_function('expire_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return expire_script(KEYS, ARGV)
end)

-- credit.lua
local function credit_script(KEYS, ARGV)
-- credit.lua: the customer's limits as they stand now, after releasing expired holds.
--
-- KEYS[1] customer          the customer hash
-- KEYS[2] due               the partition's due set
-- KEYS[3] outbox            the partition's outbox (stream)
-- ARGV[1] clock_offset_ms   ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       ignored: a read (the expired holds it releases, any later call would)
-- ARGV[3] caller            the caller's name, carried by every event the call writes
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] base              the partition key base "cg:{p:NNN}:"
-- ARGV[6] customer_id       the customer id
-- Reply: {now_ms, field, value, ...} (the customer hash, then 'tzs' and the schedule
--   of the customer's zone from the partition's shared `tz` hash), or {now_ms} if the
--   customer is unknown.
local now = redis_now_ms(tonumber(ARGV[1]))
if redis.call('EXISTS', KEYS[1]) == 0 then return {fmt(now)} end
release_expired(ARGV[5], ARGV[6], KEYS[2], KEYS[3], now)
ensure_layout(KEYS[1])
local reply = redis.call('HGETALL', KEYS[1])
table.insert(reply, 1, fmt(now))
reply[#reply + 1] = 'tzs'
reply[#reply + 1] = zone_schedule(ARGV[5],
  redis.call('HGET', KEYS[1], 'tz'))
return reply

end
loading_redis.register_function('credit_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return credit_script(KEYS, ARGV)
end)

-- due.lua
local function due_script(KEYS, ARGV)
-- due.lua: the customers of one partition whose earliest open hold has expired by Redis'
-- clock (the sweeper then runs expire.lua for each). Reads only.
--
-- KEYS[1] due               the partition's due set (zset: customer id, earliest expiry ms)
-- ARGV[1] clock_offset_ms   added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms       the caller's deadline (ignored: no caller waits on this script)
-- ARGV[3] caller            ignored: nothing is written
-- ARGV[4] merchant_scope    ignored: no hold is named
-- ARGV[5] count_max         at most this many customers (1..128)
-- Reply: {now_ms, customer_id, ...}
local now = redis_now_ms(tonumber(ARGV[1]))
local count_max = int_arg(ARGV[5], 1, 128)
if not count_max then return err(8, 'due', now) end
local reply = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, count_max)
table.insert(reply, 1, fmt(now))
return reply

end
loading_redis.register_function('due_v2', function(KEYS, ARGV)
  if not string then redis, math, string, table, tonumber, ipairs, unpack = standard_globals() end
  return due_script(KEYS, ARGV)
end)

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
local prior_fields = {H_FINGERPRINT, H_EXPIRES, H_AMOUNT, H_FIRST_AMOUNT, H_PARTIAL_LEVEL,
  H_PLAN, H_NODES, H_CATALOG_VERSION, H_HOLD_TTL_MS}

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
  return redis.call('HGET', base .. K_TIMEZONES, zone) or '0'
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
  return string.sub(base, PREFIX_LENGTH + 5, PREFIX_LENGTH + 7) .. '-'
    .. string.sub(redis.sha1hex(record_key .. '|' .. fmt(epoch)), 1, HOLD_TOKEN_LENGTH)
end

local function approval_hold(base, record_key, now, fields)
  -- The hold an approval with this record key made: its id in this idempotency epoch or the
  -- one before, if that hold exists (a retry finds it for at least IDEMPOTENCY_TTL_S); else
  -- the id a new approval takes now. Returns (hold id, whether it exists, and with `fields`,
  -- whose first every approval's hold has, their values in the hold found).
  local epoch = math.floor(now / (IDEMPOTENCY_TTL_S * 1000))
  local current = derived_hold_id(base, record_key, epoch)
  local previous = derived_hold_id(base, record_key, epoch - 1)
  local current_key = base .. K_HOLD .. current
  -- One EXISTS of both keys answers the usual case (a new purchase: neither exists).
  if redis.call('EXISTS', current_key, base .. K_HOLD .. previous) == 0 then
    return current, false
  end
  if fields then
    local values = redis.call('HMGET', current_key, unpack(fields))
    if values[1] then return current, true, values end
    return previous, true, redis.call('HMGET', base .. K_HOLD .. previous, unpack(fields))
  end
  if redis.call('EXISTS', current_key) == 1 then return current, true end
  return previous, true
end

local function path_hash(node_list, version, ttl_text)
  -- "#" and 10 hex digits of SHA-1 of "<node list>|<catalog version>|<hold TTL ms>": the id
  -- path_id tries.
  return PATH_ID_MARK .. string.sub(redis.sha1hex(node_list .. '|' .. version .. '|'
    .. ttl_text), 1, 10)
end

local function path_id(base, node_list, id, version, ttl_text)
  -- The short id a hold stores for its nodes and the catalog version and hold TTL that
  -- approved it: `id` (path_hash of the three), kept in the partition's `paths` hash as id ->
  -- the node list (what layout 2 reads too), id .. PATH_VERSION_MARK -> the version and
  -- id .. PATH_TTL_MARK -> the TTL, so a hold pays no byte for them. If the id is taken by
  -- another list: nil (the hold keeps all three). An id that holds the list names the version
  -- and TTL as surely as it names the list (all would need SHA-1's first 40 bits to collide),
  -- so they are not read back.
  local known = redis.call('HGET', base .. K_PATHS, id)
  if not known then
    redis.call('HSET', base .. K_PATHS, id, node_list, id .. PATH_VERSION_MARK, version,
      id .. PATH_TTL_MARK, ttl_text)
    return id
  end
  if known == node_list then return id end
  return nil
end

local function hold_version(base, rules, stored_nodes, stored_version)
  -- The catalog version that approved a hold: its own field if it has one; the version of
  -- `rules` if its path id is theirs (a retry on the catalog that approved it reads nothing);
  -- else its path id's in the `paths` hash; '' for a hold of layout 2 (none anywhere).
  -- `rules` may be nil (replay: no product rules at hand).
  if stored_version then return stored_version end
  if rules and stored_nodes == rules.path_hash then return rules.catalog_version end
  if string.sub(stored_nodes, 1, 1) ~= PATH_ID_MARK then return '' end
  return redis.call('HGET', base .. K_PATHS, stored_nodes .. PATH_VERSION_MARK) or ''
end

local function hold_ttl(base, rules, stored_nodes, stored_ttl)
  -- The hold TTL (ms) of the rules that approved a hold, as hold_version finds its version:
  -- its own field, the rules' if its path id is theirs, else its path id's in the `paths`
  -- hash. A hold of layout 2 (or a path id without a TTL) recorded none: the TTL of `rules`,
  -- or nil without rules.
  if stored_ttl then return tonumber(stored_ttl) end
  if rules and stored_nodes == rules.path_hash then return rules.ttl_ms end
  local ttl
  if string.sub(stored_nodes, 1, 1) == PATH_ID_MARK then
    ttl = redis.call('HGET', base .. K_PATHS, stored_nodes .. PATH_TTL_MARK)
  end
  if ttl then return tonumber(ttl) end
  if rules then return rules.ttl_ms end
  return nil
end

local function hour_ranges(text)
  -- The allowed hours of product rules: "0" (any time: an empty list) or "<start>:<end>"
  -- minutes of the day joined by HOURS_SEPARATOR, start < end <= start + 1440 (an end above
  -- 1440 crosses midnight), as a flat list {start, end, ...}; nil if malformed.
  local ranges = {}
  if text == '0' then return ranges end
  for _, part in ipairs(split(text, HOURS_SEPARATOR)) do
    local first, last = string.match(part, '^(%d+):(%d+)$')
    if not first then return nil end
    first, last = tonumber(first), tonumber(last)
    if first >= 1440 or last <= first or last > first + 1440 then return nil end
    ranges[#ranges + 1], ranges[#ranges + 2] = first, last
  end
  if #ranges == 0 then return nil end
  return ranges
end

local function within_hours(ranges, schedule, now_ms)
  -- Whether the local minute of the day at now_ms (the customer's UTC-offset schedule) falls
  -- in one of the ranges (hour_ranges): [start, end), or before end - 1440 past midnight.
  local now_s = math.floor(now_ms / 1000)
  local minute = math.floor(((now_s + utc_offset_s(schedule, now_s)) % 86400) / 60)
  for i = 1, #ranges, 2 do
    if (minute >= ranges[i] and minute < ranges[i + 1]) or minute + 1440 < ranges[i + 1] then
      return true
    end
  end
  return false
end

local function product_rules(text)
  -- reserve's product rules (limits/contracts.PRODUCT_RULES) read from their text and checked
  -- (nil if any field is out of bounds), with what every call of them derives: the nodes,
  -- the field names, the path's id. Read once per text and kept; a kept table never changes.
  local kept = rules_kept[text]
  if kept then return kept end
  local p = split(text, RULES_SEPARATOR)
  if #p ~= RULE_FIELDS then return nil end
  local r = {product_id = p[RULE_PRODUCT_ID], channel = p[RULE_CHANNEL],
    currency = p[RULE_CURRENCY], node_list = p[RULE_NODES],
    ttl_ms = int_arg(p[RULE_HOLD_TTL_MS], 1, HOLD_TTL_MS_MAX),
    day_amount_max = int_arg(p[RULE_DAY_AMOUNT_MAX_MINOR], 0, VELOCITY_AMOUNT_MINOR_MAX),
    day_count_max = int_arg(p[RULE_DAY_COUNT_MAX], 0, VELOCITY_AMOUNT_MINOR_MAX),
    month_amount_max = int_arg(p[RULE_MONTH_AMOUNT_MAX_MINOR], 0, VELOCITY_AMOUNT_MINOR_MAX),
    month_count_max = int_arg(p[RULE_MONTH_COUNT_MAX], 0, VELOCITY_AMOUNT_MINOR_MAX),
    amount_min = int_arg(p[RULE_AMOUNT_MIN_MINOR], 0, AMOUNT_MINOR_MAX),
    amount_max = int_arg(p[RULE_AMOUNT_MAX_MINOR], 0, AMOUNT_MINOR_MAX),
    tolerance_bps = int_arg(p[RULE_CAPTURE_TOLERANCE_BPS], 0, CAPTURE_TOLERANCE_BPS_MAX),
    incremental = int_arg(p[RULE_INCREMENTAL], 0, 1),
    fee_bps = int_arg(p[RULE_INSTALLMENT_FEE_BPS], 0, INSTALLMENT_FEE_BPS_MAX),
    effective_from = int_arg(p[RULE_EFFECTIVE_FROM_MS], 0, EFFECTIVE_MS_MAX),
    effective_until = int_arg(p[RULE_EFFECTIVE_UNTIL_MS], 0, EFFECTIVE_MS_MAX),
    first_max = int_arg(p[RULE_FIRST_PURCHASE_MAX_MINOR], 0, AMOUNT_MINOR_MAX),
    hours = hour_ranges(p[RULE_ALLOWED_HOURS]),
    catalog_version = p[RULE_CATALOG_VERSION],
    nodes = split(p[RULE_NODES], NODES_SEPARATOR)}
  if not (r.ttl_ms and r.day_amount_max and r.day_count_max and r.month_amount_max
      and r.month_count_max and r.amount_min and r.amount_max and r.tolerance_bps
      and r.incremental and r.fee_bps and r.effective_from and r.effective_until
      and r.first_max and r.hours and #r.nodes >= 1) then
    return nil
  end
  -- The elements a product may leave out cost it one test each: false when not set.
  r.has_effective = r.effective_from > 0 or r.effective_until > 0
  if r.effective_until == 0 then r.effective_until = EFFECTIVE_MS_MAX + 1 end
  if #r.hours == 0 then r.hours = false end
  r.has_velocity = r.day_amount_max + r.day_count_max + r.month_amount_max
    + r.month_count_max > 0
  r.ttl_text = fmt(r.ttl_ms)
  r.path_hash = path_hash(r.node_list, r.catalog_version, r.ttl_text)
  -- The texts a hold keeps of the rules (reserve.lua's optional hold fields).
  r.tolerance_text, r.amount_max_text = fmt(r.tolerance_bps), fmt(r.amount_max)
  r.velocity_max_text = fmt(r.day_amount_max) .. ':' .. fmt(r.month_amount_max)
  -- The fields reserve reads: status, timezone, the product's windows, then every level.
  r.read_fields, r.level_fields = {F_STATUS, F_TIMEZONE, F_VELOCITY .. r.product_id}, {}
  for i, node in ipairs(r.nodes) do
    r.level_fields[i] = F_LEVEL .. node
    r.read_fields[3 + i] = r.level_fields[i]
  end
  -- A product with a first-purchase maximum reads its marker after the levels.
  r.first_field = false
  if r.first_max > 0 then
    r.first_field = F_FIRST_PURCHASE .. r.product_id
    r.read_fields[#r.read_fields + 1] = r.first_field
    r.first_at = #r.read_fields
    -- What a first purchase's hold may grow to: the first-purchase maximum, or the
    -- channel's maximum where that is lower.
    r.first_max_text = fmt(math.min(r.first_max, r.amount_max))
  end
  if rules_kept_count >= PRODUCT_RULES_KEPT_MAX then rules_kept, rules_kept_count = {}, 0 end
  rules_kept[text], rules_kept_count = r, rules_kept_count + 1
  return r
end

local function hold_nodes(base, stored)
  -- A hold's nodes, comma-joined, from its `n` field (a path id or the list itself).
  if string.sub(stored, 1, 1) ~= PATH_ID_MARK then return stored end
  return redis.call('HGET', base .. K_PATHS, stored)
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
  -- A customer written by layout 1 (its status in V1_STATUS, a field per number) is rewritten
  -- in this layout by the first script that touches it, before that script reads it: true if
  -- the customer was one. Balances, the event sequence and the timezone keep their fields.
  local all = redis.call('HGETALL', customer_key)
  local status, old, nodes, levels, products, windows = nil, {}, {}, {}, {}, {}
  local slot = {[V1_CAP] = 1, [V1_HELD] = 2, [V1_USED] = 3, [V1_RAISE] = 4,
    [V1_VELOCITY_DAY] = 1, [V1_VELOCITY_MONTH] = 2}
  for i = 1, #all, 2 do
    local field, value = all[i], all[i + 1]
    local kind, name = string.match(field, '^(%a+:)(.*)$')
    if field == V1_STATUS then
      status, old[#old + 1] = value, field
    elseif kind == V1_CAP or kind == V1_HELD or kind == V1_USED or kind == V1_RAISE then
      if not levels[name] then levels[name], nodes[#nodes + 1] = {'', '0', '0', ''}, name end
      if kind == V1_RAISE then value = ':' .. value end
      levels[name][slot[kind]], old[#old + 1] = value, field
    elseif kind == V1_VELOCITY_DAY or kind == V1_VELOCITY_MONTH then
      if not windows[name] then
        windows[name], products[#products + 1] = {'0:0:0', '0:0:0'}, name
      end
      windows[name][slot[kind]], old[#old + 1] = value, field
    end
  end
  if not status then return false end
  local new = {F_STATUS, status, F_LAYOUT, CUSTOMER_LAYOUT}
  for _, node in ipairs(nodes) do
    local l = levels[node]
    new[#new + 1] = F_LEVEL .. node
    new[#new + 1] = l[1] .. ':' .. l[2] .. ':' .. l[3] .. l[4]
  end
  for _, product in ipairs(products) do
    local w = windows[product]
    new[#new + 1] = F_VELOCITY .. product
    new[#new + 1] = w[1] .. ':' .. w[2]
  end
  redis.call('HDEL', customer_key, unpack(old))
  redis.call('HSET', customer_key, unpack(new))
  return true
end

local function ensure_layout(customer_key)
  -- Every script upgrades a layout-1 customer before it reads or writes its levels.
  if redis.call('HEXISTS', customer_key, V1_STATUS) == 1 then upgrade_customer(customer_key) end
end

local function change_levels(customer_key, nodes, held_by, used_by)
  -- Adds held_by and used_by to the level of every node of `nodes` (a node listed twice, twice):
  -- one HMGET and one HSET of the customer hash. A level not kept yet starts with no cap.
  local fields = {}
  for i, node in ipairs(nodes) do fields[i] = F_LEVEL .. node end
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
  local left = redis.call('HINCRBY', customer_key, F_BALANCE .. path, amount)
  if left == 0 then redis.call('HDEL', customer_key, F_BALANCE .. path) end
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
                                   partial, offer, offer_level, plan, levels, tail)
  -- reserve's and increment's reply (limits/client.decode_authorization):
  -- "OK|reason|level|hold id|available|now|expires|approved amount|partial 0/1|counter-offer
  -- amount|counter-offer level|installment plan{|node|cap + raise|held|used}", then `tail` if
  -- given (reserve's "|<catalog version>"), formatted at once (windows_text says why).
  return string.format('OK|%d|%s|%s|%d|%d|%d|%d|%d|%d|%s|%s%s%s', reason, level, hold_id,
    available, now, expires, approved, partial, offer, offer_level, plan, levels, tail or '')
end

local function approval_retry(hold_id, prior, available, ttl, levels, version)
  -- The answer to a retry of an approval from its hold (`prior`: prior_fields' values): the
  -- first decision (the amount before any increment, partial approval and its binding level,
  -- plan) with `available` and `levels` (levels_reply) of now and the catalog `version` that
  -- approved it. The decision's time is the expiry less the hold TTL `ttl` that approved it
  -- (an increment keeps the expiry): the hold stores no creation time, to stay within one
  -- allocation class.
  local approved = tonumber(prior[4] or prior[3])
  local plan = ''
  if prior[6] then
    local terms = split(prior[6], ':')
    plan = installment_plan(approved, tonumber(terms[1]), tonumber(terms[5]))
  end
  local partial = 0
  if prior[5] then partial = 1 end
  local expires = tonumber(prior[2])
  return authorization_reply(0, '', hold_id, available, expires - ttl, expires, approved,
    partial, 0, prior[5] or '', plan, levels, '|' .. version)
end

local function hold_event_id(hold_id, expires, seq)
  -- "<hold id>:<expiry ms>:<seq>": the expiry names the hold's generation, because a hold id
  -- derives from its idempotency key, which a terminal may use again once the old hold and
  -- its records are gone; a force capture's hold (no expiry, random id) is "<hold id>:<seq>".
  if expires then return hold_id .. ':' .. expires .. ':' .. fmt(seq) end
  return hold_id .. ':' .. fmt(seq)
end

local function close_hold(hold_key, state, seq, now)
  redis.call('HSET', hold_key, H_STATE, state, H_SEQ, fmt(seq), H_CLOSED_AT, fmt(now))
  -- The record stays to answer late Capture/Void calls clearly, then goes.
  redis.call('PEXPIRE', hold_key, CLOSED_HOLD_RETENTION_MS)
end

local function expire_hold(base, customer_id, hold_id, outbox_key, now)
  -- Release one open hold whose TTL has passed: what it still holds leaves every level it
  -- drew on, it closes, and its `expired` event is appended. 1 if released, else 0. The
  -- event names EXPIRY_CALLER, not the call that happened to find the hold due: the TTL
  -- made this change.
  local customer_key = base .. K_CUSTOMER .. customer_id
  local hold_key = base .. K_HOLD .. hold_id
  local h = redis.call('HMGET', hold_key, H_STATE, H_AMOUNT, H_CAPTURED, H_NODES, H_SEQ,
    H_PRODUCT, H_MERCHANT, H_CURRENCY, H_EXPIRES)
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
    'caller', EXPIRY_CALLER)
  return 1
end

local function release_expired(base, customer_id, due_key, outbox_key, now)
  -- Release the customer's holds whose TTL has passed, at most EXPIRE_PER_CALL_MAX of them
  -- (the sweeper and later calls release the rest). Each release is a complete change of its
  -- own with its own event, so it may precede the caller's checks. Returns how many. The due
  -- set holds a customer with open holds at or before its earliest expiry (reserve's ZADD LT,
  -- update_due): a customer it holds later than now, or not at all, has none to release.
  local due_at = redis.call('ZSCORE', due_key, customer_id)
  if not due_at or tonumber(due_at) > now then return 0 end
  local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
  local due = redis.call('ZRANGE', holds_key, '-inf', fmt(now), 'BYSCORE',
    'LIMIT', 0, EXPIRE_PER_CALL_MAX)
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
  -- than EXPIRE_PER_CALL_MAX of the customer's holds were due before it.
  local hold_key = base .. K_HOLD .. hold_id
  local h = redis.call('HMGET', hold_key, H_STATE, H_EXPIRES)
  if h[1] == 'open' and tonumber(h[2]) <= now then
    expire_hold(base, customer_id, hold_id, outbox_key, now)
    local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
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
    return now, err(E_DEADLINE_PASSED, fmt(deadline), now)
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
  if stored ~= fingerprint and stored ~= TOMBSTONE then
    return err(E_IDEMPOTENCY_MISMATCH, '', now)
  end
  return string.sub(prior, newline + 1)
end

local function remember(record_key, fingerprint, reply)
  redis.call('SET', record_key, fingerprint .. '\n' .. reply, 'EX', IDEMPOTENCY_TTL_S)
  return reply
end

-- An Authorize's decline record keeps the catalog version that decided it on a line of its
-- own between the fingerprint and the reply: "<fingerprint>\n<version>\n<reply>". The reply
-- stays layout 2's, so a retry sent to layout 2's scripts during a rolling upgrade replays
-- "<version>\n<reply>", whose first '|'-field ("<version>\nOK") layout 2's gateway skips as it
-- skips "OK". A record without the line (layout 2's, or a reversal's tombstone) has no version.
local function remember_decline(record_key, fingerprint, version, reply)
  redis.call('SET', record_key, fingerprint .. '\n' .. version .. '\n' .. reply, 'EX',
    IDEMPOTENCY_TTL_S)
  return reply .. '|' .. version
end

local function decline_replay(record_key, fingerprint, now)
  -- reserve's idempotent_replay: the stored decline with its catalog version ('' if none).
  local replay = idempotent_replay(record_key, fingerprint, now)
  if not replay or string.sub(replay, 1, 4) == 'ERR|' then return replay end
  local newline = string.find(replay, '\n', 1, true)
  if not newline then return replay .. '|' end
  return string.sub(replay, newline + 1) .. '|' .. string.sub(replay, 1, newline - 1)
end

local function in_scope(scope, merchant)
  -- Whether a hold of `merchant` (false: it names none) is within a caller's merchant scope
  -- (limits/keys.merchant_scope): "" is every merchant; else "=<id>" and "^<prefix>"
  -- entries separated by one space. One plain find answers an exact entry.
  if scope == '' then return true end
  if not merchant or merchant == '' then return false end
  local spaced = MERCHANT_SCOPE_SEPARATOR .. scope .. MERCHANT_SCOPE_SEPARATOR
  if string.find(spaced, MERCHANT_SCOPE_SEPARATOR .. MERCHANT_EXACT .. merchant
      .. MERCHANT_SCOPE_SEPARATOR, 1, true) then
    return true
  end
  if not string.find(scope, MERCHANT_PREFIX, 1, true) then return false end
  for _, entry in ipairs(split(scope, MERCHANT_SCOPE_SEPARATOR)) do
    if string.sub(entry, 1, 1) == MERCHANT_PREFIX
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
  local h = redis.call('HMGET', hold_key, H_CUSTOMER, H_MERCHANT)
  if scope ~= '' and not in_scope(scope, h[2]) then
    return nil, err(E_HOLD_NOT_FOUND, '', now)
  end
  return h[1], nil
end

local function open_hold(hold_key, customer_id, base, hold_id, due_key, outbox_key, now)
  -- Capture's and Void's common start, for the hold of `customer_id` (hold_owner's answer):
  -- (customer id, the hold's fields) of an open hold, after releasing what had expired; or
  -- (nil, nil, refusal).
  if not customer_id then return nil, nil, err(E_HOLD_NOT_FOUND, '', now) end
  release_expired(base, customer_id, due_key, outbox_key, now)
  release_if_due(base, customer_id, hold_id, due_key, outbox_key, now)
  local h = redis.call('HMGET', hold_key, H_STATE, H_AMOUNT, H_CAPTURED, H_NODES, H_SEQ,
    H_PRODUCT, H_MERCHANT, H_CURRENCY, H_CLOSED_AT, H_EXPIRES)
  local closed = {expired = E_HOLD_EXPIRED, voided = E_HOLD_VOIDED, captured = E_HOLD_CAPTURED,
    reversed = E_HOLD_REVERSED}
  if closed[h[1]] then return nil, nil, err(closed[h[1]], h[9], now) end
  h[4] = hold_nodes(base, h[4])
  return customer_id, h, nil
end

-- reserve.lua: authorize one purchase: check every limit level and velocity window of the
-- customer and, only if all pass, hold the amount at every level, record the hold and the
-- idempotency key, and append the `authorized` event to the partition's outbox.
--
-- KEYS[1] customer hash            KEYS[2] customer's open holds (zset, score = expiry ms)
-- KEYS[3] partition due set (zset) KEYS[4] partition outbox (stream)
-- KEYS[5] idempotency record       KEYS[6] the new hold (hash)
-- ARGV[1] clock offset ms (0 outside tests)   ARGV[2] partition key base "cg:{p:NNN}:"
-- ARGV[3] customer id      ARGV[4] hold id     ARGV[5] request fingerprint
-- ARGV[6] product id       ARGV[7] amount minor (1..AMOUNT_MINOR_MAX)
-- ARGV[8] hold TTL ms      ARGV[9] product-rule decline reason decided by the hot path (0: none)
-- ARGV[10] merchant id     ARGV[11] mcc        ARGV[12] channel    ARGV[13] currency
-- ARGV[14] day amount max minor   ARGV[15] day count max
-- ARGV[16] month amount max minor ARGV[17] month count max   (0: no limit)
-- ARGV[18..] the product's limit nodes for this channel, root first
-- Returns "OK|reason|level|hold id|available minor|now ms|expires ms{|node|cap|held|used}"
-- or "ERR|code|detail|now ms".
local now = redis_now_ms(tonumber(ARGV[1]))
local base, customer_id, hold_id, fingerprint = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local product_id = ARGV[6]
local amount = int_arg(ARGV[7], 1, AMOUNT_MINOR_MAX)
local ttl_ms = int_arg(ARGV[8], 1, HOLD_TTL_MS_MAX)
local rule_decline = int_arg(ARGV[9], 0, R_AMOUNT_ABOVE_MAXIMUM)
local limits = {}
for i = 14, 17 do limits[#limits + 1] = int_arg(ARGV[i], 0, VELOCITY_AMOUNT_MINOR_MAX) end
local nodes = {}
for i = 18, #ARGV do nodes[#nodes + 1] = ARGV[i] end
if not (amount and ttl_ms and rule_decline and #limits == 4 and #nodes >= 1) then
  return err(E_BAD_ARGUMENT, 'reserve', now)
end

local replay = idempotent_replay(KEYS[5], fingerprint, now)
if replay then return replay end

local function decline(reason, level, available, levels)
  return remember(KEYS[5], fingerprint, 'OK|' .. reason .. '|' .. level .. '||'
    .. fmt(available) .. '|' .. fmt(now) .. '|0' .. levels)
end

-- Checks, in the documented order (limits/reasons.py). Nothing is written before the point
-- marked below, except the release of holds that had already expired.
local status = redis.call('HGET', KEYS[1], F_STATUS)
if not status then return decline(R_CUSTOMER_UNKNOWN, '', 0, '') end
release_expired(base, customer_id, KEYS[3], KEYS[4], now)

local fields = {F_TZ_SCHEDULE, F_VELOCITY_DAY .. product_id, F_VELOCITY_MONTH .. product_id}
for _, node in ipairs(nodes) do
  fields[#fields + 1] = F_CAP .. node
  fields[#fields + 1] = F_HELD .. node
  fields[#fields + 1] = F_USED .. node
end
local values = redis.call('HMGET', KEYS[1], unpack(fields))

local caps, helds, useds = {}, {}, {}
local available, short_level = nil, nil
for i, node in ipairs(nodes) do
  caps[i] = tonumber(values[1 + 3 * i]) or 0
  helds[i] = tonumber(values[2 + 3 * i]) or 0
  useds[i] = tonumber(values[3 + 3 * i]) or 0
  local free = math.max(0, caps[i] - helds[i] - useds[i])
  if available == nil or free < available then available = free end
  if short_level == nil and amount > free then short_level = node end
end
local function levels_text(extra)
  local parts = {}
  for i, node in ipairs(nodes) do
    parts[#parts + 1] = '|' .. node .. '|' .. fmt(caps[i]) .. '|' .. fmt(helds[i] + extra)
      .. '|' .. fmt(useds[i])
  end
  return table.concat(parts)
end

if status == 'frozen' then return decline(R_CUSTOMER_FROZEN, '', available, levels_text(0)) end
if status == 'closed' then return decline(R_CUSTOMER_CLOSED, '', available, levels_text(0)) end
if status == 'overdue' then return decline(R_CUSTOMER_OVERDUE, '', available, levels_text(0)) end
if rule_decline > 0 then return decline(rule_decline, '', available, levels_text(0)) end

local day_window, month_window, day_amount, day_count, month_amount, month_count
local has_velocity = limits[1] + limits[2] + limits[3] + limits[4] > 0
if has_velocity then
  day_window, month_window = window_numbers(values[1], now)
  day_amount, day_count = window_usage(values[2], day_window)
  month_amount, month_count = window_usage(values[3], month_window)
  if (limits[2] > 0 and day_count + 1 > limits[2])
      or (limits[4] > 0 and month_count + 1 > limits[4]) then
    return decline(R_VELOCITY_COUNT_EXCEEDED, '', available, levels_text(0))
  end
  if (limits[1] > 0 and day_amount + amount > limits[1])
      or (limits[3] > 0 and month_amount + amount > limits[3]) then
    return decline(R_VELOCITY_AMOUNT_EXCEEDED, '', available, levels_text(0))
  end
end
if short_level then
  return decline(R_INSUFFICIENT_CREDIT, short_level, available, levels_text(0))
end

-- After this point the reservation must succeed.
local node_list = table.concat(nodes, ',')
local expires = now + ttl_ms
for _, node in ipairs(nodes) do redis.call('HINCRBY', KEYS[1], F_HELD .. node, amount) end
if has_velocity then
  redis.call('HSET', KEYS[1],
    F_VELOCITY_DAY .. product_id,
    fmt(day_window) .. ':' .. fmt(day_amount + amount) .. ':' .. fmt(day_count + 1),
    F_VELOCITY_MONTH .. product_id,
    fmt(month_window) .. ':' .. fmt(month_amount + amount) .. ':' .. fmt(month_count + 1))
end
redis.call('HSET', KEYS[6], 'st', 'open', 'c', customer_id, 'p', product_id,
  'a', fmt(amount), 'cp', '0', 'n', node_list, 'x', fmt(expires), 'sq', '1',
  'm', ARGV[10], 'cur', ARGV[13], 't', fmt(now))
redis.call('ZADD', KEYS[2], fmt(expires), hold_id)
redis.call('ZADD', KEYS[3], 'LT', fmt(expires), customer_id)
redis.call('XADD', KEYS[4], '*', 'type', 'authorized', 'event_id', hold_id .. ':1',
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[10], 'mcc', ARGV[11], 'channel', ARGV[12], 'currency', ARGV[13],
  'nodes', node_list, 'amount_minor', fmt(amount), 'expires_at_ms', fmt(expires),
  'at_ms', fmt(now))
return remember(KEYS[5], fingerprint, 'OK|0||' .. hold_id .. '|' .. fmt(available - amount)
  .. '|' .. fmt(now) .. '|' .. fmt(expires) .. levels_text(amount))

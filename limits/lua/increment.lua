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
-- ARGV[8] amount_minor      the increment, minor units (1..AMOUNT_MINOR_MAX)
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}|hold_held_minor, or ERR|code|detail|at_ms
--   (authorization_reply, limits/lua/_lib.lua, with approved_amount_minor = the hold's amount
--   after the call, then hold_held_minor = what the hold still holds). A decline carries a
--   counter-offer: the largest increment that fits now.
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, hold_id, fingerprint = ARGV[ARG_BASE], ARGV[ARG_HOLD_ID], ARGV[ARG_FINGERPRINT]
local increment = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
if not increment then return err(E_BAD_ARGUMENT, 'increment', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[KEY_HOLD], ARGV[ARG_MERCHANT_SCOPE], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

-- Refusals (nothing is remembered): the hold is unknown, closed, or not incremental.
local customer_id, h, refusal = open_hold(KEYS[KEY_HOLD], owner, base, hold_id,
  KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
if refusal then return refusal end
local hold = redis.call('HMGET', KEYS[KEY_HOLD], H_INCREMENT_MAX, H_VELOCITY_MAX, H_PLAN, H_EXPIRES)
if not hold[1] then return err(E_INCREMENT_NOT_ALLOWED, '', now) end
local amount, captured, product_id = tonumber(h[2]), tonumber(h[3]), h[6]
local amount_max, expires = tonumber(hold[1]), tonumber(hold[4])
local velocity_max = split(hold[2], ':')
local day_max, month_max = tonumber(velocity_max[1]), tonumber(velocity_max[2])

local customer_key = base .. K_CUSTOMER .. customer_id
local nodes = split(h[4], ',')
ensure_layout(customer_key)
local fields = {F_STATUS, F_TIMEZONE, F_VELOCITY .. product_id}
for i, node in ipairs(nodes) do fields[3 + i] = F_LEVEL .. node end
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
  return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, authorization_reply(reason, level,
    hold_id, available, now, expires, amount, 0, offer, offer_level, plan, levels(0))
    .. '|' .. fmt(amount - captured))
end

-- Declines, in the documented order; each is remembered for idempotency.
local status = values[1]
if not status then return decline(R_CUSTOMER_UNKNOWN, '', 0, '') end
local status_decline = {frozen = R_CUSTOMER_FROZEN, closed = R_CUSTOMER_CLOSED,
  overdue = R_CUSTOMER_OVERDUE}
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
  reason = R_AMOUNT_ABOVE_MAXIMUM
elseif (day_max > 0 and day_amount + increment > day_max)
    or (month_max > 0 and month_amount + increment > month_max) then
  reason = R_VELOCITY_AMOUNT_EXCEEDED
elseif short_level then
  reason = R_INSUFFICIENT_CREDIT
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
  if reason == R_INSUFFICIENT_CREDIT then level = short_level end
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
redis.call('HSET', KEYS[KEY_HOLD], H_AMOUNT, fmt(total), H_SEQ, fmt(seq))
-- The first approved amount answers a retry of the original authorization.
redis.call('HSETNX', KEYS[KEY_HOLD], H_FIRST_AMOUNT, fmt(amount))
local event = {'type', 'incremented', 'event_id', hold_event_id(hold_id, hold[4], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(increment),
  'amount_total_minor', fmt(total), 'at_ms', fmt(now), 'caller', ARGV[ARG_CALLER]}
if plan ~= '' then
  -- The plan is recomputed for the new principal, with the same term and fee.
  local old = split(plan, ':')
  plan = installment_plan(total, tonumber(old[1]), tonumber(old[5]))
  redis.call('HSET', KEYS[KEY_HOLD], H_PLAN, plan)
  event[#event + 1] = 'installment_plan'
  event[#event + 1] = plan
end
redis.call('XADD', KEYS[KEY_OUTBOX], '*', unpack(event))
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, authorization_reply(0, '', hold_id,
  available - increment, now, expires, total, 0, 0, '', plan, levels(increment)) .. '|'
  .. fmt(total - captured))

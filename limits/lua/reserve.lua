-- reserve.lua: authorize one purchase: check every limit level (cap plus any live temporary
-- raise) and velocity window of the customer and, only if all pass, hold the amount at every
-- level, record the hold and the idempotency key, and append the `authorized` event to the
-- partition's outbox. A decline about the amount carries a counter-offer; with partial
-- approval asked and allowed, the counter-offer is approved instead (docs/lifecycle.md). The
-- product's effective dates are checked against this call's time, its allowed hours against
-- the customer's local time, and its first-purchase maximum against the customer's `fp:`
-- marker, which the first approval of such a product writes (docs/decline-reasons.md).
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
-- ARGV[8] amount_minor             the amount, minor units (1..AMOUNT_MINOR_MAX)
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
--                                  tolerance bps, incremental 0/1, installment fee bps,
--                                  effective from ms, effective until ms (0: open), allowed
--                                  hours ("<start>:<end>" minutes of the customer's day,
--                                  ';'-joined; "0": any time), first-purchase max (0: none),
--                                  the catalog version, and the limit nodes root first
--                                  (','-joined)
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}|catalog_version, or ERR|code|detail|at_ms
--   (authorization_reply, limits/lua/_lib.lua; a level's cap_minor is its cap plus any live
--   raise). A retry of an approval answers its first decision with the levels as they stand
--   now, and the catalog version its hold recorded; a retry of a decline, the one remembered
--   with it (remember_decline).
-- The shadow (SHADOW true: limits/lua_source.py registers this body a second time as
-- shadow_reserve, flagged no-writes and called with FCALL_RO) writes nothing: it answers the
-- decision (an approval's reply has no hold id, no levels) or SKIP|<why> where it cannot
-- decide without a write (a retry: replay; holds due for release: expired; a layout-1
-- customer: layout). The live function's guards are `if false then` jumps.
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, customer_id, fingerprint =
  ARGV[ARG_BASE], ARGV[ARG_CUSTOMER_ID], ARGV[ARG_FINGERPRINT]
-- The product's rules are read once per text and kept (product_rules); the small numbers are
-- compared as text in their usual value, a conversion costing more than the comparison.
local rules = product_rules(ARGV[ARG_RULES])
local amount = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
local rule_decline, allow_partial, months = 0, nil, 0
if ARGV[ARG_RULE_DECLINE] ~= '0' then
  rule_decline = int_arg(ARGV[ARG_RULE_DECLINE], 0, PRODUCT_RULE_REASON_MAX)
end
if ARGV[ARG_PARTIAL_APPROVAL] == '0' then allow_partial = 0
elseif ARGV[ARG_PARTIAL_APPROVAL] == '1' then allow_partial = 1 end
if ARGV[ARG_INSTALLMENT_MONTHS] ~= '0' then
  months = int_arg(ARGV[ARG_INSTALLMENT_MONTHS], 0, INSTALLMENT_MONTHS_MAX)
end
if not (rules and amount and rule_decline and allow_partial and months and months ~= 1) then
  return err(E_BAD_ARGUMENT, 'reserve', now)
end
local nodes, product_id = rules.nodes, rules.product_id

local replay = decline_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then
  if SHADOW then return SHADOW_SKIP .. 'replay' end
  return replay
end
-- An approval keeps no record: its hold, whose id derives from the record's key, holds the
-- fingerprint, so an open hold costs one key.
-- A retry reads its fingerprint, expiry, amounts, partial level, plan, nodes and catalog
-- version (prior_fields; the version is its path id's, hold_version).
local hold_id, retried, prior = approval_hold(base, KEYS[KEY_IDEMPOTENCY], now, prior_fields)
local hold_key = base .. K_HOLD .. hold_id
if retried then
  if SHADOW then return SHADOW_SKIP .. 'replay' end
  if prior[1] ~= fingerprint then return err(E_IDEMPOTENCY_MISMATCH, '', now) end
elseif SHADOW then
  -- release_expired's own test of whether the customer has holds to release.
  local due_at = redis.call('ZSCORE', KEYS[KEY_DUE], customer_id)
  if due_at and tonumber(due_at) <= now then return SHADOW_SKIP .. 'expired' end
else
  -- Holds whose TTL has passed are released before the levels are read (a retry changes
  -- nothing, so it reads the levels as they stand).
  release_expired(base, customer_id, KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
end

-- One read of the customer hash: status, timezone, the product's windows, then every level
-- and, for a product with a first-purchase maximum, its marker (the field names come with the
-- product's rules). A customer of layout 1 has no status field of this layout: it is upgraded
-- and read again.
local values = redis.call('HMGET', KEYS[KEY_CUSTOMER], unpack(rules.read_fields))
if SHADOW and not values[1]
    and redis.call('HEXISTS', KEYS[KEY_CUSTOMER], V1_STATUS) == 1 then
  return SHADOW_SKIP .. 'layout'
end
if not values[1] and upgrade_customer(KEYS[KEY_CUSTOMER]) then
  values = redis.call('HMGET', KEYS[KEY_CUSTOMER], unpack(rules.read_fields))
end
local status = values[1]

-- Checks, in the documented order (limits/reasons.py). Nothing is written before the point
-- marked below, except the release of holds that had already expired.
if not status then
  local reply = authorization_reply(R_CUSTOMER_UNKNOWN, '', '', 0, now, 0, 0, 0, 0, '', '', '')
  if SHADOW then return reply .. '|' .. rules.catalog_version end
  return remember_decline(KEYS[KEY_IDEMPOTENCY], fingerprint, rules.catalog_version, reply)
end
-- A level's cap is the effective one: the cap plus the node's temporary raise while it lasts.
local levels, available, short_level = read_levels(values, 3, nodes, amount, now)

if retried then
  -- A retry of an approval: its first decision (approval_retry), with the levels and
  -- availability of now, the hold TTL and catalog version that approved it.
  return approval_retry(hold_id, prior, available, hold_ttl(base, rules, prior[7], prior[9]),
    levels_reply(nodes, levels), hold_version(base, rules, prior[7], prior[8]))
end

local function decline(reason, level, offer, offer_level)
  local reply = authorization_reply(reason, level, '', available, now, 0, 0, 0, offer,
    offer_level, '', levels_reply(nodes, levels))
  if SHADOW then return reply .. '|' .. rules.catalog_version end
  return remember_decline(KEYS[KEY_IDEMPOTENCY], fingerprint, rules.catalog_version, reply)
end

if status == 'frozen' then return decline(R_CUSTOMER_FROZEN, '', 0, '') end
if status == 'closed' then return decline(R_CUSTOMER_CLOSED, '', 0, '') end
if status == 'overdue' then return decline(R_CUSTOMER_OVERDUE, '', 0, '') end
if rules.has_effective
    and (now < rules.effective_from or now >= rules.effective_until) then
  return decline(R_PRODUCT_NOT_EFFECTIVE, '', 0, '')
end
if rule_decline > 0 then return decline(rule_decline, '', 0, '') end
-- The customer's timezone schedule, read once if the hours or the windows need it.
local schedule
if rules.hours then
  schedule = zone_schedule(base, values[2])
  if not within_hours(rules.hours, schedule, now) then
    return decline(R_OUTSIDE_ALLOWED_HOURS, '', 0, '')
  end
end
-- A first purchase: the product sets a maximum and the customer has no approval of it yet.
local first = false
if rules.first_field and not values[rules.first_at] then
  if amount > rules.first_max then
    return decline(R_FIRST_PURCHASE_ABOVE_MAXIMUM, '', 0, '')
  end
  first = true
end

local day_window, month_window, day_amount, day_count, month_amount, month_count
local day_amount_max, month_amount_max = rules.day_amount_max, rules.month_amount_max
local day_count_max, month_count_max = rules.day_count_max, rules.month_count_max
local amount_reason = 0  -- VELOCITY_AMOUNT_EXCEEDED or INSUFFICIENT_CREDIT, if either applies
if rules.has_velocity then
  day_window, month_window = window_numbers(schedule or zone_schedule(base, values[2]), now)
  day_amount, day_count, month_amount, month_count =
    windows_usage(values[3], day_window, month_window)
  if (day_count_max > 0 and day_count + 1 > day_count_max)
      or (month_count_max > 0 and month_count + 1 > month_count_max) then
    return decline(R_VELOCITY_COUNT_EXCEEDED, '', 0, '')
  end
  if (day_amount_max > 0 and day_amount + amount > day_amount_max)
      or (month_amount_max > 0 and month_amount + amount > month_amount_max) then
    amount_reason = R_VELOCITY_AMOUNT_EXCEEDED
  end
end
if amount_reason == 0 and short_level then amount_reason = R_INSUFFICIENT_CREDIT end

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
    if amount_reason == R_INSUFFICIENT_CREDIT then level = short_level end
    return decline(amount_reason, level, offer, offer_level)
  end
  approved, partial = offer, 1
end

if SHADOW then
  return authorization_reply(0, '', '', available - approved, now, now + rules.ttl_ms, approved,
    partial, 0, offer_level, '', '', '|' .. rules.catalog_version)
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
if first then
  customer[#customer + 1] = rules.first_field
  customer[#customer + 1] = now_text
end
redis.call('HSET', KEYS[KEY_CUSTOMER], unpack(customer))
-- The optional fields are written only when they apply: an open hold stays small. The path id
-- names the catalog version and hold TTL too; a hold whose id is taken keeps its nodes, version
-- and TTL itself.
local path = path_id(base, node_list, rules.path_hash, rules.catalog_version, rules.ttl_text)
local hold = {H_STATE, 'open', H_CUSTOMER, customer_id, H_PRODUCT, product_id,
  H_AMOUNT, approved_text, H_CAPTURED, '0', H_NODES, path or node_list,
  H_EXPIRES, expires, H_SEQ, '1', H_MERCHANT, ARGV[ARG_MERCHANT_ID],
  H_CURRENCY, rules.currency, H_FINGERPRINT, fingerprint}
if not path then
  hold[#hold + 1] = H_CATALOG_VERSION
  hold[#hold + 1] = rules.catalog_version
  hold[#hold + 1] = H_HOLD_TTL_MS
  hold[#hold + 1] = rules.ttl_text
end
if partial == 1 then
  hold[#hold + 1] = H_PARTIAL_LEVEL
  hold[#hold + 1] = offer_level
end
if rules.tolerance_bps > 0 then
  hold[#hold + 1] = H_TOLERANCE_BPS
  hold[#hold + 1] = rules.tolerance_text
end
if rules.incremental == 1 then
  -- A first purchase's hold grows up to the first-purchase maximum only.
  hold[#hold + 1] = H_INCREMENT_MAX
  hold[#hold + 1] = first and rules.first_max_text or rules.amount_max_text
  hold[#hold + 1] = H_VELOCITY_MAX
  hold[#hold + 1] = rules.velocity_max_text
end
if plan ~= '' then
  hold[#hold + 1] = H_PLAN
  hold[#hold + 1] = plan
end
redis.call('HSET', hold_key, unpack(hold))
redis.call('ZADD', KEYS[KEY_CUSTOMER_HOLDS], expires, hold_id)
redis.call('ZADD', KEYS[KEY_DUE], 'LT', expires, customer_id)
local event = {'type', 'authorized', 'event_id', hold_event_id(hold_id, expires, 1),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', product_id,
  'merchant_id', ARGV[ARG_MERCHANT_ID], 'mcc', ARGV[ARG_MCC], 'channel', rules.channel,
  'currency', rules.currency,
  'nodes', node_list, 'amount_minor', approved_text, 'expires_at_ms', expires,
  'at_ms', now_text, 'caller', ARGV[ARG_CALLER], 'catalog_version', rules.catalog_version}
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
redis.call('XADD', KEYS[KEY_OUTBOX], '*', unpack(event))
-- A partial approval names its binding level in the counter-offer level (the amount is 0).
-- The reply's levels reuse the texts read (caps without a live raise, used) and written (held).
return 'OK|0||' .. hold_id .. '|' .. fmt(available - approved) .. '|' .. now_text .. '|'
  .. expires .. '|' .. approved_text .. '|' .. (partial == 1 and '1' or '0') .. '|0|'
  .. offer_level .. '|' .. plan .. levels_reply(nodes, levels, held_texts) .. '|'
  .. rules.catalog_version

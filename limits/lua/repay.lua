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
-- ARGV[8] amount_minor      the amount repaid, minor units (1..AMOUNT_MINOR_MAX)
-- ARGV[9..] paths           the allocation order: at most REPAY_PATHS_MAX paths (nodes root
--                           first, joined by ',')
-- Reply: OK|repaid_minor|overpaid_minor|outstanding_minor|decided_at_ms{|path|amount_minor},
--   or ERR|code|detail|at_ms (repaid + overpaid is the amount; outstanding_minor: the sum of
--   the path balances after the call).
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local customer_id, fingerprint = ARGV[ARG_CUSTOMER_ID], ARGV[ARG_FINGERPRINT]
local amount = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
if not amount or #ARGV - (ARG_PATHS - 1) > REPAY_PATHS_MAX then
  return err(E_BAD_ARGUMENT, 'repay', now)
end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

ensure_layout(KEYS[KEY_CUSTOMER])
local fields = redis.call('HGETALL', KEYS[KEY_CUSTOMER])
if #fields == 0 then return err(E_CUSTOMER_UNKNOWN, '', now) end

local balances, outstanding = {}, 0
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #F_BALANCE) == F_BALANCE then
    balances[string.sub(fields[i], #F_BALANCE + 1)] = tonumber(fields[i + 1])
    outstanding = outstanding + tonumber(fields[i + 1])
  end
end
local walk, listed, others = {}, {}, {}
for i = ARG_PATHS, #ARGV do
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

-- At most REPAY_PATHS_MAX allocations (each is one event): the walk's work is bounded.
local left, allocations = amount, {}
for _, path in ipairs(walk) do
  if left == 0 or #allocations == REPAY_PATHS_MAX then break end
  local balance = balances[path] or 0
  if balance > 0 then
    local paid = math.min(left, balance)
    allocations[#allocations + 1] = {path, paid}
    left = left - paid
  end
end

-- After this point the repayment must succeed.
local function event(kind, nodes, value)
  local seq = redis.call('HINCRBY', KEYS[KEY_CUSTOMER], F_EVENT_SEQ, 1)
  redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', kind,
    'event_id', 'c:' .. customer_id .. ':' .. fmt(seq), 'customer_id', customer_id,
    'nodes', nodes, 'amount_minor', fmt(value), 'at_ms', fmt(now), 'caller', ARGV[ARG_CALLER])
end
local reply = {}
for _, allocation in ipairs(allocations) do
  local path, paid = allocation[1], allocation[2]
  change_levels(KEYS[KEY_CUSTOMER], split(path, ','), 0, -paid)
  add_balance(KEYS[KEY_CUSTOMER], path, -paid)
  event('repaid', path, paid)
  reply[#reply + 1] = '|' .. path .. '|' .. fmt(paid)
end
if left > 0 then
  redis.call('HINCRBY', KEYS[KEY_CUSTOMER], F_CREDIT_BALANCE, left)
  event('overpaid', '', left)
end
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, 'OK|' .. fmt(amount - left) .. '|'
  .. fmt(left) .. '|' .. fmt(outstanding - (amount - left)) .. '|' .. fmt(now)
  .. table.concat(reply))

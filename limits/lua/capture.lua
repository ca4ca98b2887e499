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
-- ARGV[8] amount_minor      the amount to capture, minor units (1..AMOUNT_MINOR_MAX)
-- ARGV[9] final             1 to release what stays held, else 0
-- Reply: OK|state|captured_minor|captured_total_minor|released_minor|held_minor|over_captured_minor|decided_at_ms,
--   or ERR|code|detail|at_ms (held_minor: what the hold still holds after the call).
local now, late = call_time(ARGV[ARG_CLOCK_OFFSET_MS], ARGV[ARG_DEADLINE_MS])
if late then return late end
local base, hold_id, fingerprint = ARGV[ARG_BASE], ARGV[ARG_HOLD_ID], ARGV[ARG_FINGERPRINT]
local amount = int_arg(ARGV[ARG_AMOUNT_MINOR], 1, AMOUNT_MINOR_MAX)
local final = int_arg(ARGV[ARG_FINAL], 0, 1)
if not (amount and final) then return err(E_BAD_ARGUMENT, 'capture', now) end

-- A hold of a merchant outside the caller's scope is answered as one that does not exist.
local owner, hidden = hold_owner(KEYS[KEY_HOLD], ARGV[ARG_MERCHANT_SCOPE], now)
if hidden then return hidden end

local replay = idempotent_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end

local customer_id, h, refusal = open_hold(KEYS[KEY_HOLD], owner, base, hold_id,
  KEYS[KEY_DUE], KEYS[KEY_OUTBOX], now)
if refusal then return refusal end
local authorized, captured_before = tonumber(h[2]), tonumber(h[3])
local held = authorized - captured_before
local tolerance_bps = tonumber(redis.call('HGET', KEYS[KEY_HOLD], H_TOLERANCE_BPS)) or 0
local capturable = authorized + math.floor(authorized * tolerance_bps / 10000) - captured_before
if amount > capturable then return err(E_CAPTURE_EXCEEDS_HELD, fmt(capturable), now) end

local customer_key = base .. K_CUSTOMER .. customer_id
local nodes = split(h[4], ',')
local excess = math.max(0, amount - held)
ensure_layout(customer_key)
if excess > 0 then
  -- The excess adds to held + used at every level: it must fit each one's free credit.
  for _, node in ipairs(nodes) do
    local cap, held_text, used, raise = level_texts(redis.call('HGET', customer_key,
      F_LEVEL .. node))
    local free = level_cap(cap, raise, now) - tonumber(held_text) - tonumber(used)
    if excess > free then return err(E_CAPTURE_EXCEEDS_CREDIT, node, now) end
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
redis.call('HSET', KEYS[KEY_HOLD], H_CAPTURED, fmt(captured_total), H_SEQ, fmt(seq))
if held_after == 0 then
  state = 'captured'
  close_hold(KEYS[KEY_HOLD], state, seq, now)
  local holds_key = base .. K_CUSTOMER_HOLDS .. customer_id
  redis.call('ZREM', holds_key, hold_id)
  update_due(holds_key, KEYS[KEY_DUE], customer_id)
end
redis.call('XADD', KEYS[KEY_OUTBOX], '*', 'type', 'captured', 'event_id', hold_event_id(hold_id, h[10], seq),
  'customer_id', customer_id, 'hold_id', hold_id, 'product_id', h[6],
  'merchant_id', h[7], 'currency', h[8], 'nodes', h[4], 'amount_minor', fmt(amount),
  'released_minor', fmt(released), 'excess_minor', fmt(excess),
  'captured_total_minor', fmt(captured_total), 'final', fmt(final), 'at_ms', fmt(now),
  'caller', ARGV[ARG_CALLER])
return remember(KEYS[KEY_IDEMPOTENCY], fingerprint, 'OK|' .. state .. '|' .. fmt(amount) .. '|'
  .. fmt(captured_total) .. '|' .. fmt(released) .. '|' .. fmt(held_after) .. '|'
  .. fmt(excess) .. '|' .. fmt(now))

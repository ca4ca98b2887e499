-- replay.lua: read-only (limits/lua_source.py registers it flagged no-writes; the client calls
-- it with FCALL_RO). The decision an Authorize's idempotency key already has for this request,
-- without product rules: what the gateway asks when the catalog in force refuses a request
-- (an unknown product, a currency or an installment term it no longer offers) that a catalog
-- before it may have decided (gateway/authorize.py). A remembered decline answers as
-- reserve's retry does (decline_replay); an approval's hold of this key answers its first
-- decision as reserve's retry does (approval_retry), its nodes by its path id, its levels as
-- they stand now, its hold TTL and catalog version as its path id (or its own fields)
-- recorded them. Nothing is written: no hold is released, no decline remembered.
--
-- KEYS[1] customer                 the customer hash
-- KEYS[2] idempotency              the idempotency record (reserve's KEYS[5]); an approval's
--                                  hold key derives from it (derived_hold_id)
-- ARGV[1] clock_offset_ms          ms added to Redis' TIME (0 outside tests)
-- ARGV[2] deadline_ms              ignored: a read
-- ARGV[3] caller                   ignored: no event is written
-- ARGV[4] merchant_scope           ignored: no hold is named
-- ARGV[5] base                     the partition key base "cg:{p:NNN}:"
-- ARGV[6] fingerprint              the request fingerprint (as the hot path's plan computes it)
-- Reply: OK|reason|level|hold_id|available_minor|decided_at_ms|hold_expires_at_ms|approved_amount_minor|partial|counter_offer_minor|counter_offer_level|plan{|node|cap_minor|held_minor|used_minor}|catalog_version
--   (reserve's reply to the retry), or REPLAY_NONE|now_ms where the key has no decision (or
--   one this function cannot answer without rules: a hold of layout 2, which recorded no hold
--   TTL; a customer gone), or ERR|code|detail|at_ms (IDEMPOTENCY_MISMATCH: the key decided
--   another payload).
local now = redis_now_ms(tonumber(ARGV[ARG_CLOCK_OFFSET_MS]))
local base, fingerprint = ARGV[ARG_BASE], ARGV[ARG_FINGERPRINT]
local replay = decline_replay(KEYS[KEY_IDEMPOTENCY], fingerprint, now)
if replay then return replay end
local hold_id, found, prior = approval_hold(base, KEYS[KEY_IDEMPOTENCY], now, prior_fields)
if not found then return REPLAY_NONE .. '|' .. fmt(now) end
if prior[1] ~= fingerprint then return err(E_IDEMPOTENCY_MISMATCH, '', now) end
local ttl = hold_ttl(base, nil, prior[7], prior[9])
local node_list = hold_nodes(base, prior[7])
if not (ttl and node_list) then return REPLAY_NONE .. '|' .. fmt(now) end
local nodes = split(node_list, NODES_SEPARATOR)
local fields = {F_STATUS}
for i, node in ipairs(nodes) do fields[i + 1] = F_LEVEL .. node end
local values = redis.call('HMGET', KEYS[KEY_CUSTOMER], unpack(fields))
if not values[1] then return REPLAY_NONE .. '|' .. fmt(now) end
local levels, available = read_levels(values, 1, nodes, 0, now)
return approval_retry(hold_id, prior, available, ttl, levels_reply(nodes, levels),
  hold_version(base, nil, prior[7], prior[8]))

-- 0004: the catalog version that decided each hold: the `authorized` event's
-- `catalog_version` (the [catalog] version of the gateway's catalog). '' for every other
-- event (a hold's later events are decided by the hold: join on hold_id), and for
-- authorizations of the previous release's scripts, which record none. Added with a default,
-- so rows posted before, and a worker of the previous release still posting without it during
-- a rolling upgrade, keep working.
ALTER TABLE ledger_events ADD COLUMN catalog_version TEXT NOT NULL DEFAULT '';

-- 0003: who made each change: the outbox event's `caller` (the callers file's name of the
-- caller whose call wrote it; "sweeper" for the sweeper's expiries; '' for events written
-- before callers existed, or by a direct library call outside the gateway). Added with a
-- default, so rows posted before, and a worker of the previous release still posting without
-- it during a rolling upgrade, keep working.
ALTER TABLE ledger_events ADD COLUMN caller TEXT NOT NULL DEFAULT '';

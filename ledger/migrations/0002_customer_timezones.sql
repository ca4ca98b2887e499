-- 0002: every timezone a customer has had, from its customer_put events, so that a billing
-- cycle keeps the bounds it had even after the customer's timezone changes.
CREATE TABLE ledger_customer_timezones (
    customer_id  TEXT NOT NULL,
    since_ms     BIGINT NOT NULL,     -- at_ms of the customer_put event
    event_id     TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    PRIMARY KEY (customer_id, event_id)
);
INSERT INTO ledger_customer_timezones (customer_id, since_ms, event_id, timezone)
    SELECT customer_id, updated_at_ms, 'migrated', timezone FROM ledger_customers;

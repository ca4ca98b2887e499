-- 0001: the ledger's first schema. Plain SQL that SQLite and PostgreSQL both accept.
-- Money is BIGINT minor units. Every posted outbox event is one row of ledger_events (its
-- event_id is the primary key: an event seen twice posts once) and two or more balanced
-- journal lines.

CREATE TABLE ledger_events (
    event_id          TEXT PRIMARY KEY,   -- from the outbox: "<hold id>:<seq>" or "c:<customer>:<seq>"
    stream_entry      TEXT NOT NULL,      -- "<outbox key> <entry id>" it was read from
    type              TEXT NOT NULL,      -- customer_put, authorized, captured, voided, expired
    customer_id       TEXT NOT NULL,
    hold_id           TEXT NOT NULL,      -- '' for customer events
    product_id        TEXT NOT NULL,
    merchant_id       TEXT NOT NULL,
    currency          TEXT NOT NULL,
    nodes             TEXT NOT NULL,      -- the limit nodes the hold drew on, root first
    amount_minor      BIGINT NOT NULL,    -- authorized, captured: the amount; voided, expired: released
    held_delta_minor  BIGINT NOT NULL,    -- change of `held` at every node of `nodes`
    used_delta_minor  BIGINT NOT NULL,    -- change of `used` at every node of `nodes`
    at_ms             BIGINT NOT NULL,    -- Redis time of the change
    posted_at_ms      BIGINT NOT NULL
);
CREATE INDEX ledger_events_customer ON ledger_events (customer_id, at_ms);
CREATE INDEX ledger_events_hold ON ledger_events (hold_id);

CREATE TABLE journal_lines (
    event_id      TEXT NOT NULL REFERENCES ledger_events (event_id),
    line_no       INTEGER NOT NULL,
    account       TEXT NOT NULL,
    debit_minor   BIGINT NOT NULL CHECK (debit_minor >= 0),
    credit_minor  BIGINT NOT NULL CHECK (credit_minor >= 0),
    PRIMARY KEY (event_id, line_no)
);
CREATE INDEX journal_lines_account ON journal_lines (account);

-- The customers as the ledger last heard of them (customer_put events): the timezone fixes
-- the customer's billing cycle boundaries.
CREATE TABLE ledger_customers (
    customer_id    TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);

-- Consolidated monthly statements: one obligation per customer and cycle.
CREATE TABLE bills (
    customer_id      TEXT NOT NULL,
    cycle            TEXT NOT NULL,       -- YYYY-MM in the customer's timezone
    currency         TEXT NOT NULL,
    purchases_minor  BIGINT NOT NULL,
    refunds_minor    BIGINT NOT NULL,
    total_minor      BIGINT NOT NULL,     -- purchases - refunds
    line_count       INTEGER NOT NULL,
    closed_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (customer_id, cycle)
);

CREATE TABLE bill_lines (
    customer_id   TEXT NOT NULL,
    cycle         TEXT NOT NULL,
    line_no       INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,          -- purchase, refund
    hold_id       TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    amount_minor  BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    PRIMARY KEY (customer_id, cycle, line_no)
);

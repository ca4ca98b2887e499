"""The catalog version that decided each hold, in the ledger (SQLite and PostgreSQL): an
`authorized` event's row keeps its `catalog_version`; an event without one (the previous
release's scripts, a hold's later events) posts with ''; a ledger of the previous release gets
the column at start and its worker, still running during a rolling upgrade, posts as before."""

from __future__ import annotations

from creditgate.ledger import books
from creditgate.ledger import store as store_module
from creditgate.limits import catalog
from tests.ledger.conftest import drop_schema
from tests.ledger.support import Traffic
from tests.ledger.test_audit import POSTED, booking, fresh_like, post

AUTHORIZED = booking("authorized", "003-H:1", "T-1", amount_minor="5000",
                     catalog_version="2026-12-06.1")
CAPTURED = booking("captured", "003-H:2", "T-1", amount_minor="5000", released_minor="0")
# An authorization by layout 2's scripts: no version.
OLD_AUTHORIZED = booking("authorized", "003-K:1", "T-1", amount_minor="700", hold_id="003-K")
# The columns a ledger_events row had before 0004 (what the previous release's worker inserts).
VERSION_AT = store_module.EVENT_COLUMNS.index("catalog_version")
OLD_COLUMNS = store_module.EVENT_COLUMNS[:VERSION_AT]


def test_the_booking_keeps_the_version_and_ignores_fields_it_does_not_know():
    assert AUTHORIZED.event[VERSION_AT] == "2026-12-06.1"
    assert OLD_AUTHORIZED.event[VERSION_AT] == CAPTURED.event[VERSION_AT] == ""
    # A field a later release adds is not an error (the events are read by name): how the
    # previous release's worker books this release's events.
    fields = {"type": "authorized", "event_id": "003-H:1", "customer_id": "c1",
              "hold_id": "003-H", "product_id": "scan_pay", "merchant_id": "m9",
              "currency": "CNY", "nodes": "total", "at_ms": "1", "amount_minor": "5",
              "catalog_version": "v9", "a_field_of_layout_4": "x"}
    assert books.book("s 1-0", fields, POSTED).event[VERSION_AT] == "v9"


async def test_every_authorized_row_keeps_its_catalog_version(store):
    await post(store, [AUTHORIZED, CAPTURED, OLD_AUTHORIZED])
    rows = dict(await store.fetch("SELECT event_id, catalog_version FROM ledger_events"))
    assert rows == {"003-H:1": "2026-12-06.1", "003-H:2": "", "003-K:1": ""}


async def test_a_ledger_of_the_previous_release_gets_the_column_at_start(store, tmp_path,
                                                                        monkeypatch):
    old, schema = await fresh_like(store, tmp_path)
    try:
        every = store_module.migrations()
        monkeypatch.setattr(store_module, "migrations", lambda: [m for m in every if m[0] < 4])
        assert await old.migrate() == [1, 2, 3]
        insert_old = (f"INSERT INTO ledger_events ({', '.join(OLD_COLUMNS)}) VALUES ("
                      + ", ".join(f"${i}" for i in range(1, len(OLD_COLUMNS) + 1)) + ")")
        await old.execute(insert_old, *OLD_AUTHORIZED.event[:len(OLD_COLUMNS)])
        monkeypatch.setattr(store_module, "migrations", lambda: every)
        assert await old.migrate() == [4]  # what a worker does when it starts
        await post(old, [AUTHORIZED])
        # The previous release's worker, still running during the upgrade, posts as before.
        await old.execute(insert_old, *CAPTURED.event[:len(OLD_COLUMNS)])
        rows = dict(await old.fetch("SELECT event_id, catalog_version FROM ledger_events"))
        assert rows == {"003-K:1": "", "003-H:1": "2026-12-06.1", "003-H:2": ""}
    finally:
        await old.close()
        if schema:
            await drop_schema(schema)


async def test_the_worker_posts_the_version_of_real_traffic(gateway, admin, auth, store,
                                                            make_worker):
    traffic = Traffic(gateway, admin, auth)
    await traffic.put("c-cv")
    first = await traffic.authorize("c-cv", 1_000)
    await traffic.capture(first.hold_id, 1_000)
    second = await traffic.authorize("c-cv", 2_000)
    version = catalog.load_catalog().version
    assert first.catalog_version == second.catalog_version == version
    worker = make_worker("w1")
    await worker.start()
    await worker.drain()
    rows = await store.fetch("SELECT type, hold_id, catalog_version FROM ledger_events")
    assert sorted(rows) == sorted([("customer_put", "", ""),
                                   ("authorized", first.hold_id, version),
                                   ("captured", first.hold_id, ""),
                                   ("authorized", second.hold_id, version)])

"""The catalog version in AuthorizeResponse: an approval answers the version that decided it, a
retry of an approval the version its hold recorded (not the one in force after a reload), a
retry of a decline the version that decided the decline; the hold (by its path id) and the
`authorized` event record it."""

from __future__ import annotations

from pathlib import Path

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS
from tests.support import authorize_request

SHIPPED = catalog.load_catalog()


async def test_each_answer_names_the_catalog_version_that_decided_it(gateway, auth, admin,
                                                                     redis, tmp_path: Path):
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-1", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    approved = await auth.Authorize(authorize_request("k-1", "cv-1", 1_000))
    declined = await auth.Authorize(authorize_request("k-2", "cv-1", 10**9))
    assert approved.approved and not declined.approved
    assert approved.catalog_version == declined.catalog_version == SHIPPED.version != ""

    # A new version comes into force (what SIGHUP does with a new file).
    path = tmp_path / "products.toml"
    text = catalog.DEFAULT_CATALOG.read_text()
    path.write_text(text.replace(f'version = "{SHIPPED.version}"', 'version = "next.2"', 1))
    gateway.config.catalog_path = str(path)
    gateway.reload_catalog()
    assert gateway.context.catalog.version == "next.2"

    # Retries answer the first decision's version; a new purchase the version now in force.
    again = await auth.Authorize(authorize_request("k-1", "cv-1", 1_000))
    assert (again.hold_id, again.catalog_version) == (approved.hold_id, SHIPPED.version)
    again = await auth.Authorize(authorize_request("k-2", "cv-1", 10**9))
    assert (again.approved, again.catalog_version) == (False, SHIPPED.version)
    fresh = await auth.Authorize(authorize_request("k-3", "cv-1", 1_000))
    assert fresh.approved and fresh.catalog_version == "next.2"

    base = keys.base(keys.partition_of("cv-1", PARTITIONS))
    # A hold's path id names its catalog version in the partition's paths hash.
    recorded = {}
    for hold_id in (approved.hold_id, fresh.hold_id):
        path_id = await redis.hget(keys.hold(base, hold_id), keys.HOLD_FIELDS["NODES"])
        recorded[hold_id] = (await redis.hget(keys.paths(base), path_id.decode()
                                              + keys.PATH_VERSION_MARK)).decode()
    assert recorded == {approved.hold_id: SHIPPED.version, fresh.hold_id: "next.2"}
    events = [{k.decode(): v.decode() for k, v in fields.items()}
              for _, fields in await redis.xrange(keys.outbox(base))]
    assert [(event["hold_id"], event["catalog_version"]) for event in events
            if event["type"] == "authorized"] == [(approved.hold_id, SHIPPED.version),
                                                   (fresh.hold_id, "next.2")]


def reloaded(gateway, tmp_path: Path, edit) -> None:
    """The shipped catalog, edited, put in force as SIGHUP does."""
    path = tmp_path / "edited.toml"
    path.write_text(edit(catalog.DEFAULT_CATALOG.read_text()))
    gateway.config.catalog_path = str(path)
    gateway.reload_catalog()
    assert gateway.context.catalog.version != SHIPPED.version


async def test_a_retry_answers_its_approval_after_a_reload_removed_the_product(
        gateway, auth, admin, tmp_path: Path):
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-2", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    request = authorize_request("k-cash", "cv-2", 10_000, product_id="cash", channel="cash",
                                mcc="6011")
    approved = await auth.Authorize(request)
    assert approved.approved
    # The next version no longer offers cash (as a product retired on a date would be).
    reloaded(gateway, tmp_path, lambda text: text.replace(
        'version = "2026-12-06.1"', 'version = "no-cash"').split("# Cash:")[0])
    again = await auth.Authorize(request)  # the client's retry: its answer was lost
    assert (again.approved, again.hold_id) == (True, approved.hold_id)


async def test_a_retry_answers_its_decision_time_after_a_reload_changed_the_hold_ttl(
        gateway, auth, admin, tmp_path: Path):
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-3", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    request = authorize_request("k-ttl", "cv-3", 1_000)
    approved = await auth.Authorize(request)
    reloaded(gateway, tmp_path, lambda text: text.replace(
        'version = "2026-12-06.1"', 'version = "short-ttl"').replace(
        "hold_ttl_s = 604_800", "hold_ttl_s = 86_400", 1))
    again = await auth.Authorize(request)
    assert again.hold_id == approved.hold_id
    assert again.decided_at_ms == approved.decided_at_ms


def test_a_changed_catalog_that_keeps_its_version_is_refused(tmp_path: Path, caplog):
    """A version names one set of rules: a file edited without a new `[catalog] version` would
    record the old version on holds its new rules decide, so a reload refuses it (the version
    in force stays); the same file again is no change and is taken."""
    from creditgate.gateway import catalogs

    path = tmp_path / "products.toml"
    text = catalog.DEFAULT_CATALOG.read_text()
    path.write_text(text)
    current = catalogs.LiveCatalog(catalog.load_catalog(str(path)))
    assert catalogs.reload(str(path), current) is not current  # unchanged: taken
    path.write_text(text.replace("amount_max_minor = 5_000_000", "amount_max_minor = 4_000_000",
                                 1))
    assert catalogs.reload(str(path), current) is current
    assert f"version {SHIPPED.version} stays" in caplog.text
    assert "changed but keeps its version" in caplog.text

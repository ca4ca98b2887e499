"""The catalog version in AuthorizeResponse: an approval answers the version that decided it, a
retry of an approval the version its hold recorded (not the one in force after a reload), a
retry of a decline the version that decided the decline; the hold (by its path id) and the
`authorized` event record it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, keys
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot
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


GIFT = '''
[products.gift]
name = "Gift card, this season only"
currency = "CNY"
nodes = ["total", "consumer"]
channels = ["pos"]
amount_min_minor = 100
amount_max_minor = 200_000
hold_ttl_s = 3_600
installments = { months = [3], monthly_fee_bps = 10 }
'''


async def test_a_retry_of_a_gift_answers_its_first_decision_on_a_node_with_the_old_catalog(
        gateway, auth, admin, redis, tmp_path: Path):
    """A product only the new catalog has: a node still on the old one (a grey release, or a
    reload rolled back) answers the retry of its approval and of its decline with the first
    decision, and the same key with another payload ALREADY_EXISTS; nothing is written."""
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-4", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    reloaded(gateway, tmp_path, lambda text: text.replace(
        'version = "2026-12-06.1"', 'version = "gift.1"') + GIFT)
    approval = authorize_request("k-gift", "cv-4", 60_000, product_id="gift",
                                 installment_months=3)
    decline = authorize_request("k-gift-2", "cv-4", 300_000, product_id="gift")
    approved = await auth.Authorize(approval)
    declined = await auth.Authorize(decline)
    assert approved.approved and approved.installment_plan.months == 3
    assert approved.hold_expires_at_ms - approved.decided_at_ms == 3_600_000
    assert not declined.approved and declined.catalog_version == "gift.1"

    gateway.config.catalog_path = str(catalog.DEFAULT_CATALOG)  # the old catalog again
    gateway.reload_catalog()
    assert "gift" not in gateway.context.catalog.products
    before = await snapshot(redis)
    calls = gateway.context.limits.runner.calls_sent
    again = await auth.Authorize(approval)
    assert again.SerializeToString(deterministic=True) == approved.SerializeToString(
        deterministic=True)  # the first decision, its catalog version, its decision time
    again = await auth.Authorize(decline)
    assert again.SerializeToString(deterministic=True) == declined.SerializeToString(
        deterministic=True)
    other = authorize_request("k-gift", "cv-4", 60_001, product_id="gift",
                              installment_months=3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Authorize(other)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert gateway.context.limits.runner.calls_sent == calls + 3  # one read-only call each
    assert await snapshot(redis) == before


async def test_an_unknown_product_without_a_decision_is_invalid_and_writes_nothing(
        gateway, auth, admin, redis):
    """Deny by default: the key has no decision, so the answer is the catalog's refusal,
    naming the field, and nothing is reserved or written. A request malformed whatever the
    catalog is refused without a Redis call."""
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-5", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    before = await snapshot(redis)
    runner = gateway.context.limits.runner
    calls = runner.calls_sent
    for request, field, asked in (
            (authorize_request("k-x", "cv-5", 1_000, product_id="gift"), "product_id", 1),
            (authorize_request("k-x", "cv-5", 1_000, installment_months=4),
             "installment_months", 1),
            # Malformed whatever the catalog: no Redis call.
            (authorize_request("k-x", "cv-5", 1_000, product_id="gift card"), "product_id", 0),
            (authorize_request("k-x", "cv-5", 1_000, product_id="gift", mcc="54"), "product_id",
             0),
            (authorize_request("k-x", "cv-5", 1_000, currency="USD"), "currency", 0),
            (authorize_request("k-x", "cv-5", 1_000, installment_months=-3),
             "installment_months", 0)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Authorize(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(f"{field}: "), caught.value.details()
        assert runner.calls_sent == calls + asked, request
        calls = runner.calls_sent
    assert await snapshot(redis) == before
    assert (await redis.execute_command("DBSIZE")) == len(before)


async def test_authorize_batch_items_replay_as_authorize_does(gateway, auth, admin, redis,
                                                             tmp_path: Path):
    """AuthorizeBatch runs the same two halves per item: a retry of a removed product answers
    its approval, an unknown product without a decision and a malformed item each get their
    own INVALID_ARGUMENT naming the field, the malformed one without a Redis call; nothing is
    written."""
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cv-6", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    retry = authorize_request("k-cash-6", "cv-6", 10_000, product_id="cash", channel="cash",
                              mcc="6011")
    approved = await auth.Authorize(retry)
    assert approved.approved
    reloaded(gateway, tmp_path, lambda text: text.replace(
        'version = "2026-12-06.1"', 'version = "no-cash"').split("# Cash:")[0])
    before = await snapshot(redis)
    calls = gateway.context.limits.runner.calls_sent
    batch = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=[
        retry,
        authorize_request("k-none-6", "cv-6", 1_000, product_id="cash", channel="cash",
                          mcc="6011"),
        authorize_request("k-bad-6", "cv-6", 1_000, product_id="cash", mcc="60")]))
    first, unknown, malformed = batch.items
    assert first.response.SerializeToString(deterministic=True) == approved.SerializeToString(
        deterministic=True)
    for item in (unknown, malformed):
        assert item.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert item.error.message.startswith("product_id: "), item.error.message
    assert gateway.context.limits.runner.calls_sent == calls + 2  # the malformed item: none
    assert await snapshot(redis) == before

from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.conftest import CUSTOMER_CAPS


async def test_put_then_authorize(admin, auth):
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id="c1",
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=CUSTOMER_CAPS))
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="k", customer_id="c1", product_id="scan_pay", channel=pb.CHANNEL_POS,
        merchant_id="m", mcc="5411", amount_minor=100, currency="CNY"))
    assert reply.approved


async def test_second_test_same_machinery(admin):
    reply = await admin.PutCustomer(pb.PutCustomerRequest(customer_id="c2",
                                                          status=pb.CUSTOMER_STATUS_ACTIVE))
    assert reply.timezone == "Asia/Shanghai"

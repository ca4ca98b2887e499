"""The gateway's scenario tests, run here against the session's Redis Cluster: the fixtures of
tests/cluster/conftest.py point `redis_server` and `redis` at it, so every test below serves a
gateway whose URL is the cluster's and checks Redis through a RedisCluster client. A module
whose fixtures would replace the suite's for every test here (test_request_ids' `auth`) is
left out."""

from tests.gateway.test_audit_log import *  # noqa: F403
from tests.gateway.test_authorization_matrix import *  # noqa: F403
from tests.gateway.test_authorization_response import *  # noqa: F403
from tests.gateway.test_authorize_batch import *  # noqa: F403
from tests.gateway.test_bad_input import *  # noqa: F403
from tests.gateway.test_batch_cost import *  # noqa: F403
from tests.gateway.test_capture_complete import *  # noqa: F403
from tests.gateway.test_concurrency import *  # noqa: F403
from tests.gateway.test_expiry import *  # noqa: F403
from tests.gateway.test_force_capture import *  # noqa: F403
from tests.gateway.test_idempotency import *  # noqa: F403
from tests.gateway.test_increment import *  # noqa: F403
from tests.gateway.test_logs import *  # noqa: F403
from tests.gateway.test_malformed import *  # noqa: F403
from tests.gateway.test_outbox import *  # noqa: F403
from tests.gateway.test_partial_and_offers import *  # noqa: F403
from tests.gateway.test_raise import *  # noqa: F403
from tests.gateway.test_refund import *  # noqa: F403
from tests.gateway.test_repay import *  # noqa: F403
from tests.gateway.test_reverse import *  # noqa: F403
from tests.gateway.test_rich_errors import *  # noqa: F403
from tests.gateway.test_smoke import *  # noqa: F403
from tests.gateway.test_status import *  # noqa: F403
from tests.gateway.test_undecodable_metadata import *  # noqa: F403

# Three tests count the round trips of one Redis, or choose its transport: on a cluster a batch
# costs one round trip per master it touches (the test below), and the transport is the
# cluster runner's. What they check of the answers the other tests check on the cluster too.
del test_mixed_items_each_answered_as_unary_would_be_in_one_round_trip  # noqa: F821
del test_duplicate_keys_in_one_batch_act_as_sequential_calls  # noqa: F821
del test_redis_py_pipelines_can_be_chosen_and_answer_alike  # noqa: F821
# Two more reach one server directly: a relay in front of one Redis port, and CONFIG SET
# maxmemory, which a cluster client sends to one node, not to the customer's master.
del test_a_cancelled_batch_sends_none_of_its_calls_still_waiting  # noqa: F821
del test_resource_exhausted_says_what_ran_out_and_when_to_retry  # noqa: F821

import asyncio  # noqa: E402

from creditgate.gateway.pb import creditgate_pb2 as pb  # noqa: E402
from creditgate.limits import cluster as limits_cluster  # noqa: E402
from tests.cluster.test_cluster_runner import customers_by_master  # noqa: E402
from tests.conftest import CUSTOMER_CAPS, PARTITIONS  # noqa: E402
from tests.gateway.test_authorize_batch import authorize_request  # noqa: E402


async def test_a_batch_costs_one_round_trip_per_master(gateway, admin, auth, redis):
    shards = await limits_cluster.shards(redis, PARTITIONS)
    by_master = customers_by_master(shards, per_master=2)
    customers = [customer for ids in by_master.values() for customer in ids]
    await asyncio.gather(*(admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS)) for customer in customers))
    runners = gateway.runner._runners
    before = {name: runner.batches_sent for name, runner in runners.items()}
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=[
        authorize_request(f"k-{customer}", customer, amount_minor=1_000)
        for customer in customers]))
    assert all(item.response.approved for item in reply.items)
    assert {name: runner.batches_sent - before.get(name, 0)
            for name, runner in runners.items()} == {master: 1 for master in shards}

"""Fixtures of the Redis Cluster tests: one real cluster for the session (3 masters, 3
replicas; tests/cluster_support.py), and `redis_server`/`redis` pointed at it, so that the
gateway's scenario tests imported here run against the cluster as they run against one
Redis. A test that kills or reshards a node takes a cluster of its own (`own_cluster`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from creditgate.limits import cluster as redis_cluster_lib
from tests.cluster_support import Cluster, start_cluster
from tests.conftest import RedisServer


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def own_cluster(tmp_path) -> Iterator[Cluster]:
    """A cluster for one test that changes its shape (a master killed, a slot moved)."""
    started = start_cluster(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def redis_server(cluster: Cluster) -> RedisServer:
    cluster.flush()
    return RedisServer(url=cluster.url, port=cluster.masters()[0].port,
                       dir=cluster.nodes[0].dir)


@pytest_asyncio.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator:
    client = redis_cluster_lib.connect(redis_server.url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


# The ledger's fixtures (a migrated store on SQLite and on PostgreSQL, workers), here on the
# cluster.
from tests.ledger.conftest import make_worker, store  # noqa: E402, F401

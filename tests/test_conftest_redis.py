"""The session fixture runs a real, private redis-server, and each test starts from empty."""

from __future__ import annotations


def test_fixture_talks_to_a_private_real_redis_server(redis_server, redis_sync):
    info = redis_sync.info("server")

    assert info["redis_version"]
    assert info["tcp_port"] == redis_server.port
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_sync.dbsize() == 0


async def test_async_fixture_reads_its_own_writes_as_bytes(redis):
    await redis.set(b"creditgate:probe", b"1")

    assert await redis.get(b"creditgate:probe") == b"1"

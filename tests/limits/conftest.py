"""The scripts through LimitsClient, once on the pure-Python model and once on a real Redis."""

from __future__ import annotations

import pytest

from tests.support import ScriptDriver, model_client, redis_client


@pytest.fixture(params=["model", "redis"])
def driver(request) -> ScriptDriver:
    if request.param == "model":
        return ScriptDriver(model_client())
    return ScriptDriver(redis_client(request.getfixturevalue("redis")))

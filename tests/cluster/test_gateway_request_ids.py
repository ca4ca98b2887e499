"""tests/gateway/test_request_ids.py against the cluster, in a module of its own: its `auth`
fixture replaces the suite's for the tests beside it."""

from tests.gateway.test_request_ids import *  # noqa: F403

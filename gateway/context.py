"""What the services share: the limit client, the catalog and its compiled rules, the callers,
the metrics, and the injected randomness."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from creditgate import hotpath
from creditgate.gateway import metrics as metrics_
from creditgate.gateway.admission import Admission
from creditgate.gateway.callers import Callers
from creditgate.hotpath import plans
from creditgate.limits import catalog
from creditgate.limits.client import LimitsClient
from creditgate.limits.clock import RedisClock
from creditgate.limits.constants import HOLD_TOKEN_LENGTH


def random_token() -> str:
    """The random part of a hold id: 80 bits as 16 base32 characters."""
    return base64.b32encode(os.urandom(HOLD_TOKEN_LENGTH * 5 // 8)).decode()


class Context:
    """What the services share: the limit client, the catalog and the injected randomness."""

    def __init__(self, limits: LimitsClient, products: dict[str, catalog.Product],
                 callers: Callers, token_source: Callable[[], str] = random_token,
                 metrics: metrics_.GatewayMetrics | metrics_.NoMetrics = metrics_.NO_METRICS):
        self.limits = limits
        self.metrics = metrics  # gateway/metrics.py; NO_METRICS records nothing
        self.callers = callers  # who may call what (gateway/callers.py)
        self.products = products
        self.rules = hotpath.compile_products(products)
        self.partitions = limits.partitions
        self.token_source = token_source
        self.repayment_order = plans.repayment_order(products)
        # Admission control of this process, and its view of the scripts' clock (the server
        # samples it), so each call's deadline travels into its scripts.
        self.admission = Admission()
        self.redis_clock = RedisClock()



"""What the services share: the limit client, the catalog in force (gateway/catalogs.py), the
callers, the metrics, and the injected randomness."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from creditgate.gateway import metrics as metrics_
from creditgate.gateway.admission import Admission
from creditgate.gateway.callers import Callers
from creditgate.gateway.catalogs import LiveCatalog
from creditgate.gateway.shadow import Shadow
from creditgate.limits import catalog
from creditgate.limits.client import LimitsClient
from creditgate.limits.clock import RedisClock
from creditgate.limits.constants import HOLD_TOKEN_LENGTH


def random_token() -> str:
    """The random part of a hold id: 80 bits as 16 base32 characters."""
    return base64.b32encode(os.urandom(HOLD_TOKEN_LENGTH * 5 // 8)).decode()


class Context:
    """What the services share: the limit client, the catalog and the injected randomness."""

    def __init__(self, limits: LimitsClient, catalog_: catalog.Catalog,
                 callers: Callers, token_source: Callable[[], str] = random_token,
                 metrics: metrics_.GatewayMetrics | metrics_.NoMetrics = metrics_.NO_METRICS):
        self.limits = limits
        self.metrics = metrics  # gateway/metrics.py; NO_METRICS records nothing
        self.callers = callers  # who may call what (gateway/callers.py)
        # Replaced whole by a reload; a call reads it once, when it starts.
        self.catalog = LiveCatalog(catalog_)
        # A candidate catalog evaluated beside it, read-only (gateway/shadow.py); replaced
        # whole by a reload, as the catalog.
        self.shadow: Shadow | None = None
        self.partitions = limits.partitions
        self.token_source = token_source
        # Admission control of this process, and its view of the scripts' clock (the server
        # samples it), so each call's deadline travels into its scripts.
        self.admission = Admission()
        self.redis_clock = RedisClock()



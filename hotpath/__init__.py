"""The hot path: per-request validation, product rules and reservation plans.

The compiled twin (hotpath/_plan_c.pyx) is used unless CREDITGATE_NO_EXTENSIONS=1 is set or it
failed to import, which is logged. hotpath/_plan_py.py is the specification both follow.
"""

from __future__ import annotations

import logging
import os

from creditgate.hotpath import _plan_py

log = logging.getLogger("creditgate.hotpath")

NAMES = (
    "CHANNEL_NAMES",
    "InvalidArgument",
    "ProductRules",
    "compile_products",
    "check_id",
    "check_amount",
    "product_decline",
    "fingerprint",
    "authorize_fingerprint",
    "plan_authorize",
    "plan_capture",
    "plan_void",
)

implementation = _plan_py
EXTENSION_LOADED = False
if os.environ.get("CREDITGATE_NO_EXTENSIONS") != "1":
    try:
        from creditgate.hotpath import _plan_c as implementation  # type: ignore[no-redef]

        EXTENSION_LOADED = True
    except ImportError as error:  # not built: the pure-Python twin serves
        log.warning("hotpath: compiled extension not loaded (%s); using the Python twin", error)

CHANNEL_NAMES = implementation.CHANNEL_NAMES
InvalidArgument = _plan_py.InvalidArgument  # one class for both twins: callers catch one
ProductRules = implementation.ProductRules
compile_products = implementation.compile_products
check_id = implementation.check_id
check_amount = implementation.check_amount
product_decline = implementation.product_decline
fingerprint = implementation.fingerprint
authorize_fingerprint = implementation.authorize_fingerprint
# A cold path (a request the catalog in force refuses): the specification serves both twins.
plan_replay = _plan_py.plan_replay
plan_authorize = implementation.plan_authorize
plan_capture = implementation.plan_capture
plan_void = implementation.plan_void

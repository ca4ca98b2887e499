"""A candidate catalog run in shadow beside the live one (docs/operations.md, "Trying a catalog
in shadow"): every call is decided and answered on the live catalog; a sampled share of the
Authorize calls and AuthorizeBatch items is also evaluated on the candidate, without changing
anything in Redis, and where the two decisions differ is counted and logged.

A sampled call plans the candidate's reserve (the hot path's plan with the candidate's rules)
and queues the read-only shadow_reserve (limits/lua_source.py: reserve.lua's body flagged
no-writes, called with FCALL_RO) on the same runner immediately before the live reserve: the
two go in the same pipeline to the same Redis, one after the other, so the shadow reads the
state the live call decides on. The live call's answer never waits for the shadow (its reply
comes first), and a shadow that fails is counted as skipped, never the live call's failure.

Compared: the outcome (approved or declined), the decline reason, the approved amount, in
that order; a call differs by the first that differs. A product the candidate does not have
is a difference of kind product_absent; a request the candidate's rules refuse as invalid
(another currency, an installment term it does not offer) one of kind invalid. The shadow of
a retry (the live call answers from its idempotency record or hold) is not a new decision and
is skipped, as is a call whose customer has holds due for release (the live call releases
them first; the shadow cannot without writing) and a call that failed on either side.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable

from creditgate import hotpath
from creditgate.gateway import errors
from creditgate.gateway.catalogs import LiveCatalog
from creditgate.gateway.logs import REQUEST_ID
from creditgate.gateway.metrics import REASON_LABELS, UNKNOWN
from creditgate.hotpath import InvalidArgument
from creditgate.limits import catalog
from creditgate.limits.lua_source import SHADOW_SKIP
from creditgate.limits.replies import decode_authorization

log = logging.getLogger("creditgate.shadow")

# The differences are summed in one line per interval, as the failure log sums failures.
SHADOW_LOG_INTERVAL_S = errors.FAILURE_LOG_INTERVAL_S
EXAMPLES_PER_LINE_MAX = 3


class Shadow:
    """A candidate catalog evaluated beside the live one on a share of the calls."""

    def __init__(self, path: str, candidate: catalog.Catalog, share: float = 1.0,
                 counts=None, random_: Callable[[], float] = random.random,
                 interval_s: float = SHADOW_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        assert 0.0 <= share <= 1.0, share
        self.path, self.share = path, share
        self.candidate = LiveCatalog(candidate)
        self.counts = counts  # gateway/metrics.py ShadowCounts (or NOTHING)
        self.random, self.interval_s, self.clock = random_, interval_s, clock
        # This interval's differences for the log line: (product, kind, live, candidate) ->
        # calls; with the calls compared and skipped, and a few examples.
        self.differences: dict[tuple[str, str, str, str], int] = {}
        self.compared = 0
        self.skipped: dict[str, int] = {}  # by why: replay, expired, layout, failed, live_*
        self.examples: list[dict[str, object]] = []
        self.started_s = clock()
        self.live_version = ""  # the live catalog's, as of the last call sampled
        self._timer: asyncio.TimerHandle | None = None

    # -- the call --------------------------------------------------------------------------------
    def reserve(self, limits, live: LiveCatalog, request, keys_, args):
        """The live reserve call (queued now, as LimitsClient.reserve), and before it, if this
        call is sampled, the candidate's shadow_reserve; compared when both have answered."""
        if self.share < 1.0 and not (self.share > 0.0 and self.random() < self.share):
            return limits.reserve(keys_, args)
        self.live_version = live.version
        rules = self.candidate.rules
        try:
            shadow_keys, shadow_args = hotpath.plan_authorize(request, rules,
                                                              limits.partitions)
        except InvalidArgument:
            shadow = "product_absent" if request.product_id not in rules else "invalid"
        else:
            try:
                shadow = limits.shadow_reserve(shadow_keys, shadow_args)
            except Exception:  # noqa: BLE001 - the shadow never fails the live call
                shadow = None
        call = limits.reserve(keys_, args)
        call.add_done_callback(functools.partial(
            self._live_answered, shadow, request.product_id, REQUEST_ID.get()))
        return call

    def _live_answered(self, shadow, product: str, request_id: str, call) -> None:
        if shadow is None:  # it could not be queued
            self._skipped("failed")
        elif isinstance(shadow, str) or shadow.done():
            self._compare(shadow, call, product, request_id)
        else:  # a cluster's runner may settle the two in either order
            shadow.add_done_callback(lambda shadow_: self._compare(shadow_, call, product,
                                                                   request_id))

    def _compare(self, shadow, call, product: str, request_id: str) -> None:
        live, why = _decision(call)
        if live is None:  # the live call failed or was refused: nothing to compare
            if not isinstance(shadow, str):
                _decision(shadow)  # its exception, if any, is retrieved
            self._skipped("live_" + why)
            return
        if isinstance(shadow, str):  # the candidate refused the request itself
            self._differs(product, shadow, live, None, request_id)
            return
        candidate, why = _decision(shadow)
        if candidate is None:
            self._skipped(why)
            return
        if (live.reason == 0) != (candidate.reason == 0):
            kind = "outcome"
        elif live.reason != candidate.reason:
            kind = "reason"
        elif live.approved_amount_minor != candidate.approved_amount_minor:
            kind = "amount"
        else:
            self._counted("same")
            return
        self._differs(product, kind, live, candidate, request_id)

    def _counted(self, result: str, product: str = "", kind: str = "") -> None:
        self.compared += 1
        if self.counts is not None:
            self.counts.compared(result, product, kind)

    def _skipped(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1
        if self.counts is not None:
            self.counts.compared("skipped", "", "")
        if why == "failed":  # a shadow that fails is logged, as differences are
            self._schedule_flush()

    def _differs(self, product: str, kind: str, live, candidate, request_id: str) -> None:
        self._counted("differs", product, kind)
        live_label = _label(live)
        candidate_label = kind if candidate is None else _label(candidate)
        key = (product, kind, live_label, candidate_label)
        self.differences[key] = self.differences.get(key, 0) + 1
        if len(self.examples) < EXAMPLES_PER_LINE_MAX:
            example = {"product": product, "kind": kind, "request_id": request_id,
                       "live": live_label, "candidate": candidate_label}
            if live.hold_id:  # the gateway's id of the live hold; never a request's values
                example["hold_id"] = live.hold_id
            self.examples.append(example)
        self._schedule_flush()

    # -- the log line ----------------------------------------------------------------------------
    def flush(self) -> None:
        """The interval's differences in one line (none if there were none); a new interval."""
        now = self.clock()
        differences, self.differences = self.differences, {}
        examples, self.examples = self.examples, []
        compared, skipped = self.compared, self.skipped
        self.compared, self.skipped = 0, {}
        started_s, self.started_s = self.started_s, now
        if not differences and not skipped.get("failed"):
            return
        by_product: dict[str, dict[str, int]] = {}
        for (product, kind, _, _), calls in differences.items():
            kinds = by_product.setdefault(product, {})
            kinds[kind] = kinds.get(kind, 0) + calls
        differing = sum(differences.values())
        summary = "; ".join(f"{product} {kind} {live}->{candidate}: {calls}"
                            for (product, kind, live, candidate), calls
                            in sorted(differences.items()))
        log.warning("shadow catalog %s differs on %d of %d calls compared in %.1f s "
                    "(%d skipped, %d of them failed): %s", self.candidate.version, differing,
                    compared, now - started_s, sum(skipped.values()), skipped.get("failed", 0),
                    summary or "no difference",
                    extra={"shadow_version": self.candidate.version,
                           "live_version": self.live_version, "compared": compared,
                           "differs": differing, "skipped": skipped,
                           "differences": by_product, "examples": examples,
                           "request_id": "", "trace_id": ""})

    def _schedule_flush(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(
            max(self.started_s + self.interval_s - self.clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def close(self) -> None:
        """The last interval's line (a drained process's, or a replaced candidate's)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


def _decision(call) -> tuple[object | None, str]:
    """A settled reserve call's decoded decision, or None and why not: failed (an exception,
    retrieved here, or cancelled), refused (the script's ERR), or the shadow's SKIP reason."""
    if call.cancelled() or call.exception() is not None:
        return None, "failed"
    reply = call.result()
    if isinstance(reply, bytes):
        reply = reply.decode()
    if reply.startswith(SHADOW_SKIP):
        return None, reply[len(SHADOW_SKIP):]
    if not reply.startswith("OK|"):
        return None, "refused"
    return decode_authorization(reply), ""


def _label(decision) -> str:
    return REASON_LABELS.get(int(decision.reason), UNKNOWN)


def load(path: str, share: float, counts=None) -> Shadow:
    """The candidate at `path` (raises CatalogError naming the file, product and field)."""
    return Shadow(path, catalog.load_catalog(path), share, counts)


def reload(current: Shadow, counts=None) -> Shadow:
    """The candidate file read again, or `current` if it does not validate (logged)."""
    try:
        loaded = catalog.load_catalog(current.path)
    except catalog.CatalogError as error:
        log.error("shadow catalog reload refused, version %s stays: %s",
                  current.candidate.version, error,
                  extra={"catalog": current.path, "version": current.candidate.version,
                         "result": "refused"})
        return current
    current.close()
    replaced = Shadow(current.path, loaded, current.share, counts, current.random,
                      current.interval_s, current.clock)
    log.info("shadow catalog reloaded: version %s -> %s, %d products from %s",
             current.candidate.version, replaced.candidate.version,
             len(replaced.candidate.products), current.path,
             extra={"catalog": current.path, "version": replaced.candidate.version,
                    "previous": current.candidate.version, "result": "reloaded"})
    return replaced

"""The catalog a gateway process serves, replaced while it serves.

A LiveCatalog is one version of the catalog with what the hot path compiles from it. A call
takes the process's LiveCatalog once, when it starts, and plans, decides and answers with
that one, so a reload never changes the rules under a call in flight: calls already planned
finish on the old version, calls that start after the swap use the new one.

A reload (SIGHUP to a server process; under `--processes N` the supervisor passes it to every
server process) reads and validates the catalog file again. A catalog that does not validate
is refused with the same error as at start-up, logged once, and the version in force stays;
so is a catalog that changed but kept the version in force (a version names one set of rules).
`creditgate catalog reload` validates the file first and only then signals the gateway;
`creditgate catalog check` and `creditgate catalog diff` read files without touching a gateway.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys

from creditgate import hotpath
from creditgate.hotpath import plans
from creditgate.limits import catalog

log = logging.getLogger("creditgate.catalog")


class LiveCatalog:
    """One version of the catalog as a process serves it."""

    __slots__ = ("version", "products", "rules", "repayment_order")

    def __init__(self, catalog_: catalog.Catalog):
        self.version = catalog_.version
        self.products = catalog_.products
        self.rules = hotpath.compile_products(catalog_.products, catalog_.version)
        self.repayment_order = plans.repayment_order(catalog_.products)


def reload(path: str, current: LiveCatalog) -> LiveCatalog:
    """The catalog at `path` compiled, or `current` if it does not validate (logged)."""
    try:
        loaded = catalog.load_catalog(path)
        if loaded.version == current.version and loaded.products != current.products:
            # A version names one set of rules (holds and declines record it).
            raise catalog.CatalogError(
                path, None, "catalog.version", f"the catalog changed but keeps its version "
                f"{loaded.version!r}: give it a new [catalog] version")
    except catalog.CatalogError as error:
        log.error("catalog reload refused, version %s stays: %s", current.version, error,
                  extra={"catalog": path, "version": current.version, "result": "refused"})
        return current
    live = LiveCatalog(loaded)
    log.info("catalog reloaded: version %s -> %s, %d products from %s", current.version,
             live.version, len(live.products), path,
             extra={"catalog": path, "version": live.version, "previous": current.version,
                    "products": len(live.products), "result": "reloaded"})
    return live


# -- creditgate catalog check | diff | reload (parsed by gateway/cli.py) ------------------------
def command(args) -> int:
    try:
        if args.action == "check":
            loaded = catalog.load_catalog(args.file)
            print(f"{args.file}: catalog {loaded.version}, {len(loaded.products)} products: "
                  + ", ".join(sorted(loaded.products)))
            return 0
        if args.action == "diff":
            print("\n".join(catalog.diff(catalog.load_catalog(args.old),
                                         catalog.load_catalog(args.new))))
            return 0
        loaded = catalog.load_catalog(args.catalog)
    except catalog.CatalogError as error:
        print(f"creditgate: bad catalog: {error}", file=sys.stderr)
        return 2
    return _signal_reload(args, loaded)


def _signal_reload(args, loaded: catalog.Catalog) -> int:
    try:
        pid = args.pid if args.pid is not None else \
            int(pathlib.Path(args.pid_file).read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as error:
        print(f"creditgate: cannot signal the gateway: {error}", file=sys.stderr)
        return 1
    print(f"catalog {loaded.version} is valid; sent SIGHUP to the gateway (pid {pid}): each "
          "process logs 'catalog reloaded' and creditgate_catalog_info shows its version")
    return 0

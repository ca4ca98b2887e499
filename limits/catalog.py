"""The product factory: products are defined in TOML, decoded and validated with msgspec.

A product names the limit nodes it draws on (root first, e.g. total -> consumer -> scan_pay),
optionally one more node per channel, its per-transaction bounds (and per channel), channels,
MCC and merchant lists, velocity windows, hold TTL, the hours of the customer's day it may be
used, a first-purchase maximum, and when it takes and leaves effect. Products are assembled
from `[templates.<name>]` (limits/assembly.py). The catalog carries a version (`[catalog]
version`, else the first 12 hex digits of the file's SHA-256). A bad catalog stops start-up,
or a reload, with a CatalogError that names the file, the product and the field.
"""

from __future__ import annotations

import datetime
import hashlib
import pathlib
import re
from typing import Literal, get_args

import msgspec

from creditgate.limits import assembly, config_file, contracts
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    CAPTURE_TOLERANCE_BPS_MAX,
    EFFECTIVE_MS_MAX,
    HOLD_TTL_S_MAX,
    HOLD_TTL_S_MIN,
    ID_LENGTH_MAX,
    INSTALLMENT_FEE_BPS_MAX,
    INSTALLMENT_MONTHS_MAX,
    INSTALLMENT_TERMS_MAX,
    NODE_NAME_LENGTH_MAX,
    PRODUCT_NODES_MAX,
    REPAY_PATHS_MAX,
    VELOCITY_AMOUNT_MINOR_MAX,
    VELOCITY_COUNT_MAX,
)

Channel = Literal["qr_scan", "pos", "ecommerce", "cash"]
CHANNELS: tuple[str, ...] = get_args(Channel)
CURRENCIES = frozenset({"CNY"})  # ISO 4217 codes this deployment books

NODE_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z")
PRODUCT_ID = re.compile(r"[a-z][a-z0-9_]*\Z")
MCC = re.compile(r"[0-9]{4}\Z")
MERCHANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*\*?\Z")  # an id, or a prefix ending in '*'
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}\Z")
HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])\Z")
MERCHANTS_LISTED_MAX = 256
HOUR_RANGES_MAX = 4

DEFAULT_CATALOG = pathlib.Path(__file__).with_name("products.toml")


class VelocityWindow(msgspec.Struct, forbid_unknown_fields=True):
    """Approved authorizations of one calendar window in the customer's timezone.
    0 means no limit."""

    amount_max_minor: int = 0
    count_max: int = 0


class Velocity(msgspec.Struct, forbid_unknown_fields=True):
    day: VelocityWindow = msgspec.field(default_factory=VelocityWindow)
    month: VelocityWindow = msgspec.field(default_factory=VelocityWindow)


class Installments(msgspec.Struct, forbid_unknown_fields=True):
    """Instalment terms a product offers at authorization; the fee is charged on each
    installment, in basis points of the principal (limits/installments.py)."""

    months: list[int] = []  # e.g. [3, 6, 12]; empty: no installments
    monthly_fee_bps: int = 0


class ChannelBounds(msgspec.Struct, forbid_unknown_fields=True):
    """A channel's own per-transaction bounds, within the product's (0: the product's)."""

    amount_min_minor: int = 0
    amount_max_minor: int = 0


class Product(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    nodes: list[str]  # root first
    channels: list[Channel]
    amount_min_minor: int
    amount_max_minor: int
    hold_ttl_s: int
    currency: str = "CNY"
    channel_nodes: dict[Channel, str] = {}  # one more level per channel, last in the path
    mcc_allow: list[str] = []  # empty: every MCC not denied
    mcc_deny: list[str] = []
    velocity: Velocity = msgspec.field(default_factory=Velocity)
    # Captures of a hold may total up to amount * (1 + bps / 10000) (tips, fuel top-ups).
    capture_tolerance_bps: int = 0
    partial_approval: bool = False  # approve the most that fits, if the request allows it
    incremental: bool = False  # IncrementAuthorization may raise its holds
    installments: Installments = msgspec.field(default_factory=Installments)
    # Repayments pay the balances of products with a lower number first (then by id).
    repayment_priority: int = 100
    channel_bounds: dict[Channel, ChannelBounds] = {}
    merchants_allow: list[str] = []  # ids or prefixes ("mer-310115-*"); empty: every one
    merchants_deny: list[str] = []
    # Ranges of the customer's local time ("08:00-22:00"; "22:00-02:00" crosses midnight);
    # empty: any time.
    allowed_hours: list[str] = []
    # A customer's first approved purchase of the product may be at most this (0: no limit).
    first_purchase_max_minor: int = 0
    # The product answers only from effective_from (inclusive) until effective_until
    # (exclusive); absent: always. TOML datetimes with an offset.
    effective_from: datetime.datetime | None = None
    effective_until: datetime.datetime | None = None
    id: str = ""  # set from the table's key

    def nodes_for(self, channel: str) -> tuple[str, ...]:
        extra = self.channel_nodes.get(channel)  # type: ignore[call-overload]
        return tuple(self.nodes) + ((extra,) if extra else ())


class CatalogError(config_file.ConfigFileError):
    KIND = "product"

    @property
    def product(self) -> str | None:
        return self.name


class TemplateError(CatalogError):
    """An error in a [templates.<name>] table (limits/assembly.py)."""

    KIND = "template"


class Catalog(msgspec.Struct, frozen=True):
    """A validated catalog: its version and its products by id."""

    version: str
    products: dict[str, Product]


class CatalogHeader(msgspec.Struct, forbid_unknown_fields=True):
    version: str = ""


def load(path: str | pathlib.Path = DEFAULT_CATALOG) -> dict[str, Product]:
    """Read and validate a catalog file; raise CatalogError naming file, product and field."""
    return load_catalog(path).products


def load_catalog(path: str | pathlib.Path = DEFAULT_CATALOG) -> Catalog:
    """load(), with the catalog's version."""
    return parse_catalog(config_file.read(path, CatalogError), str(path))


def _check_tree(path: str, products: dict[str, Product]) -> None:
    """Every product's path walks down one limit tree from its single root: each node is a
    child of the node before it ("consumer" of the root, "consumer.scan_pay" of "consumer"),
    and a channel's node is a child of the path's last node. Otherwise a product could spend
    around a level, and "the first level short from the root" would mean nothing."""
    roots = {product.nodes[0] for product in products.values()}
    for product in products.values():
        root = product.nodes[0]
        if "." in root:
            raise CatalogError(path, product.id, "nodes",
                               f"the path starts at the root of the limit tree, not {root!r}")
        if len(roots) > 1:
            raise CatalogError(path, product.id, "nodes",
                               f"all products share one root; found {sorted(roots)}")
        steps = [("nodes", product.nodes[i - 1], product.nodes[i])
                 for i in range(1, len(product.nodes))]
        steps += [("channel_nodes", product.nodes[-1], node)
                  for node in product.channel_nodes.values()]
        for field, parent, node in steps:
            expected = node.rsplit(".", 1)[0] if "." in node else root
            if expected != parent:
                raise CatalogError(path, product.id, field,
                                   f"{node!r} is not a child of {parent!r}; a path walks down "
                                   "the tree one level at a time")


def parse(data: bytes | str, path: str = "<catalog>") -> dict[str, Product]:
    return parse_catalog(data, path).products


def parse_catalog(data: bytes | str, path: str = "<catalog>") -> Catalog:
    document = config_file.decode(data, path, CatalogError,
                                  frozenset({"catalog", "templates", "products"}))
    header = config_file.convert(document.get("catalog", {}), CatalogHeader, path, None,
                                 CatalogError)
    if header.version and not VERSION.match(header.version):
        raise CatalogError(path, None, "catalog.version", "letters, digits and . _ : + -, "
                           "starting with a letter or digit, at most 64 characters")
    tables = document.get("products")
    if not isinstance(tables, dict) or not tables:
        raise CatalogError(path, None, "products", "the catalog defines no [products.<id>]")
    tables = assembly.assemble(path, document.get("templates", {}), tables, CatalogError,
                               TemplateError)
    raw = data.encode() if isinstance(data, str) else data
    version = header.version or hashlib.sha256(raw).hexdigest()[:12]
    return Catalog(version, _products(path, tables))


def _products(path: str, tables: dict) -> dict[str, Product]:
    products: dict[str, Product] = {}
    for product_id, table in tables.items():
        product = config_file.convert(table, Product, path, product_id, CatalogError,
                                      f"channels are {', '.join(CHANNELS)}")
        product.id = product_id
        _check(path, product)
        _check_elements(path, product)
        products[product_id] = product
    _check_tree(path, products)
    _check_paths(path, products)
    return products


def _check_paths(path: str, products: dict[str, Product]) -> None:
    """A repayment walks every path of the catalog (a product's nodes and, per channel, its
    channel node): at most REPAY_PATHS_MAX of them."""
    paths = {",".join(product.nodes_for(channel)) for product in products.values()
             for channel in product.channels}
    if len(paths) > REPAY_PATHS_MAX:
        raise CatalogError(path, None, "products", f"{len(paths)} distinct limit paths; a "
                           f"repayment walks at most {REPAY_PATHS_MAX}")


def hour_ranges(product: Product) -> list[tuple[int, int]]:
    """allowed_hours as (first minute, end minute) of the day, the end exclusive; a range
    that crosses midnight ends after 1440."""
    ranges = []
    for text in product.allowed_hours:
        match = HOURS.match(text)
        assert match, text  # checked at load
        h1, m1, h2, m2 = map(int, match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        ranges.append((start, end if end > start else end + 1440))
    return ranges


def _check_elements(path: str, product: Product) -> None:
    """The elements products are assembled from beyond the basic bounds."""
    def fail(field: str, message: str) -> None:
        raise CatalogError(path, product.id, field, message)

    for channel, bounds in product.channel_bounds.items():
        field = f"channel_bounds.{channel}"
        if channel not in product.channels:
            fail(field, f"channel {channel!r} is not among the product's channels")
        low = bounds.amount_min_minor or product.amount_min_minor
        high = bounds.amount_max_minor or product.amount_max_minor
        if not product.amount_min_minor <= low <= high <= product.amount_max_minor:
            fail(field, "need amount_min_minor <= amount_max_minor, both within the "
                 "product's bounds (0: the product's)")
    for field in ("merchants_allow", "merchants_deny"):
        merchants = getattr(product, field)
        if len(merchants) > MERCHANTS_LISTED_MAX:
            fail(field, f"at most {MERCHANTS_LISTED_MAX} merchants")
        for merchant in merchants:
            if len(merchant) > ID_LENGTH_MAX or not MERCHANT.match(merchant):
                fail(field, f"bad merchant {merchant!r}: an id, or a prefix ending in '*'")
    if set(product.merchants_allow) & set(product.merchants_deny):
        fail("merchants_deny", "a merchant is both allowed and denied")
    if len(product.allowed_hours) > HOUR_RANGES_MAX:
        fail("allowed_hours", f"at most {HOUR_RANGES_MAX} ranges")
    for text in product.allowed_hours:
        match = HOURS.match(text)
        if not match or text[:5] == text[6:] or (match.group(3) == "24" and match.group(4) != "00"):
            fail("allowed_hours", f"bad range {text!r}: \"HH:MM-HH:MM\" of the customer's "
                 "day, start and end different (\"22:00-02:00\" crosses midnight)")
    first = product.first_purchase_max_minor
    if first and not product.amount_min_minor <= first <= product.amount_max_minor:
        fail("first_purchase_max_minor",
             "must be within amount_min_minor..amount_max_minor, or 0 (no limit)")
    for field in ("effective_from", "effective_until"):
        moment = getattr(product, field)
        if moment is not None and moment.utcoffset() is None:
            fail(field, "a datetime with a UTC offset (e.g. 2026-12-12T00:00:00+08:00)")
    if product.effective_from and product.effective_until and \
            product.effective_until <= product.effective_from:
        fail("effective_until", "must come after effective_from")
    for field in ("effective_from", "effective_until"):
        moment = getattr(product, field)
        if moment is not None and not EPOCH <= moment < EFFECTIVE_END:
            fail(field, "must be within 1970-01-01 and 9999-12-31 (UTC)")
    # An end at the epoch would be 0 in the rules, which reads as no end at all.
    if product.effective_until is not None and product.effective_until == EPOCH:
        fail("effective_until", "must be after 1970-01-01T00:00:00Z")


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
EFFECTIVE_END = EPOCH + datetime.timedelta(milliseconds=EFFECTIVE_MS_MAX)
_MS = datetime.timedelta(milliseconds=1)


def effective_ms(product: Product) -> tuple[int, int]:
    """(from, until) in ms since the epoch, each rounded up to a whole ms (the scripts' clock
    counts whole ms: `now >= from` holds from the first ms that is not before the instant);
    0 for an end that is absent."""
    return tuple(-((EPOCH - moment) // _MS) if moment else 0  # type: ignore[return-value]
                 for moment in (product.effective_from, product.effective_until))


def hours_text(product: Product) -> str:
    """allowed_hours as reserve's product rules carry them (contracts.PRODUCT_RULES):
    "<start>:<end>" minutes of the day (hour_ranges) joined by ';', or "0" for any time."""
    ranges = hour_ranges(product)
    return contracts.HOURS_SEPARATOR.join(f"{start}:{end}" for start, end in ranges) \
        if ranges else "0"


def _check(path: str, product: Product) -> None:
    def fail(field: str, message: str) -> None:
        raise CatalogError(path, product.id, field, message)

    if not PRODUCT_ID.match(product.id) or len(product.id) > ID_LENGTH_MAX:
        fail("id", "a product id is lower-case letters, digits and '_', starting with a letter")
    if product.currency not in CURRENCIES:
        fail("currency", f"unknown currency {product.currency!r}; known: {sorted(CURRENCIES)}")
    if not product.nodes:
        fail("nodes", "a product draws on at least one limit node")
    nodes = list(product.nodes) + list(product.channel_nodes.values())
    for node in nodes:
        if not NODE_NAME.match(node) or len(node) > NODE_NAME_LENGTH_MAX:
            fail("nodes", f"bad node name {node!r}: dotted lower-case words, at most "
                 f"{NODE_NAME_LENGTH_MAX} characters")
    if len(set(product.nodes)) != len(product.nodes) or set(product.nodes) & set(
        product.channel_nodes.values()
    ):
        fail("nodes", "a node appears twice in the product's path")
    if len(product.nodes) + (1 if product.channel_nodes else 0) > PRODUCT_NODES_MAX:
        fail("nodes", f"at most {PRODUCT_NODES_MAX} levels, channel node included")
    if not product.channels:
        fail("channels", "a product is usable on at least one channel")
    for channel in product.channel_nodes:
        if channel not in product.channels:
            fail("channel_nodes", f"channel {channel!r} is not among the product's channels")
    if product.amount_max_minor > AMOUNT_MINOR_MAX:
        fail("amount_max_minor", f"must be at most {AMOUNT_MINOR_MAX}")
    if not 0 < product.amount_min_minor <= product.amount_max_minor:
        fail("amount_min_minor", "need 0 < amount_min_minor <= amount_max_minor")
    if not HOLD_TTL_S_MIN <= product.hold_ttl_s <= HOLD_TTL_S_MAX:
        fail("hold_ttl_s", f"must be within {HOLD_TTL_S_MIN}..{HOLD_TTL_S_MAX} seconds")
    for field, mccs in (("mcc_allow", product.mcc_allow), ("mcc_deny", product.mcc_deny)):
        for mcc in mccs:
            if not MCC.match(mcc):
                fail(field, f"bad MCC {mcc!r}: four digits")
    if set(product.mcc_allow) & set(product.mcc_deny):
        fail("mcc_deny", "an MCC is both allowed and denied")
    if not 0 <= product.capture_tolerance_bps <= CAPTURE_TOLERANCE_BPS_MAX:
        fail("capture_tolerance_bps", f"must be within 0..{CAPTURE_TOLERANCE_BPS_MAX}")
    terms = product.installments.months
    if len(terms) > INSTALLMENT_TERMS_MAX:
        fail("installments.months", f"at most {INSTALLMENT_TERMS_MAX} terms")
    if len(set(terms)) != len(terms) or any(not 2 <= m <= INSTALLMENT_MONTHS_MAX for m in terms):
        fail("installments.months",
             f"distinct terms within 2..{INSTALLMENT_MONTHS_MAX} months")
    if not 0 <= product.installments.monthly_fee_bps <= INSTALLMENT_FEE_BPS_MAX:
        fail("installments.monthly_fee_bps", f"must be within 0..{INSTALLMENT_FEE_BPS_MAX}")
    if not 0 <= product.repayment_priority <= 1000:
        fail("repayment_priority", "must be within 0..1000")
    for period in ("day", "month"):
        window: VelocityWindow = getattr(product.velocity, period)
        if not 0 <= window.amount_max_minor <= VELOCITY_AMOUNT_MINOR_MAX:
            fail(f"velocity.{period}.amount_max_minor",
                 f"must be within 0..{VELOCITY_AMOUNT_MINOR_MAX} (0: no limit)")
        if not 0 <= window.count_max <= VELOCITY_COUNT_MAX:
            fail(f"velocity.{period}.count_max", f"must be within 0..{VELOCITY_COUNT_MAX}")


def _flat(value, prefix: str = "") -> dict[str, object]:
    """A product's fields as {dotted path: value}, tables flattened (lists kept whole)."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def diff(old: Catalog, new: Catalog) -> list[str]:
    """What `new` changes from `old`, product by product and element by element: one line a
    product added or removed, one line a changed element (`field: old -> new`)."""
    lines = [f"catalog {old.version} -> {new.version}"]
    for product_id in sorted(old.products.keys() | new.products.keys()):
        if product_id not in new.products:
            lines.append(f"- product {product_id}: removed")
            continue
        if product_id not in old.products:
            lines.append(f"+ product {product_id}: added ({new.products[product_id].name})")
            continue
        before, after = (_flat(msgspec.to_builtins(catalog.products[product_id]))
                         for catalog in (old, new))
        changed = [f"    {field}: {_shown(before.get(field))} -> {_shown(after.get(field))}"
                   for field in sorted(before.keys() | after.keys())
                   if before.get(field) != after.get(field)]
        if changed:
            lines += [f"~ product {product_id}:", *changed]
    if len(lines) == 1:
        lines.append("  no product changes")
    elif old.version == new.version:
        lines.append("! the version is unchanged: a gateway's reload refuses this catalog "
                     "(give it a new [catalog] version)")
    return lines


def _shown(value) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)

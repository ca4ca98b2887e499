"""The product catalog: each bad configuration stops start-up with a message that names the
file, the product and the field; the shipped catalog loads."""

from __future__ import annotations

import pytest

from creditgate.limits import catalog
from creditgate.limits.catalog import CatalogError, parse
from creditgate.limits.constants import REPAY_PATHS_MAX

GOOD = """\
[products.x]
name = "X"
nodes = ["total", "consumer"]
channels = ["qr_scan", "pos"]
amount_min_minor = 100
amount_max_minor = 1000
hold_ttl_s = 60
"""


def with_field(key: str, value: str | None) -> str:
    """GOOD with `key` replaced by `key = value` (or removed, for None)."""
    lines = [line for line in GOOD.splitlines() if not line.startswith(key + " ")]
    if value is not None:
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def plus(extra: str) -> str:
    return GOOD + extra + "\n"


P = "bad.toml: product 'x': "

CASES = [
    # wrong types
    ("min-as-string", with_field("amount_min_minor", '"100"'),
     P + "field 'amount_min_minor': Expected `int`, got `str`"),
    ("min-as-float", with_field("amount_min_minor", "1.5"),
     P + "field 'amount_min_minor': Expected `int`, got `float`"),
    ("ttl-as-bool", with_field("hold_ttl_s", "true"),
     P + "field 'hold_ttl_s': Expected `int`, got `bool`"),
    ("nodes-as-string", with_field("nodes", '"total"'),
     P + "field 'nodes': Expected `array`, got `str`"),
    ("name-as-int", with_field("name", "5"), P + "field 'name': Expected `str`, got `int`"),
    ("channel-as-int", with_field("channels", "[1]"),
     P + "field 'channels[0]': Expected `str`, got `int`"),
    ("product-not-a-table", "[products]\nx = 3\n",
     "bad.toml: product 'x': Expected `object`, got `int`"),
    # missing required fields
    ("missing-name", with_field("name", None),
     P + "field 'name': Object missing required field `name`"),
    ("missing-hold-ttl", with_field("hold_ttl_s", None),
     P + "field 'hold_ttl_s': Object missing required field `hold_ttl_s`"),
    # unknown fields
    ("unknown-field", plus("colour = 'red'"),
     P + "field 'colour': Object contains unknown field `colour`"),
    ("unknown-velocity-window", plus("velocity.week = { count_max = 1 }"),
     P + "field 'velocity': Object contains unknown field `week`"),
    ("unknown-velocity-field", plus("velocity.day = { count = 1 }"),
     P + "field 'velocity.day': Object contains unknown field `count`"),
    # channels
    ("unknown-channel", with_field("channels", '["qr_scan", "atm"]'),
     P + "field 'channels[1]': Invalid enum value 'atm'; channels are qr_scan, pos, "
     "ecommerce, cash"),
    ("no-channel", with_field("channels", "[]"),
     P + "field 'channels': a product is usable on at least one channel"),
    ("channel-node-for-channel-not-offered", plus('channel_nodes = { cash = "cash" }'),
     P + "field 'channel_nodes': channel 'cash' is not among the product's channels"),
    # nodes
    ("node-upper-case", with_field("nodes", '["total", "Consumer"]'),
     P + "field 'nodes': bad node name 'Consumer': dotted lower-case words, at most 48 "
     "characters"),
    ("node-empty-word", with_field("nodes", '["total", "a..b"]'),
     P + "field 'nodes': bad node name 'a..b': dotted lower-case words, at most 48 characters"),
    ("node-too-long", with_field("nodes", '["' + "a" * 49 + '"]'),
     P + f"field 'nodes': bad node name '{'a' * 49}': dotted lower-case words, at most 48 "
     "characters"),
    ("channel-node-bad-name", plus('channel_nodes = { pos = "consumer.POS" }'),
     P + "field 'nodes': bad node name 'consumer.POS': dotted lower-case words, at most 48 "
     "characters"),
    ("duplicate-node", with_field("nodes", '["total", "total"]'),
     P + "field 'nodes': a node appears twice in the product's path"),
    ("channel-node-repeats-a-node", plus('channel_nodes = { pos = "total" }'),
     P + "field 'nodes': a node appears twice in the product's path"),
    ("no-node", with_field("nodes", "[]"),
     P + "field 'nodes': a product draws on at least one limit node"),
    ("too-many-nodes", with_field("nodes", '["a", "b", "c", "d", "e", "f", "g", "h", "i"]'),
     P + "field 'nodes': at most 8 levels, channel node included"),
    # amounts
    ("min-above-max", with_field("amount_min_minor", "2000"),
     P + "field 'amount_min_minor': need 0 < amount_min_minor <= amount_max_minor"),
    ("min-zero", with_field("amount_min_minor", "0"),
     P + "field 'amount_min_minor': need 0 < amount_min_minor <= amount_max_minor"),
    # hold TTL
    ("hold-ttl-zero", with_field("hold_ttl_s", "0"),
     P + "field 'hold_ttl_s': must be within 1..2592000 seconds"),
    ("hold-ttl-above-30-days", with_field("hold_ttl_s", str(30 * 86_400 + 1)),
     P + "field 'hold_ttl_s': must be within 1..2592000 seconds"),
    # MCCs
    ("bad-denied-mcc", plus('mcc_deny = ["79a5"]'),
     P + "field 'mcc_deny': bad MCC '79a5': four digits"),
    ("bad-allowed-mcc", plus('mcc_allow = ["123"]'),
     P + "field 'mcc_allow': bad MCC '123': four digits"),
    ("mcc-allowed-and-denied", plus('mcc_allow = ["5411"]\nmcc_deny = ["5411"]'),
     P + "field 'mcc_deny': an MCC is both allowed and denied"),
    # velocity
    ("negative-velocity-count", plus("velocity.day = { count_max = -1 }"),
     P + "field 'velocity.day.count_max': must be within 0..1000000"),
    ("velocity-count-too-big", plus("velocity.month = { count_max = 1_000_001 }"),
     P + "field 'velocity.month.count_max': must be within 0..1000000"),
    ("negative-velocity-amount", plus("velocity.month = { amount_max_minor = -5 }"),
     P + "field 'velocity.month.amount_max_minor': must be within 0..10000000000000 "
     "(0: no limit)"),
    # currency, product id
    ("unknown-currency", plus('currency = "USD"'),
     P + "field 'currency': unknown currency 'USD'; known: ['CNY']"),
    ("bad-product-id", GOOD.replace("products.x", "products.X"),
     "bad.toml: product 'X': field 'id': a product id is lower-case letters, digits and '_', "
     "starting with a letter"),
    # the document
    ("empty-catalog", "", "bad.toml: field 'products': the catalog defines no [products.<id>]"),
    ("empty-products-table", "[products]\n",
     "bad.toml: field 'products': the catalog defines no [products.<id>]"),
    ("products-not-a-table", "products = 3\n",
     "bad.toml: field 'products': the catalog defines no [products.<id>]"),
    ("invalid-toml", "[products.x\nname = 1\n",
     "bad.toml: not valid TOML: Expected ']' at the end of a table declaration "
     "(at line 1, column 12)"),
    ("unknown-top-level-table", plus("[settings]\nfoo = 1"),
     "bad.toml: field 'settings': unknown top-level table or key"),
    ("unknown-top-level-key", "version = 2\n" + GOOD,
     "bad.toml: field 'version': unknown top-level table or key"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in CASES])
def test_bad_catalog_message(text, message):
    with pytest.raises(CatalogError) as caught:
        parse(text, "bad.toml")
    assert str(caught.value) == message
    # Sensible: the message names the file, and the product and field it reports.
    assert str(caught.value).startswith("bad.toml: ")
    if caught.value.product:
        assert f"product {caught.value.product!r}" in message
    if caught.value.field:
        assert f"field {caught.value.field!r}" in message


def test_good_catalog_parses():
    products = parse(GOOD, "good.toml")
    assert list(products) == ["x"]
    product = products["x"]
    assert (product.id, product.nodes, product.channels) == ("x", ["total", "consumer"],
                                                             ["qr_scan", "pos"])
    assert (product.amount_min_minor, product.amount_max_minor, product.hold_ttl_s) == (
        100, 1000, 60)
    assert product.currency == "CNY"
    assert product.nodes_for("pos") == ("total", "consumer")


def test_boundaries_are_accepted():
    text = with_field("hold_ttl_s", str(30 * 86_400))
    text = text.replace("amount_max_minor = 1000", "amount_max_minor = 100_000_000_000")
    product = parse(text + "velocity.day = { count_max = 1_000_000, amount_max_minor = 0 }\n",
                    "edge.toml")["x"]
    assert (product.hold_ttl_s, product.amount_max_minor) == (30 * 86_400, 100_000_000_000)
    assert product.velocity.day.count_max == 1_000_000


def test_unknown_channel_in_channel_nodes_names_the_field():
    with pytest.raises(CatalogError) as caught:
        parse(plus('channel_nodes = { atm = "x.atm" }'), "bad.toml")
    assert caught.value.field == "channel_nodes"
    assert str(caught.value) == (P + "field 'channel_nodes': Invalid enum value 'atm'; "
                                 "channels are qr_scan, pos, ecommerce, cash")


@pytest.mark.parametrize("maximum", ["100_000_000_001", "99999999999999999999"])
def test_amount_max_too_big_names_amount_max(maximum):
    with pytest.raises(CatalogError) as caught:
        parse(with_field("amount_max_minor", maximum), "bad.toml")
    assert caught.value.field == "amount_max_minor"


def test_catalog_that_is_not_utf8_is_a_catalog_error():
    with pytest.raises(CatalogError) as caught:
        parse(GOOD.encode() + b"# \xff\xfe\n", "bad.toml")
    assert str(caught.value).startswith("bad.toml: ")


def test_shipped_catalog():
    products = catalog.load()
    assert products == catalog.load(catalog.DEFAULT_CATALOG)
    scan = [p for p in products.values() if {"qr_scan", "pos"} <= set(p.channels)]
    online = [p for p in products.values() if "ecommerce" in p.channels]
    cash = [p for p in products.values() if "cash" in p.channels]
    assert scan and online and cash
    for product in products.values():
        assert product.currency in catalog.CURRENCIES
        assert product.nodes[0] == "total"  # every product draws on the customer's total line
        assert 0 < product.amount_min_minor <= product.amount_max_minor
    # Cash is not spendable at shops, and shop products do not pay out cash.
    assert all("cash" not in p.channels for p in scan + online)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "products.toml"
    with pytest.raises(CatalogError) as caught:
        catalog.load(missing)
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"
    assert caught.value.path == str(missing)


def test_load_names_the_file_in_validation_errors(tmp_path):
    path = tmp_path / "products.toml"
    path.write_text(with_field("hold_ttl_s", "0"))
    with pytest.raises(CatalogError) as caught:
        catalog.load(path)
    assert str(caught.value) == (f"{path}: product 'x': field 'hold_ttl_s': must be within "
                                 "1..2592000 seconds")


TREE = ('[products.a]\nname = "a"\nchannels = ["pos"]\namount_min_minor = 1\n'
        'amount_max_minor = 2\nhold_ttl_s = 5\n')


@pytest.mark.parametrize(("extra", "message"), [
    ('nodes = ["consumer.scan_pay"]',
     "field 'nodes': the path starts at the root of the limit tree, not 'consumer.scan_pay'"),
    ('nodes = ["total", "consumer.scan_pay"]',
     "field 'nodes': 'consumer.scan_pay' is not a child of 'total'; a path walks down the "
     "tree one level at a time"),
    ('nodes = ["total", "consumer"]\nchannel_nodes = { pos = "pos" }',
     "field 'channel_nodes': 'pos' is not a child of 'consumer'; a path walks down the tree "
     "one level at a time"),
])
def test_a_product_path_walks_down_one_tree(extra, message):
    with pytest.raises(CatalogError) as caught:
        parse(TREE + extra + "\n", "tree.toml")
    assert str(caught.value) == "tree.toml: product 'a': " + message


def test_all_products_share_one_root():
    text = TREE + 'nodes = ["total"]\n' + TREE.replace("products.a", "products.b") + \
        'nodes = ["line"]\n'
    with pytest.raises(CatalogError) as caught:
        parse(text, "tree.toml")
    assert "all products share one root; found ['line', 'total']" in str(caught.value)


def test_more_limit_paths_than_a_repayment_walks_is_refused():
    product = ('[products.p{i}]\nname = "p"\nnodes = ["total", "line{i}"]\nchannels = ["pos"]\n'
               'amount_min_minor = 1\namount_max_minor = 2\nhold_ttl_s = 5\n')
    fits = "".join(product.format(i=i) for i in range(REPAY_PATHS_MAX))
    assert len(parse(fits, "paths.toml")) == REPAY_PATHS_MAX
    with pytest.raises(CatalogError) as caught:
        parse(fits + product.format(i=REPAY_PATHS_MAX), "paths.toml")
    assert str(caught.value) == (f"paths.toml: field 'products': {REPAY_PATHS_MAX + 1} distinct "
                                 f"limit paths; a repayment walks at most {REPAY_PATHS_MAX}")

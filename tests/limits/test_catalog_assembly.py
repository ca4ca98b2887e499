"""Product assembly (limits/assembly.py), the catalog's version, the elements products are
assembled from beyond the basic bounds, and `catalog.diff`: each with the precise error a bad
catalog gets."""

from __future__ import annotations

import datetime

import pytest

from creditgate.limits import catalog
from creditgate.limits.assembly import merged
from creditgate.limits.catalog import CatalogError, TemplateError, parse_catalog

BASE = """\
[templates.base]
nodes = ["total", "consumer"]
channels = ["qr_scan", "pos"]
amount_min_minor = 100
amount_max_minor = 1000
hold_ttl_s = 60
mcc_deny = ["7995"]
velocity.day = { amount_max_minor = 5000, count_max = 10 }
"""


def catalog_of(text: str) -> catalog.Catalog:
    return parse_catalog(text, "c.toml")


def test_a_product_extends_templates_several_levels_deep_with_overrides():
    loaded = catalog_of(BASE + """
[templates.scan]
extends = "base"
nodes = ["total", "consumer", "consumer.scan"]
velocity.day = { count_max = 20 }

[templates.generous]
amount_max_minor = 9000

[products.scan_pay]
extends = ["scan", "generous"]
name = "Scan"
mcc_deny = ["6051"]
""")
    product = loaded.products["scan_pay"]
    assert product.nodes == ["total", "consumer", "consumer.scan"]  # scan over base
    assert product.amount_max_minor == 9000  # the later template of the list wins
    assert product.amount_min_minor == 100 and product.hold_ttl_s == 60  # from base
    assert product.mcc_deny == ["6051"]  # a list is replaced, not appended to
    # A table merges key by key: base's amount stays beside scan's count.
    assert (product.velocity.day.amount_max_minor, product.velocity.day.count_max) == (5000, 20)


def test_tables_merge_key_by_key_and_everything_else_is_replaced():
    assert merged({"a": {"x": 1, "y": {"z": 2}}, "b": [1]},
                  {"a": {"y": {"w": 3}}, "b": [2]}) == {"a": {"x": 1, "y": {"z": 2, "w": 3}},
                                                       "b": [2]}


PRODUCT = '\n[products.p]\nname = "P"\nextends = "{parent}"\n'

ERRORS = [
    ("cycle", BASE + '[templates.a]\nextends = "b"\n[templates.b]\nextends = "a"\n'
     + PRODUCT.format(parent="a"),
     "c.toml: template 'b': field 'extends': a cycle: a -> b -> a"),
    ("self", BASE + '[templates.a]\nextends = "a"\n' + PRODUCT.format(parent="base"),
     "c.toml: template 'a': field 'extends': a cycle: a -> a"),
    ("unknown-in-product", BASE + PRODUCT.format(parent="nope"),
     "c.toml: product 'p': field 'extends': unknown template 'nope' (templates: base)"),
    ("unknown-in-template", BASE + '[templates.a]\nextends = ["base", "gone"]\n'
     + PRODUCT.format(parent="base"),
     "c.toml: template 'a': field 'extends': unknown template 'gone' (templates: a, base)"),
    ("extends-not-a-name", BASE + '\n[products.p]\nname = "P"\nextends = 3\n',
     "c.toml: product 'p': field 'extends': names a template, or a non-empty list of "
     "templates"),
    ("empty-list", BASE + '\n[products.p]\nname = "P"\nextends = []\n',
     "c.toml: product 'p': field 'extends': names a template, or a non-empty list of "
     "templates"),
    ("template-field-wrong", BASE.replace("hold_ttl_s = 60", 'hold_ttl_s = "60"')
     + PRODUCT.format(parent="base"),
     "c.toml: product 'p': field 'hold_ttl_s': Expected `int`, got `str`"),
    ("missing-after-assembly", BASE.replace("hold_ttl_s = 60\n", "")
     + PRODUCT.format(parent="base"),
     "c.toml: product 'p': field 'hold_ttl_s': Object missing required field `hold_ttl_s`"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in ERRORS])
def test_assembly_errors_name_the_table_the_field_and_the_chain(text, message):
    with pytest.raises(CatalogError) as caught:
        catalog_of(text)
    assert str(caught.value) == message


def test_a_template_error_is_reported_as_a_template():
    with pytest.raises(TemplateError):
        catalog_of(BASE + '[templates.a]\nextends = "a"\n' + PRODUCT.format(parent="base"))


def test_the_version_is_the_catalogs_own_or_the_files_hash():
    text = BASE + PRODUCT.format(parent="base")
    assert catalog_of('[catalog]\nversion = "2026-12-12.1"\n' + text).version == "2026-12-12.1"
    unversioned = catalog_of(text).version
    assert len(unversioned) == 12 and unversioned == catalog_of(text).version
    assert catalog_of(text + "# a comment changes the file\n").version != unversioned
    for bad in ('"has space"', '""x"', '"' + "v" * 65 + '"'):
        with pytest.raises(CatalogError) as caught:
            catalog_of(f"[catalog]\nversion = {bad}\n" + text)
        assert caught.value.field in ("catalog.version", None)
    with pytest.raises(CatalogError) as caught:
        catalog_of('[catalog]\nrevision = 2\n' + text)
    assert str(caught.value) == ("c.toml: field 'revision': Object contains unknown field "
                                 "`revision`")


GOOD = BASE + PRODUCT.format(parent="base")
P = "c.toml: product 'p': "
ELEMENTS = [
    ("channel-bounds-outside-product", "channel_bounds.pos = { amount_max_minor = 2000 }",
     P + "field 'channel_bounds.pos': need amount_min_minor <= amount_max_minor, both within "
     "the product's bounds (0: the product's)"),
    ("channel-bounds-other-channel", "channel_bounds.cash = { amount_max_minor = 500 }",
     P + "field 'channel_bounds.cash': channel 'cash' is not among the product's channels"),
    ("channel-bounds-inverted", "channel_bounds.pos = { amount_min_minor = 800, "
     "amount_max_minor = 500 }",
     P + "field 'channel_bounds.pos': need amount_min_minor <= amount_max_minor, both within "
     "the product's bounds (0: the product's)"),
    ("merchant-bad", 'merchants_deny = ["a b"]',
     P + "field 'merchants_deny': bad merchant 'a b': an id, or a prefix ending in '*'"),
    ("merchant-star-inside", 'merchants_allow = ["a*b"]',
     P + "field 'merchants_allow': bad merchant 'a*b': an id, or a prefix ending in '*'"),
    ("merchant-both", 'merchants_allow = ["m1"]\nmerchants_deny = ["m1"]',
     P + "field 'merchants_deny': a merchant is both allowed and denied"),
    ("hours-bad", 'allowed_hours = ["8-22"]',
     P + "field 'allowed_hours': bad range '8-22': \"HH:MM-HH:MM\" of the customer's day, "
     "start and end different (\"22:00-02:00\" crosses midnight)"),
    ("hours-empty", 'allowed_hours = ["08:00-08:00"]',
     P + "field 'allowed_hours': bad range '08:00-08:00': \"HH:MM-HH:MM\" of the customer's "
     "day, start and end different (\"22:00-02:00\" crosses midnight)"),
    ("hours-past-midnight", 'allowed_hours = ["08:00-24:30"]',
     P + "field 'allowed_hours': bad range '08:00-24:30': \"HH:MM-HH:MM\" of the customer's "
     "day, start and end different (\"22:00-02:00\" crosses midnight)"),
    ("first-purchase-above-max", "first_purchase_max_minor = 1001",
     P + "field 'first_purchase_max_minor': must be within amount_min_minor..amount_max_minor, "
     "or 0 (no limit)"),
    ("first-purchase-below-min", "first_purchase_max_minor = 99",
     P + "field 'first_purchase_max_minor': must be within amount_min_minor..amount_max_minor, "
     "or 0 (no limit)"),
    ("effective-before-1970", "effective_from = 1969-12-31T23:59:59+00:00",
     P + "field 'effective_from': must be within 1970-01-01 and 9999-12-31 (UTC)"),
    # The epoch itself as the end would be 0 in the rules, which means no end: never
    # effective would read as always effective.
    ("effective-until-the-epoch", "effective_until = 1970-01-01T00:00:00+00:00",
     P + "field 'effective_until': must be after 1970-01-01T00:00:00Z"),
    ("effective-after-9999", "effective_until = 9999-12-31T00:00:00+00:00",
     P + "field 'effective_until': must be within 1970-01-01 and 9999-12-31 (UTC)"),
    ("effective-no-offset", "effective_from = 2026-12-12T00:00:00",
     P + "field 'effective_from': a datetime with a UTC offset (e.g. "
     "2026-12-12T00:00:00+08:00)"),
    ("effective-inverted", "effective_from = 2026-12-12T00:00:00+08:00\n"
     "effective_until = 2026-12-11T00:00:00+08:00",
     P + "field 'effective_until': must come after effective_from"),
    ("effective-a-date", "effective_from = 2026-12-12",
     P + "field 'effective_from': Expected `datetime | null`, got `date`"),
]


@pytest.mark.parametrize(("line", "message"), [pytest.param(t, m, id=i) for i, t, m in ELEMENTS])
def test_element_errors(line, message):
    with pytest.raises(CatalogError) as caught:
        catalog_of(GOOD + line + "\n")
    assert str(caught.value) == message


def test_every_element_is_accepted_and_reaches_the_rules_the_scripts_take():
    from creditgate.hotpath import _plan_py
    from creditgate.limits import contracts

    loaded = catalog_of(GOOD + """
channel_bounds.pos = { amount_min_minor = 200, amount_max_minor = 500 }
merchants_allow = ["mer-310115-*", "mer-1"]
merchants_deny = ["mer-310115-9*"]
allowed_hours = ["08:00-12:00", "22:00-02:00", "23:30-24:00"]
first_purchase_max_minor = 300
effective_from = 2026-12-12T00:00:00+08:00
effective_until = 2026-12-13T00:00:00+08:00
""")
    product = loaded.products["p"]
    assert product.channel_bounds["pos"].amount_max_minor == 500
    assert catalog.hour_ranges(product) == [(480, 720), (1320, 1560), (1410, 1440)]
    start = datetime.datetime(2026, 12, 11, 16, tzinfo=datetime.UTC)
    assert catalog.effective_ms(product) == (int(start.timestamp() * 1000),
                                             int(start.timestamp() * 1000) + 86_400_000)
    assert catalog.effective_ms(catalog_of(GOOD).products["p"]) == (0, 0)
    rules = _plan_py.ProductRules(product)
    for channel, low, high in (("pos", 200, 500), ("qr_scan", 100, 1000)):
        text = contracts.PRODUCT_RULES.bind(
            rules.rules_by_channel[channel].split(contracts.RULES_SEPARATOR))
        assert (text.amount_min_minor, text.amount_max_minor) == (str(low), str(high))
        assert text.allowed_hours == "480:720;1320:1560;1410:1440"
        assert text.first_purchase_max_minor == "300"
        assert (text.effective_from_ms, text.effective_until_ms) == tuple(
            map(str, catalog.effective_ms(product)))
    plain = contracts.PRODUCT_RULES.bind(_plan_py.ProductRules(
        catalog_of(GOOD).products["p"]).rules_by_channel["pos"].split("|"))
    assert (plain.allowed_hours, plain.first_purchase_max_minor, plain.effective_from_ms,
            plain.effective_until_ms) == ("0", "0", "0", "0")


def test_effective_times_round_up_to_the_scripts_whole_ms():
    product = catalog_of(GOOD + "effective_from = 2026-12-12T00:00:00.0001+00:00\n"
                         "effective_until = 2026-12-12T00:00:01.999+00:00\n").products["p"]
    second = int(datetime.datetime(2026, 12, 12, tzinfo=datetime.UTC).timestamp()) * 1000
    # From 0.1 ms past the second: the first whole ms not before it is second + 1.
    assert catalog.effective_ms(product) == (second + 1, second + 1999)


def test_diff_names_each_product_and_element_that_changed():
    old = catalog_of('[catalog]\nversion = "v1"\n' + GOOD + """
[products.gone]
extends = "base"
name = "Gone"
""")
    new = catalog_of('[catalog]\nversion = "v2"\n' + GOOD.replace(
        "amount_max_minor = 1000", "amount_max_minor = 800") + """
velocity.month = { count_max = 40 }

[products.fresh]
extends = "base"
name = "Fresh"
""")
    assert catalog.diff(old, new) == [
        "catalog v1 -> v2",
        "+ product fresh: added (Fresh)",
        "- product gone: removed",
        "~ product p:",
        "    amount_max_minor: 1000 -> 800",
        "    velocity.month.count_max: 0 -> 40",
    ]
    assert catalog.diff(old, old) == ["catalog v1 -> v1", "  no product changes"]
    # Changes under the same version: a gateway's reload would refuse the new file.
    same = catalog_of('[catalog]\nversion = "v1"\n' + GOOD.replace(
        "amount_max_minor = 1000", "amount_max_minor = 800"))
    assert catalog.diff(catalog_of('[catalog]\nversion = "v1"\n' + GOOD), same)[-1] == (
        "! the version is unchanged: a gateway's reload refuses this catalog "
        "(give it a new [catalog] version)")


def test_the_shipped_catalog_has_a_version_and_checks():
    loaded = catalog.load_catalog()
    assert loaded.version and loaded.products == catalog.load()


def test_templates_nested_too_deep_are_refused_not_a_recursion_error():
    chain = "".join(f'[templates.t{n}]\nextends = "t{n + 1}"\n' for n in range(600))
    with pytest.raises(TemplateError) as caught:
        catalog_of(BASE + chain + '[templates.t600]\nextends = "base"\n'
                   + PRODUCT.format(parent="t0"))
    assert str(caught.value).endswith("field 'extends': templates nest more than 32 levels deep")

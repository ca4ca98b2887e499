"""Every version a catalog may have (limits/catalog.VERSION) travels safely through the texts
that carry it: reserve's product rules (fields joined by '|', nodes by ','), a decline's record
(lines), the reply ('|'); the script answers it back unchanged, on an approval, its retry and a
decline's retry. A version with a separator in it is refused when the catalog loads."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgate import hotpath
from creditgate.limits import catalog, contracts
from creditgate.limits.replies import decode_authorization
from tests.support import PARTITIONS, PRODUCTS, ScriptDriver, authorize_request, model_client

versions = st.from_regex(catalog.VERSION, fullmatch=True)


@given(version=versions)
def test_the_rules_text_carries_any_catalog_version(version):
    assert not set(version) & {contracts.RULES_SEPARATOR, contracts.NODES_SEPARATOR, "\n"}
    rules = hotpath.compile_products(PRODUCTS, version)["scan_pay"].rules_by_channel["pos"]
    fields = contracts.PRODUCT_RULES.bind(rules.split(contracts.RULES_SEPARATOR))
    assert fields.catalog_version == version
    assert tuple(fields.nodes.split(contracts.NODES_SEPARATOR)) == tuple(
        PRODUCTS["scan_pay"].nodes_for("pos"))


@settings(max_examples=25, deadline=None)
@given(version=versions)
def test_the_scripts_answer_the_version_back(version):
    asyncio.run(_answer_back(version))


async def _answer_back(version: str) -> None:
    driver = ScriptDriver(model_client())
    await driver.put("cv-1", {"total": 5_000, "consumer": 5_000, "consumer.scan_pay": 5_000,
                              "consumer.scan_pay.pos": 5_000})
    rules = hotpath.compile_products(PRODUCTS, version)
    # An approval and its retry, a decline and its retry.
    for key, amount in (("k-1", 1_000), ("k-1", 1_000), ("k-2", 9_000), ("k-2", 9_000)):
        keys_, args = hotpath.plan_authorize(authorize_request(key, "cv-1", amount), rules,
                                             PARTITIONS)
        result = decode_authorization(await driver.client.reserve(keys_, args))
        assert (result.approved, result.catalog_version) == (key == "k-1", version)


@pytest.mark.parametrize("version", ["2026|1", "a,b", "a b", "v\n1", "-lead", "x" * 65])
def test_a_version_that_could_break_a_text_is_refused(version):
    shipped = catalog.load_catalog().version
    text = catalog.DEFAULT_CATALOG.read_text()
    assert f'version = "{shipped}"' in text
    text = text.replace(f'version = "{shipped}"', f"version = {json.dumps(version)}", 1)
    with pytest.raises(catalog.CatalogError, match="catalog.version"):
        catalog.parse_catalog(text)

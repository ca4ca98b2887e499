"""The callers file and its questions, without a server: each bad file its own case with the
exact error, every role against every method, scopes, quotas with an injected clock, and
identities by certificate SAN, API key and the loopback identity."""

from __future__ import annotations

import pytest

from creditgate.gateway import admission, callers
from creditgate.gateway.callers import (
    CallersError,
    PermissionDenied,
    QuotaExceeded,
    Unauthenticated,
)
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.tls import Peer
from tests.support import SECRETS, api_key

TERMINAL_URI = "spiffe://acquirer.example/terminal/T-0001"
KEY = api_key("BILL-1", "s3cret-s3cret")

GOOD = f"""
[roles.observer]
rate_per_s = 5.0
burst = 2

[callers.T-0001]
role = "terminal"
identity = "{TERMINAL_URI}"
merchants = ["M-0001", "CHAIN-*"]
channels = ["pos"]
products = ["scan_pay"]

[callers.ACQ-1]
role = "acquirer"
identity = "spiffe://acquirer.example/switch"
merchants = ["*"]

[callers.BO-1]
role = "backoffice"
identity = "spiffe://issuer.example/backoffice"

[callers.BILL-1]
role = "billing"
api_key_sha256 = "{callers.api_key_hash(KEY)}"

[callers.OBS-1]
role = "observer"
identity = "observer.issuer.example"

[callers.OPS]
role = ["backoffice", "billing"]
identity = "insecure:loopback"
"""


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def known(clock) -> callers.Callers:
    return callers.parse(GOOD, "callers.toml", clock)


# -- bad files: the exact error each ---------------------------------------------------------
BAD = [
    ("not toml", "x = ", "callers.toml: not valid TOML"),
    ("no callers", "[roles.terminal]\nrate_per_s = 1.0\nburst = 1\n",
     "callers.toml: field 'callers': the file defines no [callers.<name>]"),
    ("unknown top level", "[callers.A]\nrole='observer'\nidentity='x'\n[other]\n",
     "callers.toml: field 'other': unknown top-level table or key"),
    ("unknown role", "[callers.A]\nrole = 'admin'\nidentity = 'x'\n",
     "callers.toml: caller 'A': field 'role': Invalid enum value 'admin'"),
    ("unknown field", "[callers.A]\nrole = 'observer'\nidentity = 'x'\ncolour = 1\n",
     "callers.toml: caller 'A': field 'colour': Object contains unknown field `colour`"),
    ("no identity", "[callers.A]\nrole = 'observer'\n",
     "callers.toml: caller 'A': field 'identity': a caller needs an identity"),
    ("bad hash", "[callers.A]\nrole = 'observer'\napi_key_sha256 = 'abc'\n",
     "callers.toml: caller 'A': field 'api_key_sha256': 64 lower-case hex digits"),
    ("bad name", "[callers.'A B']\nrole = 'observer'\nidentity = 'x'\n",
     "callers.toml: caller 'A B': field 'name': a caller's name is letters"),
    ("terminal without merchants", "[callers.T]\nrole = 'terminal'\nidentity = 'x'\n",
     "callers.toml: caller 'T': field 'merchants': a terminal acts for the merchants it "
     "lists"),
    ("merchants on a back office", "[callers.B]\nrole = 'backoffice'\nidentity = 'x'\n"
     "merchants = ['M-1']\n",
     "callers.toml: caller 'B': field 'merchants': merchants, channels, products and batch "
     "bound terminals and acquirers only"),
    ("bad merchant", "[callers.T]\nrole = 'terminal'\nidentity = 'x'\nmerchants = ['a b']\n",
     "callers.toml: caller 'T': field 'merchants': 'a b' is not a merchant id"),
    ("bad channel", "[callers.T]\nrole = 'terminal'\nidentity = 'x'\nmerchants = ['M']\n"
     "channels = ['fax']\n",
     "callers.toml: caller 'T': field 'channels[0]': Invalid enum value 'fax'"),
    ("zero rate", "[callers.A]\nrole = 'observer'\nidentity = 'x'\nrate_per_s = 0.0\n",
     "callers.toml: caller 'A': field 'rate_per_s': must be within (0, "),
    ("role quota", "[roles.terminal]\nrate_per_s = 1.0\nburst = 0\n"
     "[callers.A]\nrole = 'observer'\nidentity = 'x'\n",
     "callers.toml: field 'roles.terminal.burst': must be within 1.."),
    ("one identity twice", "[callers.A]\nrole = 'observer'\nidentity = 'x'\n"
     "[callers.B]\nrole = 'observer'\nidentity = 'x'\n",
     "callers.toml: caller 'B': field 'identity': also the identity of caller A"),
    ("unknown role's quota", "[roles.bogus]\nrate_per_s = 1.0\nburst = 1\n"
     "[callers.A]\nrole = 'observer'\nidentity = 'x'\n",
     "callers.toml: field 'roles': Invalid enum value 'bogus'; roles are terminal, acquirer"),
    ("one key twice", f"[callers.A]\nrole = 'observer'\napi_key_sha256 = '{'a' * 64}'\n"
     f"[callers.B]\nrole = 'observer'\napi_key_sha256 = '{'a' * 64}'\n",
     "callers.toml: caller 'B': field 'api_key_sha256': also the key of caller A"),
    ("too many merchants", "[callers.T]\nrole = 'terminal'\nidentity = 'x'\nmerchants = ["
     + ", ".join(f"'M-{i}'" for i in range(65)) + "]\n",
     "callers.toml: caller 'T': field 'merchants': at most 64: they travel with every call"),
]


@pytest.mark.parametrize(("text", "error"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_a_bad_callers_file_is_refused_naming_file_caller_and_field(text, error):
    with pytest.raises(CallersError) as caught:
        callers.parse(text, "callers.toml")
    assert error in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CallersError, match="nothing.toml: cannot read"):
        callers.load(tmp_path / "nothing.toml")


# -- roles: every method of the proto, every role ---------------------------------------------
ALLOWED = {
    "terminal": {"Authorize", "Capture", "Void", "Reverse", "IncrementAuthorization", "Refund",
                 "GetCredit"},
    "acquirer": {"Authorize", "Capture", "Void", "Reverse", "IncrementAuthorization", "Refund",
                 "GetCredit", "AuthorizeBatch", "ForceCapture"},
    "backoffice": {"PutCustomer", "GetCustomer", "SetTemporaryRaise"},
    "billing": {"Repay", "GetCustomer", "GetCredit"},
    "observer": {"GetCredit", "GetCustomer"},
}
NAMES = {"terminal": "T-0001", "acquirer": "ACQ-1", "backoffice": "BO-1",
         "billing": "BILL-1", "observer": "OBS-1"}
METHODS = sorted(admission.KINDS)


def test_every_method_has_a_role_and_every_role_is_tested():
    methods = {method.name for service in pb.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    assert methods == set(METHODS)
    assert set().union(*callers.ROLE_RPCS.values()) | {"AuthorizeBatch"} == methods
    assert {role: set(rpcs) for role, rpcs in callers.ROLE_RPCS.items()} == ALLOWED


@pytest.mark.parametrize("role", sorted(ALLOWED))
@pytest.mark.parametrize("rpc", METHODS)
def test_a_role_may_call_only_its_methods(known, role, rpc):
    caller = known.by_name[NAMES[role]]
    if rpc in ALLOWED[role]:
        caller.permit(rpc)
        return
    with pytest.raises(PermissionDenied) as caught:
        caller.permit(rpc)
    assert str(caught.value).startswith(f"caller {caller.name} (role {role}) may not call "
                                        f"{rpc}")
    assert caught.value.rule == f"role {role}"


def test_a_terminal_batches_only_if_its_entry_says_so(clock):
    text = ("[callers.T]\nrole = 'terminal'\nidentity = 'x'\nmerchants = ['M']\n"
            "[callers.U]\nrole = 'terminal'\nidentity = 'y'\nmerchants = ['M']\nbatch = true\n")
    known = callers.parse(text, "c.toml", clock)
    with pytest.raises(PermissionDenied, match="does not set batch = true"):
        known.by_name["T"].permit("AuthorizeBatch")
    known.by_name["U"].permit("AuthorizeBatch")


def test_several_roles_allow_the_union(known):
    ops = known.by_name["OPS"]
    for rpc in ("PutCustomer", "SetTemporaryRaise", "Repay", "GetCredit"):
        ops.permit(rpc)
    with pytest.raises(PermissionDenied):
        ops.permit("Authorize")


# -- scopes -----------------------------------------------------------------------------------
def purchase(merchant="M-0001", channel=pb.CHANNEL_POS, product="scan_pay"):
    return pb.AuthorizeRequest(merchant_id=merchant, channel=channel, product_id=product)


SCOPES = [
    ("own merchant", purchase(), None),
    ("prefix merchant", purchase(merchant="CHAIN-17"), None),
    ("other merchant", purchase(merchant="M-0002"), "merchant_id"),
    ("prefix is not a match", purchase(merchant="CHAIN"), "merchant_id"),
    ("other channel", purchase(channel=pb.CHANNEL_QR_SCAN), "channel"),
    ("other product", purchase(product="installment"), "product_id"),
]


@pytest.mark.parametrize(("request_", "field"), [case[1:] for case in SCOPES],
                         ids=[case[0] for case in SCOPES])
def test_a_terminal_acts_only_within_its_lists(known, request_, field):
    terminal = known.by_name["T-0001"]
    for rpc in ("Authorize", "ForceCapture"):
        if field is None:
            terminal.check(rpc, request_)
            continue
        with pytest.raises(PermissionDenied) as caught:
            terminal.check(rpc, request_)
        rule = {"merchant_id": "merchants", "channel": "channels",
                "product_id": "products"}[field]
        assert str(caught.value) == (
            f"{field}: outside caller T-0001's {rule} (callers file: callers.T-0001.{rule}); "
            "nothing was changed")
    batch = pb.AuthorizeBatchRequest(requests=[purchase(), request_])
    if field is None:
        terminal.check("AuthorizeBatch", batch)
    else:
        with pytest.raises(PermissionDenied, match=rf"^requests\[1\]\.{field}: "):
            terminal.check("AuthorizeBatch", batch)


def test_an_acquirer_of_every_merchant_and_unscoped_roles_pass(known):
    known.by_name["ACQ-1"].check("Authorize", purchase(merchant="ANY", product="x"))
    assert known.by_name["ACQ-1"].merchant_scope == ""
    assert known.by_name["BO-1"].merchant_scope == ""


def test_a_terminal_reads_credit_only_of_its_products(known):
    terminal = known.by_name["T-0001"]
    terminal.check("GetCredit", pb.GetCreditRequest(customer_id="c", product_id="scan_pay"))
    with pytest.raises(PermissionDenied, match="^product_id: "):
        terminal.check("GetCredit", pb.GetCreditRequest(customer_id="c"))


def test_the_merchant_scope_the_scripts_get(known):
    assert known.by_name["T-0001"].merchant_scope == "=M-0001 ^CHAIN-"


# -- quotas -----------------------------------------------------------------------------------
def test_a_caller_over_its_rate_is_refused_until_tokens_come_back(known, clock):
    observer = known.by_name["OBS-1"]  # [roles.observer]: 5 a second, burst 2
    observer.take()
    observer.take()
    with pytest.raises(QuotaExceeded) as caught:
        observer.take()
    assert caught.value.retry_after_ms == 200  # one token at 5 a second
    clock.now_s += 0.1
    with pytest.raises(QuotaExceeded) as caught:
        observer.take()
    assert caught.value.retry_after_ms == 100
    clock.now_s += 0.11
    observer.take()
    # Another caller's bucket is its own.
    known.by_name["BO-1"].take()


def test_quotas_default_per_role_and_the_entry_overrides(known):
    assert (known.by_name["T-0001"].bucket.rate_per_s,
            known.by_name["T-0001"].bucket.burst) == callers.ROLE_QUOTAS["terminal"]
    ops = known.by_name["OPS"]  # the larger of backoffice's and billing's
    assert ops.bucket.rate_per_s == callers.ROLE_QUOTAS["billing"][0]
    text = "[callers.A]\nrole = 'observer'\nidentity = 'x'\nrate_per_s = 7.5\nburst = 3\n"
    only = callers.parse(text).by_name["A"]
    assert (only.bucket.rate_per_s, only.bucket.burst) == (7.5, 3)


# -- identities -------------------------------------------------------------------------------
def test_a_certificate_san_names_its_caller_by_kind(known):
    assert known.identify(Peer(True, (TERMINAL_URI,)), None).name == "T-0001"
    assert known.identify(Peer(True, (), ("other.example", "observer.issuer.example")),
                          None).name == "OBS-1"


def test_an_unknown_san_is_unauthenticated_even_on_loopback(known):
    with pytest.raises(Unauthenticated) as caught:
        known.identify(Peer(True, ("spiffe://elsewhere/x",)), None)
    assert caught.value.reason == "UNKNOWN_IDENTITY"


def test_an_api_key_names_its_caller_and_a_bad_one_is_refused(known):
    assert known.identify(Peer(True), KEY).name == "BILL-1"
    for bad in ("BILL-1.wrong", "NOBODY.s3cret-s3cret", "", "no-dot", "T-0001.x"):
        with pytest.raises(Unauthenticated) as caught:
            known.identify(Peer(True), bad)
        assert caught.value.reason == "BAD_API_KEY"
        assert bad not in str(caught.value) or not bad  # the key is never echoed


def test_a_bad_api_key_is_not_saved_by_the_loopback_identity(known):
    with pytest.raises(Unauthenticated):
        known.identify(Peer(False), "BILL-1.wrong")


def test_plaintext_without_a_key_is_the_loopback_caller_and_tls_without_one_is_nobody(known):
    assert known.identify(Peer(False), None).name == "OPS"
    with pytest.raises(Unauthenticated) as caught:
        known.identify(Peer(True), None)
    assert caught.value.reason == "NO_IDENTITY"
    alone = callers.parse("[callers.A]\nrole = 'observer'\nidentity = 'x'\n")
    with pytest.raises(Unauthenticated):
        alone.identify(Peer(False), None)  # no loopback caller: deny by default


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("127.0.0.2", True), ("0.0.0.0", False), ("10.0.0.1", False), ("example.com", False),
    ("::", False)])
def test_loopback_addresses(host, loopback):
    assert callers.is_loopback(host) is loopback


# -- the CLI's helpers ------------------------------------------------------------------------
def test_a_new_api_key_identifies_its_caller_by_the_hash_printed(capsys):
    import argparse

    assert callers.command(argparse.Namespace(action="key", name="SHOP-9")) == 0
    printed = capsys.readouterr().out.splitlines()
    key = printed[0].rpartition(": ")[2]
    SECRETS.add(key.partition(".")[2])  # never logged either
    entry = printed[1]
    assert key.startswith("SHOP-9.") and len(key.partition(".")[2]) >= 43
    known = callers.parse(f"[callers.SHOP-9]\nrole = 'observer'\n{entry}\n")
    assert known.identify(Peer(True), key).name == "SHOP-9"
    with pytest.raises(Unauthenticated):
        known.identify(Peer(True), callers.new_api_key("SHOP-9"))  # another key, same name


def test_check_names_what_is_wrong_in_a_callers_file(tmp_path, capsys):
    import argparse

    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text("[callers.A]\nrole = 'admin'\nidentity = 'x'\n")
    assert callers.command(argparse.Namespace(action="check", file=str(good))) == 0
    assert "6 callers, valid" in capsys.readouterr().out
    assert callers.command(argparse.Namespace(action="check", file=str(bad))) == 2
    assert f"{bad}: caller 'A': field 'role'" in capsys.readouterr().err


def test_a_san_of_the_other_kind_names_no_caller(known):
    """A DNS SAN spelling a caller's URI identity is not that identity."""
    with pytest.raises(Unauthenticated):
        known.identify(Peer(True, (), (TERMINAL_URI,)), None)


def test_a_certificate_naming_two_callers_is_refused(known):
    with pytest.raises(Unauthenticated) as caught:
        known.identify(Peer(True, (TERMINAL_URI, "spiffe://acquirer.example/switch")), None)
    assert caught.value.reason == "AMBIGUOUS_IDENTITY"
    assert "ACQ-1, T-0001" in str(caught.value)
    # The same caller twice is one caller.
    assert known.identify(Peer(True, (TERMINAL_URI, TERMINAL_URI)), None).name == "T-0001"


def test_the_loopback_identity_is_never_a_certificate_san(known):
    with pytest.raises(Unauthenticated) as caught:
        known.identify(Peer(True, ("insecure:loopback",), ("insecure:loopback",)), None)
    assert caught.value.reason == "UNKNOWN_IDENTITY"


class Metadata:
    def __init__(self, *entries):
        self.entries = entries

    def invocation_metadata(self):
        return self.entries

    def auth_context(self):
        return {"transport_security_type": [b"insecure"]}


@pytest.mark.parametrize("entries", [
    (("x-api-key", KEY), ("x-api-key", "BILL-1.wrong")),
    (("x-api-key", "BILL-1.wrong"), ("x-api-key", KEY)),
    (("x-api-key-bin", KEY.encode()),),
    (("x-api-key-bin", b"BILL-1.wrong"),),
], ids=["good-then-bad", "bad-then-good", "binary-good", "binary-bad"])
def test_one_text_api_key_or_none(entries):
    with pytest.raises(Unauthenticated) as caught:
        context = Metadata(("user-agent", "x"), *entries)
        callers.credentials(context, context.invocation_metadata())
    assert caught.value.reason == "BAD_API_KEY"
    context = Metadata(("x-api-key", KEY))
    assert callers.credentials(context, context.invocation_metadata()) == (Peer(False), KEY)


def test_a_batch_costs_a_token_per_item(known, clock):
    acquirer = callers.parse("[callers.A]\nrole = 'acquirer'\nidentity = 'x'\n"
                             "merchants = ['*']\nrate_per_s = 10.0\nburst = 10\n",
                             clock=clock).by_name["A"]
    batch = pb.AuthorizeBatchRequest(requests=[purchase()] * 6)
    acquirer.take()  # the call's first, at admission
    acquirer.check("AuthorizeBatch", batch)  # five more
    with pytest.raises(QuotaExceeded):
        acquirer.check("AuthorizeBatch", batch)  # four left: not enough for five
    acquirer.take(4)

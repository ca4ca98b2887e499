"""Who may call, and how much: the callers file, each caller's identity, role, scope and quota.

Deny by default. A call is served only if its caller is known (a client certificate's SAN, an
API key, or, on a plaintext loopback server, the "insecure:loopback" identity), one of its
roles allows the method, the request's merchant, channel and product are within the caller's
lists, and the caller is within its rate. gateway/errors.py asks these questions, in that
order, before any parse or Redis work except the scope check, which needs the request. Holds
are bound to merchants in the scripts themselves: the caller's merchant scope travels in the
call header (limits/contracts.py), and another merchant's hold answers as if it did not exist.

The callers file is TOML, validated with msgspec like the catalog; a bad file stops start-up
with a CallersError naming the file, the caller and the field. API keys are kept only as
SHA-256 hashes and compared in constant time; no key, certificate or request value is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import pathlib
import re
import secrets
import sys
import time
from collections.abc import Callable
from typing import Literal, get_args

import msgspec

from creditgate.gateway import tls
from creditgate.hotpath import CHANNEL_NAMES, InvalidArgument, check_id
from creditgate.limits import config_file, keys
from creditgate.limits.catalog import CHANNELS, Channel
from creditgate.limits.constants import (
    CALLER_BURST_MAX,
    CALLER_MERCHANTS_MAX,
    CALLER_NAME_LENGTH_MAX,
    CALLER_PRODUCTS_MAX,
    CALLER_RATE_PER_S_MAX,
    CALLERS_MAX,
    ID_LENGTH_MAX,
)

Role = Literal["terminal", "acquirer", "backoffice", "billing", "observer"]
ROLES: tuple[str, ...] = get_args(Role)

_TERMINAL = frozenset({"Authorize", "Capture", "Void", "Reverse", "IncrementAuthorization",
                       "Refund", "GetCredit"})
# What each role may call (AuthorizeBatch for a terminal only if its entry says `batch`).
ROLE_RPCS: dict[str, frozenset[str]] = {
    "terminal": _TERMINAL,
    "acquirer": _TERMINAL | {"AuthorizeBatch", "ForceCapture"},
    "backoffice": frozenset({"PutCustomer", "GetCustomer", "SetTemporaryRaise"}),
    "billing": frozenset({"Repay", "GetCustomer", "GetCredit"}),
    "observer": frozenset({"GetCredit", "GetCustomer"}),
}
# The roles whose calls are bound to merchants, channels and products.
SCOPED_ROLES = frozenset({"terminal", "acquirer"})
# A role's quota when neither the file's [roles.<role>] nor the caller's entry sets one: a
# terminal is a till or a shop's fleet, an acquirer a switch carrying thousands of them.
ROLE_QUOTAS: dict[str, tuple[float, int]] = {
    "terminal": (50.0, 100),
    "acquirer": (5_000.0, 10_000),
    "backoffice": (100.0, 200),
    "billing": (1_000.0, 2_000),
    "observer": (50.0, 100),
}
assert set(ROLE_RPCS) == set(ROLES) == set(ROLE_QUOTAS)

# The identity of a plaintext call without an API key (a server started with --insecure,
# which listens on loopback only).
LOOPBACK_IDENTITY = "insecure:loopback"
API_KEY_METADATA = "x-api-key"  # "<caller name>.<secret>"
CALLER_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")

# creditgate.v1.Channel numbers by catalog channel name.
_CHANNEL_NUMBERS = {name: number for number, name in enumerate(CHANNEL_NAMES) if name}
assert set(_CHANNEL_NUMBERS) == set(CHANNELS)


class Unauthenticated(Exception):
    """No caller identity, or one the callers file does not know: UNAUTHENTICATED."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class PermissionDenied(Exception):
    """The caller's role or scope does not allow the call: PERMISSION_DENIED naming the rule."""

    def __init__(self, caller: str, rule: str, message: str):
        super().__init__(message)
        self.caller, self.rule = caller, rule


class QuotaExceeded(Exception):
    """The caller is over its rate: RESOURCE_EXHAUSTED, retry after `retry_after_ms`."""

    def __init__(self, caller: str, retry_after_ms: int):
        super().__init__(f"caller {caller} is over its rate; retry after {retry_after_ms} ms "
                         "with the same idempotency key")
        self.caller, self.retry_after_ms = caller, retry_after_ms


class CallersError(config_file.ConfigFileError):
    KIND = "caller"

    @property
    def caller(self) -> str | None:
        return self.name


# -- the file ----------------------------------------------------------------------------------
class Quota(msgspec.Struct, forbid_unknown_fields=True):
    rate_per_s: float
    burst: int


class Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Role | list[Role]
    identity: str = ""  # a client certificate's SAN (URI or DNS), or LOOPBACK_IDENTITY
    api_key_sha256: str = ""  # hex SHA-256 of the whole key "<name>.<secret>"
    merchants: list[str] = []  # ids; "PREFIX*" for a prefix; "*" for all
    channels: list[Channel] = []  # empty: any
    products: list[str] = []  # empty: any
    batch: bool = False  # a terminal may call AuthorizeBatch
    rate_per_s: float | None = None
    burst: int | None = None


class File(msgspec.Struct, forbid_unknown_fields=True):
    callers: dict[str, Entry]
    roles: dict[Role, Quota] = {}


def load(path: str | pathlib.Path, clock: Callable[[], float] = time.monotonic) -> Callers:
    """Read and validate a callers file; raise CallersError naming file, caller and field."""
    return parse(config_file.read(path, CallersError), str(path), clock)


def parse(data: bytes | str, path: str = "<callers>",
          clock: Callable[[], float] = time.monotonic) -> Callers:
    document = config_file.decode(data, path, CallersError, frozenset({"callers", "roles"}))
    tables = document.get("callers")
    if not isinstance(tables, dict) or not tables:
        raise CallersError(path, None, "callers", "the file defines no [callers.<name>]")
    if len(tables) > CALLERS_MAX:
        raise CallersError(path, None, "callers", f"at most {CALLERS_MAX:,} callers")
    hint = f"roles are {', '.join(ROLES)}; channels are {', '.join(CHANNELS)}"
    roles = config_file.convert({"roles": document.get("roles", {}), "callers": {}}, File,
                                path, None, CallersError, hint).roles
    for role, quota in roles.items():
        _check_quota(path, None, f"roles.{role}", quota.rate_per_s, quota.burst)
    entries = {name: config_file.convert(table, Entry, path, name, CallersError, hint)
               for name, table in tables.items()}
    callers = [_caller(path, name, entry, roles, clock) for name, entry in entries.items()]
    return Callers(callers, path)


def _check_quota(path: str, caller: str | None, field: str, rate_per_s: float,
                 burst: int) -> None:
    if not 0 < rate_per_s <= CALLER_RATE_PER_S_MAX:
        raise CallersError(path, caller, f"{field}.rate_per_s" if caller is None else
                           "rate_per_s", f"must be within (0, {CALLER_RATE_PER_S_MAX:,}]")
    if not 1 <= burst <= CALLER_BURST_MAX:
        raise CallersError(path, caller, f"{field}.burst" if caller is None else "burst",
                           f"must be within 1..{CALLER_BURST_MAX:,}")


def _check_entry(path: str, name: str, entry: Entry, roles: tuple[str, ...]) -> None:
    def fail(field: str, message: str) -> None:
        raise CallersError(path, name, field, message)

    if not CALLER_NAME.match(name) or len(name) > CALLER_NAME_LENGTH_MAX:
        fail("name", f"a caller's name is letters, digits, '_' and '-', at most "
             f"{CALLER_NAME_LENGTH_MAX} characters")
    if not entry.identity and not entry.api_key_sha256:
        fail("identity", "a caller needs an identity (a certificate SAN) or api_key_sha256")
    if entry.api_key_sha256 and not SHA256_HEX.match(entry.api_key_sha256):
        fail("api_key_sha256", "64 lower-case hex digits: the SHA-256 of the key")
    if not roles:
        fail("role", "at least one role")
    scoped = SCOPED_ROLES & set(roles)
    if scoped and not entry.merchants:
        fail("merchants", f"a {sorted(scoped)[0]} acts for the merchants it lists "
             "(\"*\" for all): none listed")
    if not scoped and (entry.merchants or entry.channels or entry.products or entry.batch):
        fail("merchants", "merchants, channels, products and batch bound terminals and "
             "acquirers only")
    if len(entry.merchants) > CALLER_MERCHANTS_MAX:
        fail("merchants", f"at most {CALLER_MERCHANTS_MAX}: they travel with every call; "
             "list a prefix (\"ACQ-*\") for many")
    if len(entry.products) > CALLER_PRODUCTS_MAX:
        fail("products", f"at most {CALLER_PRODUCTS_MAX}")
    for merchant in entry.merchants:
        if merchant == "*":
            continue
        try:
            check_id("merchants", merchant[:-1] if merchant.endswith("*") else merchant)
        except InvalidArgument:
            fail("merchants", f"{merchant[:ID_LENGTH_MAX + 1]!r} is not a merchant id, a "
                 "prefix ending in '*', or '*'")


# -- callers at run time -----------------------------------------------------------------------
class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved; one token per call."""

    __slots__ = ("rate_per_s", "burst", "tokens", "updated_s", "clock")

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]):
        self.rate_per_s, self.burst, self.clock = rate_per_s, burst, clock
        self.tokens, self.updated_s = float(burst), clock()

    def take(self, count: int = 1) -> float:
        """Take `count` tokens: 0.0, or the seconds until they are there (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated_s) * self.rate_per_s)
        self.updated_s = now
        if self.tokens >= count:
            self.tokens -= count
            return 0.0
        return (count - self.tokens) / self.rate_per_s


class Caller:
    """One caller of the callers file, ready to ask: may it call this, with this request?"""

    def __init__(self, name: str, roles: tuple[str, ...], entry: Entry, bucket: TokenBucket):
        self.name, self.roles, self.bucket = name, roles, bucket
        self.identity, self.api_key_sha256 = entry.identity, entry.api_key_sha256
        self.rpcs = frozenset().union(*(ROLE_RPCS[role] for role in roles))
        if entry.batch:
            self.rpcs |= {"AuthorizeBatch"}
        self.scoped = bool(SCOPED_ROLES & set(roles))
        everything = not self.scoped or "*" in entry.merchants
        # What the scripts check holds against ("" = any merchant), and the gateway the
        # merchant of a new purchase.
        self.merchant_scope = "" if everything else keys.merchant_scope(entry.merchants)
        self.channels = frozenset(_CHANNEL_NUMBERS[channel] for channel in entry.channels)
        self.products = frozenset(entry.products)

    def permit(self, rpc: str) -> None:
        """PermissionDenied unless one of the caller's roles allows `rpc`."""
        if rpc in self.rpcs:
            return
        roles = "/".join(self.roles)
        hint = " (its entry does not set batch = true)" if rpc == "AuthorizeBatch" and \
            "terminal" in self.roles else ""
        raise PermissionDenied(self.name, f"role {roles}",
                               f"caller {self.name} (role {roles}) may not call {rpc}{hint}; "
                               "nothing was changed")

    def take(self, count: int = 1) -> None:
        """QuotaExceeded if the caller is over its rate (`count` authorizations at once)."""
        wait_s = self.bucket.take(count)
        if wait_s:
            raise QuotaExceeded(self.name, max(1, round(wait_s * 1000)))

    def allows_merchant(self, merchant_id: str) -> bool:
        # The scripts' own rule for holds (limits/keys.py, in_scope in limits/lua/_lib.lua).
        return keys.in_merchant_scope(self.merchant_scope, merchant_id)

    def check(self, rpc: str, request) -> None:
        """PermissionDenied unless the request's merchant, channel and product are within
        the caller's lists (the fields only some requests carry); QuotaExceeded for a batch
        beyond the caller's rate."""
        # A batch is as many authorizations as it has items: its first was paid for when the
        # call was admitted, the others are paid for now, before any Redis work.
        if rpc == "AuthorizeBatch" and len(request.requests) > 1:
            self.take(len(request.requests) - 1)
        if not self.scoped:
            return
        if rpc in ("Authorize", "ForceCapture"):
            self._check_purchase(request, "")
        elif rpc == "AuthorizeBatch":
            for index, item in enumerate(request.requests):
                self._check_purchase(item, f"requests[{index}].")
        elif rpc == "GetCredit" and self.products and request.product_id not in self.products:
            self._deny("product_id", "products")

    def _check_purchase(self, request, prefix: str) -> None:
        if not self.allows_merchant(request.merchant_id):
            self._deny(f"{prefix}merchant_id", "merchants")
        if self.channels and request.channel not in self.channels:
            self._deny(f"{prefix}channel", "channels")
        if self.products and request.product_id not in self.products:
            self._deny(f"{prefix}product_id", "products")

    def _deny(self, field: str, rule: str) -> None:
        raise PermissionDenied(self.name, f"callers.{self.name}.{rule}",
                               f"{field}: outside caller {self.name}'s {rule} (callers file: "
                               f"callers.{self.name}.{rule}); nothing was changed")


def _caller(path: str, name: str, entry: Entry, role_quotas: dict[str, Quota],
            clock: Callable[[], float]) -> Caller:
    roles = tuple(entry.role) if isinstance(entry.role, list) else (entry.role,)
    _check_entry(path, name, entry, roles)
    # A caller of several roles gets the largest of their quotas unless its entry sets one.
    quotas = [(q.rate_per_s, q.burst) if (q := role_quotas.get(role)) else ROLE_QUOTAS[role]
              for role in roles]
    rate_per_s = entry.rate_per_s if entry.rate_per_s is not None else max(
        rate for rate, _ in quotas)
    burst = entry.burst if entry.burst is not None else max(burst for _, burst in quotas)
    _check_quota(path, name, "", rate_per_s, burst)
    return Caller(name, roles, entry, TokenBucket(rate_per_s, burst, clock))


class Callers:
    """Every caller, found by certificate SAN, API key or the loopback identity."""

    def __init__(self, callers: list[Caller], path: str = "<callers>"):
        self.by_name = {caller.name: caller for caller in callers}
        # Identities by kind: a URI SAN names a caller whose identity is a URI, a DNS SAN one
        # whose identity is a DNS name; the loopback identity is never a SAN.
        self.by_uri: dict[str, Caller] = {}
        self.by_dns: dict[str, Caller] = {}
        self.loopback: Caller | None = None
        hashes: dict[str, str] = {}
        for caller in callers:
            if caller.api_key_sha256:
                if caller.api_key_sha256 in hashes:
                    raise CallersError(path, caller.name, "api_key_sha256",
                                       f"also the key of caller {hashes[caller.api_key_sha256]}:"
                                       " a key names one caller")
                hashes[caller.api_key_sha256] = caller.name
            if not caller.identity:
                continue
            if caller.identity == LOOPBACK_IDENTITY:
                table = None
            else:
                table = self.by_uri if "://" in caller.identity else self.by_dns
            known = self.loopback if table is None else table.get(caller.identity)
            if known is not None:
                raise CallersError(path, caller.name, "identity",
                                   f"also the identity of caller {known.name}")
            if table is None:
                self.loopback = caller
            else:
                table[caller.identity] = caller

    def identify(self, peer: tls.Peer, api_key: str | None) -> Caller:
        """The caller of a call: by a certificate SAN the file knows, else by API key, else,
        for a plaintext call, the loopback identity. Unauthenticated otherwise, and for a
        certificate whose SANs name more than one caller."""
        found = {caller.name: caller for caller in (
            *(self.by_uri.get(uri) for uri in peer.uris),
            *(self.by_dns.get(name) for name in peer.dns_names)) if caller is not None}
        if len(found) > 1:
            raise Unauthenticated("AMBIGUOUS_IDENTITY",
                                  f"the client certificate names {len(found)} callers "
                                  f"({', '.join(sorted(found))}); it must name one")
        if found:
            return next(iter(found.values()))
        if api_key is not None:
            return self._by_api_key(api_key)
        if not peer.secure and self.loopback is not None:
            return self.loopback
        sans = (*peer.uris, *peer.dns_names)
        if sans:
            # The SAN is an id from a certificate our CA signed, not a secret.
            raise Unauthenticated("UNKNOWN_IDENTITY",
                                  f"unknown caller identity {sans[0][:200]!r}: not in the "
                                  "callers file")
        raise Unauthenticated("NO_IDENTITY", "no caller identity: present a client "
                              "certificate with a URI or DNS SAN that the callers file names, "
                              f"or an {API_KEY_METADATA} metadata entry")

    def _by_api_key(self, api_key: str) -> Caller:
        name = api_key.partition(".")[0]
        caller = self.by_name.get(name)
        digest = hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()
        # Compared in constant time, also when the name is unknown, so that the time taken
        # does not tell which names exist.
        expected = caller.api_key_sha256 if caller is not None and caller.api_key_sha256 \
            else "0" * 64
        if hmac.compare_digest(digest, expected) and caller is not None:
            return caller
        raise Unauthenticated("BAD_API_KEY", f"the {API_KEY_METADATA} is not a valid key")


def credentials(context, metadata) -> tuple[tls.Peer, str | None]:
    """What a call presents: its TLS peer (verified SANs) and, from its invocation metadata
    (read once per call by the caller of this), its API key (None without one). More than one
    key, or a binary one, is refused: which of them would count?"""
    api_key = None
    for key, value in metadata or ():
        if not key.startswith(API_KEY_METADATA):
            continue
        if key != API_KEY_METADATA or api_key is not None:
            raise Unauthenticated("BAD_API_KEY", f"one {API_KEY_METADATA} metadata entry, "
                                  "in text, is accepted")
        api_key = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return tls.peer(context), api_key


def api_key_hash(api_key: str) -> str:
    """What the callers file stores for a key: its SHA-256 in hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key(name: str) -> str:
    """A new key for caller `name`: "<name>.<secret>", 256 random bits in the secret."""
    if not CALLER_NAME.match(name) or len(name) > CALLER_NAME_LENGTH_MAX:
        raise ValueError(f"a caller's name is letters, digits, '_' and '-', at most "
                         f"{CALLER_NAME_LENGTH_MAX} characters")
    return f"{name}.{secrets.token_urlsafe(32)}"


def command(args) -> int:
    """`creditgate callers key NAME` and `creditgate callers check FILE`."""
    if args.action == "check":
        try:
            found = load(args.file)
        except CallersError as error:
            print(f"creditgate: bad callers file: {error}", file=sys.stderr)
            return 2
        print(f"{args.file}: {len(found.by_name)} callers, valid")
        return 0
    try:
        key = new_api_key(args.name)
    except ValueError as error:
        print(f"creditgate callers key: {error}", file=sys.stderr)
        return 2
    # The key goes to the caller once; the gateway keeps only its hash.
    print(f"key (give it to {args.name}, then forget it): {key}")
    print(f"api_key_sha256 = \"{api_key_hash(key)}\"")
    return 0


def is_loopback(host: str) -> bool:
    """Whether a listening address reaches only this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

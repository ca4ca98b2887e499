"""A private development PKI: a CA, the gateway's server certificate and callers' client
certificates, made with the `cryptography` package (never by shelling out to openssl).

    creditgate certs init  [--dir var/tls] [--callers var/callers.toml]
    creditgate certs issue NAME --uri URI [--dns NAME ...] [--days N] [--dir var/tls]

`init` makes what `make run` serves with: the CA (ca.pem, ca.key), the server certificate for
127.0.0.1 and localhost (server.pem, server.key), a client certificate for each caller of
DEV_CALLERS (NAME.pem, NAME.key, its identity a SPIFFE URI SAN) and a callers file naming
them. It keeps every file that already exists, so running it again changes nothing and a CA
that signed certificates is never replaced. `issue` adds one more client certificate signed
by the same CA. Production certificates come from a real CA (README).

The same functions make the tests' certificates: validity windows in the past or the future,
and a second CA whose certificates the gateway must refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "creditgate.dev"
SERVER_HOSTS = ("127.0.0.1", "localhost")
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825  # the longest lifetime browsers' CAs have issued: rotation stays routine
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a caller's name, as in the callers file
# Issued a little in the past, so a clock a few minutes behind still accepts a new certificate.
BACKDATE = datetime.timedelta(minutes=5)


class DevCaller(NamedTuple):
    name: str
    role: str
    merchants: tuple[str, ...] = ()
    rate_per_s: float = 0.0  # 0: the role's default quota
    burst: int = 0


# The callers `certs init` issues certificates for and writes into the callers file: the
# demo's terminal, back-office and billing, and a switch for every merchant that Locust and
# the load runners call as, at their rates.
DEV_CALLERS = (
    DevCaller("T-0001", "terminal", ("M-0001",)),
    DevCaller("BO-1", "backoffice"),
    DevCaller("BILL-1", "billing"),
    DevCaller("ACQ-1", "acquirer", ("*",), rate_per_s=100_000.0, burst=200_000),
)


def spiffe_id(role: str, name: str) -> str:
    """The development identity of a caller: its client certificate's URI SAN."""
    return f"spiffe://{TRUST_DOMAIN}/{role}/{name}"


class Pair(NamedTuple):
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
        """NAME.pem and NAME.key in `folder` (the key readable by its owner only), each
        replaced in one rename so a reader never sees half a file."""
        folder = Path(folder)
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        write_atomically(key, self.key_pem, mode=0o600)
        write_atomically(cert, self.cert_pem)
        return cert, key


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: every TLS stack accepts it, and it signs handshakes faster than RSA-2048.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _window(not_before: datetime.datetime | None, valid_days: float
            ) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before or datetime.datetime.now(datetime.UTC) - BACKDATE
    return start, start + datetime.timedelta(days=valid_days)


class Authority:
    """A CA that signs server and client certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str = "creditgate development CA", valid_days: float = CA_VALID_DAYS,
               not_before: datetime.datetime | None = None) -> Authority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start, end = _window(not_before, valid_days)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> Authority:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: expected an EC private key")
        return cls(cert, key)

    @property
    def pair(self) -> Pair:
        return Pair(self.cert_pem, _key_pem(self.key))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server(self, hosts: tuple[str, ...] = SERVER_HOSTS,
                     valid_days: float = LEAF_VALID_DAYS,
                     not_before: datetime.datetime | None = None) -> Pair:
        """A server certificate for `hosts` (IP addresses and DNS names)."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(hosts[0], names, ExtendedKeyUsageOID.SERVER_AUTH, valid_days,
                           not_before)

    def issue_client(self, uri: str = "", dns: tuple[str, ...] = (),
                     valid_days: float = LEAF_VALID_DAYS,
                     not_before: datetime.datetime | None = None) -> Pair:
        """A client certificate whose SANs are `uri` (a caller identity such as
        spiffe://creditgate.dev/terminal/T-0001) and the DNS names `dns`."""
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)] if uri else []
        names += [x509.DNSName(name) for name in dns]
        if not names:
            raise ValueError("a client certificate needs a URI or DNS SAN: its identity")
        common_name = (uri or dns[0])[-64:]  # the subject is informative; the SAN identifies
        return self._issue(common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH, valid_days,
                           not_before)

    def _issue(self, common_name: str, names: list[x509.GeneralName],
               usage: x509.ObjectIdentifier, valid_days: float,
               not_before: datetime.datetime | None) -> Pair:
        key = _new_key()
        start, end = _window(not_before, valid_days)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# -- the CLI: `creditgate certs` ---------------------------------------------------------------
def authority_in(folder: Path) -> tuple[Authority, bool]:
    """The CA of `folder` (ca.pem, ca.key), made there first if it has none; and whether it
    was made now."""
    cert, key = folder / "ca.pem", folder / "ca.key"
    if cert.exists() and key.exists():
        return Authority.load(cert, key), False
    if cert.exists() or key.exists():
        raise FileExistsError(f"{folder} has only one of ca.pem and ca.key; remove it, or "
                              "restore the other")
    authority = Authority.create()
    authority.pair.write(folder, "ca")
    return authority, True


def callers_toml(folder: Path) -> str:
    """The callers file entries of DEV_CALLERS (the format of gateway/callers.py)."""
    lines = [f"# Development callers of `creditgate certs init`: their certificates are in "
             f"{folder}.", ""]
    for caller in DEV_CALLERS:
        lines += [f"[callers.{caller.name}]", f'role = "{caller.role}"',
                  f'identity = "{spiffe_id(caller.role, caller.name)}"']
        if caller.merchants:
            lines.append("merchants = [" + ", ".join(f'"{m}"' for m in caller.merchants) + "]")
        if caller.rate_per_s:
            lines += [f"rate_per_s = {caller.rate_per_s}", f"burst = {caller.burst}"]
        lines.append("")
    return "\n".join(lines)


def init(folder: Path, callers_path: Path) -> list[Path]:
    """Make what is missing of the development PKI and callers file; the paths written."""
    authority, made = authority_in(folder)
    written = [folder / "ca.pem", folder / "ca.key"] if made else []
    if not (folder / "server.pem").exists() or not (folder / "server.key").exists():
        written += authority.issue_server().write(folder, "server")
    for caller in DEV_CALLERS:
        if not (folder / f"{caller.name}.pem").exists() or \
                not (folder / f"{caller.name}.key").exists():
            pair = authority.issue_client(spiffe_id(caller.role, caller.name))
            written += pair.write(folder, caller.name)
    if not callers_path.exists():
        write_atomically(callers_path, callers_toml(folder).encode())
        written.append(callers_path)
    return written


def command(args) -> int:
    """`creditgate certs init|issue`."""
    folder = Path(args.dir)
    try:
        if args.action == "init":
            callers_path = Path(args.callers) if args.callers else folder.parent / "callers.toml"
            written = init(folder, callers_path)
            for path in written:
                print(f"wrote {path}")
            if not written:
                print(f"{folder} and {callers_path} are complete; nothing written")
            return 0
        if not args.uri and not args.dns:
            print("creditgate certs issue: give --uri (the caller's identity) or --dns",
                  file=sys.stderr)
            return 2
        if not NAME_PATTERN.fullmatch(args.name):
            print(f"creditgate certs issue: NAME {args.name!r} must match "
                  f"{NAME_PATTERN.pattern} (a caller's name)", file=sys.stderr)
            return 2
        if not (folder / "ca.pem").exists():
            print(f"creditgate certs issue: {folder} has no CA; run `creditgate certs init "
                  f"--dir {folder}` first", file=sys.stderr)
            return 1
        authority, _ = authority_in(folder)
        pair = authority.issue_client(args.uri, tuple(args.dns), valid_days=args.days)
        for path in pair.write(folder, args.name):
            print(f"wrote {path}")
        return 0
    except (OSError, ValueError) as error:
        print(f"creditgate certs: {error}", file=sys.stderr)
        return 1

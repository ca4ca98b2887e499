"""TLS on the gRPC port: the server's credentials from files that rotate without a restart, the
clients' credentials, and the verified identity of a call's peer.

The server's certificate, its key and the CA that signs the callers' certificates are files
named in the configuration. gRPC asks `CertificateFiles.fetch` before every new handshake;
when the files changed since the last look (a cheap stat of each), it reads them, checks that
they form a usable set (the key belongs to the certificate, the CA file holds certificates)
and hands gRPC the new set, which every later handshake uses. Connections already open keep
the session they negotiated, so a rotation never drops a call in flight. A set that cannot be
used (half written, a key of another certificate) is logged once and the previous set stays.
docs/operations.md describes the rotation steps.

client_auth "required" is mutual TLS: a caller must present a certificate that the CA file's
certificates verify, and its URI and DNS SANs are its identity (`peer`). "none" asks for
no client certificate: callers then identify with an API key.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import NamedTuple

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("creditgate.gateway.tls")

CLIENT_AUTH_MODES = ("required", "none")
# The certificate and key files are read whole; anything larger is not a PEM certificate set.
TLS_FILE_BYTES_MAX = 1024 * 1024


class TlsFilesError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and
    never quotes its content."""


class TlsFiles(NamedTuple):
    cert: str
    key: str
    ca: str


class TlsSet(NamedTuple):
    """One usable set read from the files: PEM bytes, and what the log may say about it."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    summary: str


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(TLS_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise TlsFilesError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > TLS_FILE_BYTES_MAX:
        raise TlsFilesError(f"{path} is larger than {TLS_FILE_BYTES_MAX} bytes")
    return data


def _certificates(path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsFilesError(f"{path} holds no PEM certificate")
    return certificates


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_valid_now(path: str, certificate: x509.Certificate) -> None:
    """A certificate outside its validity window would fail every handshake: refuse it
    rather than serve it."""
    now = datetime.datetime.now(datetime.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        raise TlsFilesError(f"the certificate in {path} is valid from {start:%Y-%m-%d %H:%M} "
                            f"to {end:%Y-%m-%d %H:%M} UTC, not now")


def _check_authority(path: str, certificate: x509.Certificate) -> None:
    """Every certificate of the CA file must be a CA's (basicConstraints CA:TRUE): a leaf
    there would trust exactly one certificate, which is not what a CA file is for."""
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TlsFilesError(f"{path} holds a certificate that is not a CA's "
                            f"({certificate.subject.rfc4514_string()}): a CA file lists CAs")


def load_set(files: TlsFiles) -> TlsSet:
    """Read and check the three files; TlsFilesError names the first one that is not usable."""
    cert_pem, key_pem = _read(files.cert), _read(files.key)
    ca_pem = _read(files.ca) if files.ca else b""
    leaf = _certificates(files.cert, cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key; the server has no passphrase to open it with.
        raise TlsFilesError(f"{files.key} holds no unencrypted PEM private key") from None
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise TlsFilesError(f"{files.key} is not the key of the certificate in {files.cert}")
    _check_valid_now(files.cert, leaf)
    authorities = _certificates(files.ca, ca_pem) if files.ca else []
    for authority in authorities:
        _check_authority(files.ca, authority)
    summary = (f"certificate {leaf.subject.rfc4514_string()} (serial {leaf.serial_number:x}, "
               f"valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC) from {files.cert}")
    if files.ca:
        summary += f", {len(authorities)} trusted CA certificate(s) from {files.ca}"
    return TlsSet(cert_pem, key_pem, ca_pem, summary)


def _stat(path: str) -> tuple[int, ...]:
    """What changes whenever a file is written or replaced: device, inode, size, and the
    modification and change times in nanoseconds (the kernel sets the latter on every write
    and rename; no tool can set it back)."""
    try:
        status = os.stat(path)
    except OSError:
        return ()
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns)


class CertificateFiles:
    """The server's TLS files, re-read when they change (the fetcher of gRPC's dynamic SSL
    server credentials)."""

    def __init__(self, files: TlsFiles, client_auth: str = "required"):
        if client_auth not in CLIENT_AUTH_MODES:
            raise TlsFilesError(f"client_auth must be one of {', '.join(CLIENT_AUTH_MODES)}, "
                                f"not {client_auth!r}")
        if client_auth == "required" and not files.ca:
            raise TlsFilesError("client_auth 'required' needs the CA file that signs the "
                                "callers' certificates")
        self.files = files
        self.client_auth = client_auth
        self._lock = threading.Lock()
        self._signature = self._stats()
        self.current = load_set(files)
        self._digest = self._digest_of(self.current)
        self._refused: tuple | None = None  # the files' state last found unusable
        self.rotations = 0

    def _stats(self) -> tuple:
        return tuple(_stat(path) for path in self.files if path)

    @staticmethod
    def _digest_of(tls_set: TlsSet) -> bytes:
        return hashlib.sha256(b"\0".join(tls_set[:3])).digest()

    def configuration(self, tls_set: TlsSet) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(tls_set.key_pem, tls_set.cert_pem)], tls_set.ca_pem or None)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(self.current), self.fetch,
            require_client_authentication=self.client_auth == "required")

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed into a usable set, else None (gRPC
        keeps the one it has). Called by gRPC before each handshake; never raises."""
        try:
            with self._lock:
                return self._fetch()
        except Exception as error:  # a fetcher that raises fails the handshake
            log.error("TLS files: unexpected %s while checking them; keeping the previous "
                      "certificate", type(error).__name__)
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        signature = self._stats()
        if signature == self._signature or signature == self._refused:
            return None
        try:
            tls_set = load_set(self.files)
        except TlsFilesError as error:
            if self._stats() == signature:  # not a writer caught mid-way: a settled state
                self._refused = signature
                log.error("TLS files changed but cannot be used (%s); keeping the previous "
                          "certificate and CA until they are fixed", error)
            return None
        if self._stats() != signature:
            return None  # written to while read: look again at the next handshake
        self._signature = signature
        digest = self._digest_of(tls_set)
        if digest == self._digest:
            return None  # touched or copied over with the same content
        self.current, self._digest, self._refused = tls_set, digest, None
        self.rotations += 1
        log.warning("TLS files rotated: new connections get the %s", tls_set.summary)
        return self.configuration(tls_set)


def channel_credentials(cert: str = "", key: str = "", ca: str = "") -> grpc.ChannelCredentials:
    """A client's credentials: the CA file that verifies the server (the system's roots
    when empty), and the client certificate and key that identify it (none when empty)."""
    if bool(cert) != bool(key):
        raise TlsFilesError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca) if ca else None,
        private_key=_read(key) if key else None,
        certificate_chain=_read(cert) if cert else None)


class Peer(NamedTuple):
    """What a call's TLS handshake established: whether it came over TLS, and the URI and DNS
    SANs of the client certificate it verified (none over plaintext or TLS without a client
    certificate). The server only ever requires and verifies a certificate or requests none,
    so every SAN here was verified by the CA file."""

    secure: bool
    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()


def peer_of(properties: dict) -> Peer:
    """The Peer of a call's auth context (`context.auth_context()`, which gRPC builds anew on
    every read: read it once per call). gRPC's x509_subject_alternative_name would add IP and
    e-mail SANs, which are never identities."""
    if properties.get("transport_security_type") != [b"ssl"]:
        return Peer(False)
    return Peer(True, *(tuple(value.decode("utf-8", "replace")
                              for value in properties.get(name, ()))
                        for name in ("peer_uri", "peer_dns")))


def peer(context: grpc.aio.ServicerContext) -> Peer:
    return peer_of(context.auth_context())


def files_exist(*paths: str | os.PathLike) -> bool:
    return all(path and Path(path).is_file() for path in paths)

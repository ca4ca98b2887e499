"""The development PKI (gateway/devpki.py): what `creditgate certs init` and `certs issue`
write, that the certificates say what the gateway relies on (SANs, key usages, validity,
issuer), and that running init again keeps every file."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from creditgate.gateway import callers, devpki, tls
from tests.gateway.test_server import ROOT

FILES = ["ACQ-1.key", "ACQ-1.pem", "BILL-1.key", "BILL-1.pem", "BO-1.key", "BO-1.pem",
         "T-0001.key", "T-0001.pem", "ca.key", "ca.pem", "server.key", "server.pem"]


def certificate(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def sans(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def usages(cert: x509.Certificate) -> list:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def certs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "creditgate.gateway.cli", "certs", *args],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)


def test_init_makes_the_ca_the_server_the_callers_and_their_file(tmp_path):
    folder = tmp_path / "tls"
    result = certs("init", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in folder.iterdir()) == FILES
    for name in FILES:
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name
    ca = certificate((folder / "ca.pem").read_bytes())
    server = certificate((folder / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert sans(server) == ["127.0.0.1", "localhost"]
    assert usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # The callers file names each certificate's SAN as the caller's identity.
    known = callers.load(tmp_path / "callers.toml")
    for caller in devpki.DEV_CALLERS:
        cert = certificate((folder / f"{caller.name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert usages(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert sans(cert) == [f"spiffe://creditgate.dev/{caller.role}/{caller.name}"]
        assert known.by_uri[sans(cert)[0]].name == caller.name
        # Each pair is one the gateway's checks accept.
        tls.load_set(tls.TlsFiles(str(folder / f"{caller.name}.pem"),
                                  str(folder / f"{caller.name}.key"), str(folder / "ca.pem")))
    terminal = (tmp_path / "callers.toml").read_text()
    assert '[callers.T-0001]\nrole = "terminal"' in terminal
    assert 'merchants = ["M-0001"]' in terminal


def test_init_again_keeps_every_file_and_fills_in_what_is_missing(tmp_path):
    folder = tmp_path / "tls"
    assert certs("init", "--dir", str(folder)).returncode == 0
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    callers_file = (tmp_path / "callers.toml").read_text()
    again = certs("init", "--dir", str(folder))
    assert again.returncode == 0 and "nothing written" in again.stdout
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert (tmp_path / "callers.toml").read_text() == callers_file
    # A lost client certificate is issued again by the same CA; nothing else changes.
    (folder / "BO-1.pem").unlink()
    refill = certs("init", "--dir", str(folder))
    assert refill.stdout.split() == ["wrote", f"{folder}/BO-1.pem", "wrote",
                                     f"{folder}/BO-1.key"]
    ca = certificate(before["ca.pem"])
    certificate((folder / "BO-1.pem").read_bytes()).verify_directly_issued_by(ca)
    assert (folder / "T-0001.pem").read_bytes() == before["T-0001.pem"]


def test_half_a_ca_is_refused_not_replaced(tmp_path):
    assert certs("init", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "ca.key").unlink()
    result = certs("init", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "has only one of ca.pem and ca.key" in result.stderr


def test_issue_adds_a_client_certificate_from_the_same_ca(tmp_path):
    assert certs("init", "--dir", str(tmp_path)).returncode == 0
    uri = "spiffe://creditgate.dev/terminal/T-0002"
    result = certs("issue", "T-0002", "--uri", uri, "--dns", "till-2.shop.example",
                   "--days", "30", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    cert = certificate((tmp_path / "T-0002.pem").read_bytes())
    cert.verify_directly_issued_by(certificate((tmp_path / "ca.pem").read_bytes()))
    assert sans(cert) == [uri, "till-2.shop.example"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["issue", "T 2", "--uri", "spiffe://x/y"], 2, "NAME 'T 2' must match"),
    (["issue", "T-2"], 2, "give --uri (the caller's identity) or --dns"),
])
def test_issue_refuses_a_bad_request(tmp_path, args, code, message):
    assert certs("init", "--dir", str(tmp_path)).returncode == 0
    result = certs(*args, "--dir", str(tmp_path))
    assert result.returncode == code and message in result.stderr


def test_issue_without_a_ca_says_to_init_first(tmp_path):
    result = certs("issue", "T-2", "--uri", "spiffe://x/y", "--dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert f"has no CA; run `creditgate certs init --dir {tmp_path / 'none'}` first" in \
        result.stderr


def test_validity_windows_in_the_past_and_the_future():
    authority = devpki.Authority.create()
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = certificate(authority.issue_client("spiffe://t/x", valid_days=2,
                                              not_before=start).cert_pem)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (
        start, start + datetime.timedelta(days=2))
    # By default a certificate is valid from a few minutes ago, so a clock a little behind
    # still accepts it.
    now = datetime.datetime.now(datetime.UTC)
    fresh = certificate(authority.issue_server().cert_pem)
    assert now - devpki.BACKDATE - datetime.timedelta(seconds=5) <= \
        fresh.not_valid_before_utc <= now


def test_a_second_ca_is_unrelated_to_the_first():
    first, second = devpki.Authority.create(), devpki.Authority.create("another CA")
    cert = certificate(second.issue_client("spiffe://t/x").cert_pem)
    cert.verify_directly_issued_by(second.cert)
    with pytest.raises(ValueError):  # another issuer name
        cert.verify_directly_issued_by(first.cert)


def test_a_client_certificate_needs_an_identity():
    with pytest.raises(ValueError, match="needs a URI or DNS SAN"):
        devpki.Authority.create().issue_client()


def test_authority_round_trips_through_its_files(tmp_path):
    authority = devpki.Authority.create()
    authority.pair.write(tmp_path, "ca")
    loaded = devpki.Authority.load(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert loaded.cert_pem == authority.cert_pem
    certificate(loaded.issue_client("spiffe://t/x").cert_pem).verify_directly_issued_by(
        authority.cert)

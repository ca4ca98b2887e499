"""TLS on the gateway's port, over real handshakes against real Redis: mutual TLS refuses a
caller without a certificate, with one from another CA, or with an expired or not yet valid
one; a good certificate gets through; plaintext is refused off loopback; the certificate and
the CA rotate while calls keep flowing on open connections; tls.peer reads the verified SANs.

Every certificate comes from gateway/devpki.py, made in the test's temporary folder."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditgate.gateway import devpki, server, tls
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, SUITE_CALLERS, served_gateway
from tests.gateway.test_server import ROOT, _start_server, free_port

TERMINAL_URI = devpki.spiffe_id("terminal", "T-0001")
BACKOFFICE_URI = devpki.spiffe_id("backoffice", "BO-1")
BILLING_URI = devpki.spiffe_id("billing", "BILL-1")
DAY = datetime.timedelta(days=1)


class Pki:
    """A development PKI in a folder: the CA, the server's files and the callers file that
    `certs init` writes, and a second CA nobody trusts."""

    def __init__(self, folder: Path):
        self.folder = folder
        devpki.init(folder, folder / "callers.toml")
        self.ca = devpki.Authority.load(folder / "ca.pem", folder / "ca.key")
        self.other_ca = devpki.Authority.create("another CA")

    @property
    def files(self) -> dict[str, str]:
        return {"tls_cert": str(self.folder / "server.pem"),
                "tls_key": str(self.folder / "server.key"),
                "tls_ca": str(self.folder / "ca.pem"),
                "callers_path": str(self.folder / "callers.toml")}

    def caller(self, name: str) -> devpki.Pair:
        return devpki.Pair((self.folder / f"{name}.pem").read_bytes(),
                           (self.folder / f"{name}.key").read_bytes())


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


@contextlib.asynccontextmanager
async def tls_gateway(redis_server, pki: Pki, **config):
    async with served_gateway(redis_server, insecure=False, **{**pki.files, **config}) as served:
        yield served


def channel_to(port: int, trusted: bytes, pair: devpki.Pair | None = None) -> grpc.aio.Channel:
    """A channel of its own (no subchannel shared with another test channel), trusting
    `trusted` and presenting `pair` if given."""
    credentials = grpc.ssl_channel_credentials(
        trusted, pair.key_pem if pair else None, pair.cert_pem if pair else None)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                   options=[("grpc.use_local_subchannel_pool", 1)])


async def health_status(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """OK if the health service answered SERVING over `channel`, else the call's status."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


async def handshake(port: int, trusted: bytes, pair: devpki.Pair | None = None
                    ) -> grpc.StatusCode:
    async with channel_to(port, trusted, pair) as channel:
        return await health_status(channel)


# -- who gets through the handshake ------------------------------------------------------------
async def test_no_client_certificate_fails_the_handshake(redis, redis_server, pki):
    async with tls_gateway(redis_server, pki) as gateway:
        assert await handshake(gateway.port, pki.ca.cert_pem) == grpc.StatusCode.UNAVAILABLE
        assert await handshake(gateway.port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK


async def test_a_certificate_from_another_ca_fails(redis, redis_server, pki):
    stranger = pki.other_ca.issue_client(TERMINAL_URI)  # the identity of a known caller
    async with tls_gateway(redis_server, pki) as gateway:
        assert await handshake(gateway.port, pki.ca.cert_pem, stranger) == \
            grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("when", ["expired", "not yet valid"])
async def test_a_certificate_outside_its_validity_fails(redis, redis_server, pki, when):
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - 3 * DAY if when == "expired" else now + DAY
    pair = pki.ca.issue_client(TERMINAL_URI, valid_days=1, not_before=not_before)
    async with tls_gateway(redis_server, pki) as gateway:
        assert await handshake(gateway.port, pki.ca.cert_pem, pair) == \
            grpc.StatusCode.UNAVAILABLE


async def test_the_gateways_certificate_is_checked_by_the_client(redis, redis_server, pki):
    async with tls_gateway(redis_server, pki) as gateway:
        assert await handshake(gateway.port, pki.other_ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.UNAVAILABLE


async def test_a_good_certificate_reaches_the_services(redis, redis_server, pki):
    async with tls_gateway(redis_server, pki) as gateway, \
            channel_to(gateway.port, pki.ca.cert_pem, pki.caller("BO-1")) as channel:
        assert await health_status(channel) == grpc.StatusCode.OK
        # The back-office's certificate is its identity: it may put a customer.
        put = await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
            customer_id="tls-1", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS),
            timeout=5)
        assert put.customer_id == "tls-1"


async def test_tls_without_client_certificates(redis, redis_server, pki):
    """client_auth "none": any client that trusts the gateway's CA connects (callers then
    identify with an API key)."""
    async with tls_gateway(redis_server, pki, client_auth="none") as gateway:
        assert await handshake(gateway.port, pki.ca.cert_pem) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as plaintext:
            assert await health_status(plaintext) == grpc.StatusCode.UNAVAILABLE


# -- what start-up refuses -------------------------------------------------------------------
def config(**fields) -> server.Config:
    return server.Config(**{"port": 0, "partitions": 16, "sweep": False,
                            "callers_path": str(SUITE_CALLERS), **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"insecure": True, "host": "0.0.0.0"},
     "--insecure serves plaintext, which is allowed on a loopback address only, not on 0.0.0.0"),
    ({"insecure": True, "host": "192.0.2.10"}, "loopback address only, not on 192.0.2.10"),
    ({}, "no TLS configured: give --tls-cert/--tls-key/--tls-ca, or --insecure on a loopback "
         "address"),
    ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "TLS: client_auth 'required' needs the CA file"),
    ({"tls_cert": "/nonexistent/c.pem", "tls_key": "k.pem", "client_auth": "none"},
     "TLS: cannot read /nonexistent/c.pem"),
    ({"tls_cert": "c.pem", "tls_key": "k.pem", "tls_ca": "ca.pem", "insecure": True},
     "both --insecure and TLS files given"),
])
def test_start_up_refuses_what_would_serve_badly(fields, message):
    with pytest.raises(server.StartupRefused) as refused:
        server.Gateway(config(**fields))
    assert message in str(refused.value)


def test_start_up_refuses_a_key_of_another_certificate(pki):
    (pki.folder / "other.key").write_bytes(pki.caller("T-0001").key_pem)
    files = {**pki.files, "tls_key": str(pki.folder / "other.key")}
    with pytest.raises(server.StartupRefused) as refused:
        server.Gateway(config(**files))
    assert str(refused.value) == (f"TLS: {pki.folder / 'other.key'} is not the key of the "
                                  f"certificate in {pki.folder / 'server.pem'}")


def test_start_up_refuses_an_expired_certificate_and_a_leaf_as_ca(pki):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    pki.ca.issue_server(valid_days=1, not_before=past).write(pki.folder, "expired")
    files = {**pki.files, "tls_cert": str(pki.folder / "expired.pem"),
             "tls_key": str(pki.folder / "expired.key")}
    with pytest.raises(server.StartupRefused) as refused:
        server.Gateway(config(**files))
    assert f"the certificate in {pki.folder / 'expired.pem'} is valid from " in \
        str(refused.value) and str(refused.value).endswith("UTC, not now")
    leaf_as_ca = {**pki.files, "tls_ca": str(pki.folder / "server.pem")}
    with pytest.raises(server.StartupRefused) as refused:
        server.Gateway(config(**leaf_as_ca))
    assert "holds a certificate that is not a CA's (CN=127.0.0.1)" in str(refused.value)


def test_insecure_on_loopback_names_is_allowed():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert server.transport(config(insecure=True, host=host)) is None


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_serve_refuses_plaintext_off_loopback_with_one_line(redis, redis_server,
                                                                  processes):
    process = await _start_server(redis_server, free_port(), "--host", "0.0.0.0",
                                  "--processes", processes)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    text = stderr.decode()
    assert process.returncode == server.EXIT_REFUSED, text
    assert "start-up refused: --insecure serves plaintext, which is allowed on a loopback " \
           "address only, not on 0.0.0.0" in text
    assert "Traceback" not in text


async def test_serve_refuses_without_tls_or_insecure(redis, redis_server):
    process = await _start_server(redis_server, free_port(), transport=())
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == server.EXIT_REFUSED
    assert "start-up refused: no TLS configured: give --tls-cert/--tls-key/--tls-ca, or " \
           "--insecure on a loopback address" in stderr.decode()


async def test_serve_over_mutual_tls_with_two_processes(redis, redis_server, pki):
    """The parent checks the files once; each server process serves them."""
    port = free_port()
    files = pki.files
    process = await _start_server(
        redis_server, port, "--processes", "2", "--callers", files["callers_path"],
        transport=("--tls-cert", files["tls_cert"], "--tls-key", files["tls_key"],
                   "--tls-ca", files["tls_ca"]))
    said: list[str] = []
    try:
        # Both processes say they serve TLS (the second may start a moment after the first).
        async def read_until_both_serve() -> None:
            while sum("serving TLS on 127.0.0.1" in line for line in said) < 2:
                line = await process.stderr.readline()
                assert line, "".join(said)
                said.append(line.decode())

        await asyncio.wait_for(read_until_both_serve(), timeout=20)
        assert await handshake(port, pki.ca.cert_pem, pki.caller("BO-1")) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            assert await health_status(plaintext) == grpc.StatusCode.UNAVAILABLE
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, "".join(said) + stderr.decode()


async def test_plaintext_start_is_said_in_the_log(redis, redis_server, caplog):
    caplog.set_level(logging.INFO, logger="creditgate.gateway")
    async with served_gateway(redis_server) as gateway:
        said = [record.getMessage() for record in caplog.records
                if "PLAINTEXT" in record.getMessage()]
    assert said == [f"serving PLAINTEXT on 127.0.0.1:{gateway.port} (--insecure, loopback only)"
                    ": no TLS; calls without an API key are the insecure:loopback caller"]


# -- rotation ---------------------------------------------------------------------------------
def write(folder: Path, **contents: bytes) -> None:
    for name, data in contents.items():
        devpki.write_atomically(folder / name.replace("_", "."), data)


def rotation_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "creditgate.gateway.tls"]


class CallStream:
    """GetCredit calls one after another on one open connection, until stopped: their
    statuses."""

    def __init__(self, channel: grpc.aio.Channel, customer_id: str):
        self.stub = pb_grpc.AuthorizationStub(channel)
        self.customer_id = customer_id
        self.codes: list[grpc.StatusCode] = []
        self.stopping = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.stub.GetCredit(pb.GetCreditRequest(customer_id=self.customer_id),
                                          timeout=5)
                self.codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                self.codes.append(error.code())

    async def calls_made(self, more_than: int) -> None:
        while len(self.codes) <= more_than:
            await asyncio.sleep(0.01)

    async def stop(self) -> list[grpc.StatusCode]:
        self.stopping.set()
        await self.task
        return self.codes


async def test_rotation_keeps_calls_flowing_and_retires_the_old_ca(redis, redis_server, pki,
                                                                    caplog):
    caplog.set_level(logging.INFO, logger="creditgate.gateway.tls")
    old_ca, new_ca = pki.ca, devpki.Authority.create("creditgate CA 2")
    old_billing, new_billing = pki.caller("BILL-1"), new_ca.issue_client(BILLING_URI)
    async with tls_gateway(redis_server, pki) as gateway:
        async with channel_to(gateway.port, old_ca.cert_pem, pki.caller("BO-1")) as channel:
            await pb_grpc.AdminStub(channel).PutCustomer(pb.PutCustomerRequest(
                customer_id="rotate", status=pb.CUSTOMER_STATUS_ACTIVE,
                caps_minor=CUSTOMER_CAPS), timeout=5)
        # A connection opened before the rotation, which only ever trusts the old CA.
        async with channel_to(gateway.port, old_ca.cert_pem, old_billing) as before:
            stream = CallStream(before, "rotate")
            await stream.calls_made(more_than=20)

            # The new CA's server certificate, and a CA file trusting both while callers move.
            new_server = new_ca.issue_server()
            write(pki.folder, server_key=new_server.key_pem, server_pem=new_server.cert_pem,
                  ca_pem=old_ca.cert_pem + new_ca.cert_pem)
            assert await handshake(gateway.port, new_ca.cert_pem, new_billing) == \
                grpc.StatusCode.OK
            # New connections get the new certificate: a client trusting only the old CA
            # refuses it, and old client certificates are still accepted.
            assert await handshake(gateway.port, old_ca.cert_pem, old_billing) == \
                grpc.StatusCode.UNAVAILABLE
            assert await handshake(gateway.port, new_ca.cert_pem, old_billing) == \
                grpc.StatusCode.OK
            count = len(stream.codes)
            await stream.calls_made(more_than=count + 20)

            write(pki.folder, ca_pem=new_ca.cert_pem)  # the old CA retired
            assert await handshake(gateway.port, new_ca.cert_pem, old_billing) == \
                grpc.StatusCode.UNAVAILABLE
            assert await handshake(gateway.port, new_ca.cert_pem, new_billing) == \
                grpc.StatusCode.OK
            count = len(stream.codes)
            await stream.calls_made(more_than=count + 20)
            codes = await stream.stop()
    assert set(codes) == {grpc.StatusCode.OK}, codes
    lines = rotation_lines(caplog)
    rotated = "TLS files rotated: new connections get the certificate CN=127.0.0.1"
    assert len(lines) == 2 and all(line.startswith(rotated) for line in lines)
    assert "2 trusted CA certificate(s)" in lines[0] and "1 trusted CA" in lines[1]
    assert all("PRIVATE KEY" not in line for line in lines)


async def test_an_unusable_new_pair_keeps_the_old_one_and_is_logged_once(
        redis, redis_server, pki, caplog):
    caplog.set_level(logging.INFO, logger="creditgate.gateway.tls")
    replacement = pki.ca.issue_server()
    async with tls_gateway(redis_server, pki) as gateway:
        write(pki.folder, server_pem=replacement.cert_pem)  # its key not yet written
        for _ in range(3):
            assert await handshake(gateway.port, pki.ca.cert_pem, pki.caller("T-0001")) == \
                grpc.StatusCode.OK
        write(pki.folder, server_key=b"-----BEGIN PRIVATE KEY-----\ntrunc")  # half written
        assert await handshake(gateway.port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK
        lines = rotation_lines(caplog)
        assert lines == [
            f"TLS files changed but cannot be used ({pki.folder / 'server.key'} is not the key "
            f"of the certificate in {pki.folder / 'server.pem'}); keeping the previous "
            f"certificate and CA until they are fixed",
            f"TLS files changed but cannot be used ({pki.folder / 'server.key'} holds no "
            f"unencrypted PEM private key); keeping the previous certificate and CA until they "
            f"are fixed"]
        write(pki.folder, server_key=replacement.key_pem)
        assert await handshake(gateway.port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK
        assert gateway.tls.current.cert_pem == replacement.cert_pem
        assert gateway.tls.rotations == 1
        # Touched, same content: no rotation, no line.
        os.utime(pki.folder / "server.pem")
        assert await handshake(gateway.port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK
    lines = rotation_lines(caplog)
    assert len(lines) == 3 and lines[2].startswith("TLS files rotated")
    assert gateway.tls.rotations == 1


# -- the peer's identity ----------------------------------------------------------------------
class Identity(health_pb2_grpc.HealthServicer):
    """A health service that records what tls.py reads from each call's context."""

    def __init__(self) -> None:
        self.seen: list[tls.Peer] = []

    async def Check(self, request, context):
        self.seen.append(tls.peer(context))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def identity_server(pki: Pki | None, client_auth: str = "required"):
    servicer = Identity()
    grpc_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    if pki is None:
        port = grpc_server.add_insecure_port("127.0.0.1:0")
    else:
        files = tls.TlsFiles(*(pki.files[name] for name in ("tls_cert", "tls_key", "tls_ca")))
        port = grpc_server.add_secure_port(
            "127.0.0.1:0", tls.CertificateFiles(files, client_auth).credentials())
    await grpc_server.start()
    try:
        yield servicer, port
    finally:
        await grpc_server.stop(0)


async def test_peer_sans_are_the_verified_certificates_uri_and_dns_names(pki):
    pair = pki.ca.issue_client("spiffe://creditgate.dev/acquirer/ACQ-9",
                               dns=("switch.acquirer.example",))
    async with identity_server(pki) as (servicer, port):
        assert await handshake(port, pki.ca.cert_pem, pair) == grpc.StatusCode.OK
        assert await handshake(port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK
    assert servicer.seen == [
        tls.Peer(True, ("spiffe://creditgate.dev/acquirer/ACQ-9",), ("switch.acquirer.example",)),
        tls.Peer(True, (TERMINAL_URI,))]


def test_only_uri_and_dns_sans_are_identities():
    """gRPC lists every SAN kind under x509_subject_alternative_name; an IP or e-mail SAN is
    never an identity."""
    properties = {"transport_security_type": [b"ssl"],
                  "x509_subject_alternative_name": [b"spiffe://t/x", b"10.0.0.1", b"a@b.example",
                                                    b"host.example"],
                  "peer_uri": [b"spiffe://t/x"], "peer_dns": [b"host.example"],
                  "peer_ip": [b"10.0.0.1"], "peer_email": [b"a@b.example"]}
    assert tls.peer_of(properties) == tls.Peer(True, ("spiffe://t/x",), ("host.example",))
    assert tls.peer_of({"transport_security_type": [b"insecure"],
                        "peer_uri": [b"spiffe://t/x"]}) == tls.Peer(False)


async def test_no_sans_without_a_client_certificate_or_without_tls(pki):
    async with identity_server(pki, client_auth="none") as (servicer, port):
        # A certificate the server did not ask for is neither sent nor read.
        assert await handshake(port, pki.ca.cert_pem, pki.caller("T-0001")) == \
            grpc.StatusCode.OK
        assert await handshake(port, pki.ca.cert_pem) == grpc.StatusCode.OK
    assert servicer.seen == [tls.Peer(True), tls.Peer(True)]
    async with identity_server(None) as (servicer, port), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await health_status(channel) == grpc.StatusCode.OK
    assert servicer.seen == [tls.Peer(False)]


# -- the CLI over mutual TLS ------------------------------------------------------------------
async def creditgate(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", *args, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_demo_calls_as_each_caller_and_shows_the_refusal(redis, redis_server, pki):
    async with tls_gateway(redis_server, pki) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        code, out, err = await creditgate("demo", "--target", target, "--tls-dir",
                                          str(pki.folder))
        assert code == 0, out + err
        assert "demo ok" in out
        assert "repay         200.00 CNY (billing)" in out
        assert "terminal T-0001 -> Admin.SetTemporaryRaise: refused, PERMISSION_DENIED" in out
        # The back-office's default certificate; an unknown customer is the only complaint.
        code, out, err = await creditgate("customer", "show", "nobody", "--target", target,
                                          "--tls-dir", str(pki.folder))
        assert code == 1 and "NOT_FOUND" in err, err
        # Without the files, the command says how to get them.
        code, out, err = await creditgate("customer", "show", "nobody", "--target", target,
                                          "--tls-dir", str(pki.folder / "missing"))
        assert code == 2 and "run `creditgate certs init --dir" in err, err

"""Pool CA and TLS contexts on real loopback sockets: who is trusted, who is refused."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hacluster.mgmt.roles import Role
from hacluster.mgmt.tls import (
    CertFiles,
    TLSError,
    client_context,
    create_pool_ca,
    issue_certificate,
    load_certificate,
    peer_is_pool_client,
    server_context,
)

V4 = "127.0.0.1"
V6 = "::1"


@dataclass
class Pool:
    """A pool CA with one host certificate and one client certificate."""

    directory: Path
    ca: CertFiles
    host: CertFiles
    admin: CertFiles


def make_pool(directory: Path, name: str, addresses: tuple[str, ...] = (V4, V6)) -> Pool:
    ca = create_pool_ca(directory, name)
    host = issue_certificate(ca, directory, "host-1", addresses)
    admin = issue_certificate(ca, directory, "admin", client=True, role=Role.OPERATOR)
    return Pool(directory, ca, host, admin)


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return make_pool(tmp_path / "pool", "pool-a")


@pytest.fixture
def foreign(tmp_path: Path) -> Pool:
    return make_pool(tmp_path / "other", "pool-b")


@dataclass
class Server:
    """A TLS echo server recording, per connection, whether the peer is a pool client."""

    port: int
    clients: list[bool] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext, host: str = V4) -> AsyncIterator[Server]:
    server = Server(port=0)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        is_client = peer_is_pool_client(writer.get_extra_info("ssl_object"))
        server.clients.append(is_client)
        data = await reader.readline()
        writer.write((b"client:" if is_client else b"anonymous:") + data)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer, host, 0, ssl=context)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


async def exchange(host: str, port: int, context: ssl.SSLContext, line: bytes) -> bytes:
    """Connect with TLS, send one line and read the whole answer."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(line)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


# ---------------------------------------------------------------- server verification


@pytest.mark.parametrize("address", [V4, V6])
async def test_host_cert_and_pool_ca_handshake_and_exchange(pool: Pool, address: str) -> None:
    async with tls_server(server_context(pool.host), address) as server:
        answer = await exchange(address, server.port, client_context(pool.ca.cert), b"ping\n")
    assert answer == b"anonymous:ping\n"
    assert server.clients == [False]


async def test_connection_uses_tls_1_3(pool: Pool) -> None:
    async with tls_server(server_context(pool.host)) as server:
        _, writer = await asyncio.open_connection(V4, server.port,
                                                  ssl=client_context(pool.ca.cert))
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert version == "TLSv1.3"


async def test_client_with_another_pools_ca_is_refused(pool: Pool, foreign: Pool) -> None:
    async with tls_server(server_context(pool.host)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            await exchange(V4, server.port, client_context(foreign.ca.cert), b"ping\n")
    assert server.clients == []


async def test_cert_for_another_address_fails_the_address_check(pool: Pool) -> None:
    elsewhere = issue_certificate(pool.ca, pool.directory, "host-2", ["127.0.0.2"])
    async with tls_server(server_context(elsewhere)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            await exchange(V4, server.port, client_context(pool.ca.cert), b"ping\n")
    assert server.clients == []


async def test_client_cert_cannot_serve(pool: Pool) -> None:
    async with tls_server(server_context(pool.admin)) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="unsuitable certificate purpose"):
            await exchange(V4, server.port, client_context(pool.ca.cert), b"ping\n")


# ---------------------------------------------------------------- client certificates


async def test_pool_client_cert_is_recognised(pool: Pool) -> None:
    async with tls_server(server_context(pool.host, pool.ca.cert)) as server:
        answer = await exchange(V4, server.port, client_context(pool.ca.cert, pool.admin),
                                b"hello\n")
    assert answer == b"client:hello\n"
    assert server.clients == [True]


async def test_no_client_cert_still_connects_but_is_not_a_pool_client(pool: Pool) -> None:
    async with tls_server(server_context(pool.host, pool.ca.cert)) as server:
        answer = await exchange(V4, server.port, client_context(pool.ca.cert), b"hello\n")
    assert answer == b"anonymous:hello\n"
    assert server.clients == [False]


async def test_server_without_pool_ca_ignores_client_certs(pool: Pool) -> None:
    async with tls_server(server_context(pool.host)) as server:
        answer = await exchange(V4, server.port, client_context(pool.ca.cert, pool.admin),
                                b"hello\n")
    assert answer == b"anonymous:hello\n"
    assert server.clients == [False]


@pytest.mark.parametrize("which", ["foreign client", "pool host cert"])
async def test_bad_client_cert_never_reaches_the_handler(pool: Pool, foreign: Pool,
                                                         which: str) -> None:
    offered = foreign.admin if which == "foreign client" else pool.host
    async with tls_server(server_context(pool.host, pool.ca.cert)) as server:
        # TLS 1.3: the client finishes first; the server's refusal ends the stream.
        try:
            answer = await exchange(V4, server.port, client_context(pool.ca.cert, offered),
                                    b"hello\n")
        except (ssl.SSLError, ConnectionError):
            answer = b""
    assert answer == b""
    assert server.clients == []


async def test_client_side_sees_server_as_no_pool_client(pool: Pool) -> None:
    async with tls_server(server_context(pool.host)) as server:
        _, writer = await asyncio.open_connection(V4, server.port,
                                                  ssl=client_context(pool.ca.cert))
        seen_from_client = peer_is_pool_client(writer.get_extra_info("ssl_object"))
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert seen_from_client is False


# ---------------------------------------------------------------- certificate contents


def test_host_cert_lists_ipv4_and_ipv6_with_server_usage(pool: Pool) -> None:
    cert = load_certificate(pool.host.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(V4),
                                                       ipaddress.ip_address(V6)]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == load_certificate(pool.ca.cert).subject


def test_client_cert_has_client_usage_and_no_addresses(pool: Pool) -> None:
    cert = load_certificate(pool.admin.cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_lifetimes_never_outlast_the_ca(tmp_path: Path) -> None:
    ca = create_pool_ca(tmp_path, "short", days=30)
    host = issue_certificate(ca, tmp_path, "h", [V4], days=825)
    ca_end = load_certificate(ca.cert).not_valid_after_utc
    assert load_certificate(host.cert).not_valid_after_utc == ca_end
    shorter = issue_certificate(ca, tmp_path, "h2", [V4], days=10)
    assert load_certificate(shorter.cert).not_valid_after_utc < ca_end


def test_key_files_are_private(pool: Pool) -> None:
    for files in (pool.ca, pool.host, pool.admin):
        assert files.key.stat().st_mode & 0o777 == 0o600
        assert files.cert.stat().st_mode & 0o777 == 0o644


def test_reissue_replaces_the_pair(pool: Pool) -> None:
    before = load_certificate(pool.host.cert).serial_number
    again = issue_certificate(pool.ca, pool.directory, "host-1", ["10.0.0.1"])
    assert again == pool.host
    assert load_certificate(again.cert).serial_number != before
    assert again.key.stat().st_mode & 0o777 == 0o600
    server_context(again)  # the new key matches the new certificate
    assert sorted(p.name for p in pool.directory.iterdir()) == [
        "admin.key", "admin.pem", "ca.key", "ca.pem", "host-1.key", "host-1.pem"]


# ---------------------------------------------------------------- refusals and bad files


def test_create_pool_ca_refuses_to_overwrite(pool: Pool) -> None:
    before = pool.ca.cert.read_bytes(), pool.ca.key.read_bytes()
    with pytest.raises(TLSError, match="already exists"):
        create_pool_ca(pool.directory, "pool-a")
    pool.ca.cert.unlink()  # half a CA is still a CA: the key is kept
    with pytest.raises(TLSError, match=re.escape(str(pool.ca.key))):
        create_pool_ca(pool.directory, "pool-a")
    assert pool.ca.key.read_bytes() == before[1]


@pytest.mark.parametrize("name", ["ca", "../escape", "", "a b", "-x", "x" * 65])
def test_bad_certificate_names_are_refused(pool: Pool, name: str) -> None:
    with pytest.raises(TLSError):
        issue_certificate(pool.ca, pool.directory, name, [V4])
    assert pool.ca.key.stat().st_size > 0


@pytest.mark.parametrize(("addresses", "client", "match"), [
    ((), False, "at least one IP address"),
    (("host-1.example",), False, "not an IP address"),
    (("300.1.1.1",), False, "not an IP address"),
    ("127.0.0.1", False, "sequence of IP addresses"),
    ((V4,), True, "carries no addresses"),
])
def test_bad_addresses_are_refused(pool: Pool, addresses: tuple[str, ...], client: bool,
                                   match: str) -> None:
    with pytest.raises(TLSError, match=match):
        issue_certificate(pool.ca, pool.directory, "h", addresses, client=client)


def test_non_ca_cannot_issue(pool: Pool) -> None:
    with pytest.raises(TLSError, match="not a CA certificate"):
        issue_certificate(pool.host, pool.directory, "h", [V4])


def test_lifetime_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="positive"):
        create_pool_ca(tmp_path, "p", days=0)
    assert list(tmp_path.iterdir()) == []


def corrupt(path: Path) -> None:
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")


def test_corrupt_ca_cert_is_named(pool: Pool) -> None:
    corrupt(pool.ca.cert)
    with pytest.raises(TLSError, match=re.escape(f"{pool.ca.cert}: not a valid PEM certificate")):
        issue_certificate(pool.ca, pool.directory, "h", [V4])
    with pytest.raises(TLSError, match=re.escape(str(pool.ca.cert))):
        client_context(pool.ca.cert)
    with pytest.raises(TLSError, match=re.escape(str(pool.ca.cert))):
        server_context(pool.host, pool.ca.cert)


def test_corrupt_key_is_named(pool: Pool) -> None:
    pool.host.key.write_text("garbage\n")
    with pytest.raises(TLSError, match=re.escape(f"{pool.host.key}: not a valid unencrypted PEM")):
        server_context(pool.host)


def test_missing_files_are_named(pool: Pool, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(TLSError, match=re.escape(f"{missing}: certificate file not found")):
        client_context(missing)
    pool.admin.key.unlink()
    with pytest.raises(TLSError, match=re.escape(f"{pool.admin.key}: private key file not found")):
        client_context(pool.ca.cert, pool.admin)


def test_mixed_up_pair_is_named(pool: Pool) -> None:
    mixed = CertFiles(pool.host.cert, pool.admin.key)
    expected = f"{pool.admin.key} is not the key of {pool.host.cert}"
    with pytest.raises(TLSError, match=re.escape(expected)):
        server_context(mixed)

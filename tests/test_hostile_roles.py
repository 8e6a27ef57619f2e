"""Hostile callers of the management API: every credential gets only what its role allows.

A real API server (:class:`hacluster.mgmt.api.Server`) on the loopback
address, over real TLS 1.3 with the pool CA's certificates, is called the
way hactl calls it. The verbs are taken from the verb table, so a new verb
is covered by every table-driven test here without a word changed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hacluster.mgmt import api
from hacluster.mgmt.mail import MailConfig, MailError, render, send
from hacluster.mgmt.roles import POOL_SECRET_ID, Credential, Role, role_secret
from hacluster.mgmt.service import Service
from hacluster.mgmt.tls import (
    CertFiles,
    client_context,
    issue_certificate,
    load_certificate,
    load_private_key,
    server_context,
)
from hacluster.mgmt.verbs import VERBS, Call, Verb

from .fakes import UUIDS, open_database
from .mgmt.test_mail import ALERT, Collector, free_port
from .mgmt.test_service import FakeControl
from .mgmt.test_tls import Pool, make_pool

LOOPBACK = "127.0.0.1"
POOL_SECRET = b"the-pool-secret-of-this-test-0123456789"


def example(verb: Verb) -> Call:
    """A well-formed call of ``verb``: its required parameters and its flags."""
    return Call(verb.name, {key: "x" for key in verb.required}, verb.flags)


@dataclass
class RecordingHost:
    """The daemon side: a master (or, with ``master``, a host relaying to it) that records
    every call reaching it and answers ok."""

    master: tuple[str, int] | None = None
    denied: frozenset[str] = frozenset()
    calls: list[Call] = field(default_factory=list)

    def is_master(self) -> bool:
        return self.master is None

    def master_endpoints(self) -> list[tuple[str, int]]:
        return [] if self.master is None else [self.master]

    def answers_without_master(self, verb: str) -> bool:
        return False

    async def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(call)
        yield {"ok": True, "result": None}

    def denied_credentials(self) -> frozenset[str]:
        return self.denied


@dataclass
class ServiceHost:
    """The daemon side with the real verbs on a real pool database (hosts scripted)."""

    control: FakeControl

    def __post_init__(self) -> None:
        self.service = Service(self.control, clock=lambda: 1_700_000_000.0)

    def is_master(self) -> bool:
        return True

    def master_endpoints(self) -> list[tuple[str, int]]:
        return []

    def answers_without_master(self, verb: str) -> bool:
        return False

    def answer(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        return self.service.answer(call)

    def denied_credentials(self) -> frozenset[str]:
        return self.control.master.db.denied


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return make_pool(tmp_path / "pool", "hostile", (LOOPBACK,))


@contextlib.asynccontextmanager
async def serving(host: api.Host, pool: Pool) -> AsyncIterator[tuple[str, int]]:
    server = api.Server(host, POOL_SECRET, server_context(pool.host, pool.ca.cert),
                        client_context(pool.ca.cert))
    listener = await server.serve(LOOPBACK, 0)
    async with listener:
        yield LOOPBACK, int(listener.sockets[0].getsockname()[1])


@dataclass(frozen=True)
class Caller:
    """How a test calls: a secret, or a client certificate (and no secret)."""

    secret: bytes
    cert: CertFiles | None = None

    async def call(self, endpoint: tuple[str, int], pool: Pool, request: Call) -> Any:
        context = client_context(pool.ca.cert, self.cert)
        return await api.call([endpoint], context, self.secret, request)


def secret_caller(role: Role, name: str = "alice") -> Caller:
    return Caller(role_secret(POOL_SECRET, role, name).encode())


def cert_caller(pool: Pool, role: Role, name: str = "alice") -> Caller:
    return Caller(b"", issue_certificate(pool.ca, pool.directory, f"{name}-{role.label}",
                                         client=True, role=role))


def caller_of(kind: str, pool: Pool, role: Role) -> Caller:
    return secret_caller(role) if kind == "secret" else cert_caller(pool, role)


async def refusal(caller: Caller, endpoint: tuple[str, int], pool: Pool, request: Call) -> str:
    with pytest.raises(api.ApiError) as refused:
        await caller.call(endpoint, pool, request)
    return str(refused.value)


# ---------------------------------------------------------------- roles, table-driven


@pytest.mark.parametrize("kind", ["secret", "cert"])
@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.OPERATOR])
async def test_every_role_is_refused_every_verb_above_it(pool: Pool, role: Role,
                                                         kind: str) -> None:
    host = RecordingHost()
    caller = caller_of(kind, pool, role)
    above = [verb for verb in VERBS.values() if verb.role > role]
    assert above  # every role but the highest has something it may not do
    async with serving(host, pool) as endpoint:
        for verb in above:
            error = await refusal(caller, endpoint, pool, example(verb))
            assert f"is {role.label}; {verb.name} needs {verb.role.label}" in error
    assert host.calls == []  # no handler was reached


@pytest.mark.parametrize("kind", ["secret", "cert"])
@pytest.mark.parametrize("role", list(Role))
async def test_every_role_may_run_every_verb_at_or_below_it(pool: Pool, role: Role,
                                                            kind: str) -> None:
    host = RecordingHost()
    caller = caller_of(kind, pool, role)
    allowed = [verb for verb in VERBS.values() if verb.role <= role]
    async with serving(host, pool) as endpoint:
        for verb in allowed:
            await caller.call(endpoint, pool, example(verb))
    assert [call.verb for call in host.calls] == [verb.name for verb in allowed]
    assert {(call.caller.role if call.caller else None) for call in host.calls} == {role}


async def test_the_pool_secret_is_the_emergency_role(pool: Pool) -> None:
    host = RecordingHost()
    async with serving(host, pool) as endpoint:
        await Caller(POOL_SECRET).call(endpoint, pool, Call("host-emergency-ha-disable",
                                                            flags=("--force",)))
    [call] = host.calls
    assert call.caller == Credential(POOL_SECRET_ID, Role.EMERGENCY, "pool secret")


async def test_a_role_secret_cannot_be_turned_into_another_role(pool: Pool) -> None:
    host = RecordingHost()
    mac = role_secret(POOL_SECRET, Role.READ_ONLY, "alice").rsplit(":", 1)[1]
    forged = [f"operator:alice:{mac}", f"read-only:mallory:{mac}",
              role_secret(b"another pool's secret", Role.OPERATOR, "alice")]
    async with serving(host, pool) as endpoint:
        for secret in forged:
            error = await refusal(Caller(secret.encode()), endpoint, pool, Call("status"))
            assert error.startswith("authentication failed")
    assert host.calls == []


# ---------------------------------------------------------------- certificates


def forge_client_cert(pool: Pool, name: str, days_ago: int, days: int,
                      unit: str | None) -> CertFiles:
    """A client certificate signed by the pool CA with any lifetime and OU."""
    ca_cert, ca_key = load_certificate(pool.ca.cert), load_private_key(pool.ca.key)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hacluster"),
             *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []),
             x509.NameAttribute(NameOID.COMMON_NAME, name)]
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(x509.Name(names))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = CertFiles(pool.directory / f"{name}.pem", pool.directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def test_client_certificates_are_short_lived_by_default(pool: Pool) -> None:
    cert = load_certificate(cert_caller(pool, Role.OPERATOR).cert.cert)  # type: ignore[union-attr]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=31)


@pytest.mark.parametrize(("days_ago", "days", "unit", "why"), [
    (1, 825, "emergency", "valid 825 days, more than the 90 allowed"),  # the old default
    (1, 30, None, "names no role"),  # made before roles
    (1, 30, "root", "names no role"),
    (40, 30, "emergency", "certificate verify failed|connection lost|expired"),
])
async def test_a_certificate_too_long_lived_roleless_or_expired_is_refused(
        pool: Pool, days_ago: int, days: int, unit: str | None, why: str) -> None:
    host = RecordingHost()
    caller = Caller(b"", forge_client_cert(pool, "old", days_ago, days, unit))
    async with serving(host, pool) as endpoint:
        error = await refusal(caller, endpoint, pool, Call("status"))
    assert re.search(why, error), error
    assert host.calls == []


@pytest.mark.parametrize("kind", ["secret", "cert"])
async def test_a_denied_credential_is_refused(pool: Pool, kind: str) -> None:
    caller = caller_of(kind, pool, Role.EMERGENCY)
    host = RecordingHost()
    async with serving(host, pool) as endpoint:
        await caller.call(endpoint, pool, Call("status"))
        [call] = host.calls
        assert call.caller is not None
        host.denied = frozenset({call.caller.id})
        error = await refusal(caller, endpoint, pool, Call("status"))
    assert f"this credential ({call.caller.id}) is on the pool's deny list" in error
    assert len(host.calls) == 1


async def test_credential_deny_takes_effect_on_the_next_call(pool: Pool,
                                                             tmp_path: Path) -> None:
    operator, emergency = cert_caller(pool, Role.OPERATOR, "op"), secret_caller(Role.EMERGENCY)
    database = await open_database(tmp_path)
    try:
        async with serving(ServiceHost(FakeControl(database)), pool) as endpoint:
            serial = load_certificate(operator.cert.cert).serial_number  # type: ignore[union-attr]
            ident = f"cert:{serial:x}"
            await emergency.call(endpoint, pool, Call("credential-deny", {"credential": ident}))
            error = await refusal(operator, endpoint, pool, Call("status"))
            assert "is on the pool's deny list" in error
            assert await emergency.call(endpoint, pool, Call("credential-deny-list")) == [
                {"credential": ident}]
            error = await refusal(operator, endpoint, pool,
                                  Call("credential-allow", {"credential": ident}))
            assert "is on the pool's deny list" in error
            await emergency.call(endpoint, pool, Call("credential-allow", {"credential": ident}))
            await operator.call(endpoint, pool, Call("status"))
            error = await refusal(emergency, endpoint, pool,
                                  Call("credential-deny", {"credential": POOL_SECRET_ID}))
            assert "the pool secret cannot be denied" in error
    finally:
        database.close()


# ---------------------------------------------------------------- relaying


async def test_a_relayed_call_keeps_the_callers_role(pool: Pool) -> None:
    master = RecordingHost()
    async with serving(master, pool) as master_endpoint:
        relay = RecordingHost(master=master_endpoint)
        async with serving(relay, pool) as endpoint:
            reader = secret_caller(Role.READ_ONLY, "reader")
            await reader.call(endpoint, pool, Call("vm-list"))
            error = await refusal(reader, endpoint, pool, Call("host-disable", {"uuid": "x"}))
            assert "is read-only; host-disable needs operator" in error
            operator = cert_caller(pool, Role.OPERATOR, "op")
            await operator.call(endpoint, pool, Call("host-disable", {"uuid": "x"}))
    assert relay.calls == []  # nothing answered by the relaying host
    [listed, disabled] = master.calls
    assert listed.caller == Credential("secret:read-only:reader", Role.READ_ONLY, "reader")
    assert disabled.caller is not None and disabled.caller.role is Role.OPERATOR
    assert disabled.caller.id.startswith("cert:") and disabled.caller.name == "op-operator"


async def test_a_named_caller_never_raises_a_role(pool: Pool) -> None:
    """A relayed request names its caller; only the pool secret may, and never higher."""
    master = RecordingHost()
    higher = Credential(POOL_SECRET_ID, Role.EMERGENCY, "pool secret")
    lower = Credential("secret:read-only:reader", Role.READ_ONLY, "reader")
    reader = role_secret(POOL_SECRET, Role.READ_ONLY, "reader").encode()
    async with serving(master, pool) as endpoint:
        for secret, caller in ((reader, higher), (POOL_SECRET, lower)):
            request = Call("host-disable", {"uuid": "x"}, caller=caller)
            error = await refusal(Caller(secret), endpoint, pool, request)
            assert "is read-only; host-disable needs operator" in error
        assert master.calls == []
        await Caller(reader).call(endpoint, pool, Call("status", caller=higher))
    [status] = master.calls  # a caller named by a role secret is not believed, even as a name
    assert status.caller == Credential("secret:read-only:reader", Role.READ_ONLY, "reader")


# ---------------------------------------------------------------- audit


def changing_examples() -> dict[str, Call]:
    """A call of every verb above read-only that the scripted pool accepts."""
    return {
        "pool-param-set": Call("pool-param-set", {"name-label": "renamed"}),
        "pool-ha-enable": Call("pool-ha-enable", {"ha-config:timeout": "30"}),
        "pool-ha-disable": Call("pool-ha-disable"),
        "host-disable": Call("host-disable", {"uuid": UUIDS[2]}),
        "host-enable": Call("host-enable", {"uuid": UUIDS[2]}),
        "host-evacuate": Call("host-evacuate", {"uuid": UUIDS[1]}),
        "vm-param-set": Call("vm-param-set", {"uuid": "vm-web1", "ha-restart-priority": ""}),
        "vm-install": Call("vm-install", {"uuid": "vm-new", "name-label": "new",
                                          "memory": "64"}),
        "vm-start": Call("vm-start", {"uuid": "vm-new", "host": UUIDS[0]}),
        "vm-reboot": Call("vm-reboot", {"uuid": "vm-new"}),
        "vm-migrate": Call("vm-migrate", {"uuid": "vm-new", "host": UUIDS[2]}),
        "vm-suspend": Call("vm-suspend", {"uuid": "vm-new"}),
        "vm-resume": Call("vm-resume", {"uuid": "vm-new"}),
        "vm-shutdown": Call("vm-shutdown", {"uuid": "vm-new"}),
        "vm-uninstall": Call("vm-uninstall", {"uuid": "vm-new"}),
        "pool-ha-rebalance": Call("pool-ha-rebalance", flags=("--dry-run",)),
        "host-shutdown": Call("host-shutdown", {"uuid": UUIDS[1]}),  # runs no protected VM
        "credential-deny": Call("credential-deny", {"credential": "secret:operator:bob"}),
        "credential-allow": Call("credential-allow", {"credential": "secret:operator:bob"}),
        "pool-key-rotate": Call("pool-key-rotate"),
        "pool-admit": Call("pool-admit", {"address": "10.9.0.9:7000", "memory": "1024",
                                        "name-label": "new", "uuid": "host-new"}),
        "pool-eject": Call("pool-eject", {"host-uuid": "host-new"}),
        "host-emergency-ha-disable": Call("host-emergency-ha-disable", flags=("--force",)),
        "pool-emergency-transition-to-master": Call("pool-emergency-transition-to-master"),
        "pool-emergency-reset-master": Call("pool-emergency-reset-master",
                                            {"master-address": "10.9.0.1"}),
    }


async def test_every_change_leaves_an_audit_record_naming_the_credential(
        pool: Pool, tmp_path: Path) -> None:
    examples = changing_examples()
    # pool-join is answered by a host waiting to join (a member refuses it): the
    # change it makes is the master's pool-admit, audited there with the caller
    assert set(examples) == {v.name for v in VERBS.values()
                             if v.role > Role.READ_ONLY} - {"pool-join"}
    database = await open_database(tmp_path)
    callers = {Role.OPERATOR: cert_caller(pool, Role.OPERATOR, "carol"),
               Role.EMERGENCY: secret_caller(Role.EMERGENCY, "erin")}
    reader = secret_caller(Role.READ_ONLY, "rita")
    try:
        async with serving(ServiceHost(FakeControl(database)), pool) as endpoint:
            expected = []
            for name, request in examples.items():
                role = VERBS[name].role
                await callers[role].call(endpoint, pool, request)
                expected.append((name, request.params, list(request.flags), role.label))
                await reader.call(endpoint, pool, Call("vm-list"))  # reading is not audited
            with pytest.raises(api.ApiError):  # refused: nothing recorded
                await callers[Role.OPERATOR].call(endpoint, pool, Call(
                    "vm-param-set", {"uuid": "vm-sql", "order": "soon"}))
            audit = await reader.call(endpoint, pool, Call("audit-list"))
    finally:
        database.close()
    assert [(r["verb"], r["params"], r["flags"], r["role"]) for r in audit] == expected
    carol = f"cert:{load_certificate(callers[Role.OPERATOR].cert.cert).serial_number:x}"  # type: ignore[union-attr]
    assert {r["credential"] for r in audit} == {carol, "secret:emergency:erin"}
    assert {r["name"] for r in audit} == {"carol-operator", "erin"}
    assert all(r["time"] == 1_700_000_000.0 for r in audit)
    assert [r["ref"] for r in audit] == list(range(1, len(examples) + 1))


async def test_secrets_never_appear_in_the_audit(pool: Pool, tmp_path: Path) -> None:
    database = await open_database(tmp_path)
    operator = secret_caller(Role.OPERATOR, "oscar")
    role_secrets = [role_secret(POOL_SECRET, role, "oscar") for role in Role]
    hexed = POOL_SECRET.hex()[:64]
    try:
        async with serving(ServiceHost(FakeControl(database)), pool) as endpoint:
            await operator.call(endpoint, pool, Call("pool-param-set", {
                "other-config:smtp-password": "hunter2", "other-config:api-token": "t0k3n",
                "other-config:note": f"key {hexed}", "name-label": "kept"}))
            audit = await operator.call(endpoint, pool, Call("audit-list"))
        snapshot = Path(database.device.path).read_bytes() + database.backup.read_bytes()
    finally:
        database.close()
    text = json.dumps(audit)
    for secret in ("hunter2", "t0k3n", hexed, POOL_SECRET.decode(), *role_secrets):
        assert secret not in text
    assert audit[0]["params"] == {"other-config:smtp-password": "(redacted)",
                                  "other-config:api-token": "(redacted)",
                                  "other-config:note": "(redacted)", "name-label": "kept"}
    for stored in (POOL_SECRET, *(s.encode() for s in role_secrets)):
        assert stored not in snapshot  # nor anywhere in the database on disk


# ---------------------------------------------------------------- mail


@dataclass
class Logins:
    """An aiosmtpd authenticator: every login tried, with whether TLS was on, and one that
    succeeds."""

    user: str
    password: str
    tried: list[tuple[str, str, bool]] = field(default_factory=list)

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.tried.append((login, password, session.ssl is not None))
        return AuthResult(success=(login, password) == (self.user, self.password),
                          handled=False)


@contextlib.contextmanager
def mailhub(cert: CertFiles | None, logins: Logins) -> Iterator[tuple[Collector, int]]:
    """A local SMTP server; with ``cert``, it offers STARTTLS and takes mail only after it."""
    collector = Collector()
    tls = server_context(cert) if cert is not None else None
    controller = Controller(collector, hostname=LOOPBACK, port=free_port(), tls_context=tls,
                            require_starttls=tls is not None, authenticator=logins,
                            auth_require_tls=True)
    controller.start()
    try:
        yield collector, controller.port
    finally:
        controller.stop()


def mail_config(port: int, **settings: Any) -> MailConfig:
    return MailConfig(("ops@example.com",), f"{LOOPBACK}:{port}", **settings)


async def test_no_mail_to_a_mailhub_without_starttls(pool: Pool) -> None:
    logins = Logins("alerts", "pw")
    with mailhub(None, logins) as (collector, port), \
            pytest.raises(MailError, match="does not offer STARTTLS: nothing sent"):
        await send(mail_config(port, ca_file=str(pool.ca.cert)), render(ALERT, "p"))
    assert collector.envelopes == [] and logins.tried == []


async def test_mail_goes_over_starttls_with_a_login(pool: Pool, tmp_path: Path) -> None:
    logins = Logins("alerts", "s3cret:pw")
    (tmp_path / "mail.auth").write_text("alerts:s3cret:pw\n")
    with mailhub(pool.host, logins) as (collector, port):
        await send(mail_config(port, ca_file=str(pool.ca.cert),
                               auth_file=str(tmp_path / "mail.auth")), render(ALERT, "p"))
    assert logins.tried == [("alerts", "s3cret:pw", True)]  # only after STARTTLS
    [(_, recipients, mail)] = collector.delivered()
    assert recipients == ["ops@example.com"] and "ha_host_failed" in mail["Subject"]


async def test_a_wrong_password_or_an_unknown_certificate_sends_nothing(
        pool: Pool, tmp_path: Path) -> None:
    (tmp_path / "mail.auth").write_text("alerts:wrong\n")
    stranger = make_pool(tmp_path / "stranger", "stranger", (LOOPBACK,))
    logins = Logins("alerts", "right")
    with mailhub(pool.host, logins) as (collector, port):
        with pytest.raises(MailError, match="refused the login: 535"):
            await send(mail_config(port, ca_file=str(pool.ca.cert),
                                   auth_file=str(tmp_path / "mail.auth")), render(ALERT, "p"))
        with pytest.raises(MailError, match="TLS failed"):  # the system CAs do not know it
            await send(mail_config(port, auth_file=str(tmp_path / "mail.auth")),
                       render(ALERT, "p"))
        with pytest.raises(MailError, match="TLS failed"):
            await send(mail_config(port, ca_file=str(stranger.ca.cert)), render(ALERT, "p"))
    assert collector.envelopes == []
    assert logins.tried and set(logins.tried) == {("alerts", "wrong", True)}  # PLAIN, LOGIN


def test_a_password_is_never_configured_without_tls() -> None:
    with pytest.raises(MailError, match="never sent in clear"):
        MailConfig.from_other_config({"mail-destination": "ops@example.com",
                                      "ssmtp-mailhub": "mail", "mail-starttls": "off",
                                      "mail-auth-file": "/etc/hacluster/mail.auth"})
    with pytest.raises(MailError, match="mail-starttls is 'no'"):
        MailConfig.from_other_config({"mail-destination": "ops@example.com",
                                      "ssmtp-mailhub": "mail", "mail-starttls": "no"})

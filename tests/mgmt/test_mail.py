"""Alert e-mail against a real local SMTP server (aiosmtpd): what arrives, what is refused."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from hacluster.mgmt.mail import DEFAULT_SENDER, MailConfig, MailError, render, send

HOST = "127.0.0.1"
REFUSED_USER = "nobody@example.com"
ALERT: dict[str, Any] = {"name": "ha_host_failed", "priority": 1, "object": "host-3",
                         "body": "host-3 stopped heartbeating and was fenced.",
                         "timestamp": 1_700_000_000.0}


class Collector:
    """An aiosmtpd handler keeping every envelope and refusing one recipient."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address == REFUSED_USER:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def delivered(self) -> list[tuple[str, list[str], EmailMessage]]:
        """Sender, recipients and parsed message of every delivery."""
        return [(str(e.mail_from), list(e.rcpt_tos), parse(e)) for e in self.envelopes]


def parse(envelope: Envelope) -> EmailMessage:
    content = envelope.original_content or b""
    mail = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Collector, int]]:
    collector = Collector()
    controller = Controller(collector, hostname=HOST, port=free_port())
    controller.start()
    try:
        yield collector, controller.port
    finally:
        controller.stop()


def config_for(port: int, *destination: str) -> MailConfig:
    """Plain SMTP to the local collector (STARTTLS: tests/test_hostile_roles.py)."""
    return MailConfig(destination or ("ops@example.com",), f"{HOST}:{port}", starttls=False)


# ---------------------------------------------------------------- delivery


async def test_alert_is_delivered(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    message = render(ALERT, "pool-a")
    await send(config_for(port), message)
    [(sender, recipients, mail)] = collector.delivered()
    assert sender == DEFAULT_SENDER
    assert recipients == ["ops@example.com"]
    assert mail["Subject"] == "[hacluster pool-a] ha_host_failed on host-3"
    assert mail["From"] == DEFAULT_SENDER
    assert mail["To"] == "ops@example.com"
    body = mail.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
    assert "Priority: 1\n" in body
    assert "Object:   host-3\n" in body
    assert "Time:     2023-11-14T22:13:20Z\n" in body
    assert body.rstrip().endswith("host-3 stopped heartbeating and was fenced.")
    assert "From" not in message  # the caller's message is left as it was


async def test_every_destination_gets_it(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    config = MailConfig.from_other_config({"mail-destination": "a@example.com, b@example.org",
                                           "ssmtp-mailhub": f"{HOST}:{port}",
                                           "mail-sender": "pool@example.com",
                                           "mail-starttls": "off"})
    assert config is not None
    await send(config, render(ALERT, "pool-a"))
    [(sender, recipients, mail)] = collector.delivered()
    assert sender == "pool@example.com"
    assert recipients == ["a@example.com", "b@example.org"]
    assert mail["To"] == "a@example.com, b@example.org"


async def test_a_refused_recipient_is_reported(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    with pytest.raises(MailError, match=f"refused some recipients.*{REFUSED_USER}: 550"):
        await send(config_for(port, "ops@example.com", REFUSED_USER), render(ALERT, "p"))
    assert [recipients for _, recipients, _ in collector.delivered()] == [["ops@example.com"]]


async def test_all_recipients_refused(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    with pytest.raises(MailError, match="refused every recipient"):
        await send(config_for(port, REFUSED_USER), render(ALERT, "p"))
    assert collector.envelopes == []


async def test_closed_port_fails_promptly() -> None:
    start = time.monotonic()
    with pytest.raises(MailError, match=r"mailhub 127\.0\.0\.1:\d+: connection refused"):
        await send(config_for(free_port()), render(ALERT, "p"), timeout=5.0)
    assert time.monotonic() - start < 2.0


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never says a word (a hung mailhub)."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, HOST, 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_silent_mailhub_times_out() -> None:
    async with silent_server() as port:
        start = time.monotonic()
        with pytest.raises(MailError, match=r"no delivery within 0\.5 s|timed out"):
            await send(config_for(port), render(ALERT, "p"), timeout=0.5)
        assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------- rendering


def test_render_flattens_line_breaks_in_the_subject() -> None:
    mail = render({"name": "evil\r\nBcc: x@example.com", "object": "a\nb"}, "pool\n1")
    assert mail["Subject"] == "[hacluster pool 1] evil Bcc: x@example.com on a b"
    assert "Bcc" not in mail


def test_render_without_object_or_body() -> None:
    mail = render({"name": "ha_pool_overcommitted", "timestamp": "2024-05-01T12:00:00+02:00"},
                  "p")
    assert mail["Subject"] == "[hacluster p] ha_pool_overcommitted"
    body = mail.get_content()
    assert "Time:     2024-05-01T10:00:00Z\n" in body
    assert "Object:   -\n" in body
    assert body.endswith("Z\n")


@pytest.mark.parametrize("alert", [{}, {"name": ""}, {"name": "x", "timestamp": "yesterday"},
                                   {"name": "x", "timestamp": [1]}])
def test_render_refuses_bad_alerts(alert: dict[str, Any]) -> None:
    with pytest.raises(MailError):
        render(alert, "p")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("other", [{}, {"mail-destination": "  "},
                                   {"ssmtp-mailhub": "mail.example.com"}])
def test_mail_is_off_without_destination(other: dict[str, str]) -> None:
    assert MailConfig.from_other_config(other) is None


@pytest.mark.parametrize(("mailhub", "host", "port"), [
    ("mail.example.com", "mail.example.com", 25),
    ("mail:2525", "mail", 2525),
    ("10.0.0.5:587", "10.0.0.5", 587),
    ("[2001:db8::25]:2525", "2001:db8::25", 2525),
    ("[::1]", "::1", 25),
])
def test_mailhub_forms(mailhub: str, host: str, port: int) -> None:
    config = MailConfig.from_other_config({"mail-destination": "ops@example.com",
                                           "ssmtp-mailhub": mailhub})
    assert config == MailConfig(("ops@example.com",), mailhub)
    assert (config.host, config.port) == (host, port)


@pytest.mark.parametrize("destination", [
    "not-an-address", "ops@", "@example.com", "a@example.com,,b@example.com",
    "a@example.com,", "Ops <ops@example.com>", "a b@example.com",
    "ops@example.com\r\nBcc: evil@example.com", "opérations@example.com", "a@b@example.com",
    "ops@-example.com",
])
def test_malformed_destination(destination: str) -> None:
    with pytest.raises(MailError, match="mail-destination"):
        MailConfig.from_other_config({"mail-destination": destination,
                                      "ssmtp-mailhub": "mail.example.com"})


@pytest.mark.parametrize(("mailhub", "match"), [
    ("", "ssmtp-mailhub is not"),
    ("mail:", "port ''"),
    ("mail:0", "port '0'"),
    ("mail:70000", "port '70000'"),
    ("mail:smtp", "port 'smtp'"),
    ("::1", "in brackets"),
    ("2001:db8::25:25", "in brackets"),
    ("[mail]:25", "not an IPv6"),
    ("[::1]:", "port ''"),
    ("mail host", "host\\[:port\\]"),
    ("-mail", "host\\[:port\\]"),
    (":25", "host\\[:port\\]"),
])
def test_malformed_mailhub(mailhub: str, match: str) -> None:
    other = {"mail-destination": "ops@example.com"}
    if mailhub:
        other["ssmtp-mailhub"] = mailhub
    with pytest.raises(MailError, match=match):
        MailConfig.from_other_config(other)


def test_malformed_sender() -> None:
    with pytest.raises(MailError, match="mail-sender"):
        MailConfig.from_other_config({"mail-destination": "ops@example.com",
                                      "ssmtp-mailhub": "mail", "mail-sender": "HA <ha@x>"})


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(MailError, match="at least one"):
        MailConfig((), "mail")
    with pytest.raises(MailError, match="tuple of addresses"):
        MailConfig("ops@example.com", "mail")  # type: ignore[arg-type]
    assert MailConfig(["ops@example.com"], "mail").destination == (  # type: ignore[arg-type]
        "ops@example.com",)

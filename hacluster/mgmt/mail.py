"""Alert e-mail: every alert the pool master raises is also mailed when SMTP is configured.

Rules:

* Configuration comes from the pool's other-config, with XenServer's key
  names: ``mail-destination`` (one or more addresses, separated by commas)
  and ``ssmtp-mailhub`` (``host``, ``host:port`` or ``[ipv6]:port``; port 25
  when omitted). Our own optional ``mail-sender`` sets the From address
  (default :data:`DEFAULT_SENDER`). No ``mail-destination``, or a blank one,
  means mail is off. A destination without a mailhub, or any malformed value,
  is a :class:`MailError` naming the key, the value and what is expected.
* Addresses are plain ASCII ``local@domain`` without display names, spaces or
  control characters, so nothing from the configuration can inject headers.
* One alert, one message: the subject is ``[hacluster <pool>] <name> on
  <object>``, the body lists pool, alert, priority, object and time (UTC, ISO
  8601), then the alert's own text. Line breaks in the name or object are
  flattened so they cannot break the subject.
* Delivery uses STARTTLS unless ``mail-starttls`` is ``off``: a mailhub that
  does not offer it, or whose certificate does not verify (against the
  system's trusted CAs, or the PEM file ``mail-ca-file`` names) for the
  mailhub's name or address, gets nothing. With ``mail-auth-file`` (a file
  on the master holding one line ``user:password``, read at each delivery,
  never stored in the pool database), the master logs in after STARTTLS;
  a password is never sent without TLS, so ``mail-auth-file`` with
  ``mail-starttls=off`` is refused at configuration.
* Delivery runs with :mod:`smtplib` in a worker thread so the event loop
  never blocks; the whole delivery is bounded by ``timeout``. Any failure
  (refused connection, unknown host, no STARTTLS, TLS, a refused login, a
  recipient the mailhub rejects, a timeout) raises :class:`MailError` saying
  which mailhub and what.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import email.utils
import ipaddress
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

DESTINATION_KEY = "mail-destination"
MAILHUB_KEY = "ssmtp-mailhub"
SENDER_KEY = "mail-sender"
STARTTLS_KEY = "mail-starttls"
AUTH_FILE_KEY = "mail-auth-file"
CA_FILE_KEY = "mail-ca-file"
STARTTLS_VALUES = {"required": True, "off": False}
MAX_AUTH_FILE = 4096
DEFAULT_SENDER = "hacluster@localhost"
SMTP_PORT = 25
SEND_TIMEOUT = 10.0
ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
BRACKETED = re.compile(r"\[(?P<host>[^\]]*)\](:(?P<port>[^:]*))?")


class MailError(ValueError):
    """Mail that cannot be configured or delivered, and why."""


@dataclass(frozen=True)
class MailConfig:
    """Where alert mail goes: the recipients, the SMTP relay and the From address."""

    destination: tuple[str, ...]
    mailhub: str
    sender: str = DEFAULT_SENDER
    starttls: bool = True
    auth_file: str = ""  # a file of ``user:password`` on the master
    ca_file: str = ""  # PEM CAs the mailhub's certificate must chain to; "" = the system's

    def __post_init__(self) -> None:
        if isinstance(self.destination, str):
            raise MailError(f"destination is a tuple of addresses, got the string "
                            f"{self.destination!r}: pass ({self.destination!r},)")
        object.__setattr__(self, "destination", tuple(self.destination))
        if not self.destination:
            raise MailError("mail needs at least one destination address")
        for address in self.destination:
            check_address(address, DESTINATION_KEY)
        check_address(self.sender, SENDER_KEY)
        parse_mailhub(self.mailhub)
        for key, path in ((AUTH_FILE_KEY, self.auth_file), (CA_FILE_KEY, self.ca_file)):
            if path and (not path.startswith("/") or "\0" in path):
                raise MailError(f"{key}: {path!r} is not an absolute file path")
        if self.auth_file and not self.starttls:
            raise MailError(f"{AUTH_FILE_KEY} is set but {STARTTLS_KEY} is off: a password is "
                            f"never sent in clear; set {STARTTLS_KEY}=required")

    @classmethod
    def from_other_config(cls, other: Mapping[str, str]) -> MailConfig | None:
        """The mail settings in a pool's other-config; None when mail is not configured."""
        destination = other.get(DESTINATION_KEY, "").strip()
        if not destination:
            return None
        mailhub = other.get(MAILHUB_KEY, "").strip()
        if not mailhub:
            raise MailError(f"{DESTINATION_KEY} is set ({destination!r}) but {MAILHUB_KEY} "
                            "is not: set it to the SMTP relay, host[:port]")
        sender = other.get(SENDER_KEY, "").strip() or DEFAULT_SENDER
        starttls = other.get(STARTTLS_KEY, "").strip() or "required"
        if starttls not in STARTTLS_VALUES:
            raise MailError(f"{STARTTLS_KEY} is {starttls!r}; expected one of "
                            f"{', '.join(STARTTLS_VALUES)}")
        return cls(split_addresses(destination), mailhub, sender, STARTTLS_VALUES[starttls],
                   other.get(AUTH_FILE_KEY, "").strip(), other.get(CA_FILE_KEY, "").strip())

    @property
    def host(self) -> str:
        return parse_mailhub(self.mailhub)[0]

    @property
    def port(self) -> int:
        return parse_mailhub(self.mailhub)[1]


def split_addresses(text: str) -> tuple[str, ...]:
    """The comma-separated addresses of ``mail-destination``; every one must be well-formed."""
    addresses = tuple(part.strip() for part in text.split(","))
    if "" in addresses:
        raise MailError(f"{DESTINATION_KEY} {text!r} has an empty entry: separate addresses "
                        "with single commas, as in 'ops@example.com,oncall@example.com'")
    return addresses


def check_address(address: str, key: str) -> None:
    """Refuse anything but a plain ASCII ``local@domain``."""
    if not isinstance(address, str) or not ADDRESS.fullmatch(address):
        raise MailError(f"{key}: {address!r} is not a plain e-mail address; expected "
                        "local@domain in ASCII, without name, brackets or spaces")


def parse_mailhub(mailhub: str) -> tuple[str, int]:
    """``(host, port)`` of ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``."""
    text = mailhub.strip() if isinstance(mailhub, str) else ""
    bracketed = BRACKETED.fullmatch(text)
    if bracketed:
        return _ipv6_host(mailhub, bracketed["host"]), _port(mailhub, bracketed["port"])
    if text.count(":") > 1:
        raise MailError(f"{MAILHUB_KEY} {mailhub!r}: write an IPv6 address in brackets, "
                        "as in '[2001:db8::25]:25'")
    host, _, port = text.partition(":")
    if not HOSTNAME.fullmatch(host):
        raise MailError(f"{MAILHUB_KEY} {mailhub!r}: expected host[:port], where host is a "
                        "name, an IPv4 address or an [IPv6] address")
    return host, _port(mailhub, port if ":" in text else None)


def _ipv6_host(mailhub: str, host: str) -> str:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise MailError(f"{MAILHUB_KEY} {mailhub!r}: {host!r} in brackets is not an IPv6 "
                        "address") from None
    return host


def _port(mailhub: str, port: str | None) -> int:
    if port is None:
        return SMTP_PORT
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise MailError(f"{MAILHUB_KEY} {mailhub!r}: port {port!r} is not a number from "
                        "1 to 65535")
    return int(port)


# ---------------------------------------------------------------- rendering


def render(message: Mapping[str, Any], pool_name: str) -> EmailMessage:
    """The e-mail for one alert: ``name``, ``priority``, ``object``, ``body``, ``timestamp``.

    Only ``name`` is required. ``timestamp`` is seconds since the epoch, a
    datetime (naive means UTC) or an ISO 8601 string; missing means now.
    From and To are left to :func:`send`.
    """
    name = _one_line(message.get("name"))
    if not name:
        raise MailError(f"an alert needs a name to be mailed, got {dict(message)!r}")
    target = _one_line(message.get("object"))
    when = _utc(message.get("timestamp"))
    mail = EmailMessage()
    mail["Subject"] = f"[hacluster {_one_line(pool_name)}] {name}" + (
        f" on {target}" if target else "")
    mail["Date"] = email.utils.format_datetime(when)
    mail["Message-ID"] = email.utils.make_msgid(domain="hacluster")
    mail.set_content(_body(name, message, target, pool_name, when))
    return mail


def _body(name: str, message: Mapping[str, Any], target: str, pool_name: str,
          when: datetime.datetime) -> str:
    lines = [f"Pool:     {pool_name}",
             f"Alert:    {name}",
             f"Priority: {message.get('priority', '-')}",
             f"Object:   {target or '-'}",
             f"Time:     {when.isoformat().replace('+00:00', 'Z')}"]
    text = str(message.get("body") or "").strip()
    return "\n".join(lines) + ("\n\n" + text if text else "") + "\n"


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _utc(value: Any) -> datetime.datetime:
    if value is None:
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    try:
        if isinstance(value, datetime.datetime):
            when = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            when = datetime.datetime.fromtimestamp(value, datetime.UTC)
        elif isinstance(value, str):
            when = datetime.datetime.fromisoformat(value)
        else:
            raise TypeError(type(value).__name__)
    except (TypeError, ValueError, OverflowError, OSError) as error:
        raise MailError(f"alert timestamp {value!r} is not epoch seconds, a datetime or an "
                        f"ISO 8601 string ({error})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC)


# ---------------------------------------------------------------- delivery


async def send(config: MailConfig, message: EmailMessage, timeout: float = SEND_TIMEOUT) -> None:
    """Deliver ``message`` to every destination through the mailhub within ``timeout`` seconds."""
    mail = copy.deepcopy(message)
    if "From" not in mail:
        mail["From"] = config.sender
    if "To" not in mail:
        mail["To"] = ", ".join(config.destination)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.to_thread(_deliver, config, mail, timeout)
    except TimeoutError:
        raise MailError(f"mailhub {config.mailhub}: no delivery within {timeout} s") from None


def _deliver(config: MailConfig, mail: EmailMessage, timeout: float) -> None:
    """Blocking SMTP delivery; every failure becomes a :class:`MailError`."""
    where = f"mailhub {config.mailhub}"
    try:
        # Our own host name for HELO: the default, socket.getfqdn(), may wait on DNS.
        with smtplib.SMTP(config.host, config.port, timeout=timeout,
                          local_hostname=socket.gethostname()) as smtp:
            _secure(smtp, config)
            refused = smtp.send_message(mail, from_addr=config.sender,
                                        to_addrs=list(config.destination))
    except smtplib.SMTPAuthenticationError as error:
        raise MailError(f"{where} refused the login: {error.smtp_code} "
                        f"{_text(error.smtp_error)}; check {AUTH_FILE_KEY}") from None
    except smtplib.SMTPNotSupportedError as error:
        raise MailError(f"{where}: {error}") from None
    except (ssl.SSLError, ssl.CertificateError) as error:
        raise MailError(f"{where}: TLS failed ({error}); its certificate must verify for "
                        f"{config.host} (set {CA_FILE_KEY} to the CA that signed it)") from None
    except smtplib.SMTPRecipientsRefused as error:
        raise MailError(f"{where} refused every recipient: "
                        f"{_refusals(error.recipients)}") from None
    except smtplib.SMTPSenderRefused as error:
        raise MailError(f"{where} refused the sender {config.sender}: "
                        f"{error.smtp_code} {_text(error.smtp_error)}") from None
    except smtplib.SMTPResponseException as error:
        raise MailError(f"{where} answered {error.smtp_code} "
                        f"{_text(error.smtp_error)}") from None
    except smtplib.SMTPException as error:
        raise MailError(f"{where}: SMTP failed: {error}") from None
    except ConnectionRefusedError:
        raise MailError(f"{where}: connection refused (no SMTP server listening on "
                        f"port {config.port}?)") from None
    except socket.gaierror as error:
        raise MailError(f"{where}: cannot resolve {config.host}: {error.strerror}") from None
    except TimeoutError:
        raise MailError(f"{where}: timed out after {timeout} s") from None
    except OSError as error:
        raise MailError(f"{where}: {error.strerror or error}") from None
    if refused:
        raise MailError(f"{where} refused some recipients (the others got the mail): "
                        f"{_refusals(refused)}")


def _secure(smtp: smtplib.SMTP, config: MailConfig) -> None:
    """STARTTLS (unless configured off), then the login of ``mail-auth-file`` if set."""
    if not config.starttls:
        return
    smtp.ehlo()
    if not smtp.has_extn("starttls"):
        raise MailError(f"mailhub {config.mailhub} does not offer STARTTLS: nothing sent "
                        f"(set {STARTTLS_KEY}=off only for a mailhub on a trusted network)")
    context = ssl.create_default_context(cafile=config.ca_file or None)
    smtp.starttls(context=context)
    smtp.ehlo()
    if config.auth_file:
        user, password = _login(Path(config.auth_file))
        smtp.login(user, password)


def _login(path: Path) -> tuple[str, str]:
    """``user`` and ``password`` from a file of one line ``user:password``."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_AUTH_FILE + 1)
        text = data.decode().strip()
    except OSError as error:
        raise MailError(f"{AUTH_FILE_KEY} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise MailError(f"{AUTH_FILE_KEY} {path}: not text") from None
    user, sep, password = text.partition(":")
    if len(data) > MAX_AUTH_FILE or not sep or not user or not password or "\n" in text:
        raise MailError(f"{AUTH_FILE_KEY} {path}: expected one line user:password")
    return user, password


def _refusals(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {code} {_text(reply)}"
                     for address, (code, reply) in refused.items())


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply

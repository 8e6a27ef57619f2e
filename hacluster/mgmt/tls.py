"""The pool CA, host and client certificates, and the TLS contexts of the management API.

Rules:

* One CA per pool, made when the pool is created: ``ca.pem`` and ``ca.key``
  (an EC P-256 key, file mode 0600), valid :data:`CA_DAYS` days by default.
  :func:`create_pool_ca` never overwrites an existing CA: a new CA would
  orphan every certificate the old one signed.
* Every certificate is signed by the pool CA with a fresh P-256 key and a
  random serial, valid :data:`CERT_DAYS` days by default (a client
  certificate :data:`CLIENT_CERT_DAYS`, at most :data:`MAX_CLIENT_CERT_DAYS`)
  but never beyond the CA's own expiry. ``not_before`` is back-dated by :data:`CLOCK_SKEW` so a
  host whose clock is a little behind still accepts a new certificate.
* A server (host) certificate lists every IP address of the host, IPv4 and
  IPv6, as subjectAltName entries and carries only the serverAuth extended
  key usage; it must name at least one address, and only IP addresses (a
  client checks the address it connected to against them). A client
  certificate carries only clientAuth, no addresses, and its role
  (:mod:`hacluster.mgmt.roles`) as its subject's organizational unit. Certificate and key
  go to ``<name>.pem`` and ``<name>.key`` (0600), each replaced atomically;
  a name can never collide with the CA's files.
* Both sides speak TLS 1.3 only (every peer is this program on OpenSSL 1.1.1
  or later) and trust the pool CA alone, never the system store, with strict
  X.509 checking.
* A client verifies the server's chain to the pool CA and that the address
  it connected to is in the certificate (``server_hostname`` = that address).
* A server given the CA asks for a client certificate but does not require
  one, so clients that authenticate with the pool secret still connect. A
  client certificate that is offered must verify (chain to the pool CA, with
  clientAuth) or the handshake fails; :func:`peer_credential` gives the
  request handler the credential of a verified pool client certificate
  (``cert:SERIAL`` with its role), and refuses, saying why, one without a
  role, one valid longer than :data:`MAX_CLIENT_CERT_DAYS` (made before
  lifetimes were short) or one expired.
* Any unreadable, missing, corrupt or mismatched file raises :class:`TLSError`
  naming the file, what is wrong with it and what to do.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hacluster.mgmt.roles import Credential, CredentialError, Role
from hacluster.storage.files import write_atomically

CA_DAYS = 3650
CERT_DAYS = 825
CLIENT_CERT_DAYS = 30
MAX_CLIENT_CERT_DAYS = 90
CLOCK_SKEW = datetime.timedelta(hours=1)
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
KEY_MODE = 0o600
CERT_MODE = 0o644
MAX_NAME = 64  # the X.509 upper bound of a commonName
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ORGANIZATION = "hacluster"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TLSError(ValueError):
    """A certificate, key or CA that cannot be made or used: which file, what, what to do."""


@dataclass(frozen=True)
class CertFiles:
    """A PEM certificate and the PEM file of its private key."""

    cert: Path
    key: Path


# ---------------------------------------------------------------- issuing


def create_pool_ca(directory: Path, pool_name: str, days: int = CA_DAYS) -> CertFiles:
    """Make the pool CA in ``directory`` (``ca.pem``, ``ca.key``); never replace one."""
    _check_days(days)
    _check_label("pool name", pool_name)
    files = CertFiles(directory / CA_CERT_FILE, directory / CA_KEY_FILE)
    existing = [str(path) for path in (files.cert, files.key) if path.exists()]
    if existing:
        raise TLSError(f"a pool CA already exists ({', '.join(existing)}); a new CA would "
                       "invalidate every certificate the old one signed: remove both files "
                       "first if that is really meant")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, pool_name),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} pool CA")])
    start = _now() - CLOCK_SKEW
    cert = (_builder(name, name, key.public_key(), start, start + CLOCK_SKEW
                     + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    _write_new(files.key, _key_pem(key), KEY_MODE)
    _write_new(files.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return files


def issue_certificate(ca: CertFiles, directory: Path, name: str,
                      addresses: Sequence[str] = (), client: bool = False,
                      days: int | None = None, role: Role | None = None) -> CertFiles:
    """Sign a server certificate for ``addresses`` (or a client one of ``role``, read-only
    by default) and write it with its key."""
    days = (CLIENT_CERT_DAYS if client else CERT_DAYS) if days is None else days
    _check_days(days)
    if client and days > MAX_CLIENT_CERT_DAYS:
        raise TLSError(f"a client certificate lives at most {MAX_CLIENT_CERT_DAYS} days "
                       f"(servers refuse longer ones), got {days}")
    if not client and role is not None:
        raise TLSError("a role belongs in a client certificate, not a host's")
    _check_file_name(name)
    ips = _parse_addresses(addresses, client)
    ca_cert, ca_key = _load_ca(ca)
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key")
    _refuse_ca_paths(files, ca)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - CLOCK_SKEW
    end = min(start + CLOCK_SKEW + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    role_unit = ([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                     (role or Role.READ_ONLY).label)] if client else [])
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                         *role_unit, x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (_builder(subject, ca_cert.subject, key.public_key(), start, end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(cert_sign=False), critical=True)
               .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                     else ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False))
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip) for ip in ips]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    _write_replacing(files.key, _key_pem(key), KEY_MODE)
    _write_replacing(files.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    return files


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             start: datetime.datetime, end: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _authority_key_id(ca_cert: x509.Certificate,
                      ca_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    """The CA's own key identifier when it has one, so chain building matches it."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _parse_addresses(addresses: Sequence[str], client: bool) -> list[IPAddress]:
    if isinstance(addresses, str):
        raise TLSError(f"addresses must be a sequence of IP addresses, got the string "
                       f"{addresses!r}: pass [{addresses!r}]")
    if client:
        if addresses:
            raise TLSError("a client certificate carries no addresses; pass addresses only "
                           "for a server (host) certificate")
        return []
    if not addresses:
        raise TLSError("a server certificate needs at least one IP address of the host "
                       "(clients check the address they connect to against it)")
    ips: list[IPAddress] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            raise TLSError(f"{text!r} is not an IP address; a host certificate lists the "
                           "host's IPv4/IPv6 addresses (not names)") from None
        if ip not in ips:
            ips.append(ip)
    return ips


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise TLSError(f"a lifetime is a positive whole number of days, got {days!r}")


def _check_label(what: str, text: str) -> None:
    if not text or len(text) > MAX_NAME or not text.isprintable():
        raise TLSError(f"the {what} must be 1 to {MAX_NAME} printable characters, got {text!r}")


def _check_file_name(name: str) -> None:
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise TLSError(f"certificate name {name!r} must be 1 to {MAX_NAME} letters, digits, "
                       "'.', '_' or '-', starting with a letter or digit (it names the files)")


def _refuse_ca_paths(files: CertFiles, ca: CertFiles) -> None:
    ca_paths = {ca.cert.resolve(), ca.key.resolve()}
    for path in (files.cert, files.key):
        if path.resolve() in ca_paths or path.name in (CA_CERT_FILE, CA_KEY_FILE):
            raise TLSError(f"{path} would overwrite the pool CA: choose another name")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


# ---------------------------------------------------------------- files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; fail if it exists (another creator won the race)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise TLSError(f"{path} already exists: refusing to overwrite it") from None
    except OSError as error:
        raise TLSError(f"{path}: cannot create: {error.strerror}") from None
    with os.fdopen(fd, "wb") as stream:
        os.fchmod(stream.fileno(), mode)  # exact, whatever the umask
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _write_replacing(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically: a reader sees the old file or the new one, never half."""
    try:
        write_atomically(path, data, mode)
    except OSError as error:
        raise TLSError(f"{path}: cannot write in {path.parent}: {error.strerror}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{path}: {what} file not found; check the path, or issue it "
                       "again") from None
    except OSError as error:
        raise TLSError(f"{path}: cannot read the {what}: {error.strerror}") from None


def load_certificate(path: Path) -> x509.Certificate:
    """The PEM certificate in ``path``, or :class:`TLSError` naming the file."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise TLSError(f"{path}: not a valid PEM certificate ({error}); restore it from a "
                       "backup or issue it again") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The unencrypted PEM EC private key in ``path``, or :class:`TLSError` naming the file."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise TLSError(f"{path}: not a valid unencrypted PEM private key ({error}); restore "
                       "it from a backup or issue the certificate again") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSError(f"{path}: a {type(key).__name__}, expected an EC private key")
    return key


def _load_pair(files: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = load_certificate(files.cert), load_private_key(files.key)
    if cert.public_key() != key.public_key():
        raise TLSError(f"{files.key} is not the key of {files.cert}: the pair is mixed up "
                       "(keep each .pem with its own .key, or issue both again)")
    return cert, key


def _load_ca(ca: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = _load_pair(ca)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TLSError(f"{ca.cert} is not a CA certificate: pass the pool CA (ca.pem, ca.key)")
    if cert.not_valid_after_utc <= _now():
        raise TLSError(f"{ca.cert}: the pool CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                       "a new pool CA and new certificates for every host are needed")
    return cert, key


# ---------------------------------------------------------------- contexts


def server_context(cert: CertFiles, ca_cert: Path | None = None) -> ssl.SSLContext:
    """A server context presenting ``cert``; with ``ca_cert``, it verifies offered client certs."""
    context = _base_context(server=True)
    _use_pair(context, cert)
    if ca_cert is not None:
        _trust(context, ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_cert: Path, cert: CertFiles | None = None) -> ssl.SSLContext:
    """A client context trusting only the pool CA and checking the server's address."""
    context = _base_context(server=False)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _trust(context, ca_cert)
    if cert is not None:
        _use_pair(context, cert)
    return context


def _base_context(server: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _use_pair(context: ssl.SSLContext, files: CertFiles) -> None:
    _load_pair(files)  # clear errors first; OpenSSL's are terse
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as error:
        raise TLSError(f"{files.cert}, {files.key}: TLS refused the pair: "
                       f"{error.reason or error}") from None


def _trust(context: ssl.SSLContext, ca_cert: Path) -> None:
    load_certificate(ca_cert)
    try:
        context.load_verify_locations(cafile=ca_cert)
    except ssl.SSLError as error:
        raise TLSError(f"{ca_cert}: TLS refused the pool CA: {error.reason or error}") from None


def peer_client_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket
                            ) -> x509.Certificate | None:
    """The peer's verified certificate of the pool CA made for clients, if it presented one."""
    if not ssl_object.getpeercert():  # None or {}: no certificate, or one not verified
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    return cert if ExtendedKeyUsageOID.CLIENT_AUTH in usage else None


def peer_is_pool_client(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bool:
    """True when the peer presented a verified certificate of the pool CA made for clients."""
    return peer_client_certificate(ssl_object) is not None


def peer_credential(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Credential | None:
    """The credential of the peer's pool client certificate; None without one.

    :class:`CredentialError` says why a verified one is still refused."""
    cert = peer_client_certificate(ssl_object) if ssl_object is not None else None
    return certificate_credential(cert) if cert is not None else None


def certificate_credential(cert: x509.Certificate) -> Credential:
    """``cert:SERIAL`` with the role in the certificate, or :class:`CredentialError`."""
    ident = f"cert:{cert.serial_number:x}"
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > datetime.timedelta(days=MAX_CLIENT_CERT_DAYS) + CLOCK_SKEW:
        raise CredentialError(f"client certificate {name!r} ({ident}) is valid "
                              f"{lifetime.days} days, more than the {MAX_CLIENT_CERT_DAYS} "
                              "allowed: issue a new one")
    if cert.not_valid_after_utc <= _now():
        raise CredentialError(f"client certificate {name!r} ({ident}) expired on "
                              f"{cert.not_valid_after_utc:%Y-%m-%d}: issue a new one")
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        role = Role.named(str(units[0].value)) if len(units) == 1 else None
    except ValueError:
        role = None
    if role is None:
        raise CredentialError(f"client certificate {name!r} ({ident}) names no role "
                              "(read-only, operator or emergency) in its subject's OU: "
                              "issue a new one")
    return Credential(ident, role, name)

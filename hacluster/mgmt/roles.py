"""Who may run which verb: roles, credentials, role secrets, and the one role decision.

Rules:

* Three roles, each allowed everything the one below it is:
  ``read-only`` (verbs that change nothing), ``operator`` (settings, host and
  VM verbs), ``emergency`` (the emergency verbs). Every verb in the verb table
  (:mod:`hacluster.mgmt.verbs`) names the least role it needs.
* A credential is the pool secret, a role secret or a pool client
  certificate. The pool secret (every host's ``secret_file``) is the
  ``emergency`` role: the hosts relay calls with it. A role secret is
  ``ROLE:NAME:MAC`` where MAC is an HMAC-SHA256 of role and name under the
  pool secret (:func:`role_secret`): it names its holder, cannot be turned
  into another role or name, and needs nothing new on the hosts. A client
  certificate carries its role in its subject's organizational unit
  (:mod:`hacluster.mgmt.tls`).
* Every credential has an id, ``secret:pool``, ``secret:ROLE:NAME`` or
  ``cert:SERIAL`` (lowercase hex), which the audit names and the pool's deny
  list holds. The pool secret cannot be denied (rotate it instead).
* :func:`authenticate` is the one place a request's credential is decided,
  secrets compared in constant time. A relayed request (a host forwarding a
  call to the master) authenticates with the pool secret and names its
  caller; the caller's role is taken, never raised above the relaying
  credential's, and a caller named by anything but the pool secret is
  ignored (no one but a host relays).
* :func:`refusal` says why a credential may not run a verb, or None.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
POOL_SECRET_ID = "secret:pool"
SECRET_CONTEXT = b"hacluster role secret\0"


class Role(enum.IntEnum):
    """The roles, lowest first: a higher role may do everything a lower one may."""

    READ_ONLY = 0
    OPERATOR = 1
    EMERGENCY = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def named(cls, label: str) -> Role:
        """The role called ``label``; ValueError naming the roles otherwise."""
        for role in cls:
            if role.label == label:
                return role
        raise ValueError(f"unknown role {label!r}; roles: {', '.join(r.label for r in cls)}")


@dataclass(frozen=True)
class Credential:
    """Who is calling: the credential's id, its role, and a name for people."""

    id: str
    role: Role
    name: str = ""

    def message(self) -> dict[str, object]:
        return {"id": self.id, "role": self.role.label, "name": self.name}


class CredentialError(ValueError):
    """A credential that cannot be made or is not accepted, and why."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise CredentialError(f"a credential name is 1 to 64 letters, digits, '.', '_' or "
                              f"'-', starting with a letter or digit; got {name!r}")
    return name


def role_secret(pool_secret: bytes, role: Role, name: str) -> str:
    """The secret of ``role`` for ``name``: ``ROLE:NAME:MAC``."""
    check_name(name)
    return f"{role.label}:{name}:{_mac(pool_secret, role, name)}"


def _mac(pool_secret: bytes, role: Role, name: str) -> str:
    message = SECRET_CONTEXT + role.label.encode() + b"\0" + name.encode()
    return hmac.new(pool_secret, message, hashlib.sha256).hexdigest()


def secret_credential(presented: object, pool_secret: bytes) -> Credential | None:
    """The credential a presented secret proves, or None."""
    if isinstance(presented, str):
        presented = presented.encode()
    if not isinstance(presented, bytes) or not presented or not pool_secret:
        return None
    if hmac.compare_digest(presented, pool_secret):
        return Credential(POOL_SECRET_ID, Role.EMERGENCY, "pool secret")
    try:
        label, name, mac = presented.decode("ascii").split(":")
        role = Role.named(label)
    except (UnicodeDecodeError, ValueError):
        return None
    if not NAME.fullmatch(name) or not hmac.compare_digest(mac, _mac(pool_secret, role, name)):
        return None
    return Credential(f"secret:{role.label}:{name}", role, name)


def authenticate(secret: object, pool_secret: bytes,
                 certificate: Callable[[], Credential | None],
                 caller: object = None) -> Credential | None:
    """The request's credential: its secret's, else its certificate's; None if neither.

    ``certificate`` gives the peer certificate's credential (and may raise
    :class:`CredentialError` saying why it is refused); ``caller`` is what a
    relayed request says of its original caller."""
    credential = secret_credential(secret, pool_secret) or certificate()
    if credential is None or credential.id != POOL_SECRET_ID or caller is None:
        return credential
    relayed = relayed_caller(caller)
    if relayed is None:
        return None
    return Credential(relayed.id, min(relayed.role, credential.role), relayed.name)


def relayed_caller(caller: object) -> Credential | None:
    """A caller as :meth:`Credential.message` wrote it; None if malformed."""
    if not isinstance(caller, Mapping):
        return None
    ident, label, name = caller.get("id"), caller.get("role"), caller.get("name", "")
    if not isinstance(ident, str) or not ident or not isinstance(name, str) \
            or not isinstance(label, str):
        return None
    try:
        return Credential(ident[:200], Role.named(label), name[:200])
    except ValueError:
        return None


CREDENTIAL_ID = re.compile(r"cert:[0-9a-f]{1,64}|secret:(read-only|operator|emergency):"
                           + NAME.pattern)


def check_credential_id(text: str) -> str:
    """A credential id as the deny list takes it, or :class:`CredentialError`."""
    if text == POOL_SECRET_ID:
        raise CredentialError("the pool secret cannot be denied (every host relays with it): "
                              "change it on every host instead")
    if not isinstance(text, str) or not CREDENTIAL_ID.fullmatch(text):
        raise CredentialError(f"{text!r} is not a credential id: cert:SERIAL (lowercase hex, "
                              "as audit-list shows it) or secret:ROLE:NAME")
    return text


def refusal(credential: Credential, verb: str, needs: Role) -> str | None:
    """Why ``credential`` may not run ``verb`` (which needs ``needs``), or None."""
    if credential.role >= needs:
        return None
    return (f"this credential ({credential.id}) is {credential.role.label}; {verb} needs "
            f"{needs.label}: use a credential of that role")

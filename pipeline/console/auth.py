"""Who may use the console, and how a browser stays logged in without being forged.

Nothing is served without a login but the OpenAPI document and the login page itself.
There are two ways in:

- the review token (`review.token`), as `Authorization: Bearer <token>` on each request
  (scripts, the review desk's clients), or once at POST /login: a **reviewer**;
- a person's name and password from `console.users`, at POST /login: the role the config
  gives (`viewer` reads, `reviewer` also decides). Passwords are kept as scrypt hashes
  (`hash_password`, `lockstep console hash-password`); an unknown name costs the same
  time as a wrong password.

A login in a browser is a session cookie: HttpOnly (no script reads it), SameSite=Strict
(no other site's page sends it), signed with HMAC-SHA256 (`console.session_secret`, or a
random secret per process), holding the name, an expiry, a nonce, and a fingerprint of the
credential it was made with (a changed password or token ends its sessions). Each session
has a CSRF token derived from the cookie; a request that changes anything (any method but
GET, HEAD, OPTIONS) under a session must carry it as `X-CSRF-Token`, so a form on another
site, which cannot read it, cannot make one. A bearer request needs none: a browser never
adds the header by itself. A viewer's request to change anything is a 403.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.core.settings import ConsoleSettings, ConsoleUser

Role = Literal["viewer", "reviewer"]
COOKIE = "lockstep_session"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_NAME = "review-token"  # who a decision made with the review token names, unless told
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# scrypt's cost: 16 MiB and about 50 ms a check (OWASP's minimum is N=2^17 with r=8 at
# p=1 for a server; a console checks a password once a login, so the interactive cost)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def _same(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in constant time (any text a header can hold: one
    that is not UTF-8 arrives with surrogate escapes)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A password as `console.users` keeps it: `scrypt$N$r$p$salt$hash`."""
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, hashed: str) -> bool:
    """Whether `password` is the one `hashed` was made from (False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, key = hashed.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(key)
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
            maxmem=256 << 20, dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def _decoy() -> str:
    """A hash to check an unknown name's password against: it costs what a user's does."""
    return hash_password(secrets.token_hex(8))


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a name, a role, and how they logged in (a session carries
    its CSRF token)."""

    name: str
    role: Role
    via: Literal["token", "session"]
    csrf: str | None = None

    @property
    def decides(self) -> bool:
        return self.role == "reviewer"


class Gate:
    """The console's logins: the review token, the configured users, and the sessions
    made from either."""

    def __init__(
        self,
        token: str,
        settings: ConsoleSettings,
        secret: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.users: dict[str, ConsoleUser] = {u.name: u for u in settings.users}
        self.secret = secret.encode() if secret else secrets.token_bytes(32)
        self.ttl_s = settings.session_ttl_s
        self.secure = settings.secure_cookies
        self.clock = clock
        self._revoked: dict[str, float] = {}  # nonce -> when its session would have ended

    def principal(self, authorization: str | None, cookie: str | None) -> Principal | None:
        """Who a request is from: its bearer token if it has an `Authorization` header
        (a wrong one is no one: no falling back on a cookie), else its session cookie."""
        if authorization is not None:
            return self.bearer(authorization)
        if cookie is not None:
            return self.session(cookie)
        return None

    # -- credentials

    def bearer(self, header: str) -> Principal | None:
        """The principal of an `Authorization` header: the review token, or None."""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not self.token:
            return None
        if not _same(given.strip(), self.token):
            return None
        return Principal(TOKEN_NAME, "reviewer", "token")

    def login(self, name: str, password: str, token: str) -> str | None:
        """A session cookie's value for these credentials (the review token, or a user's
        name and password), or None. Slow on purpose: run it off the event loop."""
        if token:
            if self.token and _same(token, self.token):
                return self._cookie(TOKEN_NAME, "t")
            return None
        user = self.users.get(name)
        if not check_password(password, user.password if user else _decoy()) or user is None:
            return None
        return self._cookie(user.name, "u")

    def _fingerprint(self, name: str, kind: str) -> str:
        """A short MAC of the credential a session was made with."""
        credential = self.token if kind == "t" else self.users[name].password
        return _b64(hmac.new(self.secret, f"{kind}\0{credential}".encode(), "sha256").digest()[:12])

    def _cookie(self, name: str, kind: str) -> str:
        claims = {
            "n": name,
            "k": kind,
            "e": int(self.clock()) + self.ttl_s,
            "i": secrets.token_hex(8),
            "f": self._fingerprint(name, kind),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str, purpose: str = "session") -> str:
        return _b64(hmac.new(self.secret, f"{purpose}\0{payload}".encode(), "sha256").digest())

    # -- sessions

    def session(self, value: str) -> Principal | None:
        """The principal of a session cookie, or None if it is forged, expired, logged
        out, or its credential changed since (or its user is gone)."""
        payload, _, signature = value.partition(".")
        if not _same(signature, self._sign(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            name, kind, ends, nonce, mark = (claims[k] for k in "nkeif")
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(ends, int) or ends <= self.clock() or nonce in self._revoked:
            return None
        if kind == "t" and name == TOKEN_NAME and self.token:
            role: Role = "reviewer"
        elif kind == "u" and name in self.users:
            role = self.users[name].role
        else:
            return None
        if not _same(str(mark), self._fingerprint(name, kind)):
            return None
        return Principal(name, role, "session", self._sign(payload, "csrf"))

    def logout(self, value: str) -> None:
        """End the session of a cookie's value, if it is one."""
        now = self.clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        try:
            claims = json.loads(_unb64(value.partition(".")[0]))
            self._revoked[str(claims["i"])] = float(claims["e"])
        except (ValueError, KeyError, TypeError):
            return

    def csrf_ok(self, principal: Principal, given: str) -> bool:
        """Whether a request under a session carries that session's CSRF token."""
        if principal.via != "session" or principal.csrf is None:
            return True
        return _same(given, principal.csrf)

"""Bearer tokens: each configured token is a caller *scope*.

`KILN_API_TOKENS` holds `NAME:TOKEN` entries (or bare tokens, whose scope is
`token-` + the first 12 hex of their sha256). Idempotency keys are scoped to the
caller, so two callers using the same key never see each other's responses.
With no token configured the API is open and every caller is scope `local`; the
service refuses to start so on a non-loopback address (`check_bind`).

Tokens are compared in constant time and never logged, returned or audited:
only the scope name leaves this module.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request

from batchkiln.errors import ConfigError
from batchkiln.service.problems import ProblemError

OPEN_SCOPE = "local"


@dataclass(frozen=True)
class Caller:
    scope: str


class Tokens:
    def __init__(self, entries: Sequence[str]) -> None:
        self._by_token: list[tuple[bytes, str]] = []
        for entry in entries:
            name, sep, token = entry.partition(":")
            if not sep:
                name, token = "", entry
            token = token.strip()
            if not token:
                raise ConfigError(
                    "KILN_API_TOKENS: an entry has an empty token (use NAME:TOKEN or TOKEN)",
                    name="KILN_API_TOKENS",
                )
            scope = name.strip() or "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]
            if len(scope) > 64:
                raise ConfigError(
                    "KILN_API_TOKENS: a scope name is longer than 64 characters",
                    name="KILN_API_TOKENS",
                )
            self._by_token.append((token.encode(), scope))

    @property
    def enabled(self) -> bool:
        return bool(self._by_token)

    def scope_of(self, token: str) -> str | None:
        offered = token.encode()
        found = None
        for known, scope in self._by_token:  # no early exit: constant time over the list
            if hmac.compare_digest(known, offered):
                found = scope
        return found

    def caller(self, request: Request) -> Caller:
        """The caller of `request`, or a 401 problem."""
        if not self.enabled:
            return Caller(OPEN_SCOPE)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        scope = self.scope_of(token.strip()) if scheme.lower() == "bearer" else None
        if scope is None:
            raise ProblemError(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> with a token from KILN_API_TOKENS",
                headers={"WWW-Authenticate": 'Bearer realm="kiln"'},
            )
        return Caller(scope)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse to serve an open API on anything but loopback."""
    if not tokens.enabled and not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve on {host} without a token: set KILN_API_TOKENS (or bind 127.0.0.1)",
            name="KILN_API_TOKENS",
        )

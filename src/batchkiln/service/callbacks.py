"""Callback URL rules (webhooks out go only where they are allowed to).

- `https://` only; `http://` only to a loopback address, and only with
  KILN_CALLBACK_ALLOW_LOOPBACK=1 (tests, demos);
- no credentials in the URL (`user:pass@`), no fragment;
- loopback, private (RFC 1918, ULA), link-local (169.254/16, fe80::/10, so cloud
  metadata too), multicast, reserved and unspecified addresses refused, unless
  KILN_CALLBACK_ALLOW_PRIVATE=1 (loopback: unless ALLOW_LOOPBACK);
- a host name is checked when the job is submitted and resolved again before
  every delivery, and every address it resolves to must pass (redirects are never
  followed, so a 3xx cannot lead anywhere else).

Known gap: the address is resolved by us and then again by the HTTP client, so a
DNS answer that changes between the two (rebinding) is not caught; an egress
proxy (smokescreen) closes that gap in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2000


class CallbackRefused(ValueError):
    """The callback URL breaks a rule; the message says which."""


@dataclass(frozen=True)
class CallbackRules:
    allow_loopback: bool = False
    allow_private: bool = False

    def check_address(self, address: str, *, url: str) -> None:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            if not self.allow_loopback:
                raise CallbackRefused(
                    f"callback_url {url}: {ip} is a loopback address"
                    " (allowed only with KILN_CALLBACK_ALLOW_LOOPBACK=1)"
                )
            return
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
            raise CallbackRefused(f"callback_url {url}: {ip} is not a routable unicast address")
        if ip.is_private and not self.allow_private:
            raise CallbackRefused(
                f"callback_url {url}: {ip} is a private address"
                " (allowed only with KILN_CALLBACK_ALLOW_PRIVATE=1)"
            )

    def check(self, url: str) -> str:
        """The URL, if it passes the static rules; else CallbackRefused."""
        if len(url) > MAX_URL:
            raise CallbackRefused(f"callback_url is longer than {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CallbackRefused(f"callback_url {url!r} is not a URL: {exc}") from None
        del port
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host:
            raise CallbackRefused(f"callback_url {url!r} must be an https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("callback_url must not carry credentials (user:password@)")
        if parts.fragment:
            raise CallbackRefused("callback_url must not have a #fragment")
        literal = _literal_ip(host)
        loopback = host == "localhost" or host.endswith(".localhost")
        if literal is not None:
            self.check_address(literal, url=url)
            loopback = ipaddress.ip_address(literal).is_loopback
        elif loopback and not self.allow_loopback:
            raise CallbackRefused(
                f"callback_url {url}: {host} is loopback"
                " (allowed only with KILN_CALLBACK_ALLOW_LOOPBACK=1)"
            )
        if parts.scheme == "http" and not (loopback and self.allow_loopback):
            raise CallbackRefused(
                f"callback_url {url}: http:// is allowed only to loopback with"
                " KILN_CALLBACK_ALLOW_LOOPBACK=1; use https://"
            )
        return url

    async def check_resolved(self, url: str) -> None:
        """Before a delivery: every address the host resolves to must pass."""
        self.check(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if _literal_ip(host) is not None:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise CallbackRefused(f"callback_url {url}: cannot resolve {host}: {exc}") from None
        for info in infos:
            self.check_address(str(info[4][0]), url=url)


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None

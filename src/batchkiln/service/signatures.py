"""Standard Webhooks verification against an injected clock.

The HMAC is computed by the `standardwebhooks` library (`Webhook.sign`), but
the timestamp tolerance is checked here: the library's `verify` compares with
wall-clock time, which would make every test depend on real time. Several
secrets are accepted at once, so a secret can be rotated without downtime.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping, Sequence

from standardwebhooks import Webhook

TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The delivery is not authentic or not fresh; answer 400 and do nothing."""


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> str:
    """Check a delivery's signature and timestamp; return its `webhook-id`."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise SignatureError(f"webhook-timestamp is not an integer: {stamp!r}") from None
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            f"webhook-timestamp {sent_at} is {now - sent_at:+.0f}s from now"
            f" (tolerance {tolerance:.0f}s)"
        )
    try:
        data = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    offered = [s for s in signatures.split() if s.startswith("v1,")]
    when = dt.datetime.fromtimestamp(sent_at, dt.UTC)
    for secret in secrets:
        try:
            expected = Webhook(secret).sign(msg_id, when, data)
        except Exception as exc:  # the library raises several types on a bad secret
            raise SignatureError(f"a configured webhook secret is invalid: {exc}") from None
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise SignatureError("no signature matches any configured secret")

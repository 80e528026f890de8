"""Standard Webhooks verification: authentic, fresh, rotated secrets, forged and stale."""

from __future__ import annotations

import pytest

from batchkiln.service.signatures import SignatureError, verify

SECRET = "whsec_plJ3nmyCDGBKInavdOK15jsl"
BODY = b'{"event_type":"ping","data":{"success":true}}'
HEADERS = {
    "webhook-id": "msg_loFOjxBNrRLzqYUf",
    "webhook-timestamp": "1731705121",
    "webhook-signature": "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
}
SENT = 1731705121


def test_the_published_test_vector_verifies() -> None:
    """The Standard Webhooks test vector is accepted and its id returned."""
    assert verify(BODY, HEADERS, [SECRET], now=SENT) == "msg_loFOjxBNrRLzqYUf"


def test_any_of_several_secrets_may_match() -> None:
    """During rotation the old and the new secret are both accepted."""
    other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert verify(BODY, HEADERS, [other, SECRET], now=SENT)


def test_a_forged_signature_is_rejected() -> None:
    """A signature made with another key does not verify."""
    forged = dict(
        HEADERS, **{"webhook-signature": "v1,AAAAW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="}
    )
    with pytest.raises(SignatureError, match="no signature"):
        verify(BODY, forged, [SECRET], now=SENT)


def test_a_tampered_body_is_rejected() -> None:
    """Changing one byte of the body breaks the signature."""
    with pytest.raises(SignatureError):
        verify(BODY.replace(b"true", b"fals"), HEADERS, [SECRET], now=SENT)


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_five_minutes_is_rejected(skew: int) -> None:
    """Too old or too new by more than the tolerance is refused, by our clock."""
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, HEADERS, [SECRET], now=SENT - skew)


def test_missing_headers_are_rejected() -> None:
    """A delivery without the three headers is refused."""
    with pytest.raises(SignatureError, match="missing"):
        verify(BODY, {"webhook-id": "x"}, [SECRET], now=SENT)

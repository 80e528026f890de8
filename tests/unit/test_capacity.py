"""Reading the vendor's enqueued-token rejections."""

from __future__ import annotations

from batchkiln.engine.capacity import limit_in_message, transient_code

MESSAGE = (
    "Enqueued token limit reached for gpt-4o-mini in organization org-abc. Limit: 2,000,000"
    " enqueued tokens. Please try again once some in_progress batches have been completed."
)


def test_the_limit_is_read_from_the_vendor_message() -> None:
    """OpenAI states the limit with thousands separators; a message without one gives None."""
    assert limit_in_message(MESSAGE) == 2_000_000
    assert limit_in_message("Enqueued token limit reached") is None


def test_only_the_enqueued_token_rejection_is_transient() -> None:
    """token_limit_exceeded (when every listed reason is it) is transient; a bad line is not."""
    assert transient_code({"code": "token_limit_exceeded"}) == "token_limit_exceeded"
    listed = {"code": "token_limit_exceeded", "errors": [{"code": "token_limit_exceeded"}]}
    assert transient_code(listed) == "token_limit_exceeded"
    mixed = {
        "code": "token_limit_exceeded",
        "errors": [{"code": "token_limit_exceeded"}, {"code": "invalid_json_line"}],
    }
    assert transient_code(mixed) is None
    assert transient_code({"code": "invalid_json_line"}) is None
    assert transient_code(None) is None

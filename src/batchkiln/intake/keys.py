"""Idempotency keys: the Job key, the derived Batch keys, and their short tags.

A Job's key is the user's, or a fingerprint of (provider, model, endpoint,
request content), so the same command on the same file finds the same Job.
Batch keys derive from the Job key, the shard and the attempt; a tag is a
short hash of a batch key that rides in OpenAI metadata and as the prefix of
every wire custom_id (`<tag>-<seq>`).
"""

from __future__ import annotations

import hashlib
import string

_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class KeyConflict(Exception):
    """The same idempotency key was first used with different content."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was first used with different content;"
            " nothing was submitted. Use a new key for new content."
        )
        self.key = key


def check_user_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not set(key) <= _PRINTABLE:
        raise ValueError(f"idempotency key {key[:40]!r}: must be 1-255 printable ASCII characters")
    return key


def job_key(user_key: str | None, content_fingerprint: str) -> str:
    """The user's key, or `fp-<fingerprint>` when none is given."""
    if user_key is not None:
        return check_user_key(user_key)
    return f"fp-{content_fingerprint}"


def derive_batch_key(job_key: str, shard: int, attempt: int) -> str:
    return f"{job_key}:shard{shard}:attempt{attempt}"


def batch_tag(batch_key: str) -> str:
    """8 characters of [a-z0-9], starting with a letter, from a hash of the key."""
    digest = int.from_bytes(hashlib.sha256(batch_key.encode()).digest()[:8], "big")
    chars = [_ALPHABET[digest % 26]]
    digest //= 26
    for _ in range(7):
        chars.append(_ALPHABET[digest % 36])
        digest //= 36
    return "".join(chars)

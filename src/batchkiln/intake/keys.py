"""Idempotency keys: the content fingerprint, the Job key, derived Batch keys, tags.

- The *fingerprint* (sha256 hex) covers provider, model, endpoint and every
  request's custom_id and canonical body, in order. It is always computed, so
  the store can tell "same key, different content" (`KeyConflict`).
- A Job's *key* is the user's key, or `fp-<fingerprint>` when none is given, so
  running the same command on the same file finds the same Job.
- A Batch's key derives from the Job key, its shard and its attempt; its *tag*
  is an 8-character hash of that key that rides in OpenAI metadata and prefixes
  every wire custom_id (`<tag>-<seq>`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from batchkiln.errors import InvalidKey

_FINGERPRINT_VERSION = b"batchkiln-fingerprint-v1\n"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ALPHABET = _LETTERS + "0123456789"
MAX_USER_KEY = 255


def canonical_json(value: Any) -> bytes:
    """Compact JSON with object keys sorted at every level: one spelling per value."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class ContentFingerprint:
    """An incremental fingerprint of a Job's content, fed one request at a time."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(_FINGERPRINT_VERSION)
        self.count = 0

    def add(self, custom_id: str, canonical_body: bytes) -> None:
        """Add the next request: its user custom_id and `canonical_json(body)`."""
        # A JSON string ends at its closing quote and compact JSON has no raw
        # newline, so `"id",{body}\n` frames every request unambiguously.
        # one update of the joined bytes: four calls cost more than the copy (~1 KB)
        self._hash.update(b"".join((orjson.dumps(custom_id), b",", canonical_body, b"\n")))
        self.count += 1

    def hexdigest(self, *, provider: str, model: str, endpoint: str) -> str:
        """The fingerprint of what was added, for this provider, model and endpoint."""
        final = self._hash.copy()
        final.update(orjson.dumps(["end", provider, model, endpoint, self.count]))
        return final.hexdigest()


def fingerprint(
    provider: str,
    model: str,
    endpoint: str,
    requests: Iterable[tuple[str, Mapping[str, Any]]],
) -> str:
    """The fingerprint of (custom_id, vendor body) pairs, as `validate_file` computes it."""
    content = ContentFingerprint()
    for custom_id, body in requests:
        content.add(custom_id, canonical_json(body))
    return content.hexdigest(provider=provider, model=model, endpoint=endpoint)


# Ids and keys share the commands' JOB argument (`kiln status JOB`), so a user key may
# not look like an id (`job_...`, `bat_...`, see store.jobs.new_id) nor like a derived
# batch key (`<key>:shard<n>:attempt<m>`, which shares the key table): no key can ever
# name another job's row.
RESERVED_PREFIXES = ("job_", "bat_")
_DERIVED_SUFFIX = re.compile(r":shard\d+:attempt\d+$")


def check_user_key(key: str) -> str:
    """The key, if it is 1-255 printable ASCII characters (space to tilde) and not shaped
    like an id or a derived batch key; else InvalidKey."""
    shown = repr(key[:40]) + ("..." if len(key) > 40 else "")
    for prefix in RESERVED_PREFIXES:
        if key.startswith(prefix):
            raise InvalidKey(
                f"idempotency key {shown} starts with {prefix!r}, which is reserved for"
                " batchkiln's own ids: choose a key that does not"
            )
    if _DERIVED_SUFFIX.search(key):
        raise InvalidKey(
            f"idempotency key {shown} ends like a derived batch key (':shard<n>:attempt<m>'),"
            " which is reserved: choose a key that does not"
        )
    if not key:
        raise InvalidKey("idempotency key is empty: use 1-255 printable ASCII characters")
    if len(key) > MAX_USER_KEY:
        raise InvalidKey(
            f"idempotency key {shown} is {len(key)} characters long:"
            f" use 1-{MAX_USER_KEY} printable ASCII characters"
        )
    for position, char in enumerate(key):
        if not " " <= char <= "~":
            raise InvalidKey(
                f"idempotency key {shown} has {char!r} at position {position}:"
                " use 1-255 printable ASCII characters"
            )
    return key


def job_key(user_key: str | None, summary_fingerprint: str) -> str:
    """The user's key (checked), or `fp-<fingerprint>` when none is given."""
    if user_key is not None:
        return check_user_key(user_key)
    return f"fp-{summary_fingerprint}"


def derive_batch_key(job_key: str, shard: int, attempt: int) -> str:
    """`<job key>:shard<n>:attempt<m>` (shard >= 0, attempt >= 1).

    The suffix is read from the right and holds only digits, so two different
    (job key, shard, attempt) triples never give the same batch key, whatever
    the job key contains."""
    if shard < 0 or attempt < 1:
        raise ValueError(f"shard must be >= 0 and attempt >= 1, got {shard} and {attempt}")
    return f"{job_key}:shard{shard}:attempt{attempt}"


def batch_tag(batch_key: str) -> str:
    """8 characters of [a-z0-9], starting with a letter, from sha256 of the batch key.

    26 * 36**7 (about 2 * 10**12, 41 bits) tags: two among ten thousand batches
    collide with probability about 2.5 * 10**-5."""
    value = int.from_bytes(hashlib.sha256(batch_key.encode()).digest()[:8], "big")
    value, first = divmod(value, 26)
    chars = [_LETTERS[first]]
    for _ in range(7):
        value, index = divmod(value, 36)
        chars.append(_ALPHABET[index])
    return "".join(chars)


# Every request goes on the wire as `<tag>-<seq>`: the tag proves the batch is ours,
# the seq maps the result back to the request ledger (never a position).
def wire_id(tag: str, seq: int) -> str:
    return f"{tag}-{seq}"


def parse_wire_id(value: str) -> tuple[str, int] | None:
    tag, sep, seq = value.partition("-")
    if not sep or not seq.isdigit():
        return None
    return tag, int(seq)

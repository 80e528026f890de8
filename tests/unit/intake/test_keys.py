"""Fingerprints, Job keys, Batch keys and tags: deterministic, and sensitive to content."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from batchkiln.intake import (
    InvalidKey,
    KeyConflict,
    batch_tag,
    check_user_key,
    derive_batch_key,
    fingerprint,
    iter_requests,
    job_key,
    validate_file,
)

from .helpers import CHAT, oai, write_lines


def test_the_same_content_gives_the_same_fingerprint_keys_and_shards(tmp_path: Path) -> None:
    """Two copies of a file (whitespace, key order, blank lines aside) plan identically."""
    lines = [oai(f"r{i}", temperature=i / 10) for i in range(30)]
    first = write_lines(tmp_path / "a.jsonl", lines)
    second = tmp_path / "b.jsonl"
    second.write_text(
        "\n".join(
            orjson.dumps(line, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
            .decode()
            .replace("\n", " ")
            for line in lines
        )
        + "\n\n"
    )
    a, b = (validate_file(p, provider="openai") for p in (first, second))
    assert (a.fingerprint, a.shards, a.count, a.wire_bytes) == (
        b.fingerprint,
        b.shards,
        b.count,
        b.wire_bytes,
    )
    keys_a = [derive_batch_key(job_key(None, a.fingerprint), s.index, 1) for s in a.shards]
    keys_b = [derive_batch_key(job_key(None, b.fingerprint), s.index, 1) for s in b.shards]
    assert keys_a == keys_b and [batch_tag(k) for k in keys_a] == [batch_tag(k) for k in keys_b]


def test_one_changed_byte_changes_the_fingerprint(tmp_path: Path) -> None:
    """A one-character change in a body, a custom_id or the order is a different Job."""
    base = [oai("a", temperature=0.5), oai("b")]
    variants = {
        "base": base,
        "body": [oai("a", temperature=0.6), oai("b")],
        "custom_id": [oai("a", temperature=0.5), oai("c")],
        "order": [oai("b"), oai("a", temperature=0.5)],
    }
    prints = {
        name: validate_file(
            write_lines(tmp_path / f"{name}.jsonl", lines), provider="openai"
        ).fingerprint
        for name, lines in variants.items()
    }
    assert len(set(prints.values())) == 4, prints


def test_provider_model_and_endpoint_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    """The same plain lines for another vendor, model or endpoint are different content."""
    path = write_lines(
        tmp_path / "in.jsonl", [{"custom_id": "a", "body": {**CHAT, "max_tokens": 5}}]
    )
    prints = {
        validate_file(path, provider="openai", model="m").fingerprint,
        validate_file(path, provider="anthropic", model="m").fingerprint,
        validate_file(path, provider="openai", model="n").fingerprint,
        validate_file(path, provider="openai", model="m", endpoint="/v1/responses").fingerprint,
    }
    assert len(prints) == 4


def test_a_model_from_the_command_or_the_line_fingerprints_the_same(tmp_path: Path) -> None:
    """What is fingerprinted is what is sent: the body with its model set."""
    plain = write_lines(tmp_path / "plain.jsonl", [{"custom_id": "a", "body": CHAT}])
    inline = write_lines(tmp_path / "inline.jsonl", [oai("a")])
    assert (
        validate_file(plain, provider="openai", model="gpt-4o-mini").fingerprint
        == validate_file(inline, provider="openai").fingerprint
    )


def test_the_fingerprint_function_matches_validate_file(tmp_path: Path) -> None:
    """fingerprint() over (custom_id, body) pairs equals the file's fingerprint."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b", max_tokens=3)])
    summary = validate_file(path, provider="openai")
    pairs = [(r.custom_id, r.body) for r in iter_requests(path, provider="openai")]
    assert fingerprint("openai", summary.model, summary.endpoint, pairs) == summary.fingerprint


def test_the_framing_of_ids_and_bodies_is_unambiguous() -> None:
    """Moving characters between a custom_id and its neighbours changes the fingerprint."""
    one = fingerprint("openai", "m", "/e", [("a", {"x": 1}), ("b", {"x": 2})])
    two = fingerprint("openai", "m", "/e", [('a",{"x":1}\n"b', {"x": 2})])
    assert one != two


def test_a_job_key_is_the_users_key_or_the_fingerprint() -> None:
    """No key given: fp-<fingerprint>; a key given: that key."""
    assert job_key(None, "ab" * 32) == "fp-" + "ab" * 32
    assert job_key("nightly-2026-11-28", "ab" * 32) == "nightly-2026-11-28"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("x" * 256, "is 256 characters long"),
        ("tab\there", "has '\\t' at position 3"),
        ("caf\u00e9", "has 'é' at position 3"),
        ("new\nline", "has '\\n' at position 3"),
    ],
)
def test_user_keys_must_be_printable_ascii_up_to_255(key: str, problem: str) -> None:
    """A user key is refused with the reason and the rule."""
    with pytest.raises(InvalidKey, match="1-255 printable ASCII") as info:
        job_key(key, "ab" * 32)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("job_0123456789abcdef0123", "starts with 'job_', which is reserved"),
        ("bat_0123456789abcdef0123", "starts with 'bat_', which is reserved"),
        ("nightly:shard0:attempt1", "ends like a derived batch key"),
        ("fp-abc:shard12:attempt3", "ends like a derived batch key"),
    ],
)
def test_user_keys_may_not_look_like_ids_or_batch_keys(key: str, problem: str) -> None:
    """A key shaped like a job/batch id or a derived batch key is refused, so a key can
    never name another job's row (`kiln status JOB` takes both)."""
    with pytest.raises(InvalidKey, match="reserved") as info:
        job_key(key, "ab" * 32)
    assert problem in str(info.value)
    assert check_user_key("jobs-nightly") == "jobs-nightly"  # only the exact prefixes
    assert check_user_key("a:shard:attempt") == "a:shard:attempt"


def test_every_printable_ascii_key_up_to_255_is_accepted() -> None:
    """Space to tilde, 1 to 255 characters, are all fine."""
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert check_user_key(printable) == printable
    assert check_user_key("k" * 255) == "k" * 255 and check_user_key("k") == "k"


def test_batch_keys_are_deterministic_and_differ_by_shard_and_attempt() -> None:
    """The same job, shard and attempt give the same key and tag, every time."""
    key = job_key(None, "ab" * 32)
    assert derive_batch_key(key, 0, 1) == derive_batch_key(key, 0, 1) == f"{key}:shard0:attempt1"
    keys = {derive_batch_key(key, s, a) for s in range(3) for a in range(1, 4)}
    assert len(keys) == 9 and len({batch_tag(k) for k in keys}) == 9


def test_batch_keys_of_different_jobs_never_collide() -> None:
    """A job key that looks like a batch key suffix still gives distinct batch keys."""
    assert derive_batch_key("a:shard1:attempt1", 0, 1) != derive_batch_key("a", 1, 1)
    assert derive_batch_key("a:shard1", 2, 1) != derive_batch_key("a", 12, 1)


def test_batch_key_arguments_are_checked() -> None:
    """Shards count from 0 and attempts from 1."""
    for shard, attempt in ((-1, 1), (0, 0)):
        with pytest.raises(ValueError, match="attempt >= 1"):
            derive_batch_key("k", shard, attempt)


def test_tags_are_stable_and_fit_every_vendors_custom_id_rules() -> None:
    """A tag is 8 chars of [a-z0-9] starting with a letter, so `<tag>-<seq>` is valid."""
    assert batch_tag("fp-abc:shard0:attempt1") == batch_tag("fp-abc:shard0:attempt1")
    tags = {batch_tag(f"key-{i}") for i in range(5000)}
    assert len(tags) == 5000
    for tag in tags:
        assert re.fullmatch(r"[a-z][a-z0-9]{7}", tag)
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", f"{tag}-{99_999}")


def test_a_tag_does_not_change_between_releases() -> None:
    """Stored batches are found again by tag, so the tag function is pinned."""
    assert batch_tag("fp-" + "ab" * 32 + ":shard0:attempt1") == PINNED_TAG


PINNED_TAG = "kj30qt90"


def test_a_key_conflict_says_what_happened_and_what_to_do() -> None:
    """The conflict names the key, says the content differs, and says to use a new key."""
    message = str(KeyConflict("nightly-1"))
    assert "'nightly-1'" in message and "first used with different content" in message
    assert "use a new key" in message.lower()
    assert KeyConflict("k").key == "k"
